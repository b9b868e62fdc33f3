"""Tests of rl_isac.tracking.data_association and its use in the EKF: peaks go to the track that
explains them, not to the pair's label; a track locked out of its gate searches and re-acquires."""

from __future__ import annotations

import numpy as np

from rl_isac.physics.measurements import Measurements
from rl_isac.scenario import ScenarioConfig
from rl_isac.tracking import EKFEstimator, EKFSettings
from rl_isac.tracking.data_association import CHI2_GATE_999, collect_peaks, gnn_assign, innovation_matrix


def _peaks_block(cfg, entries, num_peaks=2, block=1):
    """Measurements with the given peaks: ``entries`` = [(bs, label, peak, position (2,), std_r, std_a)]."""
    bs_pos = np.asarray(cfg.bs_positions_m)
    m = Measurements.empty(cfg.num_bs, cfg.num_targets, block, num_peaks=num_peaks)
    assigned = m.assigned.copy()
    valid, rng_, ang, snr, cov = (m.peak_valid.copy(), m.peak_range_m.copy(), m.peak_angle_rad.copy(),
                                  m.peak_snr_db.copy(), m.peak_cov.copy())
    for bs, label, peak, pos, sr, sa in entries:
        d = np.asarray(pos, float) - bs_pos[bs]
        assigned[bs, label] = True
        valid[bs, label, peak] = True
        rng_[bs, label, peak] = np.hypot(*d)
        ang[bs, label, peak] = np.arctan2(d[1], d[0])
        snr[bs, label, peak] = 30.0 - 5 * peak
        cov[bs, label, peak] = np.diag([sr**2, sa**2])
    return Measurements(assigned, valid[..., 0].copy(), rng_[..., 0].copy(), ang[..., 0].copy(), snr[..., 0].copy(),
                        cov[..., 0, :, :].copy(), block, valid, rng_, ang, snr, cov)


def _state(positions, std=0.3):
    x = np.zeros((len(positions), 4))
    x[:, :2] = positions
    P = np.tile(np.diag([std**2, std**2, 1.0, 1.0]), (len(positions), 1, 1))
    return x, P


def test_nis_matrix_matches_the_ekf_innovation():
    from rl_isac.tracking.ekf import innovation_nis

    cfg = ScenarioConfig.paper(4)
    truth = np.array([[50.0, 30.0], [55.0, 33.0], [200.0, 70.0], [120.0, 50.0]])
    meas = _peaks_block(cfg, [(0, 0, 0, truth[0] + 0.2, 0.1, 0.003), (0, 0, 1, truth[1], 0.1, 0.003),
                              (4, 2, 0, truth[2], 0.2, 0.004)])
    peaks = collect_peaks(meas)
    x, P = _state(truth)
    nis, logdet = innovation_matrix(x, P, peaks, np.asarray(cfg.bs_positions_m))
    for n in range(len(peaks)):
        for i in range(4):
            want = innovation_nis(x[i:i + 1], P[i:i + 1], peaks.z[n:n + 1], peaks.R[n:n + 1],
                                  np.asarray(cfg.bs_positions_m)[peaks.bs[n]])[0]
            assert np.isclose(nis[n, i], want, rtol=1e-9)


def test_gnn_gives_a_neighbours_stronger_echo_to_the_neighbour():
    """Pair (0, target 0) reports target 1's echo as peak 0 and its own as peak 1: each goes to its owner."""
    cfg = ScenarioConfig.paper(4)
    truth = np.array([[50.0, 30.0], [53.0, 34.0], [200.0, 70.0], [120.0, 50.0]])
    meas = _peaks_block(cfg, [(0, 0, 0, truth[1], 0.05, 0.002), (0, 0, 1, truth[0], 0.05, 0.002)])
    peaks = collect_peaks(meas)
    x, P = _state(truth, std=0.5)
    track, nis = gnn_assign(x, P, peaks, np.asarray(cfg.bs_positions_m))
    assert track.tolist() == [1, 0]
    assert np.all(nis <= CHI2_GATE_999)
    # A peak outside every gate goes nowhere.
    far = _peaks_block(cfg, [(0, 0, 0, truth[0] + [20.0, 0.0], 0.05, 0.002)])
    assert gnn_assign(x, P, collect_peaks(far), np.asarray(cfg.bs_positions_m))[0].tolist() == [-1]


def _run(cfg, settings, truth_blocks, make_entries, start_state):
    est = EKFEstimator(cfg, settings)
    est.reset(start_state)
    errs = []
    for q, truth in enumerate(truth_blocks, 1):
        u_hat, _ = est.update(_peaks_block(cfg, make_entries(truth), block=q))
        errs.append(np.linalg.norm(u_hat - truth, axis=1))
    return est, np.array(errs)


