"""CU clusters (rl_isac.clusters): the split and its errors, ownership with hysteresis and capacity,
the padded mask, the clustered EKF and its handover."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from rl_isac.association.constraints import valid_action_mask
from rl_isac.clusters import (
    ClusteredEKF,
    assign_owners,
    assign_slots,
    check_cluster_pairs,
    padded_action_mask,
    split_clusters,
    subset_measurements,
)
from rl_isac.controllers.clustered import make_clustered_controller
from rl_isac.errors import ConfigError, ConstraintViolation
from rl_isac.network import CellFreeNetwork
from rl_isac.scenario import ScenarioConfig
from rl_isac.tracking.ekf import EKFEstimator


def large(**kw):
    return ScenarioConfig.large(fidelity="surrogate", **kw)


# ---------------------------------------------------------------------------------------------- split
def test_large_splits_into_contiguous_equal_groups_along_x():
    cfg = large()
    one = split_clusters(cfg, 1)
    assert one.bs_index == (tuple(range(12)),) and one.capacity == 24
    two = split_clusters(cfg, 2)
    assert two.bs_index == ((0, 1, 2, 6, 7, 8), (3, 4, 5, 9, 10, 11))  # x <= 240 m | x >= 360 m, both edges
    assert two.boundaries_m == (0.0, 300.0, 600.0) and two.capacity == 12
    four = split_clusters(cfg, 4)
    assert four.bs_index == ((0, 1, 6), (2, 7, 8), (3, 4, 9), (5, 10, 11))
    assert four.boundaries_m == (0.0, 150.0, 300.0, 450.0, 600.0) and four.capacity == 6
    pos = np.asarray(cfg.bs_positions_m)
    for c in range(3):  # contiguous: no BS of a cluster lies right of one of the next
        assert pos[list(four.bs_index[c]), 0].max() <= pos[list(four.bs_index[c + 1]), 0].min()
    sub = four.sub_scenario(cfg, 1)
    assert sub.num_bs == 3 and sub.num_targets == 6 and sub.area_size_m == cfg.area_size_m


@pytest.mark.parametrize("clusters, rule", [(5, "divide the 12 BSs"), (0, "integer >= 1"), (True, "integer >= 1")])
def test_split_refuses_a_count_that_does_not_divide_the_bss(clusters, rule):
    with pytest.raises(ConfigError, match=rule):
        split_clusters(large(), clusters)


def test_split_refuses_a_layout_that_cannot_be_split_and_bad_capacities():
    with pytest.raises(ConfigError, match="cannot be split into 6 clusters.*cluster 1"):
        split_clusters(ScenarioConfig.paper(4), 6)  # both x = 0 BSs would be cluster 0 and 1
    with pytest.raises(ConfigError, match=r"cluster_capacity=7.*\[1, 6\]"):
        split_clusters(large(), 4, capacity=7)  # 3 BSs x 2 chains cover at most 6 targets (5d)
    with pytest.raises(ConfigError, match="4 clusters x 5 slots < 24 targets"):
        split_clusters(large(), 4, capacity=5)
    with pytest.raises(ConfigError, match="hysteresis"):
        split_clusters(large(), 2, hysteresis_m=-1.0)
    assert split_clusters(large(num_targets=8), 4).capacity == 6  # min(I, M_c N_RF)
    assert split_clusters(large(num_targets=4), 4).capacity == 4


# ---------------------------------------------------------------------------------------------- ownership
def test_ownership_follows_the_predicted_x_with_hysteresis():
    layout = split_clusters(large(num_targets=4), 2, area="strip")
    x = np.array([100.0, 302.0, 306.0, 298.0])
    assert assign_owners(layout, x).tolist() == [0, 1, 1, 0]  # start: the strip of the predicted x
    prev = np.array([0, 0, 0, 1])
    # 302 m is within 5 m of cluster 0's strip: stays; 306 m is not: handed over; 298 m stays with 1
    assert assign_owners(layout, x, prev).tolist() == [0, 0, 1, 1]
    # back and forth around the border: the owner changes only 5 m inside the other strip
    owner = np.array([0, 0, 0, 0])
    trace = []
    for xi in (299.0, 301.0, 304.9, 305.1, 301.0, 296.0, 294.9):
        owner = assign_owners(layout, np.array([100.0, xi, 100.0, 100.0]), owner)
        trace.append(int(owner[1]))
    assert trace == [0, 0, 0, 1, 1, 1, 0]


def test_capacity_repair_keeps_every_cluster_within_its_slots_and_moves_the_nearest():
    cfg = large(num_targets=24)
    layout = split_clusters(cfg, 4, area="strip", repair="distance")
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(0, 150, 10), rng.uniform(150, 600, 14)])  # 10 targets in strip 0 (K = 6)
    owner = assign_owners(layout, x)
    assert np.bincount(owner, minlength=4).tolist() == [6, 6, 6, 6]
    in0 = np.flatnonzero(x < 150)
    kept = in0[owner[in0] == 0]
    assert x[kept].max() < x[in0[owner[in0] != 0]].min()  # the 4 moved out are the ones nearest the border
    vor = split_clusters(cfg, 4, area="voronoi", repair="distance")
    for seed in range(20):  # any positions, any previous owners: never over capacity, C K >= I
        r = np.random.default_rng(seed)
        prev = r.integers(0, 4, 24)
        o = assign_owners(layout, r.uniform(0, 600, 24), prev)
        assert np.bincount(o, minlength=4).max() <= 6
        pos = np.stack([r.uniform(0, 600, 24), r.uniform(0, 100, 24)], axis=1)
        assert np.bincount(assign_owners(vor, pos, prev), minlength=4).max() <= 6


def test_information_repair_passes_the_target_that_loses_least_and_is_the_default():
    cfg = large(num_targets=24)
    layout = split_clusters(cfg, 2)
    assert layout.repair == "information" and split_clusters(cfg, 2, repair="distance").repair == "distance"
    with pytest.raises(ConfigError, match="cluster_repair"):
        split_clusters(cfg, 2, repair="nearest")
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(0, 290, 14), rng.uniform(310, 600, 10)])  # 14 in strip 0, K = 12
    pos = np.stack([x, rng.uniform(0, 100, 24)], axis=1)
    with pytest.raises(ConfigError, match="gain_m2"):
        assign_owners(layout, pos)
    from rl_isac.clusters import cluster_gains

    cov = np.tile(np.eye(2), (24, 1, 1))
    cov[:14] *= rng.uniform(0.01, 10.0, 14)[:, None, None]  # strip 0's targets: very different uncertainties
    gain = cluster_gains(cfg, layout, pos, cov)
    assert gain.shape == (24, 2) and (gain >= 0).all()
    assert (gain[:14, 0] > gain[:14, 1]).all()  # strip 0's targets gain more from strip 0's BSs
    owner = assign_owners(layout, pos, gain_m2=gain)
    assert np.bincount(owner, minlength=2).tolist() == [12, 12]
    moved = np.flatnonzero(owner[:14] == 1)
    loss = gain[:14, 0] - gain[:14, 1]
    assert sorted(moved.tolist()) == sorted(np.argsort(loss)[:2].tolist())  # the two that lose least
    # by hand: the variance BS m removes is tr P - tr (P^-1 + J_m)^-1, the best BS of each cluster
    from rl_isac.physics.arrays import beams_toward, dft_codebook
    from rl_isac.physics.channel import geometry
    from rl_isac.physics.fisher import expected_position_information

    bs = np.asarray(cfg.bs_positions_m)
    beams = beams_toward(np.cos(geometry(bs, pos)[1]), cfg.codebook_size, cfg.num_tracking_symbols)
    J = expected_position_information(cfg, dft_codebook(cfg.num_tx_antennas, cfg.codebook_size,
                                                        cfg.antenna_spacing_wavelengths), bs, pos, beams)
    i, m = 5, int(layout.bs_index[1][2])
    g = np.trace(cov[i]) - np.trace(np.linalg.inv(np.linalg.inv(cov[i]) + J[m, i]))
    assert gain[i, 1] >= g - 1e-12


def test_voronoi_areas_follow_the_nearest_bs_with_hysteresis():
    layout = split_clusters(large(num_targets=4), 4, area="voronoi")  # cluster 0 = (0, 0), (0, 100), (120, 0); ...
    assert layout.area == "voronoi" and split_clusters(large(num_targets=4), 4).area == "strip"
    pos = np.array([[100.0, 95.0], [100.0, 5.0], [300.0, 50.0], [590.0, 50.0]])
    assert assign_owners(layout, pos).tolist() == [1, 0, 1, 3]  # near (120, 100) -> 1; near (120, 0) -> 0
    # distance outside an area: how much farther the cluster's nearest BS is than the nearest of all
    d = layout.distance_to_area(pos, 0)
    assert d[1] == 0.0 and d[0] == pytest.approx(np.hypot(20, 95) - np.hypot(20, 5))
    # hysteresis: cluster 1's nearest BS 2.3 m farther than cluster 2's keeps the owner, 5.5 m moves it
    for x, owner in ((301.5, 1), (303.6, 2)):
        p = np.array([[x, 50.0], [100.0, 5.0], [100.0, 5.0], [590.0, 50.0]])
        excess = np.hypot(x - 240, 50) - np.hypot(360 - x, 50)
        assert (excess <= 5.0) == (owner == 1)
        assert assign_owners(layout, p, np.array([1, 0, 0, 3]))[0] == owner
    with pytest.raises(ConfigError, match=r"\(4, 2\) array"):
        assign_owners(layout, np.array([1.0, 2.0, 3.0, 4.0]))  # Voronoi areas need positions, not only x


def test_slots_are_stable_while_a_cluster_keeps_its_targets():
    layout = split_clusters(large(num_targets=6), 2, capacity=4)
    s0 = assign_slots(layout, np.array([0, 0, 1, 1, 0, 1]))
    assert s0.tolist() == [[0, 1, 4, -1], [2, 3, 5, -1]]
    s1 = assign_slots(layout, np.array([0, 1, 1, 1, 0, 1]), s0)  # target 1 goes to cluster 1
    assert s1.tolist() == [[0, -1, 4, -1], [2, 3, 5, 1]]


# ---------------------------------------------------------------------------------------------- mask
def test_padded_mask_is_the_exact_mask_with_empty_slots_neither_required_nor_choosable():
    M, K, R = 3, 4, 2
    valid = np.array([True, False, True, False])
    rng = np.random.default_rng(1)
    for _ in range(300):
        remaining = np.full(M, R)
        covered = np.zeros(K, bool)
        chosen = np.zeros((M, K), bool)
        stopped = False
        seq = []
        for _j in range(M * R):
            mask = padded_action_mask(remaining, covered, chosen, np.asarray(stopped), valid)
            assert not mask[:-1].reshape(M, K)[:, ~valid].any()  # never an empty slot
            k = int(rng.choice(np.flatnonzero(mask)))
            seq.append(k)
            if k == M * K:
                stopped = True
            elif not stopped:
                remaining[k // K] -= 1
                covered[k % K] = chosen[k // K, k % K] = True
        assoc = check_cluster_pairs(np.array(seq), M, K, R, valid)
        assert assoc[:, valid].any(axis=0).all() and not assoc[:, ~valid].any() and (assoc.sum(1) <= R).all()
    full = np.ones(K, bool)
    state = (np.array([2, 1, 0]), np.array([True, False, False, True]), np.zeros((M, K), bool), np.asarray(False))
    assert np.array_equal(padded_action_mask(*state, full), valid_action_mask(*state))


def test_check_cluster_pairs_names_the_rule():
    M, K, R = 2, 3, 2
    valid = np.array([True, True, False])
    stop = M * K
    with pytest.raises(ConstraintViolation, match=r"\(5e\).*slot=2\) names an empty slot"):
        check_cluster_pairs(np.array([0, 1, 2, stop]), M, K, R, valid)
    with pytest.raises(ConstraintViolation, match=r"\(5d\).*STOP at step 1"):
        check_cluster_pairs(np.array([0, stop, stop, stop]), M, K, R, valid)
    with pytest.raises(ConstraintViolation, match=r"\(5e\).*chosen twice"):
        check_cluster_pairs(np.array([0, 1, 0, stop]), M, K, R, valid)
    with pytest.raises(ConstraintViolation, match=r"\(5c\).*no RF chain left"):
        check_cluster_pairs(np.array([3, 4, 5, 0]), M, K, R, np.array([True, True, True]))
    assoc = check_cluster_pairs(np.array([0, 4, stop, stop]), M, K, R, valid)
    assert assoc.tolist() == [[True, False, False], [False, True, False]]


# ---------------------------------------------------------------------------------------------- tracking
def test_one_cluster_tracker_is_the_whole_network_ekf():
    cfg = ScenarioConfig.paper(6, fidelity="surrogate")
    trk = ClusteredEKF(cfg, split_clusters(cfg, 1))
    ekf = EKFEstimator(cfg)
    net = CellFreeNetwork(cfg)
    acq = net.reset(3)
    trk.reset(acq)
    ekf.reset(acq)
    for _ in range(15):
        meas = net.step(net.nearest_association(ekf.predicted_position()), net.beams_toward(ekf.predicted_position()),
                        predicted_positions_m=ekf.predicted_position())
        a, b = trk.update(meas), ekf.update(meas)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert np.array_equal(trk.covariance, ekf.covariance)


def test_handover_passes_the_track_unchanged():
    cfg = large(num_targets=24, num_blocks=60)
    seen = 0
    for seed in (11, 12):
        cu = make_clustered_controller("ekf-milp", cfg, 4)
        net = CellFreeNetwork(cfg)
        action = cu.reset(net.reset(seed))
        trk = cu.tracker
        for _ in range(60):
            meas = net.step(action.association, action.beams, predicted_positions_m=action.prediction_m)
            before = {c: trk.cluster_ekf(c)[0] for c in range(4)}
            action = cu.act(meas)  # the tracker's update: fuse per cluster, then hand over
            # the predictions after handover are the senders' (on which ownership was decided), exactly
            assert np.array_equal(action.prediction_m, trk.ownership_prediction_m)
            for h in trk.handovers:
                seen += 1
                assert h.target in before[h.source] and h.target not in before[h.dest]
                rows, ekf = trk.cluster_ekf(h.dest)
                r = int(np.flatnonzero(rows == h.target)[0])
                # the receiver's track at the handover block is the sender's posterior (state, covariance, misses)
                assert np.array_equal(ekf.state[r], h.state) and np.array_equal(ekf.covariance[r], h.covariance)
                assert ekf.missed[r] == h.missed
                assert np.array_equal(action.estimate_m[h.target], h.state[:2])
                assert h.target not in trk.cluster_ekf(h.source)[0] and trk.owner[h.target] == h.dest
    assert seen > 0, "no handover happened: the test would prove nothing"


def test_subset_measurements_takes_rows_and_columns_and_pads_empty():
    cfg = ScenarioConfig.paper(4, fidelity="surrogate")
    net = CellFreeNetwork(cfg)
    acq = net.reset(0)
    meas = net.step(net.nearest_association(acq), net.beams_toward(acq), predicted_positions_m=acq)
    sub = subset_measurements(meas, np.array([1, 3]), np.array([2, -1, 0]))
    assert sub.assigned.shape == (2, 3) and sub.peak_cov.shape == (2, 3, meas.num_peaks, 2, 2)
    assert np.array_equal(sub.range_m[:, 0], meas.range_m[[1, 3], 2])
    assert np.array_equal(sub.peak_range_m[:, 2], meas.peak_range_m[[1, 3], 0])
    assert not sub.assigned[:, 1].any() and not sub.peak_valid[:, 1].any()
    sub.validate()


def test_clusters_module_imports_neither_ray_nor_torch():
    code = ("import sys\nimport rl_isac.clusters, rl_isac.controllers.clustered\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray'))\nassert not bad, bad\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # and, in its source (imports inside functions too), nothing above the tracking/association layers
    import ast

    import rl_isac.clusters as mod

    tree = ast.parse(open(mod.__file__).read())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    assert not [n for n in names if n.startswith(("rl_isac.controllers", "rl_isac.training", "rl_isac.evaluation",
                                                  "rl_isac.rllib", "ray", "torch"))]


def test_foreign_echoes_are_dropped_and_the_peaks_stay_well_formed():
    from rl_isac.clusters import drop_peaks, foreign_peaks
    from rl_isac.physics.measurements import Measurements

    bs = np.array([[0.0, 0.0]])
    own, foreign = np.array([[30.0, 40.0, 0.0, 0.0]]), np.array([[60.0, 80.0, 0.0, 0.0]])
    P = np.tile(np.diag([1.0, 1.0, 50.0, 50.0]), (1, 1, 1))
    R = np.diag([0.01, 1e-4])

    def peak(x):  # range/angle of a position seen from the BS
        return np.hypot(*x[:2]), np.arctan2(x[1], x[0])

    (r0, a0), (r1, a1) = peak(foreign[0]), peak(own[0])  # the stronger peak is the foreign target's echo
    one = np.ones((1, 1))
    meas = Measurements(assigned=one.astype(bool), detected=one.astype(bool), range_m=r0 * one, angle_rad=a0 * one,
                        snr_db=20 * one, cov=R[None, None].copy(), peak_valid=np.ones((1, 1, 2), bool),
                        peak_range_m=np.array([[[r0, r1]]]), peak_angle_rad=np.array([[[a0, a1]]]),
                        peak_snr_db=np.array([[[25.0, 20.0]]]), peak_cov=np.tile(R, (1, 1, 2, 1, 1)))
    meas.validate()
    drop = foreign_peaks(meas, bs, own, P, foreign, P)
    assert drop.tolist() == [[[True, False]]]
    kept = drop_peaks(meas, drop).validate()
    assert kept.range_m[0, 0] == r1 and kept.detected[0, 0] and not kept.peak_valid[0, 0, 1]  # own echo is peak 0
    assert not foreign_peaks(meas, bs, own, P, np.zeros((0, 4)), np.zeros((0, 4, 4))).any()  # nobody else: keep all
    gone = drop_peaks(meas, np.ones((1, 1, 2), bool)).validate()
    assert not gone.detected.any() and gone.assigned.all()
