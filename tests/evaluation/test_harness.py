"""The evaluation harness: required fields, determinism, honest failures, no partial JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rl_isac.cli import main
from rl_isac.controllers import CUAction, make_controller
from rl_isac.errors import ConfigError, ConstraintViolation
from rl_isac.evaluation.harness import (
    acquisition_label_errors,
    evaluate,
    loss_runs,
    measurement_nis_outside,
    summary_table,
    track_swaps,
    unlabelled_squared_errors,
    write_json_atomic,
)
from rl_isac.physics.measurements import Measurements
from rl_isac.scenario import ScenarioConfig
from rl_isac.seeds import EVAL_SEED_BASE, evaluation_seeds

REQUIRED = {"method", "targets", "episodes", "blocks", "seed", "fidelity", "rmse_m", "rmse_per_block_m",
            "pcrb_rmse_m", "violations", "missed_fraction", "decision_ms_p50", "decision_ms_p99", "lost_fraction",
            "track_losses", "reacquire_blocks_mean", "reacquire_blocks_max", "never_reacquired", "track_swaps",
            "meas_nis_outside_fraction", "pred_nis_outside_fraction", "pred_nis_outside_fraction_tracked"}


def test_evaluate_reports_every_required_field_with_one_rmse_per_block():
    r = evaluate("ekf-greedy", targets=4, episodes=2, blocks=12, seed=3, fidelity="surrogate", progress=False)
    assert REQUIRED <= set(r)
    assert len(r["rmse_per_block_m"]) == 12
    assert r["violations"] == 0
    assert 0 <= r["missed_fraction"] <= 1
    assert r["rmse_m"] > 0 and np.isfinite(r["rmse_m"])
    # The per-block RMSEs average (in the mean-square sense) to the overall RMSE.
    assert np.sqrt(np.mean(np.square(r["rmse_per_block_m"]))) == pytest.approx(r["rmse_m"], rel=1e-9)


def test_evaluate_same_seed_same_numbers_and_json_serialisable(tmp_path):
    a = evaluate("ekf-nearest", targets=4, episodes=1, blocks=10, seed=1, fidelity="surrogate", progress=False)
    b = evaluate("ekf-nearest", targets=4, episodes=1, blocks=10, seed=1, fidelity="surrogate", progress=False)
    for key in ("rmse_m", "rmse_per_block_m", "pcrb_rmse_m", "missed_fraction", "world_seeds"):
        assert a[key] == b[key]
    write_json_atomic(a, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["rmse_m"] == a["rmse_m"]


def test_rmse_stays_above_the_pcrb_for_a_good_tracker():
    r = evaluate("ekf-milp", targets=4, episodes=2, blocks=30, seed=0, fidelity="surrogate", progress=False)
    assert r["pcrb_rmse_m"] < r["rmse_m"] < 10 * r["pcrb_rmse_m"]


def test_milp_and_exhaustive_give_identical_rmse_on_the_same_seeds():
    kw = dict(targets=4, episodes=1, blocks=10, seed=0, fidelity="surrogate", progress=False)
    assert evaluate("ekf-milp", **kw)["rmse_m"] == evaluate("ekf-exhaustive", **kw)["rmse_m"]


def test_evaluation_seeds_are_disjoint_from_training_seeds():
    seeds = evaluation_seeds(5, 4)
    assert len(set(seeds)) == 4 and min(seeds) >= EVAL_SEED_BASE


def test_unknown_method_names_the_known_ones():
    with pytest.raises(ConfigError, match="ekf-milp"):
        make_controller("no-such-method", ScenarioConfig.paper(4))


class _BreaksAtBlock3:
    """A CU that drops target 0 from every BS at block 3 (breaks (5d))."""

    name = "broken"

    def __init__(self, cfg):
        self.inner = make_controller("ekf-nearest", cfg)
        self.calls = 0

    def reset(self, acq):
        return self.inner.reset(acq)

    def act(self, meas):
        self.calls += 1
        action = self.inner.act(meas)
        if self.calls == 3:
            assoc = action.association.copy()
            assoc[:, 0] = False
            action = CUAction(assoc, action.beams, action.estimate_m, action.prediction_m)
        return action


class _LosesTarget0:
    """``ekf-milp`` whose estimate and prediction of target 0 jump 200 m away from block ``at`` on (a lost track)."""

    name = "loses-0"

    def __init__(self, cfg, at: int = 5):
        self.inner = make_controller("ekf-milp", cfg)
        self.estimator = self.inner.estimator  # the harness reads the predicted covariance here
        self.at, self.calls = at, 0

    def reset(self, acq):
        self.calls = 0
        return self.inner.reset(acq)

    def act(self, meas):
        self.calls += 1
        a = self.inner.act(meas)
        if self.calls < self.at:
            return a
        est, pred = a.estimate_m.copy(), np.asarray(a.prediction_m, float).copy()
        est[0] += 200.0
        pred[0] += 200.0
        return CUAction(a.association, a.beams, est, pred)


def test_prediction_nis_of_tracked_targets_leaves_out_lost_tracks():
    """A lost track's prediction is off by metres whatever the motion model: ``pred_nis_outside_fraction``
    counts it, ``pred_nis_outside_fraction_tracked`` (blocks whose track held at the block before) does not."""
    cfg = ScenarioConfig.paper(4, fidelity="surrogate")
    r = evaluate("loses-0", cfg=cfg, episodes=2, blocks=40, seed=3, progress=False, controller=_LosesTarget0(cfg))
    plain, tracked = r["pred_nis_outside_fraction"], r["pred_nis_outside_fraction_tracked"]
    lost = (40 - 5) / 40 / 4  # target 0's share of the target-blocks after the jump
    assert plain >= 0.95 * lost, plain
    assert tracked <= 0.05, tracked  # the tracker's own (a turn or two outside in 320 target-blocks)
    assert r["lost_fraction"] >= 0.95 * lost


def test_a_constraint_violation_stops_the_run_and_writes_nothing(tmp_path):
    cfg = ScenarioConfig.paper(4, fidelity="surrogate")
    with pytest.raises(ConstraintViolation, match=r"\(5d\)"):
        evaluate("broken", cfg=cfg, episodes=1, blocks=10, progress=False, controller=_BreaksAtBlock3(cfg))


def test_nan_estimate_is_rejected():
    cfg = ScenarioConfig.paper(4, fidelity="surrogate")

    class NanCU(_BreaksAtBlock3):
        def act(self, meas):
            a = self.inner.act(meas)
            return CUAction(a.association, a.beams, np.full_like(a.estimate_m, np.nan), a.prediction_m)

    with pytest.raises(ValueError, match="finite"):
        evaluate("nan", cfg=cfg, episodes=1, blocks=3, progress=False, controller=NanCU(cfg))


def test_cli_evaluate_writes_json_and_an_error_leaves_no_file(tmp_path, capsys):
    out = tmp_path / "ok.json"
    rc = main(["evaluate", "--method", "ekf-greedy", "--targets", "4", "--episodes", "1", "--blocks", "5",
               "--fidelity", "surrogate", "--json", str(out)])
    assert rc == 0 and json.loads(out.read_text())["blocks"] == 5
    assert "rmse_m" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    rc = main(["evaluate", "--method", "nope", "--episodes", "1", "--blocks", "5", "--json", str(bad)])
    assert rc == 2 and not bad.exists()
    assert "unknown method" in capsys.readouterr().err


def test_cli_rejects_an_infeasible_scenario_with_the_rule(capsys):
    rc = main(["simulate", "--targets", "13", "--blocks", "2", "--fidelity", "surrogate"])
    assert rc == 2
    assert "(5d)" in capsys.readouterr().err


def test_cli_simulate_prints_per_target_rmse(tmp_path, capsys):
    out = tmp_path / "sim.json"
    assert main(["simulate", "--targets", "4", "--blocks", "5", "--fidelity", "signal", "--json", str(out)]) == 0
    assert "per target" in capsys.readouterr().out
    assert json.loads(out.read_text())["verb"] == "simulate"


def test_loss_runs_count_reacquired_and_open_losses():
    lost = np.zeros((10, 3), bool)
    lost[2:5, 0] = True  # re-acquired after 3 blocks
    lost[7:, 0] = True  # still lost at the end
    lost[0:1, 1] = True  # 1 block
    closed, still_open = loss_runs(lost)
    assert sorted(closed) == [1, 3] and still_open == 1


def test_track_swaps_counts_tracks_ending_on_another_target():
    truth = np.array([[0.0, 0.0], [20.0, 0.0], [50.0, 50.0]])
    est = np.array([[19.0, 0.0], [20.5, 0.0], [58.0, 50.0]])  # track 0 on target 1; track 2 lost, nearest own
    assert track_swaps(truth, est) == 1


def test_acquisition_label_errors_flag_targets_whose_acquisition_points_to_another():
    truth = np.array([[0.0, 0.0], [2.0, 0.0], [50.0, 50.0]])
    good = truth + np.array([[0.4, 0.3], [-0.5, 0.2], [1.5, -1.0]])  # noisy, but each nearest its own target
    assert not acquisition_label_errors(good, truth).any()
    crossed = truth + np.array([[1.6, 0.0], [-1.5, 0.1], [0.0, 0.0]])  # 0 and 1 each nearer the other target
    assert acquisition_label_errors(crossed, truth).tolist() == [True, True, False]


def test_unlabelled_errors_ignore_a_swap_but_not_a_lost_track():
    truth = np.array([[0.0, 0.0], [20.0, 0.0], [50.0, 50.0]])
    swapped = np.array([[20.1, 0.0], [0.0, 0.2], [50.0, 50.0]])  # tracks 0 and 1 on each other's target
    np.testing.assert_allclose(unlabelled_squared_errors(truth, swapped), [0.04, 0.01, 0.0])
    lost = np.array([[0.3, 0.0], [20.0, 0.0], [60.0, 50.0]])  # track 2 10 m off: lost either way
    np.testing.assert_allclose(unlabelled_squared_errors(truth, lost), [0.09, 0.0, 100.0])


def test_measurement_nis_uses_the_nearest_target_and_the_reported_covariance():
    bs = np.array([[0.0, 0.0]])
    truth = np.array([[30.0, 40.0], [60.0, 80.0]])  # ranges 50 and 100 m, same angle
    m = Measurements.empty(1, 2, num_peaks=2)
    valid, rng_, ang, cov = m.peak_valid.copy(), m.peak_range_m.copy(), m.peak_angle_rad.copy(), m.peak_cov.copy()
    valid[0, 0, :] = True
    rng_[0, 0] = [100.1, 50.0 + 1.0]  # peak 0: target 1's echo, 1 sigma; peak 1: target 0's, 10 sigma
    ang[0, 0] = np.arctan2(40.0, 30.0)
    cov[0, 0] = np.diag([0.1**2, 1e-4])
    meas = Measurements(m.assigned | valid[..., 0], valid[..., 0].copy(), rng_[..., 0].copy(), ang[..., 0].copy(),
                        m.snr_db, cov[..., 0, :, :].copy(), 1, valid, rng_, ang, m.peak_snr_db, cov)
    assert measurement_nis_outside(meas, bs, truth) == (2, 1)


@pytest.mark.parametrize(("targets", "episodes"), [(4, 16), (8, 8)])
def test_signal_level_peaks_are_honest_in_closed_loop(targets, episodes):
    """Issue 7's calibration criterion: in closed loop (``ekf-milp`` at the signal level, its own beams and gates),
    the peaks outside the 99.9 % gate against the truth are at most 2x nominal (0.2 %). Before the front-end fixes
    of c99e72f they were 0.5-1.1 % (``results/tracks/nis_breakdown.txt``), before the symbol whitening 0.2-0.3 %;
    here 0.15 % / 0.14 % (seed 5, a seed no table reports; about 1.4 peaks per target-block), with the code before
    the whitening (8efeecc) 0.28 % / 0.30 %: this test failed there."""
    r = evaluate("ekf-milp", targets=targets, episodes=episodes, blocks=100, seed=5, fidelity="signal",
                 progress=False)
    assert r["meas_nis_outside_fraction"] <= 2 * (1 - 0.999), r["meas_nis_outside_fraction"]


def test_track_metrics_are_in_the_result_and_the_summary():
    r = evaluate("ekf-milp", targets=4, episodes=2, blocks=15, seed=2, fidelity="surrogate", progress=False)
    assert r["track_losses"] >= r["never_reacquired"] >= 0 and r["track_swaps"] >= 0
    assert r["acquisition_ambiguous_targets"] >= 0 and 0 <= r["lost_fraction_unambiguous"] <= 1
    assert r["rmse_unlabelled_m"] <= r["rmse_m"] + 1e-12 and 0 <= r["lost_fraction_unlabelled"] <= 1
    per_episode = np.asarray(r["rmse_unlabelled_per_episode_m"])
    assert per_episode.shape == (2,) and np.all(per_episode <= np.asarray(r["rmse_per_episode_m"]) + 1e-12)
    assert np.sqrt(np.mean(per_episode**2)) == pytest.approx(r["rmse_unlabelled_m"])
    assert 0 <= r["meas_nis_outside_fraction"] < 0.05 and 0 <= r["pred_nis_outside_fraction"] < 0.05
    assert "swaps" in summary_table([r]) and "nis_z" in summary_table([r])