def _moving_truth(cfg, blocks, offset_1=(10.0, 8.0)):
    """Targets 0 and 1 side by side (target 1 at ``offset_1`` from target 0), moving in parallel."""
    start = np.array([[60.0, 40.0], [60.0 + offset_1[0], 40.0 + offset_1[1]], [220.0, 60.0], [140.0, 30.0]])
    v = np.array([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]]) * cfg.speed_mps
    return start, [start + v * cfg.block_duration_s * q for q in range(1, blocks + 1)]


def test_ekf_with_gnn_is_not_corrupted_by_the_neighbour_but_the_label_rule_is():
    cfg = ScenarioConfig.paper(4)
    start, truth = _moving_truth(cfg, 30, offset_1=(0.8, 0.6))  # 1 m apart: inside each other's gates

    def entries(t):
        # BS 0 sees target 1 stronger in target 0's gate (peak 0) and target 0 as peak 1;
        # BS 1 measures targets 0 and 1 cleanly; targets 2 and 3 by BSs 2 and 4.
        return [(0, 0, 0, t[1], 0.05, 0.003), (0, 0, 1, t[0], 0.05, 0.003),
                (1, 1, 0, t[1], 0.05, 0.003), (1, 0, 0, t[0], 0.05, 0.003),
                (2, 2, 0, t[2], 0.05, 0.003), (4, 3, 0, t[3], 0.05, 0.003)]

    gnn, err_gnn = _run(cfg, EKFSettings(), truth, entries, start)
    label, err_label = _run(cfg, EKFSettings(data_association="label", search_after_blocks=None), truth, entries,
                            start)
    assert err_gnn[10:].max() < 0.15
    # The label rule fuses target 1's echo into track 0: biased by a good part of the 1 m separation.
    assert err_label[10:, 0].mean() > 3 * err_gnn[10:, 0].mean() and err_label[10:, 0].mean() > 0.2


def test_a_track_locked_out_of_its_gate_searches_and_reacquires():
    """Track 0 starts 6 m off with a tight covariance: its own measurements fall outside its gate. It
    becomes searching after ``search_after_blocks``, its gate grows, and the first peak the assignment
    gives it re-initialises it; the label rule without search never recovers."""
    cfg = ScenarioConfig.paper(4)
    start, truth = _moving_truth(cfg, 40)

    def entries(t):
        return [(1, 0, 0, t[0], 0.05, 0.003), (0, 0, 0, t[0], 0.05, 0.003), (1, 1, 0, t[1], 0.05, 0.003),
                (2, 2, 0, t[2], 0.05, 0.003), (4, 3, 0, t[3], 0.05, 0.003)]

    est = EKFEstimator(cfg, EKFSettings())
    off = start.copy()
    off[0] += [0.0, -6.0]
    est.reset(off)
    est._P[0, :2, :2] = np.eye(2) * 0.05**2  # overconfident: the gate locks the truth out
    errs = []
    for q, t in enumerate(truth, 1):
        u_hat, _ = est.update(_peaks_block(cfg, entries(t), block=q))
        errs.append(np.linalg.norm(u_hat[0] - t[0]))
    errs = np.array(errs)
    assert errs[0] > 3.0
    back = int(np.flatnonzero(errs >= 0.5).max()) + 1  # on track for good from this block on
    assert back <= 10
    assert est.losses == 1 and len(est.reacquired_after) == 1 and est.reacquired_after[0] >= 3
    # Tracks 1-3 were never disturbed (track 0 searching with a wide gate took none of their peaks).
    assert est.missed[1:].max() == 0


def test_a_peak_two_unresolved_tracks_share_is_widened_to_cover_both():
    from rl_isac.tracking.data_association import widen_for_merges

    cfg = ScenarioConfig.paper(4)
    truth = np.array([[50.0, 30.0], [50.6, 30.5], [200.0, 70.0], [120.0, 50.0]])  # tracks 0, 1 unresolved
    meas = _peaks_block(cfg, [(0, 0, 0, truth[:2].mean(axis=0), 0.05, 0.002), (4, 2, 0, truth[2], 0.05, 0.002)])
    peaks = collect_peaks(meas)
    x, _ = _state(truth)
    wide = widen_for_merges(peaks, x, np.asarray(cfg.bs_positions_m), cfg.range_resolution_m, 2.0 / 32)
    assert wide.R[0, 0, 0] > peaks.R[0, 0, 0] and wide.R[0, 1, 1] > peaks.R[0, 1, 1]
    np.testing.assert_array_equal(wide.R[1], peaks.R[1])  # a lone target's peak is untouched
    # The merged peak is now within the gate of both tracks' true positions.
    nis, _ = innovation_matrix(x, np.zeros((4, 4, 4)), wide, np.asarray(cfg.bs_positions_m))
    assert nis[0, 0] < CHI2_GATE_999 and nis[0, 1] < CHI2_GATE_999
