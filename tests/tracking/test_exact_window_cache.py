"""Exact speed paths of the tracker: the window's per-block feature cache and ``Measurements.validate_once``.

The cached :meth:`MeasurementWindow.as_arrays` must equal, bit for bit, the features recomputed from the
held blocks with the original (uncached) formulas of the module docstring, for both anchor modes, before
and after the window is full and after a reset.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rl_isac.errors import MeasurementError
from rl_isac.physics.measurements import Measurements
from rl_isac.scenario import ScenarioConfig
from rl_isac.tracking.ekf import EKFEstimator
from rl_isac.tracking.window import (
    NUM_FEATURES,
    RESIDUAL_CLIP,
    SNR_SCALE_DB,
    MeasurementWindow,
)

CFG = ScenarioConfig.paper(num_targets=4, window=5)
BS = np.asarray(CFG.bs_positions_m, float)


def random_meas(rng: np.random.Generator, truth_m: np.ndarray, block: int) -> Measurements:
    """Measurements near ``truth_m (I, 2)`` on random pairs: noisy, a few far outliers (residual clip),
    random variances (some tiny: the std floor), random misses."""
    M, I = BS.shape[0], truth_m.shape[0]
    assigned = rng.random((M, I)) < 0.5
    detected = assigned & (rng.random((M, I)) < 0.8)
    pos = truth_m[None] + rng.normal(0.0, 1.0, (M, I, 2)) + (rng.random((M, I, 1)) < 0.1) * rng.normal(0, 80, (M, I, 2))
    rel = pos - BS[:, None]
    cov = np.zeros((M, I, 2, 2))
    cov[..., 0, 0] = 10.0 ** rng.uniform(-20, 0, (M, I))
    cov[..., 1, 1] = 10.0 ** rng.uniform(-20, -1, (M, I))
    cov[..., 0, 1] = cov[..., 1, 0] = 0.1 * np.sqrt(cov[..., 0, 0] * cov[..., 1, 1])
    return Measurements(assigned=assigned, detected=detected,
                        range_m=np.where(detected, np.linalg.norm(rel, axis=-1), 0.0),
                        angle_rad=np.where(detected, np.arctan2(rel[..., 1], rel[..., 0]), 0.0),
                        snr_db=np.where(assigned, rng.uniform(-5, 30, (M, I)), 0.0),
                        cov=np.where(detected[..., None, None], cov, 0.0), block=block)


def reference_features(win: MeasurementWindow, meas: Measurements) -> np.ndarray:
    """The uncached formulas (the module docstring's feature layout), against the window's current anchor."""
    det = meas.detected
    d, t = meas.range_m, meas.angle_rad
    c, s = np.cos(t), np.sin(t)
    out = np.zeros((win.num_bs, win.num_targets, NUM_FEATURES))
    out[..., 0] = det
    out[..., 1] = meas.assigned
    out[..., 2] = d / win.range_scale_m
    out[..., 3] = t / np.pi
    out[..., 4] = d * c / win.position_scale_m
    out[..., 5] = d * s / win.position_scale_m
    implied = win.bs_positions_m[:, None, :] + d[..., None] * np.stack([c, s], axis=-1)
    res = (implied - win.anchor_m[None]) / win.residual_scale_m
    out[..., 6:8] = np.clip(res, -RESIDUAL_CLIP, RESIDUAL_CLIP)
    std_r = np.sqrt(np.maximum(meas.cov[..., 0, 0], 1e-18))
    std_t = np.sqrt(np.maximum(meas.cov[..., 1, 1], 1e-18))
    out[..., 8] = np.log10(std_r)
    out[..., 9] = np.log10(std_t)
    out[..., 10] = np.log10(np.maximum(d * std_t, 1e-9))
    out[..., 2:11] = np.where(det[..., None], out[..., 2:11], 0.0)
    out[..., 11] = np.where(meas.assigned, meas.snr_db / SNR_SCALE_DB, 0.0)
    return out.astype(np.float32)


@pytest.mark.parametrize("anchor", ["ekf", "measurement"])
def test_cached_window_features_equal_the_uncached_recomputation(anchor: str) -> None:
    rng = np.random.default_rng(11)
    win = MeasurementWindow(CFG, anchor=anchor)
    W = CFG.window
    checked = 0
    for episode in range(3):
        truth = np.column_stack([rng.uniform(30, 270, 4), rng.uniform(20, 80, 4)])
        win.reset(truth + rng.normal(0, 1, truth.shape))
        held: list[Measurements] = []
        for q in range(2 * W + 1):
            truth = truth + rng.normal(0, 1, truth.shape)
            meas = random_meas(rng, truth, q)
            win.push(meas)
            held = (held + [meas])[-W:]
            obs = win.as_arrays()
            expected = np.zeros((W, CFG.num_bs, CFG.num_targets, NUM_FEATURES), np.float32)
            for k, m in enumerate(held):
                expected[W - len(held) + k] = reference_features(win, m)
                # the public per-block path agrees too
                assert np.array_equal(win.block_features(m), expected[W - len(held) + k])
            assert obs["features"].dtype == np.float32
            assert np.array_equal(obs["features"].view(np.uint32), expected.view(np.uint32)), (episode, q)
            assert np.array_equal(obs["block_valid"], (np.arange(W) >= W - len(held)).astype(np.float32))
            checked += 1
    assert checked == 3 * (2 * W + 1)


def test_validate_once_checks_a_new_object_and_skips_an_already_validated_one() -> None:
    rng = np.random.default_rng(3)
    truth = np.column_stack([rng.uniform(30, 270, 4), rng.uniform(20, 80, 4)])
    meas = random_meas(rng, truth, 0)
    assert meas.validate_once() is meas and meas.validate_once() is meas
    # a new object is checked in full on its first call, also when it comes from a validated one
    det = meas.detected.copy()
    det[~meas.assigned] = True
    with pytest.raises(MeasurementError, match="detected but not assigned"):
        dataclasses.replace(meas, detected=det).validate_once()
    # validate() itself always checks in full
    bad = random_meas(rng, truth, 1)
    bad.validate()
    bs, tgt = np.argwhere(bad.detected)[0]
    bad.range_m[bs, tgt] = -1.0
    with pytest.raises(MeasurementError, match="range <= 0"):
        bad.validate()


def test_ekf_still_rejects_a_foreign_invalid_object() -> None:
    ekf = EKFEstimator(CFG)
    rng = np.random.default_rng(5)
    truth = np.column_stack([rng.uniform(30, 270, 4), rng.uniform(20, 80, 4)])
    ekf.reset(truth)
    meas = random_meas(rng, truth, 0)
    det = meas.detected.copy()
    det[~meas.assigned] = True  # detected but not assigned: a rule only validate() checks
    bad = dataclasses.replace(meas, detected=det, range_m=np.where(det, 50.0, 0.0),
                              cov=np.where(det[..., None, None], 0.01 * np.eye(2), 0.0))
    x_before = ekf.state
    with pytest.raises(MeasurementError, match="detected but not assigned"):
        ekf.update(bad)
    assert np.array_equal(ekf.state, x_before)


def test_features_against_anchors_from_a_callers_cache_equal_block_features():
    """The clustered observer's pattern: a feature window reset at other anchors, the same blocks featurised again."""
    rng = np.random.default_rng(8)
    win = MeasurementWindow(CFG, anchor="measurement")
    truth = np.column_stack([rng.uniform(30, 270, 4), rng.uniform(20, 80, 4)])
    blocks = [random_meas(rng, truth + rng.normal(0, 2, truth.shape), q) for q in range(6)]
    cache = [win.anchor_free_features(m) for m in blocks]
    for _ in range(4):
        win.reset(truth + rng.normal(0, 5, truth.shape))
        got = win.features_against_anchors(cache)
        assert got.shape == (6, CFG.num_bs, CFG.num_targets, NUM_FEATURES)
        for k, m in enumerate(blocks):
            assert np.array_equal(got[k], reference_features(win, m))
    assert np.all(cache[0][0][..., 6:8] == 0)  # the cached entries are not modified by use
