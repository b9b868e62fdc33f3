"""Several CU clusters: partition of the BSs, target ownership, handover of tracks (numpy only).

The scale-out case of the cell-free network (issue 11): the BSs are split into ``C`` CU clusters,
each a CU (an agent of :class:`rl_isac.rllib.env.ISACMultiAgentEnv`, or a sub-CU of
:class:`rl_isac.controllers.clustered.ClusteredCU`) over its own BSs and the targets it currently
owns. This module holds the parts without learning and without Ray or torch.

Partition (:func:`split_clusters`)
    The BSs are sorted by ``(x, y)`` (ties by index) and cut into ``C`` contiguous groups of
    ``M_c = M / C`` BSs along x: equal sizes, so one shared policy module fits every agent. Each group
    must serve its own strip ``x in [c W / C, (c + 1) W / C)`` of the area's width ``W`` (the last
    strip includes ``x = W``; every strip spans the whole height). Errors
    (:class:`~rl_isac.errors.ConfigError`): ``C`` does not divide ``M``; a group's BS x-centroid
    lies outside its strip (the layout cannot be split into clusters that serve their own part of the
    area: e.g. the paper's 6 BSs into 6 clusters); a capacity outside ``[1, M_c N_RF]``, or ``C K < I``.
    ``large`` (12 BSs at x = 0, 120, ..., 600 m, both edges): ``C = 2`` gives 6 BSs each (x <= 240 m |
    x >= 360 m); ``C = 4`` gives 3 BSs each (e.g. cluster 1 = (120, 100), (240, 0), (240, 100): the BS
    column at x = 120 m is split between clusters 0 and 1).

Areas (``area``; :meth:`ClusterLayout.area_of`)
    ``"strip"`` (the default): cluster ``c``'s area is its strip, and a point's distance outside it is
    measured along x. ``"voronoi"``: the set of points nearer to one of its BSs than to any BS of another
    cluster (the union of its BSs' Voronoi cells), a point's distance outside it how much farther ``c``'s
    nearest BS is than the nearest BS of all, metres; for ``C = 2`` on ``large`` this is the strip split at
    x = 300 m, for ``C = 4`` it follows the split column. On 10 development worlds
    (``training_world_seed(7, 2, e)``, 100 blocks, surrogate, clustered ``ekf-milp``, C = 4) it did not help:
    lost fraction 0.013 (strips) vs 0.039 (Voronoi) at 12 targets, 0.070 vs 0.107 at 24 -- tails of a few
    episodes, but no reason to leave the simpler rule.

Capacity (the fixed per-agent shapes)
    Each cluster has ``K`` target *slots* (``capacity``, default ``min(I, M_c N_RF)``: a cluster can
    cover at most ``M_c N_RF`` targets under (5c)-(5d), and never more than ``I``). A cluster's
    observation and action are over ``(M_c, K)`` pairs; a slot holds one owned target (its global
    index in :attr:`ClusteredEKF.slots`) or is empty (``-1``; ``target_valid = 0`` in the
    observation). An empty slot is neither required by (5d) nor choosable (5e):
    :func:`padded_action_mask` is the exact mask. With ``C K == I`` (the ``large`` default: 24
    targets, 2 x 12 or 4 x 6 chains) every slot is always full: each cluster owns exactly ``M_c N_RF``
    targets, so the targets beyond a cluster's share of its area are owned (and tracked from farther
    BSs) by a neighbour; that, and fewer BSs to resolve close pairs, is what clustering costs at full
    load (``results/clusters_signal.md``); the information repair below (which of them, remade every block)
    recovers most of it.

Ownership (:func:`assign_owners`), by the *predicted* position ``u_tilde_{q+1}`` (the CU's, never the
truth), decided after block ``q`` for block ``q + 1``:
    1. area with hysteresis: a target keeps its previous owner while its predicted position lies within
       ``hysteresis_m`` (default :data:`HYSTERESIS_M` = 5 m, five blocks of motion at 10 m/s) of
       that owner's area; otherwise (or at the start) it belongs to the cluster whose area holds
       it. A target on a border therefore does not flap: it must get 5 m into the other area to
       move, and 5 m back to return.
    2. capacity repair: while a cluster owns more than ``K`` targets, it passes one to the
       neighbour (in x order) on the side of the nearest cluster with a free slot (the lower index on a
       tie). Which one (``repair``):

       * ``"information"`` (the default): the target that loses least expected information by the move,
         ``argmin_i g_{i,c} - g_{i,nb}``, ``g_{i,c}`` the variance (m^2) the best BS of cluster ``c`` would
         remove from target ``i``'s prediction (:func:`cluster_gains`: ``tr P - tr (P^-1 + J)^-1``, the
         myopic objective's per-pair term, from the clusters' exchanged predicted tracks). A well-tracked
         target (small ``P``) loses little from a farther BS, an uncertain one much, so the far chains go to
         the targets that can afford them, and the choice is remade every block: the targets of an
         over-full strip take turns with the neighbour (many more handovers; each one passes the track
         unchanged, so it costs nothing but a few numbers sent).
       * ``"distance"``: the target nearest that neighbour's area, where a target the neighbour owned before
         counts ``hysteresis_m`` nearer (so the repair undoes a tentative move before it displaces an
         established one). The same targets stay with the neighbour block after block.

       A full neighbour passes the excess on the same way. Measured on 20 training-side worlds
       (``training_world_seed(7, 2, e)``, 100 blocks, signal level, clustered ``ekf-milp``), distance vs
       information: 24 targets, C = 2: RMSE 9.94 vs 6.31 m, median episode 2.13 vs 0.48 m, lost fraction
       0.075 vs 0.019 (whole network: 4.86 m, 0.29, 0.013); C = 4: 13.65 vs 4.51 m, median 9.24 vs 0.56,
       lost 0.121 vs 0.021 (paired -7.97 +- 4.27 m). With the distance rule 41 % of the target-blocks a
       cluster owned outside its strip were lost (4 % inside), and 42 of the 75 first losses happened there.
       12 targets (no cluster is ever full at C = 2): identical at C = 2, +0.15 +- 0.48 m at C = 4.

Slots (:func:`assign_slots`): a target keeps its slot while its cluster keeps it; arrivals take the
lowest free slots in increasing target index.

Handover (:class:`ClusteredEKF`)
    Each cluster runs its own EKF (:class:`rl_isac.tracking.ekf.EKFEstimator` on the cluster's
    sub-scenario: its BSs only) over the targets it owns, fusing only its BSs' measurements of
    them. After the update of block ``q`` the owners for ``q + 1`` are computed from the predicted
    positions; for every target whose owner changes, the sending cluster's *posterior track* of
    block ``q`` -- state ``x_q = [x, y, vx, vy]``, covariance ``P_q (4, 4)`` and the miss counter
    (blocks without an accepted measurement, which decides whether the track is *searching*) -- is
    removed from the sender's EKF and appended to the receiver's, unchanged. The receiver's
    prediction for ``q + 1`` is then the sender's exactly (the EKF's prediction is per track), and
    so is the estimate ``u_hat_q`` the handed-over target is scored on. Nothing of the truth moves.
    :attr:`ClusteredEKF.handovers` lists the handovers of the last update.

Foreign echoes (``exclude_foreign=True``, the default). A BS's beams and range gate also catch the echo of a
target another cluster owns (near a border, or a target the capacity repair placed with a neighbour); the
cluster's EKF has no track for it, and its data association could give that echo to one of its own tracks.
So the clusters exchange their predicted tracks (state and covariance, before each block's update: a few
numbers per target), and a cluster drops every peak of its BSs that some foreign track explains better
than all of its own (lower normalised innovation squared, and inside that track's 99.9 % gate,
:data:`rl_isac.tracking.data_association.CHI2_GATE_999`) before its EKF sees the block. Only the association
uses the foreign tracks: nothing is fused into them, and no measurement crosses clusters. Measured on 10
development worlds (``training_world_seed(7, 2, e)``, 100 blocks, surrogate, clustered ``ekf-milp``), with vs
without it: C = 4, 24 targets: median episode RMSE 1.16 vs 9.19 m, lost fraction 0.070 vs 0.076; C = 4, 12
targets: the same (0.013); C = 2, 24 targets: median 0.48 m both, lost 0.058 vs 0.043 (a worse tail on these
worlds). Mixed on so few episodes; kept on for the large gain where clusters are small.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rl_isac.association.constraints import valid_action_mask
from rl_isac.errors import ConfigError, ConstraintViolation
from rl_isac.physics.measurements import PEAK_FIELDS, Measurements
from rl_isac.scenario import ScenarioConfig
from rl_isac.tracking.data_association import CHI2_GATE_999, collect_peaks, innovation_matrix
from rl_isac.tracking.ekf import PAIR_FIELDS, EKFEstimator, EKFSettings, empty_tracks

HYSTERESIS_M = 5.0
"""Default ownership hysteresis, metres: a target changes cluster only this far inside another cluster's area."""
AREAS = ("strip", "voronoi")
"""Area rules of :class:`ClusterLayout`."""
REPAIRS = ("information", "distance")
"""Capacity-repair rules of :class:`ClusterLayout` (module docstring, "Ownership"); the first is the default."""
CLUSTER_COUNTS = (1, 2, 4)
"""Cluster counts the CLI and the benchmark use on the ``large`` preset."""


