"""Tests of rl_isac.network: the world (truth + BS front ends), its action checks and determinism."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from rl_isac.association.constraints import check_association
from rl_isac.errors import ConstraintViolation, MeasurementError
from rl_isac.network import CellFreeNetwork
from rl_isac.physics.channel import geometry
from rl_isac.physics.measurements import Measurements
from rl_isac.scenario import ScenarioConfig

FIDELITIES = ["signal", "surrogate"]
FIELDS = ("assigned", "detected", "range_m", "angle_rad", "snr_db", "cov")


def _net(fidelity="surrogate", num_targets=4, seed=0, **overrides):
    net = CellFreeNetwork(ScenarioConfig.paper(num_targets, fidelity=fidelity, **overrides))
    acq = net.reset(seed)
    return net, acq


def _run(net, acq, num_blocks, *, baseline=True):
    """Run ``num_blocks`` with the nearest-BS baseline (or a fixed alternative association) and good beams.

    Returns the list of measurements and the true positions after each block, ``(Q, I, 2)``.
    """
    meas, truth = [], []
    pred = acq
    for _ in range(num_blocks):
        if baseline:
            association = net.nearest_association(pred)
        else:  # a different feasible association: targets round-robin over the BSs
            association = np.zeros((net.cfg.num_bs, net.cfg.num_targets), bool)
            association[np.arange(net.cfg.num_targets) % net.cfg.num_bs, np.arange(net.cfg.num_targets)] = True
        m = net.step(association, net.beams_toward(pred), predicted_positions_m=pred if baseline else None)
        meas.append(m)
        truth.append(net.positions_m.copy())
        pred = net.positions_m + net.velocities_mps * net.cfg.block_duration_s
    return meas, np.stack(truth)


# ---------------------------------------------------------------------------------------------- episode
def test_reset_returns_an_acquisition_near_the_truth_and_block_zero():
    net, acq = _net(num_targets=8, seed=3)
    assert net.block == 0
    assert acq.shape == (8, 2)
    err = acq - net.positions_m
    assert 0 < np.abs(err).max() < 5 * net.cfg.acquisition_std_m
    width, height = net.cfg.area_size_m
    assert np.all((net.positions_m > 0) & (net.positions_m < [width, height]))


def test_step_advances_the_block_and_moves_targets_by_v_dt_or_less():
    net, acq = _net()
    before = net.positions_m.copy()
    m = net.step(net.nearest_association(acq), net.beams_toward(acq), predicted_positions_m=acq)
    assert m.block == net.block == 1
    moved = np.linalg.norm(net.positions_m - before, axis=1)
    assert np.all(moved <= net.cfg.step_m + 1e-9)
    m2 = net.measure(net.nearest_association(acq), net.beams_toward(acq))
    assert m2.block == net.block == 1  # measure() does not advance time


@pytest.mark.parametrize("fidelity", FIDELITIES)
def test_step_before_reset_raises(fidelity):
    net = CellFreeNetwork(ScenarioConfig.paper(4, fidelity=fidelity))
    association = np.zeros((6, 4), bool)
    association[[0, 1, 2, 3], [0, 1, 2, 3]] = True
    beams = np.zeros((6, 4, 4, 2), int)
    with pytest.raises(RuntimeError, match="reset"):
        net.step(association, beams)
    with pytest.raises(RuntimeError, match="reset"):
        net.measure(association, beams)


# ---------------------------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("fidelity", FIDELITIES)
def test_same_seed_gives_identical_arrays(fidelity):
    runs = []
    for _ in range(2):
        net, acq = _net(fidelity, num_targets=6, seed=42)
        meas, truth = _run(net, acq, 4)
        runs.append((acq, meas, truth))
    (acq_a, meas_a, truth_a), (acq_b, meas_b, truth_b) = runs
    np.testing.assert_array_equal(acq_a, acq_b)
    np.testing.assert_array_equal(truth_a, truth_b)
    for ma, mb in zip(meas_a, meas_b):
        for name in FIELDS:
            np.testing.assert_array_equal(getattr(ma, name), getattr(mb, name), err_msg=name)
        assert ma.block == mb.block


@pytest.mark.parametrize("fidelity", FIDELITIES)
def test_different_seeds_give_different_episodes(fidelity):
    net_a, acq_a = _net(fidelity, seed=1)
    net_b, acq_b = _net(fidelity, seed=2)
    assert not np.array_equal(net_a.positions_m, net_b.positions_m)
    meas_a, _ = _run(net_a, acq_a, 2)
    meas_b, _ = _run(net_b, acq_b, 2)
    assert not np.array_equal(meas_a[-1].range_m, meas_b[-1].range_m)


def test_reset_with_the_same_seed_restarts_the_same_episode():
    net, acq = _net("signal", seed=7)
    first, truth = _run(net, acq, 3)
    acq2 = net.reset(7)
    np.testing.assert_array_equal(acq, acq2)
    again, truth2 = _run(net, acq2, 3)
    np.testing.assert_array_equal(truth, truth2)
    np.testing.assert_array_equal(first[-1].range_m, again[-1].range_m)


def test_trajectories_depend_neither_on_fidelity_nor_on_the_actions():
    net_sig, acq_sig = _net("signal", num_targets=6, seed=5)
    net_sur, acq_sur = _net("surrogate", num_targets=6, seed=5)
    np.testing.assert_array_equal(acq_sig, acq_sur)
    _, truth_sig = _run(net_sig, acq_sig, 6, baseline=True)
    _, truth_sur = _run(net_sur, acq_sur, 6, baseline=False)  # other association, beams, no prediction
    np.testing.assert_array_equal(truth_sig, truth_sur)


# ---------------------------------------------------------------------------------------------- outputs
@pytest.mark.parametrize("fidelity", FIDELITIES)
def test_world_output_validates_and_only_assigned_pairs_carry_measurements(fidelity):
    net, acq = _net(fidelity, num_targets=8, seed=9)
    meas, _ = _run(net, acq, 5)
    for m in meas:
        assert isinstance(m, Measurements)
        assert m.validate() is m
        assert m.range_m.shape == (6, 8) and m.cov.shape == (6, 8, 2, 2)
        assert np.all(m.range_m[~m.assigned] == 0) and np.all(m.snr_db[~m.assigned] == 0)
        assert np.all(m.cov[~m.detected] == 0)
    assert sum(m.detected.sum() for m in meas) > 0.5 * sum(m.assigned.sum() for m in meas)


@pytest.mark.parametrize("fidelity", FIDELITIES)
def test_isolated_detections_are_consistent_with_truth_and_their_covariance(fidelity):
    """Detections of targets with no other target in the same beam and range gate lie within 6 sigma.

    (Two targets in one beam and gate are not resolved: the stronger echo wins, documented in estimation.)
    """
    net, acq = _net(fidelity, num_targets=8, seed=11)
    cfg = net.cfg
    count = 0
    pred = acq
    for _ in range(10):
        m = net.step(net.nearest_association(pred), net.beams_toward(pred), predicted_positions_m=pred)
        range_m, angle = geometry(net.bs_positions_m, net.positions_m)
        u = np.cos(angle)
        crowded = ((np.abs(range_m[:, :, None] - range_m[:, None, :]) < 2 * cfg.range_gate_m)
                   & (np.abs(u[:, :, None] - u[:, None, :]) < 4 / cfg.codebook_size)).sum(-1) > 1
        det = m.detected & ~crowded
        z_r = (m.range_m[det] - range_m[det]) / np.sqrt(m.cov[det][:, 0, 0])
        z_a = (m.angle_rad[det] - angle[det]) / np.sqrt(m.cov[det][:, 1, 1])
        assert np.all(np.abs(z_r) < 6) and np.all(np.abs(z_a) < 6)
        count += det.sum()
        pred = net.positions_m + net.velocities_mps * cfg.block_duration_s
    assert count > 50


def test_signal_world_with_fewer_targets_than_rf_chains():
    net, acq = _net("signal", num_targets=1, seed=0)
    association = np.zeros((6, 1), bool)
    association[:, 0] = True  # every BS tracks the one target on one of its two chains
    m = net.step(association, net.beams_toward(acq), predicted_positions_m=acq)
    m.validate()
    assert m.detected.any()


def test_large_preset_world_steps_with_the_baseline():
    net = CellFreeNetwork(ScenarioConfig.large(fidelity="surrogate"))
    acq = net.reset(0)
    association = net.nearest_association(acq)
    check_association(association, net.cfg.num_rf, shape=(12, 24))
    m = net.step(association, net.beams_toward(acq), predicted_positions_m=acq)
    assert m.validate().range_m.shape == (12, 24)


def test_nearest_association_is_feasible_and_uses_every_chain():
    net, acq = _net(num_targets=8, seed=4)
    association = net.nearest_association(acq)
    check_association(association, net.cfg.num_rf, shape=(6, 8))
    np.testing.assert_array_equal(association.sum(axis=1), net.cfg.num_rf)


def test_expected_information_is_symmetric_positive_semidefinite():
    net, acq = _net(num_targets=4, seed=4)
    info = net.expected_information(acq, net.beams_toward(acq))
    assert info.shape == (6, 4, 2, 2)
    np.testing.assert_allclose(info, np.swapaxes(info, -1, -2))
    assert np.all(np.linalg.eigvalsh(info) > -1e-9 * np.abs(info).max())


def test_best_beam_index_points_at_the_target():
    net, acq = _net(num_targets=4, seed=4)
    best = net.best_beam_index(net.positions_m)
    u = net.spatial_frequency(net.positions_m)
    dirs = -1 + (2 * np.arange(32) + 1) / 32
    assert np.all(np.abs(dirs[best] - u) <= 1 / 32 + 1e-12)


# ---------------------------------------------------------------------------------------------- (5c)-(5f)
def _valid_action(net, acq):
    return net.nearest_association(acq).copy(), net.beams_toward(acq).copy()


def _violations():
    """(name, constraint, mutate(association, beams) -> (association, beams))."""

    def over_chains(a, b):
        a[0, :3] = True  # BS 0 tracks 3 > N_RF = 2 targets
        return a, b

    def uncovered(a, b):
        a[:, 2] = False
        return a, b

    def non_binary(a, b):
        a = a.astype(float)
        a[a == 1] = 2.0
        return a, b

    def fractional(a, b):
        a = a.astype(float)
        a[np.nonzero(a)[0][0], np.nonzero(a)[1][0]] = 0.5
        return a, b

    def wrong_assoc_shape(a, b):
        return a[:, :3], b

    def beam_too_large(a, b):
        m, i = np.argwhere(a)[0]
        b[m, i, 1, 0] = 32
        return a, b

    def beam_negative(a, b):
        m, i = np.argwhere(a)[0]
        b[m, i, 0, 1] = -1
        return a, b

    def beams_wrong_shape(a, b):
        return a, b[..., :3, :]

    def beams_missing_rx(a, b):
        return a, b[..., :1]

    def beams_not_integer(a, b):
        b = b.astype(float)
        b[tuple(np.argwhere(a)[0])][0, 0] += 0.5
        return a, b

    return [("(5c)", over_chains), ("(5d)", uncovered), ("(5e)", non_binary), ("(5e)", fractional),
            ("(5e)", wrong_assoc_shape), ("(5f)", beam_too_large), ("(5f)", beam_negative),
            ("(5f)", beams_wrong_shape), ("(5f)", beams_missing_rx), ("(5f)", beams_not_integer)]


@pytest.mark.parametrize("fidelity", FIDELITIES)
@pytest.mark.parametrize(("constraint", "mutate"), _violations(), ids=[f.__name__ for _, f in _violations()])
def test_step_rejects_an_action_that_breaks_a_constraint_and_leaves_the_world_untouched(fidelity, constraint,
                                                                                         mutate):
    net, acq = _net(fidelity, num_targets=4, seed=2)
    association, beams = mutate(*_valid_action(net, acq))
    before = (net.positions_m.copy(), net.headings_rad.copy(), net.block)
    with pytest.raises(ConstraintViolation) as info:
        net.step(association, beams, predicted_positions_m=acq)
    assert info.value.constraint == constraint
    assert constraint in str(info.value)
    np.testing.assert_array_equal(net.positions_m, before[0])
    np.testing.assert_array_equal(net.headings_rad, before[1])
    assert net.block == before[2]
    # The world still runs after a rejected action, as if it had not been offered.
    net.step(*_valid_action(net, acq), predicted_positions_m=acq).validate()


def test_checks_still_apply_after_a_valid_action_was_accepted_and_remembered():
    """The world caches validated associations: a known association with bad beams, or a bad association
    offered twice, must still be rejected."""
    net, acq = _net("signal", num_targets=4, seed=2)
    association, beams = _valid_action(net, acq)
    net.step(association, beams, predicted_positions_m=acq)
    bad_beams = beams.copy()
    m, i = np.argwhere(association)[0]
    bad_beams[m, i, 2, 1] = -3
    with pytest.raises(ConstraintViolation, match="5f"):
        net.step(association, bad_beams)
    bad_beams[m, i, 2, 1] = 40
    with pytest.raises(ConstraintViolation, match="5f"):
        net.measure(association, bad_beams)
    over = association.copy()
    over[0, :3] = True
    for _ in range(2):
        with pytest.raises(ConstraintViolation, match="5c"):
            net.step(over, beams)
    association[:] = False  # the caller reuses its array: the world must not keep a view of it
    with pytest.raises(ConstraintViolation, match="5d"):
        net.step(association, beams)


def test_constraint_messages_name_the_offending_bs_and_target():
    net, acq = _net(num_targets=4, seed=2)
    association, beams = _valid_action(net, acq)
    association[0, :3] = True
    with pytest.raises(ConstraintViolation, match="BS 0"):
        net.step(association, beams)
    association, beams = _valid_action(net, acq)
    association[:, 2] = False
    with pytest.raises(ConstraintViolation, match="2"):
        net.step(association, beams)


def test_beams_of_unassigned_pairs_are_ignored():
    net, acq = _net(num_targets=4, seed=2)
    association, beams = _valid_action(net, acq)
    beams[~association] = 99  # outside the codebook, but unused
    net.step(association, beams, predicted_positions_m=acq).validate()


def test_integer_valued_float_actions_are_accepted():
    net, acq = _net(num_targets=4, seed=2)
    association, beams = _valid_action(net, acq)
    net.step(association.astype(float), beams.astype(float), predicted_positions_m=acq).validate()


def test_predicted_positions_of_the_wrong_shape_are_rejected():
    net, acq = _net(num_targets=4, seed=2)
    association, beams = _valid_action(net, acq)
    with pytest.raises(ValueError, match="predicted_positions_m"):
        net.step(association, beams, predicted_positions_m=acq[:3])
    bad = acq.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="predicted_positions_m"):
        net.step(association, beams, predicted_positions_m=bad)


def test_validate_raises_on_nan_in_a_detected_entry_of_world_output():
    net, acq = _net("signal", num_targets=4, seed=2)
    m = net.step(*_valid_action(net, acq), predicted_positions_m=acq)
    m.validate()
    bs, tgt = np.argwhere(m.detected)[0]
    m.range_m[bs, tgt] = np.nan
    with pytest.raises(MeasurementError):
        m.validate()


# ---------------------------------------------------------------------------------------------- imports
def test_world_and_physics_import_neither_ray_nor_torch():
    code = (
        "import sys\n"
        "import rl_isac.network, rl_isac.physics.estimation, rl_isac.physics.surrogate\n"
        "import rl_isac.physics.calibration, rl_isac.physics.fisher, rl_isac.scenario\n"
        "from rl_isac.scenario import ScenarioConfig\n"
        "net = rl_isac.network.CellFreeNetwork(ScenarioConfig.paper(4))\n"
        "acq = net.reset(0)\n"
        "net.step(net.nearest_association(acq), net.beams_toward(acq), predicted_positions_m=acq)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
