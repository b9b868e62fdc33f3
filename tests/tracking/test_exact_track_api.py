"""EKFEstimator.export_tracks / load_tracks: a track moved into another estimator continues bit-identically."""

from __future__ import annotations

import numpy as np
import pytest

from rl_isac.controllers import make_controller
from rl_isac.errors import ConfigError
from rl_isac.network import CellFreeNetwork
from rl_isac.scenario import ScenarioConfig
from rl_isac.tracking.ekf import PAIR_FIELDS, TRACK_FIELDS, EKFEstimator, EKFSettings

CFG = ScenarioConfig.paper(8, fidelity="surrogate", num_blocks=40)


def _episode(seed: int, blocks: int):
    """Measurements of one ekf-milp episode and its acquisition."""
    cu = make_controller("ekf-milp", CFG)
    net = CellFreeNetwork(CFG)
    acq = net.reset(seed)
    action = cu.reset(acq)
    out = []
    for _ in range(blocks):
        meas = net.step(action.association, action.beams, predicted_positions_m=action.prediction_m)
        out.append(meas)
        action = cu.act(meas)
    return acq, out


def _same(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)


def test_loaded_tracks_continue_exactly_like_the_sender():
    acq, blocks = _episode(4, 40)
    identities = EKFSettings(resolve_identities=True)  # the identity fields move, so loading them matters
    sender = EKFEstimator(CFG, identities)
    sender.reset(acq)
    for meas in blocks[:15]:
        sender.update(meas)
    tracks = sender.export_tracks()
    assert set(tracks) == set(TRACK_FIELDS + PAIR_FIELDS)
    assert np.any(tracks["anchor_block"] > 0)  # the identity anchors moved on since reset: loading them matters
    receiver = EKFEstimator(CFG, identities)  # never reset
    receiver.load_tracks(tracks, block=sender.block)
    assert _same(receiver.export_tracks(), tracks) and receiver.block == sender.block
    assert np.array_equal(receiver.predicted_state(), sender.predicted_state())
    for meas in blocks[15:]:
        a, b = sender.update(meas), receiver.update(meas)
        assert all(np.array_equal(u, v) for u, v in zip(a, b))
        assert _same(receiver.export_tracks(), sender.export_tracks())
        assert np.array_equal(receiver.predicted_covariance(), sender.predicted_covariance())


def test_rows_restrict_the_pairwise_fields_and_missing_identity_fields_take_reset_values():
    acq, blocks = _episode(5, 10)
    ekf = EKFEstimator(CFG)
    ekf.reset(acq)
    for meas in blocks:
        ekf.update(meas)
    ekf._encounter[2, 0] = ekf._encounter[0, 2] = True  # a pending encounter between tracks 2 and 0
    ekf._same_blocks[2, 5] = 7
    full = ekf.export_tracks()
    part = ekf.export_tracks([2, 0, 5])
    rows = np.array([2, 0, 5])
    for key in TRACK_FIELDS:
        assert np.array_equal(part[key], full[key][rows])
    for key in PAIR_FIELDS:
        assert np.array_equal(part[key], full[key][np.ix_(rows, rows)])
    assert part["encounter"][0, 1] and part["same_blocks"][0, 2] == 7
    other = EKFEstimator(CFG)
    other.load_tracks({k: part[k] for k in ("x", "P", "missed")}, block=3)
    fresh = EKFEstimator(CFG)
    fresh.reset(part["x"][:, :2])
    ref = fresh.export_tracks()
    got = other.export_tracks()
    for key in ("anchor_m", "anchor_var_m2", "anchor_block") + PAIR_FIELDS:
        assert np.array_equal(got[key], ref[key]), key
    assert np.array_equal(got["x"], part["x"]) and np.array_equal(got["P"], part["P"]) and other.block == 3


def test_export_and_load_name_bad_input():
    ekf = EKFEstimator(CFG)
    ekf.reset(np.column_stack([np.linspace(30, 250, 8), np.full(8, 50.0)]))
    with pytest.raises(ConfigError, match="rows"):
        ekf.export_tracks([1, 1])
    with pytest.raises(ConfigError, match="rows"):
        ekf.export_tracks([8])
    tracks = ekf.export_tracks([0, 1])
    with pytest.raises(ConfigError, match="unknown"):
        ekf.load_tracks({**tracks, "velocity": np.zeros(2)}, block=1)
    with pytest.raises(ConfigError, match="required"):
        ekf.load_tracks({"x": tracks["x"], "P": tracks["P"]}, block=1)
    with pytest.raises(ConfigError, match=r"tracks\.P"):
        ekf.load_tracks({**tracks, "P": tracks["P"][:, :2, :2]}, block=1)
    bad = tracks["x"].copy()
    bad[1, 3] = np.nan
    with pytest.raises(ConfigError, match="finite"):
        ekf.load_tracks({**tracks, "x": bad}, block=1)
    with pytest.raises(ConfigError, match="block"):
        ekf.load_tracks(tracks, block=-1)
    assert ekf.export_tracks()["x"].shape == (8, 4)  # a refused load left the estimator unchanged


def test_first_peak_of_each_track_is_np_unique_return_index():
    from rl_isac.tracking.ekf import _first_of_each

    rng = np.random.default_rng(2)
    for _ in range(3000):
        values = rng.integers(0, rng.integers(1, 12), rng.integers(1, 25))
        got = _first_of_each(values)
        assert got.dtype == np.intp and np.array_equal(got, np.unique(values, return_index=True)[1])
