"""The batched EKF (:func:`rl_isac.tracking.ekf.update_many`, :meth:`MeasurementWindow.push_many`) is the loop of
single updates, bit for bit; the world's trusted measurements are valid; a foreign object is still checked."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rl_isac.errors import MeasurementError
from rl_isac.network import CellFreeNetwork
from rl_isac.physics.measurements import Measurements
from rl_isac.scenario import ScenarioConfig
from rl_isac.tracking.ekf import EKFEstimator, EKFSettings, update_many
from rl_isac.tracking.window import MeasurementWindow

STATE = ("_x", "_P", "missed", "rejected", "losses", "reacquired_after", "identity_swaps", "duplicates", "block",
         "_start_block", "_anchor_m", "_anchor_var_m2", "_anchor_block", "_encounter", "_same_blocks", "_apart_blocks",
         "_trusted_m", "_trusted_var_m2", "_trusted_block", "_search_block", "_search_heading_rad")


def _same_state(a: EKFEstimator, b: EKFEstimator) -> None:
    for key in STATE:
        va, vb = getattr(a, key), getattr(b, key)
        assert np.array_equal(va, vb), key  # bit for bit (array_equal: exact floats)
    assert np.array_equal(a.predicted_covariance(), b.predicted_covariance())


def _episodes(fidelity: str, num_targets: int, num_env: int, seed: int):
    """``num_env`` worlds of one scenario, reset, and a generator (the tests drive each world with the nearest
    association and beams toward its reference EKF's prediction, off by more in each further world: misses,
    searching tracks, re-initialisations)."""
    cfg = ScenarioConfig.paper(num_targets, fidelity=fidelity)
    nets = [CellFreeNetwork(cfg) for _ in range(num_env)]
    acqs = [net.reset(seed + k) for k, net in enumerate(nets)]
    rng = np.random.default_rng(seed)
    return cfg, nets, acqs, rng


@pytest.mark.parametrize("settings", [EKFSettings(), EKFSettings(merged_update=True, resolve_identities=True,
                                                                  speed_cap=1.2),
                                      EKFSettings(search_reseed=True)], ids=["default", "options", "reseed"])
def test_update_many_is_the_loop_of_updates_bit_for_bit(settings):
    cfg, nets, acqs, rng = _episodes("surrogate", 6, 4, seed=3)
    ref = [EKFEstimator(cfg, settings) for _ in nets]
    new = [EKFEstimator(cfg, settings) for _ in nets]
    for est_r, est_n, acq in zip(ref, new, acqs):
        est_r.reset(acq)
        est_n.reset(acq)
    searched = 0
    for q in range(40):
        if q == 15:  # one estimator restarts mid-way (an env's auto-reset): the batch mixes blocks
            ref[1].reset(nets[1].positions_m)
            new[1].reset(nets[1].positions_m)
        metas = []
        for k, (net, est) in enumerate(zip(nets, ref)):
            pred = est.predicted_position()
            aim = pred + rng.normal(0.0, 4.0 * k, pred.shape)
            metas.append(net.step(net.nearest_association(pred), net.beams_toward(aim), predicted_positions_m=pred))
        out_r = [est.update(m) for est, m in zip(ref, metas)]
        out_n = update_many(new, metas)
        for (u_r, n_r), (u_n, n_n), est_r, est_n in zip(out_r, out_n, ref, new):
            assert np.array_equal(u_r, u_n) and np.array_equal(n_r, n_n)
            _same_state(est_r, est_n)
        searched += sum(int(e.searching.sum()) for e in ref)
    assert searched > 0  # the searching tracks' logic ran


def test_update_many_with_empty_blocks_and_foreign_single_peak_blocks():
    """A block without any peak, and a caller's block with one peak per pair (P = 1) beside the world's P = 2
    blocks: still the loop's numbers."""
    cfg, nets, acqs, _ = _episodes("surrogate", 4, 3, seed=30)
    ref = [EKFEstimator(cfg) for _ in nets]
    new = [EKFEstimator(cfg) for _ in nets]
    for a, b, acq in zip(ref, new, acqs):
        a.reset(acq)
        b.reset(acq)
    for q in range(8):
        metas = [net.step(net.nearest_association(e.predicted_position()), net.beams_toward(e.predicted_position()),
                          predicted_positions_m=e.predicted_position()) for net, e in zip(nets, ref)]
        if q % 3 == 1:  # nothing measured in any env
            metas = [Measurements.empty(cfg.num_bs, cfg.num_targets, m.block, num_peaks=m.num_peaks) for m in metas]
        elif q % 3 == 2:  # env 0's block as a caller would build it: the (M, I) fields only (P = 1)
            m = metas[0]
            metas[0] = Measurements(m.assigned, m.detected, m.range_m, m.angle_rad, m.snr_db, m.cov, m.block)
            assert metas[0].num_peaks == 1 and metas[1].num_peaks == cfg.num_peaks > 1
        for e, m in zip(ref, metas):
            e.update(m)
        update_many(new, metas)
        for a, b in zip(ref, new):
            _same_state(a, b)


