"""Mechanisms of lost tracks found on development worlds (``/work/coord/tracks_findings.md``), each as a
scripted scenario that fails without its fix: range-only (endfire) peaks, an identity swap in a
start-up encounter, and a coalesced (duplicate) track."""

from __future__ import annotations

import numpy as np

from rl_isac.scenario import ScenarioConfig
from rl_isac.tracking import EKFEstimator, EKFSettings
from rl_isac.tracking.data_association import CHI2_GATE_999
from rl_isac.tracking.ekf import update_range, update_range_angle
from rl_isac.tracking.identity import retrodiction_cost, should_swap
from tests.tracking.test_data_association import _peaks_block

BIG_ANGLE_STD = 1.0  # rad: a peak at a BS's endfire (its angle is useless)


def _truths(start, vel, blocks, dt):
    return [np.asarray(start, float) + np.asarray(vel, float) * dt * q for q in range(1, blocks + 1)]


def _run(est, truth, entries, confuse_at=None):
    """Feed ``entries(q, truth_q)`` block by block; ``confuse_at``: after that block exchange the states of
    tracks 0 and 1 (what a wrong assignment of the merged echoes does, as on the development worlds)."""
    errs = []
    for q, t in enumerate(truth, 1):
        est.block_prediction_m = est.predicted_position()  # where the beams of block q point
        u_hat, _ = est.update(_peaks_block(est.cfg, entries(q, t), block=q))
        if q == confuse_at:
            est._x[[0, 1]], est._P[[0, 1]] = est._x[[1, 0]], est._P[[1, 0]]
            est._pred = None
            u_hat = est.state[:, :2]
        errs.append(np.linalg.norm(u_hat - t, axis=1))
    return np.array(errs)


def test_range_update_is_the_limit_of_a_range_angle_update_with_no_angle_information():
    x = np.array([[60.0, 20.0, 3.0, -1.0]])
    P = np.diag([2.0, 1.5, 4.0, 4.0])[None]
    bs = np.array([0.0, 0.0])
    z = np.array([[np.hypot(61.0, 20.5), np.arctan2(20.5, 61.0)]])
    x1, P1 = update_range(x, P, z[:, 0], np.array([0.04]), bs)
    x2, P2 = update_range_angle(x, P, z, np.diag([0.04, 1e12])[None], bs)
    np.testing.assert_allclose(x1, x2, atol=1e-6)
    np.testing.assert_allclose(P1, P2, atol=1e-6)


def test_a_target_at_the_endfire_of_its_bss_is_held_by_their_ranges():
    """Target 0 runs along the bottom edge (y = 3 m): BSs 0 and 1 see it at endfire (range-only peaks) every
    block, BS 3 measures it fully only every 5th block. Dropping the range-only peaks (the earlier rule)
    leaves the track without a measurement for 4 blocks in 5: it goes searching every time; using their
    ranges keeps it on track and never searching."""
    cfg = ScenarioConfig.paper(4)
    start = np.array([[60.0, 3.0], [120.0, 60.0], [220.0, 60.0], [140.0, 30.0]])
    vel = np.array([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]]) * cfg.speed_mps
    truth = _truths(start, vel, 40, cfg.block_duration_s)

    def entries(q, t):
        out = [(0, 0, 0, t[0], 0.05, BIG_ANGLE_STD), (1, 0, 0, t[0], 0.05, BIG_ANGLE_STD),
               (4, 1, 0, t[1], 0.05, 0.003), (2, 2, 0, t[2], 0.05, 0.003), (4, 3, 0, t[3], 0.05, 0.003)]
        if q % 5 == 0:
            out.append((3, 0, 0, t[0], 0.05, 0.003))
        return out

    used = EKFEstimator(cfg, EKFSettings(range_only_peaks=True))
    used.reset(start)
    err_used = _run(used, truth, entries)
    dropped = EKFEstimator(cfg, EKFSettings(range_only_peaks=False))
    dropped.reset(start)
    _run(dropped, truth, entries)
    assert used.losses == 0 and used.missed.max() == 0
    assert err_used[:, 0].max() < 0.5
    assert dropped.losses >= 3  # searching again and again with a correct prediction


