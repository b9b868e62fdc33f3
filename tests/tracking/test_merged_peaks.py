"""Merged echoes of unresolved targets (tracks_findings.md mechanisms A and C) and range-only peaks
restricted to their scan's beams: the centroid update of :func:`rl_isac.tracking.ekf.update_merged`, the
merge test of :func:`rl_isac.tracking.data_association.merge_partners`, and
:func:`rl_isac.tracking.data_association.same_beams`."""

from __future__ import annotations

import numpy as np

from rl_isac.scenario import ScenarioConfig
from rl_isac.tracking import EKFEstimator, EKFSettings
from rl_isac.tracking.data_association import collect_peaks, merge_partners, same_beams
from rl_isac.tracking.ekf import range_angle, range_angle_jacobian, update_merged, wrap_angle
from tests.tracking.test_data_association import _peaks_block
from tests.tracking.test_identity import _run


def test_the_merged_update_is_the_joint_ekf_update_of_the_centroid_measurement():
    rng = np.random.default_rng(3)
    xi = np.array([60.0, 40.0, 9.0, 1.0])
    xj = np.array([61.0, 41.2, 8.0, -2.0])
    A, B = rng.standard_normal((2, 4, 4))
    Pi, Pj = A @ A.T + np.eye(4), B @ B.T + 0.5 * np.eye(4)
    bs = np.array([0.0, 0.0])
    c = 0.5 * (xi + xj)
    z = range_angle(c[None], bs)[0] + np.array([0.3, -0.004])
    R = np.diag([0.05, 1e-5])
    xi1, Pi1, xj1, Pj1, ok = update_merged(xi, Pi, xj, Pj, z, R, bs, gate=np.inf)
    assert ok
    # the 8-D EKF: X = [xi; xj], h(X) = h((p_i + p_j) / 2)
    X = np.concatenate([xi, xj])
    PX = np.zeros((8, 8))
    PX[:4, :4], PX[4:, 4:] = Pi, Pj
    Hc = range_angle_jacobian(c[None], bs)[0]
    H = np.hstack([0.5 * Hc, 0.5 * Hc])
    S = H @ PX @ H.T + R
    K = PX @ H.T @ np.linalg.inv(S)
    y = z - range_angle(c[None], bs)[0]
    y[1] = wrap_angle(y[1])
    X1 = X + K @ y
    P1 = PX - K @ S @ K.T
    np.testing.assert_allclose(np.concatenate([xi1, xj1]), X1, atol=1e-9)
    np.testing.assert_allclose(Pi1, P1[:4, :4], atol=1e-9)
    np.testing.assert_allclose(Pj1, P1[4:, 4:], atol=1e-9)
    # the difference of the two positions is not measured: its mean moves only through the priors' unequal P
    same = update_merged(xi, Pi, xj, Pi, z, R, bs, gate=np.inf)
    np.testing.assert_allclose(same[0][:2] - same[2][:2], xi[:2] - xj[:2], atol=1e-9)
    # a far-off measurement fails the gate and changes nothing
    far = update_merged(xi, Pi, xj, Pj, z + np.array([30.0, 0.0]), R, bs, gate=13.8)
    assert not far[4] and far[0] is xi and far[1] is Pi


def test_a_peak_is_a_merge_only_where_its_bs_did_not_resolve_the_two_targets():
    cfg = ScenarioConfig.paper(4)
    x = np.zeros((4, 4))
    x[:, :2] = [[60.0, 40.0], [60.8, 40.4], [220.0, 60.0], [140.0, 20.0]]
    centroid = x[:2, :2].mean(axis=0)
    one = collect_peaks(_peaks_block(cfg, [(0, 0, 0, centroid, 0.05, 0.003), (4, 3, 0, x[3, :2], 0.05, 0.003)]))
    pairs = merge_partners(one, x, np.asarray(cfg.bs_positions_m), cfg.range_resolution_m, 2.0 / cfg.codebook_size)
    assert pairs.tolist() == [[0, 1], [-1, -1]]
    # the same BS reports a second echo a range cell away: it resolved them, no merge
    two = collect_peaks(_peaks_block(cfg, [(0, 0, 0, centroid, 0.05, 0.003),
                                           (0, 1, 0, centroid + np.array([1.9, 1.0]), 0.05, 0.003)]))
    pairs = merge_partners(two, x, np.asarray(cfg.bs_positions_m), cfg.range_resolution_m, 2.0 / cfg.codebook_size)
    assert (pairs == -1).all()


def _co_moving(cfg, blocks=40, part=18):
    """Targets 0 and 1 drive side by side 2 m apart (unresolved: one merged echo per look) for ``part``
    blocks, then target 1 turns away; targets 2 and 3 far off."""
    dt, v = cfg.block_duration_s, cfg.speed_mps
    p = np.array([[60.0, 40.0], [60.0, 42.0], [220.0, 60.0], [140.0, 20.0]])
    vel = np.array([[v, 0.0], [v, 0.0], [-v, 0.0], [0.0, v]])
    truth = []
    for q in range(1, blocks + 1):
        if q == part:
            vel[1] = v * np.array([np.cos(0.6), np.sin(0.6)])
        p = p + vel * dt
        truth.append(p.copy())
    return truth