@dataclass(frozen=True)
class ClusterLayout:
    """The partition of a scenario's BSs into ``C`` CU clusters (see the module docstring).

    Attributes:
        num_clusters: ``C``.
        bs_index: per cluster, the global indices of its ``M_c`` BSs (ascending).
        boundaries_m: ``(C + 1,)`` x boundaries of the strips, metres (``0 .. W``; the split check, and the areas
            with ``area="strip"``).
        capacity: target slots ``K`` per cluster.
        hysteresis_m: ownership hysteresis, metres.
        area, bs_positions_m: the area rule and every BS position (below).
        num_targets: ``I`` of the scenario.
        num_rf: ``N_RF``.
    """

    num_clusters: int
    bs_index: tuple[tuple[int, ...], ...]
    boundaries_m: tuple[float, ...]
    capacity: int
    hysteresis_m: float
    num_targets: int
    num_rf: int
    area: str = "strip"
    """How a cluster's area is defined: ``"strip"`` (the x strip) or ``"voronoi"`` (the points nearer one of
    its BSs than to any other cluster's BS); module docstring, "Areas"."""
    bs_positions_m: tuple[tuple[float, float], ...] = ()
    """All BS positions (for ``area="voronoi"``), metres."""
    repair: str = "information"
    """Which target a full cluster passes on: ``"information"`` (the one that loses least expected information,
    the default) or ``"distance"`` (the one nearest the neighbour's area); module docstring, "Ownership"."""

    @property
    def bs_per_cluster(self) -> int:
        """``M_c``."""
        return len(self.bs_index[0])

    def bs_array(self, cluster: int) -> np.ndarray:
        """Global BS indices of ``cluster``, ``(M_c,)`` int64."""
        return np.asarray(self.bs_index[cluster], dtype=np.int64)

    def sub_scenario(self, cfg: ScenarioConfig, cluster: int, num_targets: int | None = None) -> ScenarioConfig:
        """The scenario a cluster's CU sees: its BSs only, ``num_targets`` (default ``K``) targets,
        everything else (area, link budget, motion) unchanged."""
        pos = tuple(cfg.bs_positions_m[m] for m in self.bs_index[cluster])
        return cfg.replace(bs_positions_m=pos, num_targets=self.capacity if num_targets is None else num_targets)

    def _cluster_distances(self, pos_m: np.ndarray) -> np.ndarray:
        """``(I, C)``: distance from each position ``(I, 2)`` to each cluster's nearest BS, metres."""
        bs = np.asarray(self.bs_positions_m, dtype=float)
        d = np.linalg.norm(np.asarray(pos_m, float)[:, None, :] - bs[None], axis=-1)  # (I, M)
        return np.stack([d[:, list(g)].min(axis=1) for g in self.bs_index], axis=1)

    def area_of(self, pos_m: np.ndarray) -> np.ndarray:
        """Cluster whose area holds each position: ``(I,)`` int64 from ``(I, 2)`` (or ``(I,)`` x with strips)."""
        pos = np.asarray(pos_m, dtype=float)
        if self.area == "strip":
            return self.strip_of(pos if pos.ndim == 1 else pos[:, 0])
        return np.argmin(self._cluster_distances(pos), axis=1).astype(np.int64)

    def distance_to_area(self, pos_m: np.ndarray, cluster: int) -> np.ndarray:
        """How far each position lies outside ``cluster``'s area, metres (0 inside), ``(I,)``: along x for strips;
        for Voronoi areas, how much farther the cluster's nearest BS is than the nearest BS of all."""
        pos = np.asarray(pos_m, dtype=float)
        if self.area == "strip":
            return self.distance_to_strip(pos if pos.ndim == 1 else pos[:, 0], cluster)
        d = self._cluster_distances(pos)
        return d[:, cluster] - d.min(axis=1)

    def strip_of(self, x_m: np.ndarray) -> np.ndarray:
        """Cluster whose strip holds each x, ``(...)`` int64 (x outside ``[0, W]`` goes to the end strips)."""
        inner = np.asarray(self.boundaries_m[1:-1], dtype=float)
        return np.searchsorted(inner, np.asarray(x_m, dtype=float), side="right").astype(np.int64)

    def distance_to_strip(self, x_m: np.ndarray, cluster: int) -> np.ndarray:
        """Distance along x from each x to ``cluster``'s strip, metres (0 inside), ``(...)``."""
        lo, hi = self.boundaries_m[cluster], self.boundaries_m[cluster + 1]
        x = np.asarray(x_m, dtype=float)
        return np.maximum(np.maximum(lo - x, x - hi), 0.0)


