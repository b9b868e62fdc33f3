"""Tests of rl_isac.physics.surrogate: the Fisher-information fidelity against the signal-level one."""

from __future__ import annotations

import numpy as np
import pytest

from rl_isac.physics.arrays import beams_toward, dft_codebook
from rl_isac.physics.calibration import _run_case, calibration_scenario, crb_check
from rl_isac.physics.channel import received_amplitude
from rl_isac.physics.estimation import PairEstimator
from rl_isac.physics.surrogate import surrogate_measure


@pytest.mark.parametrize(("range_m", "angle_deg"), [(60.0, 45.0), (100.0, 90.0)])
def test_surrogate_rmse_is_within_25_percent_of_the_signal_level_on_the_same_geometry(range_m, angle_deg):
    angle = np.deg2rad(angle_deg)
    sig = _run_case(calibration_scenario(fidelity="signal"), range_m, angle, trials=200, seed=21)
    sur = _run_case(calibration_scenario(fidelity="surrogate"), range_m, angle, trials=400, seed=22)
    assert sig["snr_db"] == sur["snr_db"]  # same geometry, same link budget
    assert sig["detected_fraction"] == sur["detected_fraction"] == 1.0
    # RMSE of 200 (400) trials: ~5% (3.5%) spread each; 25% is a > 4-sigma band on the ratio.
    for key in ("range_rmse_m", "angle_rmse_rad"):
        assert sur[key] == pytest.approx(sig[key], rel=0.25), key


def test_surrogate_and_signal_detection_fractions_agree_at_moderate_snr():
    """About 12 dB integrated SNR: both detectors fire on most but not all blocks."""
    angle = np.deg2rad(45.0)
    sig = _run_case(calibration_scenario(fidelity="signal"), 130.0, angle, trials=200, seed=23)
    sur = _run_case(calibration_scenario(fidelity="surrogate"), 130.0, angle, trials=400, seed=24)
    assert 0.3 < sig["detected_fraction"] < 0.97
    assert sur["detected_fraction"] == pytest.approx(sig["detected_fraction"], abs=0.15)


def test_surrogate_measurements_are_seeded_and_well_formed():
    cfg = calibration_scenario(fidelity="surrogate")
    cb = dft_codebook(cfg.num_tx_antennas, cfg.codebook_size)
    est = PairEstimator(cfg, cb)
    num = 50
    rng = np.random.default_rng(0)
    range_m = rng.uniform(20, 200, num)
    u = rng.uniform(-0.8, 0.8, num)
    beams = beams_toward(u, cfg.codebook_size, cfg.num_tracking_symbols)
    args = (cfg, cb, range_m, u, np.ones(num), received_amplitude(cfg, range_m), beams, np.zeros(num),
            np.zeros(num), np.full(num, cfg.max_range_m), np.full(num, est.threshold_full))
    a = surrogate_measure(*args, rng=np.random.default_rng(1))
    b = surrogate_measure(*args, rng=np.random.default_rng(1))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    det = a["detected"]
    assert det.any() and (~det).any()  # near and far targets
    assert np.all(a["range_m"][~det] == 0) and np.all(a["cov"][~det] == 0)
    assert np.all(a["cov"][det][:, 0, 0] > 0) and np.all(a["cov"][det][:, 1, 1] > 0)
    assert np.all(np.abs(a["range_m"][det] - range_m[det]) < 6 * np.sqrt(a["cov"][det][:, 0, 0]))


def test_crb_check_reports_the_fields_the_cli_prints():
    out = crb_check(trials=20, surrogate_trials=40, ranges_m=(60.0,), angles_deg=(45.0,))
    assert len(out["cases"]) == 1
    case = out["cases"][0]
    stats = ("snr_db", "range_rmse_m", "range_crb_m", "angle_rmse_rad", "angle_crb_rad", "detected_fraction")
    assert case["range_m"] == 60.0 and case["angle_deg"] == 45.0
    for key in stats:
        assert np.isfinite(case[key]), key
        assert np.isfinite(case["surrogate"][key]), key
    assert case["checks"]["rule_applies"]