def test_update_many_groups_estimators_that_cannot_share_a_batch():
    """Other settings or another number of tracks: their own batch, still the loop's numbers."""
    cfg4, cfg6 = ScenarioConfig.paper(4), ScenarioConfig.paper(6)
    nets = [CellFreeNetwork(c) for c in (cfg4, cfg6, cfg4, cfg6)]
    acqs = [net.reset(10 + k) for k, net in enumerate(nets)]
    settings = [EKFSettings(), EKFSettings(), EKFSettings(speed_std_mps=None), EKFSettings()]
    ref = [EKFEstimator(net.cfg, s) for net, s in zip(nets, settings)]
    new = [EKFEstimator(net.cfg, s) for net, s in zip(nets, settings)]
    for a, b, acq in zip(ref, new, acqs):
        a.reset(acq)
        b.reset(acq)
    for _ in range(10):
        metas = [net.step(net.nearest_association(e.predicted_position()), net.beams_toward(e.predicted_position()),
                          predicted_positions_m=e.predicted_position()) for net, e in zip(nets, ref)]
        for e, m in zip(ref, metas):
            e.update(m)
        update_many(new, metas)
        for a, b in zip(ref, new):
            _same_state(a, b)


def test_push_many_is_the_loop_of_pushes_and_a_refused_block_changes_no_window():
    cfg, nets, acqs, rng = _episodes("surrogate", 4, 3, seed=20)
    ref = [MeasurementWindow(cfg) for _ in nets]
    new = [MeasurementWindow(cfg) for _ in nets]
    for a, b, acq in zip(ref, new, acqs):
        a.reset(acq)
        b.reset(acq)
    for _ in range(15):
        metas = [net.step(net.nearest_association(w.anchor_next_m), net.beams_toward(w.anchor_next_m),
                          predicted_positions_m=w.anchor_next_m) for net, w in zip(nets, ref)]
        for w, m in zip(ref, metas):
            w.push(m)
        MeasurementWindow.push_many(new, metas)
        for a, b, ob in zip(ref, new, MeasurementWindow.as_arrays_many(new)):
            oa = a.as_arrays()
            assert set(oa) == set(ob) and all(np.array_equal(oa[k], ob[k]) and oa[k].dtype == ob[k].dtype for k in oa)
            _same_state(a._ekf, b._ekf)
    # the last window's block is foreign and invalid: nothing changes in any window
    det = metas[2].detected.copy()
    det[~metas[2].assigned] = True
    bad = dataclasses.replace(metas[2], detected=det, range_m=np.where(det, 50.0, 0.0),
                              cov=np.where(det[..., None, None], 0.01 * np.eye(2), 0.0))
    before = [(w.as_arrays(), w._ekf.state) for w in new]
    with pytest.raises(MeasurementError, match="detected but not assigned"):
        MeasurementWindow.push_many(new, [metas[0], metas[1], bad])
    for w, (obs, x) in zip(new, before):
        after = w.as_arrays()
        assert all(np.array_equal(obs[k], after[k]) for k in obs) and np.array_equal(w._ekf.state, x)


@pytest.mark.parametrize("fidelity", ["surrogate", "signal"])
def test_world_output_is_trusted_and_valid(fidelity):
    """The world marks its own measurements validated (Measurements.trusted): they pass the full check; an object
    derived from one (a foreign caller's) is not marked and is checked in full."""
    net = CellFreeNetwork(ScenarioConfig.paper(4, fidelity=fidelity))
    acq = net.reset(4)
    for _ in range(5):
        m = net.step(net.nearest_association(acq), net.beams_toward(acq), predicted_positions_m=acq)
        assert m.is_validated
        m.validate()  # every check, in full
        acq = net.positions_m + 1.0
    copy = dataclasses.replace(m)
    assert not copy.is_validated
    copy.validate_once()
    assert copy.is_validated