def split_clusters(cfg: ScenarioConfig, num_clusters: int, capacity: int | None = None,
                   hysteresis_m: float = HYSTERESIS_M, area: str = "strip",
                   repair: str = "information") -> ClusterLayout:
    """Split ``cfg``'s BSs into ``num_clusters`` contiguous equal groups along x (module docstring).

    Raises:
        ConfigError: ``num_clusters`` not a positive integer dividing ``M``; a group outside its strip;
            ``capacity`` outside ``[1, M_c N_RF]`` or ``num_clusters * capacity < I``; a negative or
            non-finite ``hysteresis_m``; ``area`` or ``repair`` not one of :data:`AREAS` / :data:`REPAIRS`.
    """
    C = num_clusters
    if isinstance(C, bool) or not isinstance(C, (int, np.integer)) or C < 1:
        raise ConfigError("clusters", C, "must be an integer >= 1")
    C = int(C)
    M = cfg.num_bs
    if M % C:
        raise ConfigError("clusters", C, f"must divide the {M} BSs of the scenario into equal clusters "
                                         f"(one shared policy module needs equal spaces)")
    if not (isinstance(hysteresis_m, (int, float)) and np.isfinite(hysteresis_m) and hysteresis_m >= 0):
        raise ConfigError("cluster_hysteresis_m", hysteresis_m, "must be a finite number >= 0 (metres)")
    Mc = M // C
    pos = np.asarray(cfg.bs_positions_m, dtype=float)
    order = np.lexsort((np.arange(M), pos[:, 1], pos[:, 0]))  # by x, then y, then index
    width = float(cfg.area_size_m[0])
    bounds = tuple(float(width * c / C) for c in range(C + 1))
    groups = []
    for c in range(C):
        idx = np.sort(order[c * Mc:(c + 1) * Mc])
        centroid = float(pos[idx, 0].mean())
        lo, hi = bounds[c], bounds[c + 1]
        if not (lo <= centroid < hi or (c == C - 1 and centroid == hi)):
            raise ConfigError("clusters", C, f"this BS layout cannot be split into {C} clusters along x: cluster {c}'s "
                                             f"BSs {idx.tolist()} have their x-centroid at {centroid:g} m, outside "
                                             f"its strip [{lo:g}, {hi:g}) m")
        groups.append(tuple(int(m) for m in idx))
    I, R = cfg.num_targets, cfg.num_rf
    cap = min(I, Mc * R) if capacity is None else capacity
    if isinstance(cap, bool) or not isinstance(cap, (int, np.integer)) or not 1 <= cap <= Mc * R:
        raise ConfigError("cluster_capacity", cap, f"must be an integer in [1, M_c * N_RF] = [1, {Mc * R}] "
                                                   f"(a cluster of {Mc} BSs covers at most {Mc * R} targets, (5d))")
    if C * cap < I:
        raise ConfigError("cluster_capacity", cap, f"{C} clusters x {cap} slots < {I} targets: some target would "
                                                   f"have no cluster ((5d) needs C * K >= I)")
    if area not in AREAS:
        raise ConfigError("cluster_area", area, f"must be one of {AREAS}")
    if repair not in REPAIRS:
        raise ConfigError("cluster_repair", repair, f"must be one of {REPAIRS}")
    return ClusterLayout(num_clusters=C, bs_index=tuple(groups), boundaries_m=bounds, capacity=int(cap),
                         hysteresis_m=float(hysteresis_m), num_targets=I, num_rf=R, area=area,
                         bs_positions_m=tuple(cfg.bs_positions_m), repair=repair)