def _co_moving_entries(cfg, est):
    def entries(q, t):
        out = [(2, 2, 0, t[2], 0.05, 0.003), (4, 3, 0, t[3], 0.05, 0.003)]
        sep = np.linalg.norm(t[0] - t[1])
        for bs, label in ((0, 0), (3, 1), (1, 0), (4, 1)):
            if sep < cfg.range_resolution_m:  # one merged peak per look, biased toward the stronger echo
                out.append((bs, label, 0, 0.65 * t[0] + 0.35 * t[1] if q % 2 else 0.35 * t[0] + 0.65 * t[1],
                            0.05, 0.003))
                continue
            d = np.linalg.norm(t[:2] - est.block_prediction_m[label], axis=1)
            order = np.argsort(d)
            out.append((bs, label, 0, t[order[0]], 0.05, 0.003))
            if sep < 10.0:
                out.append((bs, label, 1, t[order[1]], 0.05, 0.003))
        return out
    return entries


def test_two_unresolved_targets_driving_side_by_side_keep_their_tracks_with_the_merged_update():
    """Each merged echo given to one track alone drags that track toward the pair's centroid: here the two
    tracks cross over while the targets drive together and are swapped for good when they part. Fused as a
    measurement of the centroid into both, the echo moves the pair without touching its separation: both
    tracks stay on their own target and keep it after the split."""
    cfg = ScenarioConfig.paper(4)
    truth = _co_moving(cfg)
    start = truth[0] - cfg.speed_mps * cfg.block_duration_s * np.array([1.0, 0.0])
    errs = {}
    for name, merged in (("single", False), ("merged", True)):
        # velocities known by construction: the start-up wait of merged_after_blocks is not needed here
        est = EKFEstimator(cfg, EKFSettings(merged_update=merged, merged_after_blocks=0))
        est.reset(start)
        # velocities known from earlier blocks (the pair was tracked before it came together)
        est._x[:, 2:] = [[cfg.speed_mps, 0.0], [cfg.speed_mps, 0.0], [-cfg.speed_mps, 0.0], [0.0, cfg.speed_mps]]
        est._P[:, 2:, 2:] = 0.25 * np.eye(2)
        errs[name] = _run(est, truth, _co_moving_entries(cfg, est))
    assert errs["merged"][:, :2].max() < 0.5
    assert errs["single"][-10:, :2].min() > 5.0  # swapped after the split, never back


def test_a_range_only_peak_goes_only_to_tracks_inside_its_scans_beams():
    cfg = ScenarioConfig.paper(4)
    bs = np.asarray(cfg.bs_positions_m)
    x = np.zeros((4, 4))
    # from BS 0 at the origin: targets 0 and 1 at the same range (100 m), 0 near endfire, 1 at 45 degrees
    x[:, :2] = [[99.9, 4.0], [70.7, 70.7], [150.0, 95.0], [60.0, 90.0]]
    peaks = collect_peaks(_peaks_block(cfg, [(0, 0, 0, x[0, :2], 0.05, 1.0), (0, 1, 0, x[1, :2], 0.05, 0.003)]))
    assert peaks.range_only.tolist() == [True, False]
    ok = same_beams(peaks, x, bs, 2.0 / cfg.codebook_size)
    assert ok[0].tolist() == [True, False, False, False]  # the label's track only (1 is on the same circle)
    assert ok[1].all()  # a 2-D peak: its own angle decides (the gate)


def test_an_unambiguous_range_only_peak_goes_to_its_label_alone_and_an_ambiguous_one_to_nobody():
    cfg = ScenarioConfig.paper(4)
    bs = np.asarray(cfg.bs_positions_m)
    x = np.zeros((4, 4))
    x[:, :2] = [[99.9, 4.0], [70.7, 70.7], [150.0, 95.0], [60.0, 90.0]]
    entries = [(0, 0, 0, x[0, :2], 0.05, 1.0)]
    peaks = collect_peaks(_peaks_block(cfg, entries))
    ok = same_beams(peaks, x, bs, 2.0 / cfg.codebook_size, cfg.range_resolution_m)
    assert ok[0].tolist() == [True, False, False, False]
    x[1, :2] = [102.0, 5.0]  # a second track in the same beams, 2 m further: the range cannot tell them apart
    ok = same_beams(peaks, x, bs, 2.0 / cfg.codebook_size, cfg.range_resolution_m)
    assert not ok[0].any()
    assert same_beams(peaks, x, bs, 2.0 / cfg.codebook_size)[0, :2].all()  # without the rule: both may take it


def test_bad_option_values_are_refused_with_the_rule():
    import pytest

    from rl_isac.errors import ConfigError

    with pytest.raises(ConfigError, match="merged_after_blocks"):
        EKFSettings(merged_after_blocks=-1)
    with pytest.raises(ConfigError, match="range_only_unambiguous"):
        EKFSettings(range_only_unambiguous="yes")