def _crossing(cfg, blocks=30):
    """Targets 0 and 1 start 4 m apart on the same line and run head-on through each other (cross at block 2);
    targets 2 and 3 far away."""
    start = np.array([[60.0, 40.0], [64.0, 40.0], [220.0, 60.0], [140.0, 20.0]])
    vel = np.array([[1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]]) * cfg.speed_mps
    return start, _truths(start, vel, blocks, cfg.block_duration_s)


def _crossing_entries(cfg, est):
    """Pairs (BS 0, track 0) and (BS 3, track 1) aim at the tracks' predictions: unresolved targets give one
    merged peak; resolved ones, the target nearest the prediction as peak 0 and the other as peak 1 while
    both are inside the beams and gate (10 m)."""
    def entries(q, t):
        out = [(2, 2, 0, t[2], 0.05, 0.003), (4, 3, 0, t[3], 0.05, 0.003)]
        sep = np.linalg.norm(t[0] - t[1])
        for bs, label in ((0, 0), (3, 1), (1, 0), (5, 1)):
            if sep < cfg.range_resolution_m:  # unresolved: one merged peak per look
                out.append((bs, label, 0, t[:2].mean(axis=0), 0.05, 0.003))
                continue
            d = np.linalg.norm(t[:2] - est.block_prediction_m[label], axis=1)
            order = np.argsort(d)
            out.append((bs, label, 0, t[order[0]], 0.05, 0.003))
            if sep < 10.0:
                out.append((bs, label, 1, t[order[1]], 0.05, 0.003))
        return out

    return entries


def test_tracks_that_swap_in_a_start_up_crossing_get_their_identities_back():
    """Two tracks confused while their targets were unresolved (states exchanged in the last merged block,
    velocities still unknown) each follow the other's target for good without the identity rule (each is
    consistent with every later peak). Retrodicting both to where they were before the encounter (the
    acquisition) swaps them back as soon as the targets are apart and the velocities known."""
    cfg = ScenarioConfig.paper(4)
    start, truth = _crossing(cfg)
    plain = EKFEstimator(cfg, EKFSettings(resolve_identities=False))
    plain.reset(start)
    err_plain = _run(plain, truth, _crossing_entries(cfg, plain), confuse_at=3)
    fixed = EKFEstimator(cfg, EKFSettings(resolve_identities=True))
    fixed.reset(start)
    err_fixed = _run(fixed, truth, _crossing_entries(cfg, fixed), confuse_at=3)
    assert err_plain[-10:, :2].min() > 3.0  # swapped and never recovered
    assert fixed.identity_swaps >= 1
    back = int(np.flatnonzero(err_fixed[:, :2].max(axis=1) >= 1.0).max()) + 1
    assert back <= 10 and err_fixed[-10:, :2].max() < 0.3


def test_retrodiction_prefers_the_pairing_that_explains_both_anchors():
    x = np.array([[70.0, 40.0, 10.0, 0.0], [54.0, 40.0, -10.0, 0.0]])  # after 1 s: moved +-10 m
    P = np.tile(np.diag([0.1, 0.1, 0.5, 0.5]), (2, 1, 1))
    anchors = np.array([[60.0, 40.0], [64.0, 40.0]])
    cost = retrodiction_cost(x, P, anchors, np.array([1.0, 1.0]), np.array([10, 10]), 0.1, 1.0,
                             np.deg2rad(15.0) ** 2 / 3)
    assert not should_swap(cost)
    assert should_swap(cost[::-1])  # the same states in the other order