def assign_owners(layout: ClusterLayout, x_m: np.ndarray, previous: np.ndarray | None = None,
                  gain_m2: np.ndarray | None = None) -> np.ndarray:
    """Owner cluster of every target for the next block (module docstring, "Ownership").

    Args:
        x_m: ``(I,)`` predicted x of each target, metres.
        previous: ``(I,)`` int owners of the current block, or ``None`` (start: no hysteresis).
        gain_m2: ``(I, C)`` the variance (m^2) each cluster's best BS would remove from each target's prediction
            (:func:`cluster_gains`); with ``layout.repair == "information"`` the repair passes the target that
            loses least of it (required then, ignored otherwise).
    Returns:
        ``(I,)`` int64 owners; every cluster owns at most ``capacity`` targets.
    """
    x = np.asarray(x_m, dtype=float)
    I = layout.num_targets
    if x.shape not in ((I,), (I, 2)) or not np.all(np.isfinite(x)) or (x.ndim == 1 and layout.area != "strip"):
        raise ConfigError("predicted positions", x.shape, f"must be a finite ({I}, 2) array (or ({I},) x with strips)")
    C, K, h = layout.num_clusters, layout.capacity, layout.hysteresis_m
    owner = layout.area_of(x)
    prev = None if previous is None else np.asarray(previous, dtype=np.int64)
    if prev is not None:
        out_prev = np.stack([layout.distance_to_area(x, c) for c in range(C)], axis=1)[np.arange(I), prev]
        owner = np.where(out_prev <= h, prev, owner)
    for _ in range(C * len(x) + 1):
        counts = np.bincount(owner, minlength=C)
        over = np.flatnonzero(counts > K)
        if over.size == 0:
            return owner
        c = int(over[0])
        spare = np.flatnonzero(counts < K)
        d = int(spare[np.argmin(np.abs(spare - c) * 2 + (spare > c))])  # nearest free cluster, lower on a tie
        nb = c + (1 if d > c else -1)
        mine = np.flatnonzero(owner == c)
        dist = layout.distance_to_area(x, nb)[mine]
        if layout.repair == "information":
            if gain_m2 is None:
                raise ConfigError("gain_m2", None, "the information repair needs each target's gain per cluster")
            owner[mine[np.argmin(gain_m2[mine, c] - gain_m2[mine, nb])]] = nb  # the least information lost
            continue
        if prev is not None:
            dist = dist - h * (prev[mine] == nb)
        owner[mine[np.argmin(dist)]] = nb  # argmin: the lowest target index on a tie
    raise RuntimeError("assign_owners: capacity repair did not converge")  # C K >= I makes this unreachable


def cluster_gains(cfg: ScenarioConfig, layout: ClusterLayout, pred_m: np.ndarray, pred_cov_m2: np.ndarray,
                  codebook: np.ndarray | None = None) -> np.ndarray:
    """``(I, C)`` m^2: per target, the variance the best BS of each cluster would remove from its prediction,
    ``max_{m in c} tr P - tr (P^-1 + J_m)^-1`` (``J_m`` the expected position information of BS ``m`` with beams
    toward the prediction, :func:`rl_isac.physics.fisher.expected_position_information`; the myopic objective's
    per-pair term). Shapes: ``pred_m (I, 2)``, ``pred_cov_m2 (I, 2, 2)``."""
    from rl_isac.physics.arrays import beams_toward, dft_codebook
    from rl_isac.physics.channel import geometry
    from rl_isac.physics.fisher import expected_position_information

    if codebook is None:
        codebook = dft_codebook(cfg.num_tx_antennas, cfg.codebook_size, cfg.antenna_spacing_wavelengths)
    bs = np.asarray(cfg.bs_positions_m, float)
    _, angle = geometry(bs, pred_m)
    beams = beams_toward(np.cos(angle), cfg.codebook_size, cfg.num_tracking_symbols)
    info = expected_position_information(cfg, codebook, bs, pred_m, beams)              # (M, I, 2, 2)
    P = np.asarray(pred_cov_m2, float)
    post = np.linalg.inv(np.linalg.inv(P)[None] + info)                                # (M, I, 2, 2)
    g = np.trace(P, axis1=-2, axis2=-1)[None] - np.trace(post, axis1=-2, axis2=-1)     # (M, I)
    return np.stack([g[list(idx)].max(axis=0) for idx in layout.bs_index], axis=1)


