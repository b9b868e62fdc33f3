"""MeasurementWindow: the one featurisation of the measurements (also the RLlib observation)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from rl_isac.errors import ConfigError, MeasurementError
from rl_isac.physics.measurements import Measurements
from rl_isac.scenario import ScenarioConfig
from rl_isac.tracking.ekf import EKFEstimator
from rl_isac.tracking.window import (
    FEATURE_INDEX,
    NUM_FEATURES,
    OBS_KEYS,
    MeasurementWindow,
    measured_positions_m,
    observation_shapes,
    stack_observations,
)

CFG = ScenarioConfig.paper(num_targets=3, window=4)
BS = np.asarray(CFG.bs_positions_m)


def make_meas(truth_m: np.ndarray, detected: np.ndarray, block: int, *, range_std_m: float = 0.05,
              angle_std_rad: float = 1e-3, offset_m: np.ndarray | None = None) -> Measurements:
    """Noise-free measurements of ``truth_m (I, 2)`` (+ an optional Cartesian offset) on the detected pairs."""
    pos = truth_m if offset_m is None else truth_m + offset_m
    rel = pos[None] - BS[:, None]
    rng_m = np.linalg.norm(rel, axis=-1)
    ang = np.arctan2(rel[..., 1], rel[..., 0])
    cov = np.zeros((*detected.shape, 2, 2))
    cov[..., 0, 0] = range_std_m**2
    cov[..., 1, 1] = angle_std_rad**2
    det = detected.astype(bool)
    return Measurements(assigned=det.copy(), detected=det, range_m=np.where(det, rng_m, 0.0),
                        angle_rad=np.where(det, ang, 0.0), snr_db=np.where(det, 20.0, 0.0),
                        cov=np.where(det[..., None, None], cov, 0.0), block=block).validate()


TRUTH = np.array([[50.0, 40.0], [200.0, 60.0], [120.0, 30.0]])


def test_shapes_and_dtypes_are_fixed_and_padding_leads() -> None:
    win = MeasurementWindow(CFG)
    win.reset(TRUTH)
    shapes = observation_shapes(CFG)
    obs = win.as_arrays()
    assert set(obs) == set(OBS_KEYS)
    for key in OBS_KEYS:
        assert obs[key].shape == shapes[key] and obs[key].dtype == np.float32
    assert obs["block_valid"].sum() == 0 and not obs["features"].any()
    det = np.zeros((CFG.num_bs, CFG.num_targets), bool)
    det[0, 0] = det[1, 1] = True
    win.push(make_meas(TRUTH, det, 1))
    obs = win.as_arrays()
    np.testing.assert_array_equal(obs["block_valid"], [0, 0, 0, 1])  # oldest first, current last
    assert obs["features"][:3].sum() == 0
    assert obs["features"].shape == (CFG.window, CFG.num_bs, CFG.num_targets, NUM_FEATURES)
    batch = stack_observations([obs, obs])
    assert batch["features"].shape == (2, *shapes["features"])


def test_features_hold_the_measurement_and_zeros_elsewhere() -> None:
    win = MeasurementWindow(CFG)
    win.reset(TRUTH)
    det = np.zeros((CFG.num_bs, CFG.num_targets), bool)
    det[1, 0] = True
    meas = make_meas(TRUTH, det, 1)
    f = win.block_features(meas)
    k = FEATURE_INDEX
    d = np.linalg.norm(TRUTH[0] - BS[1])
    t = np.arctan2(TRUTH[0, 1] - BS[1, 1], TRUTH[0, 0] - BS[1, 0])
    assert f[1, 0, k["detected"]] == 1 and f[1, 0, k["assigned"]] == 1
    assert f[1, 0, k["range"]] == pytest.approx(d / CFG.max_range_m, rel=1e-6)
    assert f[1, 0, k["angle"]] == pytest.approx(t / np.pi, rel=1e-6)
    np.testing.assert_allclose(f[1, 0, [k["rel_x"], k["rel_y"]]], (TRUTH[0] - BS[1]) / 300.0, rtol=1e-5)
    # measurement at the truth, anchor at the truth: zero residual
    np.testing.assert_allclose(f[1, 0, [k["res_x"], k["res_y"]]], 0.0, atol=1e-5)
    assert f[1, 0, k["log_std_range"]] == pytest.approx(np.log10(0.05), rel=1e-5)
    assert f[1, 0, k["log_std_cross"]] == pytest.approx(np.log10(d * 1e-3), rel=1e-5)
    assert f[1, 0, k["snr"]] == pytest.approx(20.0 / 30.0)
    other = np.ones((CFG.num_bs, CFG.num_targets), bool)
    other[1, 0] = False
    assert not f[other].any()
    assert np.all(np.isfinite(f))


def test_measurement_anchor_follows_measurements_and_rejects_far_outliers() -> None:
    win = MeasurementWindow(CFG, anchor="measurement")
    acq = TRUTH + 1.0
    win.reset(acq)
    np.testing.assert_allclose(win.as_arrays()["anchor"] * 300.0, acq, rtol=1e-6)
    det = np.zeros((CFG.num_bs, CFG.num_targets), bool)
    det[0, 0] = det[1, 0] = True   # target 0 measured by two BSs
    det[2, 1] = True               # target 1 measured with a 100 m outlier
    offset = np.zeros_like(TRUTH)
    offset[1] = [100.0, 0.0]
    win.push(make_meas(TRUTH, det, 1, offset_m=offset))
    anchor = win.anchor_m
    assert np.linalg.norm(anchor[0] - TRUTH[0]) < 0.1   # accurate measurements beat the 1.5 m prior
    np.testing.assert_allclose(anchor[1], acq[1])        # outlier gated out
    np.testing.assert_allclose(anchor[2], acq[2])        # not measured
    np.testing.assert_array_equal(win.anchor_age, [0, 1, 1])
    res = win.as_arrays()["features"][-1, 2, 1, [FEATURE_INDEX["res_x"], FEATURE_INDEX["res_y"]]]
    assert np.all(np.abs(res) <= 10.0)  # clipped


def test_range_only_measurement_does_not_drag_the_measurement_anchor_sideways() -> None:
    win = MeasurementWindow(CFG, anchor="measurement")
    win.reset(TRUTH)
    det = np.zeros((CFG.num_bs, CFG.num_targets), bool)
    det[0, 0] = True
    meas = make_meas(TRUTH, det, 1, angle_std_rad=1e4)
    bad_angle = meas.angle_rad.copy()
    bad_angle[0, 0] += 0.5  # angle useless (huge variance) and wrong
    meas = Measurements(meas.assigned, meas.detected, meas.range_m, bad_angle, meas.snr_db, meas.cov, 1)
    win.push(meas)
    assert np.linalg.norm(win.anchor_m[0] - TRUTH[0]) < 0.05


def test_ekf_anchor_is_the_ekf_estimate_and_prediction() -> None:
    win = MeasurementWindow(CFG, anchor="ekf")
    ekf = EKFEstimator(CFG)
    acq = TRUTH + 0.5
    win.reset(acq)
    ekf.reset(acq)
    obs = win.as_arrays()
    np.testing.assert_allclose(obs["anchor"] * 300.0, acq, rtol=1e-6)
    np.testing.assert_allclose(obs["anchor_next"] * 300.0, ekf.predicted_position(), rtol=1e-6)
    rng = np.random.default_rng(0)
    truth = TRUTH.copy()
    for q in range(1, 6):
        truth = truth + [1.0, 0.0]
        det = rng.random((CFG.num_bs, CFG.num_targets)) < 0.5
        det[:, 2] = False  # target 2 never measured: its age grows
        meas = make_meas(truth, det, q)
        win.push(meas)
        u_hat, u_next = ekf.update(meas)
    obs = win.as_arrays()
    np.testing.assert_allclose(obs["anchor"] * 300.0, u_hat, rtol=1e-6)
    np.testing.assert_allclose(obs["anchor_next"] * 300.0, u_next, rtol=1e-6)
    np.testing.assert_allclose(obs["anchor_log_std"],
                               np.log10(np.sqrt(np.trace(ekf.covariance[:, :2, :2], axis1=1, axis2=2))), rtol=1e-5)
    assert obs["anchor_age"][2] == pytest.approx(5 / CFG.window)
    with pytest.raises(ConfigError):
        MeasurementWindow(CFG, anchor="oracle")


def test_window_rolls_and_keeps_the_last_w_blocks() -> None:
    win = MeasurementWindow(CFG)
    win.reset(TRUTH)
    det = np.ones((CFG.num_bs, CFG.num_targets), bool)
    metas = [make_meas(TRUTH + 0.1 * q, det, q) for q in range(1, CFG.window + 3)]
    for m in metas:
        win.push(m)
    obs = win.as_arrays()
    assert obs["block_valid"].all() and win.num_valid == CFG.window
    for k, m in enumerate(metas[-CFG.window:]):
        np.testing.assert_array_equal(obs["features"][k], win.block_features(m))


def test_measured_positions_match_the_measurement_type() -> None:
    det = np.ones((CFG.num_bs, CFG.num_targets), bool)
    det[3, 2] = False
    meas = make_meas(TRUTH, det, 1)
    pos, cov = measured_positions_m(meas, BS)
    np.testing.assert_allclose(pos, meas.positions_m(BS), atol=1e-9)
    np.testing.assert_allclose(pos[det], np.broadcast_to(TRUTH, pos.shape)[det], atol=1e-9)
    assert not cov[3, 2].any()
    # the cross-range variance is d^2 var(theta)
    d = meas.range_m[0, 0]
    eig = np.linalg.eigvalsh(cov[0, 0])
    np.testing.assert_allclose(sorted(eig), sorted([0.05**2, (d * 1e-3) ** 2]), rtol=1e-6)


def test_misuse_raises_measurement_error() -> None:
    win = MeasurementWindow(CFG)
    with pytest.raises(MeasurementError):
        win.as_arrays()
    with pytest.raises(MeasurementError):
        win.reset(np.zeros((CFG.num_targets + 1, 2)))
    win.reset(TRUTH)
    with pytest.raises(MeasurementError):
        win.push(Measurements.empty(CFG.num_bs, CFG.num_targets + 1))


def test_window_module_imports_neither_torch_nor_ray() -> None:
    code = ("import sys, rl_isac.tracking.window; "
            "bad = [m for m in ('torch', 'ray') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