def test_a_track_coalesced_onto_its_neighbour_searches_and_reacquires_its_own_target():
    """Track 0 is pulled onto target 1 (merged echoes at start-up) and follows it; target 0's echoes, 6 m
    away, are then claimed by no track. Without the duplicate rule track 0 never misses (it takes target
    1's peaks) and is lost for good; with it, it searches and re-acquires target 0 within 10 blocks."""
    cfg = ScenarioConfig.paper(4)
    start = np.array([[60.0, 40.0], [60.0, 46.0], [220.0, 60.0], [140.0, 20.0]])
    vel = np.array([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]]) * cfg.speed_mps
    truth = _truths(start, vel, 40, cfg.block_duration_s)

    def entries(q, t):
        # Beams of both tracks point at target 1: each pair sees target 1 (peak 0) and target 0 (peak 1).
        return [(0, 0, 0, t[1], 0.05, 0.003), (0, 0, 1, t[0], 0.05, 0.003), (3, 1, 0, t[1], 0.05, 0.003),
                (3, 1, 1, t[0], 0.05, 0.003), (1, 0, 0, t[1], 0.05, 0.003),
                (2, 2, 0, t[2], 0.05, 0.003), (4, 3, 0, t[3], 0.05, 0.003)]

    results = {}
    for name, settings in (("plain", EKFSettings(resolve_identities=False)),
                           ("fixed", EKFSettings(resolve_identities=True)),
                           ("duplicates only", EKFSettings(detect_duplicates=True))):
        est = EKFEstimator(cfg, settings)
        est.reset(start)
        # the coalescence: block 1 starts with track 0 on target 1 (state copied from track 1's prior)
        est._x[0] = est._x[1]
        est._P[0] = est._P[1]
        results[name] = (est, _run(est, truth, entries))
    plain, err_plain = results["plain"]
    fixed, err_fixed = results["fixed"]
    assert err_plain[-10:, 0].min() > 5.0 and plain.missed[0] == 0  # a duplicate that never searches
    assert fixed.duplicates >= 1
    back = int(np.flatnonzero(err_fixed[:, 0] >= 1.0).max()) + 1
    assert back <= 10 and err_fixed[-10:, 0].max() < 0.3
    assert err_fixed[:, 1].max() < 0.5  # target 1's track undisturbed
    dup, err_dup = results["duplicates only"]  # the duplicate rule alone does the same, and swaps nothing
    np.testing.assert_array_equal(err_dup, err_fixed)
    assert dup.identity_swaps == 0


def test_a_searching_track_is_not_pinned_by_its_targets_range_alone():
    """Track 0, well locked, is displaced 12 m along its target's range circle of BS 0 (what a run of blended
    echoes does to it), gets nothing for 4 blocks (it searches), then for 10 blocks only range-only peaks of
    its target from BS 0 (they cannot see the displacement), then full peaks from BS 3 again. The range does
    not end the search (``range_only_ends_search=False``): the track keeps searching, its predicted
    covariance keeps covering the error (NIS against the truth inside the 99.9 % gate, so its beams stay
    wide), and it re-initialises on the first full peak. With the earlier rule the range looks end the search
    on the wrong part of the circle and the prediction claims a precision it has not (NIS 30-100)."""
    cfg = ScenarioConfig.paper(4)
    start = np.array([[80.0, 50.0], [220.0, 60.0], [140.0, 20.0], [250.0, 30.0]])
    vel = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]) * cfg.speed_mps
    truth = _truths(start, vel, 30, cfg.block_duration_s)

    def entries(q, t):
        out = [(4, 1, 0, t[1], 0.05, 0.003), (1, 2, 0, t[2], 0.05, 0.003), (2, 3, 0, t[3], 0.05, 0.003)]
        if q <= 10 or q > 24:
            out.append((3, 0, 0, t[0], 0.05, 0.003))
        elif q > 14:
            out.append((0, 0, 0, t[0], 0.05, BIG_ANGLE_STD))
        return out

    results = {}
    for ends in (False, True):
        # the earlier rule with the coasted search it came with (a re-seeded search, EKFSettings.search_reseed,
        # restarts from block 10's trusted position, where the range looks then hold it right)
        est = EKFEstimator(cfg, EKFSettings(range_only_ends_search=ends, search_reseed=not ends))
        est.reset(start)
        errs, nis, searched = [], [], []
        for q, t in enumerate(truth, 1):
            if q == 11:  # displaced 12 m along BS 0's range circle (BS 0 at the origin)
                r, a = np.hypot(*est._x[0, :2]), np.arctan2(est._x[0, 1], est._x[0, 0]) + 12.0 / np.hypot(*t[0])
                est._x[0, :2] = r * np.cos(a), r * np.sin(a)
                est._pred = None
            est.block_prediction_m = est.predicted_position()
            d = t[0] - est.block_prediction_m[0]
            nis.append(float(d @ np.linalg.solve(est.predicted_covariance()[0, :2, :2], d)))
            u_hat, _ = est.update(_peaks_block(cfg, entries(q, t), block=q))
            errs.append(np.linalg.norm(u_hat - t, axis=1))
            searched.append(bool(est.searching[0]))
        results[ends] = (np.array(errs), np.array(nis), searched)
    err, nis, searched = results[False]
    assert all(searched[13:24])  # blocks 14-24: searching through the range-only looks
    assert nis[15:25].max() < CHI2_GATE_999  # blocks 16-25: the prediction covers the 12 m
    assert err[:10, 0].max() < 0.5 and err[24:, 0].max() < 0.5  # re-initialised on the first full peak (block 25)
    assert err[:, 1:].max() < 0.5  # the others undisturbed
    err_old, nis_old, searched_old = results[True]
    assert not any(searched_old[14:24]) and nis_old[16:25].min() > 2 * CHI2_GATE_999  # the earlier rule
    assert err_old[24, 0] > 10.0