def assign_slots(layout: ClusterLayout, owner: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
    """Slot table ``(C, K)`` int64 of global target indices (``-1`` = empty) for ``owner (I,)``.

    A target keeps its slot in ``previous`` while its cluster keeps it; arrivals fill the lowest free slots
    in increasing target index.
    """
    C, K = layout.num_clusters, layout.capacity
    slots = np.full((C, K), -1, dtype=np.int64)
    owner = np.asarray(owner, dtype=np.int64)
    for c in range(C):
        if previous is not None:
            keep = (previous[c] >= 0) & (owner[np.maximum(previous[c], 0)] == c)
            slots[c, keep] = previous[c, keep]
        arrivals = [i for i in np.flatnonzero(owner == c) if i not in set(slots[c].tolist())]
        free = np.flatnonzero(slots[c] < 0)
        if len(arrivals) > len(free):
            raise ConfigError("owner", np.bincount(owner, minlength=C).tolist(),
                              f"cluster {c} owns more than its {K} slots")
        slots[c, free[:len(arrivals)]] = arrivals
    return slots


def subset_measurements(meas: Measurements, bs_index: np.ndarray, target_index: np.ndarray) -> Measurements:
    """The measurements of BSs ``bs_index (M_c,)`` on targets ``target_index (n,)``; an index ``-1`` gives an
    empty column (nothing assigned or detected). Shapes ``(M_c, n)`` (peaks ``(M_c, n, P)``)."""
    bs = np.asarray(bs_index, dtype=np.int64)
    tg = np.asarray(target_index, dtype=np.int64)
    valid = tg >= 0
    cols = np.where(valid, tg, 0)

    def take(arr: np.ndarray) -> np.ndarray:
        out = np.asarray(arr)[bs][:, cols].copy()
        out[:, ~valid] = 0
        return out

    fields = {name: take(getattr(meas, name)) for name in
              ("assigned", "detected", "range_m", "angle_rad", "snr_db", "cov", *PEAK_FIELDS)}
    return Measurements(block=meas.block, **fields)


def drop_peaks(meas: Measurements, drop: np.ndarray) -> Measurements:
    """``meas`` without the peaks ``drop (M, I, P)`` bool: the remaining valid peaks of each pair move to the
    front (still strongest first), ``detected`` and the ``(M, I)`` fields follow peak 0."""
    keep = np.asarray(meas.peak_valid, bool) & ~np.asarray(drop, bool)
    order = np.argsort(~keep, axis=-1, kind="stable")                               # kept peaks first, in order
    valid = np.take_along_axis(keep, order, axis=-1)
    fields = {}
    for name in ("peak_range_m", "peak_angle_rad", "peak_snr_db"):
        arr = np.take_along_axis(np.asarray(getattr(meas, name)), order, axis=-1)
        fields[name] = np.where(valid, arr, 0.0)
    cov = np.take_along_axis(np.asarray(meas.peak_cov), order[..., None, None], axis=-3)
    fields["peak_cov"] = np.where(valid[..., None, None], cov, 0.0)
    det = valid[..., 0]
    return Measurements(assigned=np.asarray(meas.assigned, bool).copy(), detected=det.copy(),
                        range_m=fields["peak_range_m"][..., 0].copy(),
                        angle_rad=fields["peak_angle_rad"][..., 0].copy(),
                        snr_db=np.asarray(meas.snr_db).copy(), cov=fields["peak_cov"][..., 0, :, :].copy(),
                        block=meas.block, peak_valid=valid, **fields)


def foreign_peaks(meas: Measurements, bs_positions_m: np.ndarray, own_x: np.ndarray, own_P: np.ndarray,
                  foreign_x: np.ndarray, foreign_P: np.ndarray, gate: float = CHI2_GATE_999) -> np.ndarray:
    """``(M_c, n, P)`` bool: the peaks of a cluster's measurements that a foreign predicted track explains better
    than every own one and inside the gate (module docstring, "Foreign echoes").

    Shapes: ``own_x (n, 4)``, ``own_P (n, 4, 4)``, ``foreign_x (f, 4)``, ``foreign_P (f, 4, 4)`` predicted states.
    """
    drop = np.zeros(np.shape(meas.peak_valid), bool)
    if len(foreign_x) == 0:
        return drop
    peaks = collect_peaks(meas, max_angle_std_rad=None)
    if len(peaks) == 0:
        return drop
    nis_own = innovation_matrix(own_x, own_P, peaks, bs_positions_m)[0].min(axis=1) if len(own_x) else np.inf
    nis_for = innovation_matrix(foreign_x, foreign_P, peaks, bs_positions_m)[0].min(axis=1)
    bad = (nis_for < nis_own) & (nis_for <= gate)
    drop[peaks.bs[bad], peaks.label[bad], peaks.peak[bad]] = True
    return drop


def padded_action_mask(remaining_chains: np.ndarray, covered: np.ndarray, chosen: np.ndarray, stopped: np.ndarray,
                       target_valid: np.ndarray) -> np.ndarray:
    """The exact mask of shared interface 1 over ``K`` slots of which only ``target_valid (..., K)`` hold targets.

    An empty slot counts as covered (not required by (5d)) and as chosen at every BS (not choosable, (5e));
    shapes as :func:`rl_isac.association.constraints.valid_action_mask` -> ``(..., M_c * K + 1)`` bool.
    """
    pad = ~np.asarray(target_valid, bool)
    return valid_action_mask(remaining_chains, np.asarray(covered, bool) | pad,
                             np.asarray(chosen, bool) | pad[..., None, :], stopped)


def check_cluster_pairs(pairs: np.ndarray, num_bs: int, num_slots: int, num_rf: int,
                        target_valid: np.ndarray) -> np.ndarray:
    """Validate one cluster's ``J = M_c N_RF`` sub-actions against :func:`padded_action_mask`, step by step.

    Returns:
        ``(M_c, K)`` bool association (no pair on an empty slot, every owned slot covered).
    Raises:
        ConstraintViolation: naming the step, the pair (BS, slot) or STOP, and the rule it breaks.
    """
    a = np.asarray(pairs)
    J, P = num_bs * num_rf, num_bs * num_slots
    if a.shape != (J,):
        raise ConstraintViolation("(5e)", f"pairs must have shape (J,) = ({J},), got {a.shape}")
    if a.dtype.kind not in "iu":
        if not (a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a))):
            raise ConstraintViolation("(5e)", f"pairs must be integer steps in [0, {P}], got {a.tolist()}")
    a = a.astype(np.int64)
    valid = np.asarray(target_valid, bool)
    remaining = np.full(num_bs, num_rf, dtype=np.int64)
    covered = np.zeros(num_slots, bool)
    chosen = np.zeros((num_bs, num_slots), bool)
    stopped = False
    for j, k in enumerate(a.tolist()):
        if not 0 <= k <= P:
            raise ConstraintViolation("(5e)", f"step {j} = {k} is outside [0, {P}] (pairs and STOP = {P})")
        ok = padded_action_mask(remaining, covered, chosen, np.asarray(stopped), valid)[k]
        if k == P:
            if not ok:
                missing = np.flatnonzero(valid & ~covered).tolist()
                raise ConstraintViolation("(5d)", f"STOP at step {j} leaves owned slot(s) {missing} uncovered")
            stopped = True
            continue
        m, s = divmod(k, num_slots)
        if not ok:
            if stopped:
                raise ConstraintViolation("(5e)", f"step {j}: pair (bs={m}, slot={s}) after a STOP (STOP is sticky)")
            if not valid[s]:
                raise ConstraintViolation("(5e)", f"step {j}: pair (bs={m}, slot={s}) names an empty slot")
            if chosen[m, s]:
                raise ConstraintViolation("(5e)", f"step {j}: pair (bs={m}, slot={s}) chosen twice")
            if remaining[m] == 0:
                raise ConstraintViolation("(5c)", f"step {j}: pair (bs={m}, slot={s}): BS {m} has no RF chain left")
            raise ConstraintViolation("(5d)", f"step {j}: pair (bs={m}, slot={s}) is covered while "
                                              f"{int((valid & ~covered).sum())} owned slot(s) are uncovered and "
                                              f"only {int(remaining.sum())} chain(s) remain")
        remaining[m] -= 1
        covered[s] = True
        chosen[m, s] = True
    if np.any(valid & ~covered):
        raise ConstraintViolation("(5d)", f"owned slot(s) {np.flatnonzero(valid & ~covered).tolist()} uncovered")
    return chosen


def cluster_sub_actions(association: np.ndarray, target_valid: np.ndarray, num_rf: int) -> np.ndarray:
    """Canonical sub-actions ``(J,)`` int64 of one cluster's association ``(M_c, K)`` over its slots, empty slots
    ``~target_valid`` left out (pairs BS-major, then STOPs): the inverse of :func:`check_cluster_pairs`."""
    from rl_isac.association.constraints import association_to_sub_actions

    a = np.asarray(association, bool)
    valid = np.asarray(target_valid, bool)
    M, K = a.shape
    if a[:, ~valid].any():
        m, s = np.argwhere(a[:, ~valid])[0]
        raise ConstraintViolation("(5e)", f"pair (bs={m}, slot={np.flatnonzero(~valid)[s]}) names an empty slot")
    cols = np.flatnonzero(valid)
    if cols.size == 0:  # nothing owned: every step is STOP
        return np.full(M * num_rf, M * K, dtype=np.int64)
    steps = association_to_sub_actions(a[:, cols], num_rf)
    n = cols.size
    out = np.full(steps.shape, M * K, dtype=np.int64)
    pair = steps < M * n
    out[pair] = steps[pair] // n * K + cols[steps[pair] % n]
    return out


def _load_tracks(ekf: EKFEstimator, tracks: dict[str, np.ndarray], rows: np.ndarray, block: int) -> None:
    """Put the global tracks ``rows (n,)`` of ``tracks`` (per-target arrays ``(I, ...)`` and pairwise ``(I, I)`` ones,
    keys of :meth:`EKFEstimator.export_tracks`) into ``ekf`` as its posterior of ``block``
    (:meth:`EKFEstimator.load_tracks`: state, covariance, miss counter and the identity anchors/encounter counters;
    a test checks that the loaded EKF predicts exactly what the sending one did)."""
    grid = np.ix_(rows, rows)
    ekf.load_tracks({k: (v[grid] if k in PAIR_FIELDS else v[rows]) for k, v in tracks.items()}, block)