def test_an_unexplained_echo_in_its_own_beams_sends_a_locked_out_track_searching():
    """Targets 0 and 1 move side by side 6 m apart; track 0 is pulled onto target 1 (0.5 m from it), so target
    1's echoes fall in both gates and go to track 1, while target 0's own echoes, in the scans serving
    track 0, lie outside every gate: a gate lockout. Counted as full misses (``unexplained_is_miss``), they
    send track 0 searching after ``search_after_blocks`` blocks and it re-initialises on its target's echo at
    the next (block 14); counted as "seen" misses it is still off at block 14 and not back for good before
    block 19. A well-locked track with an unexplained outlier beside its own echo never misses."""
    cfg = ScenarioConfig.paper(4)
    start = np.array([[80.0, 50.0], [86.0, 50.0], [220.0, 60.0], [250.0, 30.0]])
    vel = np.array([[0.0, 1.0], [0.0, 1.0], [-1.0, 0.0], [0.0, 1.0]]) * cfg.speed_mps
    truth = _truths(start, vel, 30, cfg.block_duration_s)

    def entries(q, t):
        out = [(4, 2, 0, t[2], 0.05, 0.003), (2, 3, 0, t[3], 0.05, 0.003), (3, 1, 0, t[1], 0.05, 0.003),
               (3, 0, 0, t[0], 0.05, 0.003)]
        if q == 7:  # an outlier beside track 2's echo, 8 m off: nobody explains it
            out.append((4, 2, 1, t[2] + np.array([0.0, 8.0]), 0.05, 0.003))
        return out

    errs = {}
    for rule in (True, False):
        est = EKFEstimator(cfg, EKFSettings(unexplained_is_miss=rule))
        est.reset(start)
        err = []
        for q, t in enumerate(truth, 1):
            if q == 11:  # track 0 pulled onto target 1
                est._x[0] = est._x[1] + np.array([-0.5, 0.0, 0.0, 0.0])
                est._pred = None
            est.block_prediction_m = est.predicted_position()
            u_hat, _ = est.update(_peaks_block(cfg, entries(q, t), block=q))
            err.append(np.linalg.norm(u_hat - t, axis=1))
            if q <= 10:
                assert est.missed[2] == 0  # the outlier at block 7 cost the track beside it nothing
        errs[rule] = np.array(err)
    assert errs[True][:10].max() < 0.5 and errs[True][13:, 0].max() < 0.5  # back on target 0 at block 14
    assert errs[True][:, 1:].max() < 0.5
    assert errs[False][10:14, 0].min() > 4.0 and errs[False][13:18, 0].max() > 1.0  # "seen": locked out longer