@dataclass(frozen=True)
class Handover:
    """One handover: ``target`` passes from cluster ``source`` to ``dest`` after block ``block``, with the
    posterior track ``state (4,)``, ``covariance (4, 4)`` and miss counter ``missed`` of that block."""

    block: int
    target: int
    source: int
    dest: int
    state: np.ndarray
    covariance: np.ndarray
    missed: float


class ClusteredEKF:
    """One EKF per CU cluster over the targets it owns, with handover (module docstring).

    Usage::

        trk = ClusteredEKF(cfg, layout)
        trk.reset(acquisition_m)             # (I, 2): owners from the acquisition
        u_hat, u_next = trk.update(meas)     # global (M, I) measurements of the block; owners for q+1

    Global arrays are indexed by target (``I``); :attr:`owner` ``(I,)``, :attr:`slots` ``(C, K)``.
    """

    def __init__(self, cfg: ScenarioConfig, layout: ClusterLayout, settings: EKFSettings | None = None,
                 exclude_foreign: bool = True) -> None:
        self.cfg, self.layout = cfg, layout
        self.settings = settings
        self.exclude_foreign = exclude_foreign
        self.foreign_dropped = 0
        """Peaks dropped as foreign echoes since the last reset."""
        self._codebook = None
        C = layout.num_clusters
        self._sub = [layout.sub_scenario(cfg, c) for c in range(C)]
        self._ekfs = [EKFEstimator(self._sub[c], settings) for c in range(C)]
        self._rows: list[np.ndarray] = [np.zeros(0, np.int64) for _ in range(C)]  # targets of each EKF's rows
        self.owner = np.zeros(cfg.num_targets, np.int64)
        self.slots = np.full((C, layout.capacity), -1, np.int64)
        self.handovers: list[Handover] = []
        """Handovers of the last :meth:`update` (empty after :meth:`reset`)."""
        self.total_handovers = 0
        self.block = 0
        self._u_hat = np.zeros((cfg.num_targets, 2))
        self.ownership_prediction_m = np.zeros((cfg.num_targets, 2))
        """``(I, 2)``: the predictions the last :meth:`update` decided ownership on (the senders', before handover)."""

    # ------------------------------------------------------------------ episode
    def reset(self, initial_positions_m: np.ndarray) -> np.ndarray:
        """Start from the acquisition ``(I, 2)`` metres; owners by the acquired x (no hysteresis)."""
        acq = np.asarray(initial_positions_m, dtype=float)
        if acq.shape != (self.cfg.num_targets, 2) or not np.all(np.isfinite(acq)):
            raise ConfigError("initial_positions_m", acq.shape, f"must be a finite ({self.cfg.num_targets}, 2) array")
        gain = None
        if self.layout.repair == "information":  # the EKF's prior: N(acquisition, acquisition_std^2 I)
            cov = np.tile(np.eye(2) * self.cfg.acquisition_std_m**2, (len(acq), 1, 1))
            gain = cluster_gains(self.cfg, self.layout, acq, cov)
        self.owner = assign_owners(self.layout, acq, gain_m2=gain)
        self.slots = assign_slots(self.layout, self.owner)
        self.block = 0
        self.handovers, self.total_handovers = [], 0
        self.foreign_dropped = 0
        self._u_hat = acq.copy()
        for c in range(self.layout.num_clusters):
            rows = self._occupied(c)
            self._rows[c] = rows
            if rows.size:
                self._ekfs[c].reset(acq[rows])
        return acq.copy()

    def _occupied(self, c: int) -> np.ndarray:
        s = self.slots[c]
        return s[s >= 0]

    def update(self, meas: Measurements) -> tuple[np.ndarray, np.ndarray]:
        """Fuse block ``q`` per cluster, then hand over for ``q + 1``.

        Args:
            meas: the global ``(M, I)`` measurements of the block.
        Returns:
            ``u_hat_q (I, 2)`` and ``u_tilde_{q+1} (I, 2)`` metres (each target from its owner's EKF; a handed-over
            target's prediction is the same from either side).
        """
        cfg, layout = self.cfg, self.layout
        if meas.assigned.shape != (cfg.num_bs, cfg.num_targets):
            raise ConfigError("measurements", meas.assigned.shape,
                              f"must be the global ({cfg.num_bs}, {cfg.num_targets}) arrays")
        I = cfg.num_targets
        # every target's posterior track, gathered from its owner's EKF (pairwise identity counters between
        # targets of different clusters: none)
        tracks = empty_tracks(I)
        x, P, missed = tracks["x"], tracks["P"], tracks["missed"]
        exchange = self.exclude_foreign and layout.num_clusters > 1
        if exchange:  # the predicted tracks every cluster shares with the others before the block's update
            px, pP = self.predicted_state(), self.predicted_covariance()
        for c in range(layout.num_clusters):
            rows = self._rows[c]
            if rows.size == 0:
                continue
            ekf = self._ekfs[c]
            sub = subset_measurements(meas, layout.bs_array(c), rows)
            if exchange:
                others = np.flatnonzero(self.owner != c)
                drop = foreign_peaks(sub, ekf.bs_positions_m, px[rows], pP[rows], px[others], pP[others])
                if drop.any():
                    self.foreign_dropped += int(drop.sum())
                    sub = drop_peaks(sub, drop)
            ekf.update(sub)
            grid = np.ix_(rows, rows)
            for key, value in ekf.export_tracks().items():
                if key in PAIR_FIELDS:
                    tracks[key][grid] = value
                else:
                    tracks[key][rows] = value
        self.block += 1
        self._u_hat = x[:, :2].copy()
        pred = self.predicted_state()
        self.ownership_prediction_m = pred[:, :2].copy()
        gain = None
        if layout.repair == "information":
            if self._codebook is None:
                from rl_isac.physics.arrays import dft_codebook

                self._codebook = dft_codebook(cfg.num_tx_antennas, cfg.codebook_size, cfg.antenna_spacing_wavelengths)
            gain = cluster_gains(cfg, layout, pred[:, :2], self.predicted_position_covariance(), self._codebook)
        new_owner = assign_owners(layout, pred[:, :2], self.owner, gain)
        moved = np.flatnonzero(new_owner != self.owner)
        self.handovers = [Handover(self.block, int(i), int(self.owner[i]), int(new_owner[i]), x[i].copy(),
                                   P[i].copy(), float(missed[i])) for i in moved]
        self.total_handovers += len(moved)
        self.slots = assign_slots(layout, new_owner, self.slots)
        self.owner = new_owner
        changed = {h.source for h in self.handovers} | {h.dest for h in self.handovers}
        for c in sorted(changed):
            rows = self._occupied(c)
            self._rows[c] = rows
            if rows.size:
                _load_tracks(self._ekfs[c], tracks, rows, self.block)
        for c in range(layout.num_clusters):  # slot order of unchanged clusters is unchanged too
            if c not in changed:
                assert np.array_equal(self._rows[c], self._occupied(c))
        return self._u_hat.copy(), self.predicted_position()

    # ------------------------------------------------------------------ global views
    def _gather(self, fn) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(self._rows[c], fn(self._ekfs[c])) for c in range(self.layout.num_clusters) if self._rows[c].size]

    def predicted_state(self) -> np.ndarray:
        """``(I, 4)`` predicted states for the next block (each target by its current owner)."""
        out = np.zeros((self.cfg.num_targets, 4))
        for rows, v in self._gather(lambda e: e.predicted_state()):
            out[rows] = v
        return out

    def predicted_position(self) -> np.ndarray:
        """``u_tilde_{q+1}``: ``(I, 2)`` metres."""
        return self.predicted_state()[:, :2]

    def predicted_covariance(self) -> np.ndarray:
        """``(I, 4, 4)`` predicted covariances for the next block."""
        out = np.zeros((self.cfg.num_targets, 4, 4))
        for rows, v in self._gather(lambda e: e.predicted_covariance()):
            out[rows] = v
        return out

    def predicted_position_covariance(self) -> np.ndarray:
        """``(I, 2, 2)`` m^2."""
        return self.predicted_covariance()[:, :2, :2]

    @property
    def state(self) -> np.ndarray:
        """``(I, 4)`` posterior states of the last block (after handover: each from its new owner, unchanged)."""
        out = np.zeros((self.cfg.num_targets, 4))
        for rows, v in self._gather(lambda e: e.state):
            out[rows] = v
        return out

    @property
    def covariance(self) -> np.ndarray:
        """``(I, 4, 4)`` posterior covariances of the last block."""
        out = np.zeros((self.cfg.num_targets, 4, 4))
        for rows, v in self._gather(lambda e: e.covariance):
            out[rows] = v
        return out

    @property
    def estimate_m(self) -> np.ndarray:
        """``u_hat_q (I, 2)`` of the last update (the acquisition after reset)."""
        return self._u_hat.copy()

    @property
    def searching(self) -> np.ndarray:
        """``(I,)`` bool: tracks their owner's EKF is searching for."""
        out = np.zeros(self.cfg.num_targets, bool)
        for rows, v in self._gather(lambda e: e.searching):
            out[rows] = v
        return out

    def cluster_ekf(self, cluster: int) -> tuple[np.ndarray, EKFEstimator]:
        """``(targets of its rows (n,), the EKF)`` of one cluster (read-only use)."""
        return self._rows[cluster].copy(), self._ekfs[cluster]


__all__ = ["HYSTERESIS_M", "CLUSTER_COUNTS", "ClusterLayout", "split_clusters", "assign_owners", "assign_slots",
           "cluster_gains", "subset_measurements", "drop_peaks", "foreign_peaks", "padded_action_mask",
           "check_cluster_pairs", "cluster_sub_actions", "ClusteredEKF", "Handover"]
