"""Measurement-to-track assignment of the CU: which detected peak belongs to which target.

A pair ``[bs, target]`` of the association only says where the beams and the range gate
pointed; the peaks its front end reports (``Measurements.peak_*``, several per gate) may be
its own target, a neighbour inside the same beams and gate, or a merge of both. The CU
therefore never trusts the label: every valid peak of the block is a candidate for every
track, and a global-nearest-neighbour (GNN) assignment decides.

Model and costs. Each valid peak ``n`` is a range/angle measurement ``z_n`` from BS ``m_n`` with
reported covariance ``R_n``. Against track ``i`` with predicted state ``x_i``, covariance ``P_i``::

    y_ni = z_n - h_m(x_i)                       (angle wrapped)
    S_ni = H_mi P_i H_mi^T + R_n
    d2_ni = y_ni^T S_ni^-1 y_ni                  (NIS; chi-square, 2 dof, if n is i's echo)
    c_ni = d2_ni + ln det S_ni                   (negative log-likelihood up to a constant)

plus :data:`OTHER_TARGET_COST` when ``i`` is not the pair's own target (the label is a prior, not a
verdict). ``n`` may go to ``i`` only inside the gate ``d2_ni <= gate`` (13.8 = the 99.9 % point).

Scans. The peaks of one pair form one *scan*: they are resolved echoes (different range cells)
of different targets, so within a scan each peak goes to at most one track and each track
gets at most one peak: a rectangular assignment problem (``scipy.optimize.linear_sum_assignment``
on ``c`` with gated-out entries forbidden), solved scan by scan. Different scans are different
looks (another BS, or another RF chain with other beams and symbols: independent noise), so a
track may receive one peak from every scan. Because every track competes for every peak, a
target whose echo is masked or merged cannot take its neighbour's peak while the neighbour's
own track explains it better: the "gate lockout" of a per-pair gate (a stronger neighbour's
echo accepted, the own echo then rejected for good) cannot start this way.

Batched EKF (:func:`rl_isac.tracking.ekf.update_many`): the functions that compare peaks with tracks also take
``x (N, I, 4)``, ``P (N, I, 4, 4)``, per peak the tracks of the peak's own estimator (the peaks of several
estimators in one :class:`PeakSet`, :func:`collect_peaks_many`); every entry is then computed as with that
estimator's ``x (I, 4)`` alone. :func:`merge_partners` needs one estimator's peaks.

Pure numpy/scipy; no state. :class:`rl_isac.tracking.ekf.EKFEstimator` calls :func:`gnn_assign`
every block; the window's EKF anchor and every EKF-based CU inherit it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

LOG_2PI = math.log(2.0 * math.pi)
CHI2_GATE_999 = 13.815510557964274
"""99.9 % point of the chi-square distribution with 2 degrees of freedom, ``-2 ln(0.001)``."""


@dataclass(frozen=True)
class PeakSet:
    """Every valid peak of one block, flattened (``N`` of them, in ``[bs, target, peak]`` order).

    Attributes:
        bs: ``(N,)`` int, measuring BS.
        label: ``(N,)`` int, target of the pair whose gate the peak came from (not its owner).
        peak: ``(N,)`` int, rank of the peak in its gate (0 = strongest).
        scan: ``(N,)`` int, flat pair index ``bs * I + label`` (one scan per pair).
        z: ``(N, 2)`` ``(range_m, angle_rad)``.
        R: ``(N, 2, 2)`` reported covariance.
        snr_db: ``(N,)``.
        range_only: ``(N,)`` bool, peaks whose angle is unusable (reported angle std above
            :data:`MAX_ANGLE_STD_RAD`: near a BS's endfire): only their range is compared and fused
            (a 1-D innovation, :func:`innovation_matrix`). ``None``: none.
        env: ``(N,)`` int, for the peaks of several estimators' blocks in one set (the batched EKF,
            :func:`collect_peaks_many`): the estimator each peak belongs to (peaks ordered by it), else ``None``.
    """

    bs: np.ndarray
    label: np.ndarray
    peak: np.ndarray
    scan: np.ndarray
    z: np.ndarray
    R: np.ndarray
    snr_db: np.ndarray
    range_only: np.ndarray | None = None
    env: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.range_only is None:
            object.__setattr__(self, "range_only", np.zeros(len(self.bs), bool))

    def __len__(self) -> int:
        return len(self.bs)


MAX_ANGLE_STD_RAD = 0.05
"""Peaks with a reported angle std above this (rad) are range-only looks: a target near a BS's endfire
(``|cos theta| -> 1``, where ``var(theta) = var(u) / sin^2 theta`` blows up). Their angle is left out (a 2-D
innovation with such an ``R`` would gate them against any track on a whole range circle); their range
is still a good measurement and is used alone (1-D innovation, gate :func:`range_only_gate`). 0.05 rad is
5 m across the line of sight at 100 m. (They used to be dropped altogether: a target running along the
BS row's edge then had no accepted measurement for blocks on end although its range was measured every
block, went searching and re-initialised on the next stray peak: tracks_findings.md, mechanism B.)"""


@functools.lru_cache(maxsize=16)
def range_only_gate(gate: float) -> float:
    """The 1-D NIS gate with the same false-rejection probability as the 2-D ``gate``: ``gate`` is
    the ``1 - a`` point of chi-square(2) (``a = exp(-gate / 2)``), the result that of chi-square(1)."""
    from scipy.stats import chi2

    return float(chi2.isf(math.exp(-0.5 * gate), 1))


def peak_gates(peaks: PeakSet, gate: float) -> np.ndarray:
    """``(N,)`` NIS gate of each peak: ``gate`` (2 dof) or :func:`range_only_gate` (1 dof, range-only peaks)."""
    return np.where(peaks.range_only, range_only_gate(gate), gate)


def collect_peaks(meas, max_angle_std_rad: float | None = MAX_ANGLE_STD_RAD, keep_range_only: bool = True
                  ) -> PeakSet:
    """The valid peaks of a :class:`~rl_isac.physics.measurements.Measurements` as a :class:`PeakSet`.

    Peaks with an angle std above ``max_angle_std_rad`` are flagged ``range_only`` (``keep_range_only``) or
    left out; ``max_angle_std_rad=None`` keeps every peak as a 2-D measurement.
    """
    valid = np.asarray(meas.peak_valid, bool)  # (M, I, P)
    cov = np.asarray(meas.peak_cov)
    bad_angle = np.zeros(valid.shape, bool)
    if max_angle_std_rad is not None:
        bad_angle = cov[..., 1, 1] > max_angle_std_rad**2
        if not keep_range_only:
            valid = valid & ~bad_angle
    bs, label, peak = np.nonzero(valid)
    num_targets = valid.shape[1]
    z = np.stack([meas.peak_range_m[bs, label, peak], meas.peak_angle_rad[bs, label, peak]], axis=-1)
    return PeakSet(bs=bs, label=label, peak=peak, scan=bs * num_targets + label, z=z.reshape(-1, 2),
                   R=cov[bs, label, peak].reshape(-1, 2, 2), snr_db=np.asarray(meas.peak_snr_db)[bs, label, peak],
                   range_only=bad_angle[bs, label, peak])


def collect_peaks_many(metas: list, max_angle_std_rad: float | None = MAX_ANGLE_STD_RAD,
                       keep_range_only: bool = True) -> PeakSet:
    """:func:`collect_peaks` of ``E`` blocks of one scenario (the batched EKF,
    :func:`rl_isac.tracking.ekf.update_many`): the peaks of ``metas[0]``, then ``metas[1]``, ..., each in the order
    :func:`collect_peaks` gives them, with the same values; ``env`` says whose peak it is, ``scan`` is offset to
    ``e * M * I + bs * I + label`` (one scan id per pair and estimator)."""
    if len(metas) == 1:
        one = collect_peaks(metas[0], max_angle_std_rad, keep_range_only)
        return dataclasses.replace(one, env=np.zeros(len(one), np.intp))
    if len({np.shape(m.peak_valid) for m in metas}) > 1:  # e.g. a caller's P = 1 block beside the world's: one by one
        sets = [collect_peaks(m, max_angle_std_rad, keep_range_only) for m in metas]
        num_bs, num_targets = np.shape(metas[0].peak_valid)[:2]
        env = np.concatenate([np.full(len(p), e, np.intp) for e, p in enumerate(sets)])
        cat = {f.name: np.concatenate([getattr(p, f.name) for p in sets]) for f in dataclasses.fields(PeakSet)
               if f.name != "env"}
        cat["scan"] = cat["scan"] + env * (num_bs * num_targets)
        return PeakSet(**cat, env=env)
    valid = np.stack([np.asarray(m.peak_valid, bool) for m in metas])  # (E, M, I, P)
    cov = np.stack([np.asarray(m.peak_cov) for m in metas])
    bad_angle = np.zeros(valid.shape, bool)
    if max_angle_std_rad is not None:
        bad_angle = cov[..., 1, 1] > max_angle_std_rad**2
        if not keep_range_only:
            valid = valid & ~bad_angle
    env, bs, label, peak = np.nonzero(valid)
    num_bs, num_targets = valid.shape[1:3]
    rng = np.stack([np.asarray(m.peak_range_m) for m in metas])[env, bs, label, peak]
    ang = np.stack([np.asarray(m.peak_angle_rad) for m in metas])[env, bs, label, peak]
    snr = np.stack([np.asarray(m.peak_snr_db) for m in metas])[env, bs, label, peak]
    return PeakSet(bs=bs, label=label, peak=peak, scan=(env * num_bs + bs) * num_targets + label,
                   z=np.stack([rng, ang], axis=-1).reshape(-1, 2), R=cov[env, bs, label, peak].reshape(-1, 2, 2),
                   snr_db=snr, range_only=bad_angle[env, bs, label, peak], env=env)


def _positions_of_tracks(x: np.ndarray, rows=slice(None)) -> np.ndarray:
    """Track positions against peaks: ``x (I, 4)`` (every peak against the same tracks) -> ``(1, I, 2)``;
    ``x (N, I, 4)`` (per peak, the tracks of its own estimator: the batched EKF) -> ``(N, I, 2)`` (rows ``rows``)."""
    return x[None, :, :2] if x.ndim == 2 else x[rows, :, :2]


def _merge_cells(peaks: PeakSet, x: np.ndarray, bs_positions_m: np.ndarray, range_resolution_m: float,
                 beam_spacing_u: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``near (N, I)``: track ``i``'s prediction lies in peak ``n``'s resolution cell (closer than
    ``range_resolution_m`` in range and ``beam_spacing_u`` in ``u = cos(theta)`` from the peak's BS), and the
    predicted ranges ``(N, I)`` m and angles ``(N, I)`` rad from each peak's BS."""
    bs_pos = np.asarray(bs_positions_m, float)[peaks.bs]
    delta = _positions_of_tracks(x) - bs_pos[:, None, :]  # (N, I, 2)
    r_pred = np.hypot(delta[..., 0], delta[..., 1])
    th_pred = np.arctan2(delta[..., 1], delta[..., 0])
    u_pred = np.cos(th_pred)
    near = ((np.abs(r_pred - peaks.z[:, None, 0]) < range_resolution_m)
            & (np.abs(u_pred - np.cos(peaks.z[:, None, 1])) < beam_spacing_u))  # (N, I)
    return near, r_pred, th_pred


def merge_partners(peaks: PeakSet, x: np.ndarray, bs_positions_m: np.ndarray, range_resolution_m: float,
                   beam_spacing_u: float) -> np.ndarray:
    """``(N, 2)`` int: the two tracks whose echoes peak ``n`` may be the merge of, ``-1`` where none.

    A peak is a two-target merge when exactly two tracks' predictions lie in its resolution cell
    (:func:`widen_for_merges`' test) and its BS did not resolve them: no other peak of that BS in the cell
    of either track lies a half range cell or more from it (a second echo there means the front end saw
    two targets apart, and each peak is one of them). Such a peak measures where the pair's echoes add
    up, about their centroid, and says nothing about their separation:
    :func:`rl_isac.tracking.ekf.update_merged` fuses it that way into both tracks.
    """
    out = np.full((len(peaks), 2), -1, np.int64)
    if len(peaks) == 0 or x.shape[-2] < 2:
        return out
    near, _, _ = _merge_cells(peaks, x, bs_positions_m, range_resolution_m, beam_spacing_u)
    for n in np.flatnonzero(near.sum(axis=1) == 2):
        pair = np.flatnonzero(near[n])
        same_bs = np.flatnonzero((peaks.bs == peaks.bs[n]) & near[:, pair].any(axis=1))
        if np.any(np.abs(peaks.z[same_bs, 0] - peaks.z[n, 0]) >= 0.5 * range_resolution_m):
            continue  # the BS resolved two echoes there
        out[n] = pair
    return out


def same_beams(peaks: PeakSet, x: np.ndarray, bs_positions_m: np.ndarray, beam_spacing_u: float,
               range_resolution_m: float | None = None) -> np.ndarray:
    """``(N, I)`` bool: track ``i`` may own peak ``n`` as far as the beams of ``n``'s scan say.

    A 2-D peak carries its own angle, which the gate checks: always ``True``. A range-only peak
    (:attr:`PeakSet.range_only`) is gated on its range alone, which every track on the same range circle
    around the BS passes; it can only be the echo of a target inside the scan's beams, which were steered
    at the scan's label, so it may go only to tracks whose predicted direction ``u = cos(theta)`` from that
    BS lies within ``beam_spacing_u`` of the label's predicted one (the label itself always). Without this
    check a range-only peak was given to a track across the area on the same range circle (one
    development episode lost 252 target-blocks that way: tracks_findings.md). With ``range_resolution_m``
    a range-only peak goes to its label's track only, and only where no other track's prediction lies in
    the same beams within two range cells of it (a range alone cannot tell two such tracks apart).
    """
    ok = np.ones((len(peaks), x.shape[-2]), bool)
    ro = np.flatnonzero(peaks.range_only)
    if ro.size == 0:
        return ok
    bs_pos = np.asarray(bs_positions_m, float)[peaks.bs[ro]]
    delta = _positions_of_tracks(x, ro) - bs_pos[:, None, :]  # (n, I, 2)
    r = np.hypot(delta[..., 0], delta[..., 1])
    u = delta[..., 0] / np.maximum(r, 1e-9)
    u_label = u[np.arange(ro.size), peaks.label[ro]]
    ok[ro] = np.abs(u - u_label[:, None]) < beam_spacing_u
    if range_resolution_m is not None:  # unambiguous only: the label's track alone near the peak in those beams
        near = ok[ro] & (np.abs(r - peaks.z[ro, None, 0]) < 2.0 * range_resolution_m)
        label_only = np.zeros_like(near)
        label_only[np.arange(ro.size), peaks.label[ro]] = True
        ok[ro] = np.where((near.sum(axis=1) <= 1)[:, None], label_only, False)
    return ok


def widen_for_merges(peaks: PeakSet, x: np.ndarray, bs_positions_m: np.ndarray, range_resolution_m: float,
                     beam_spacing_u: float) -> PeakSet:
    """Peaks that may be two targets' merged echoes, with their covariance widened to cover both.

    Two tracks whose predictions a BS cannot resolve (closer than ``range_resolution_m`` in range and
    ``beam_spacing_u`` in ``u = cos(theta)`` from that BS) give one merged echo there, biased toward either
    by up to their separation. A peak of that BS lying inside the pair's joint cell gets, added to its
    ``R``, ``(delta / 2)^2`` in range and in angle, ``delta`` the spread of those tracks' predicted ranges and
    angles: the merge's bias becomes part of the measurement's reported uncertainty, so it pulls neither
    track off (two targets crossing keep their identities on their velocities).

    Args:
        peaks: the block's peaks; x: ``(I, 4)`` predicted states; bs_positions_m: ``(M, 2)``.
    Returns:
        a new :class:`PeakSet` (``R`` widened where needed).
    """
    if len(peaks) == 0 or x.shape[-2] < 2:
        return peaks
    near, r_pred, th_pred = _merge_cells(peaks, x, bs_positions_m, range_resolution_m, beam_spacing_u)
    merged = near.sum(axis=1) >= 2
    if not merged.any():
        return peaks
    R = peaks.R.copy()
    for n in np.flatnonzero(merged):
        idx = np.flatnonzero(near[n])
        dr = r_pred[n, idx].max() - r_pred[n, idx].min()
        dth = np.ptp(np.unwrap(th_pred[n, idx]))
        R[n, 0, 0] += (0.5 * dr) ** 2
        R[n, 1, 1] += (0.5 * dth) ** 2
    return dataclasses.replace(peaks, R=R)


def innovation_matrix(x: np.ndarray, P: np.ndarray, peaks: PeakSet, bs_positions_m: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """NIS ``d2 (N, I)`` and ``ln det S (N, I)`` of every peak against every track's prediction.

    For a ``range_only`` peak both are those of the range alone: ``d2 = y_r^2 / S_rr``, ``ln S_rr``
    (1 dof; :func:`peak_gates` gives the matching gate).

    Args:
        x: ``(I, 4)`` predicted states; P: ``(I, 4, 4)`` their covariances.
        peaks: the block's :class:`PeakSet`.
        bs_positions_m: ``(M, 2)``.
    """
    num = len(peaks)
    if num == 0:
        return np.zeros((0, x.shape[-2])), np.zeros((0, x.shape[-2]))
    bs_pos = np.asarray(bs_positions_m, float)[peaks.bs]  # (N, 2)
    delta = _positions_of_tracks(x) - bs_pos[:, None, :]  # (N, I, 2)
    dx, dy = delta[..., 0], delta[..., 1]
    d2 = np.maximum(dx * dx + dy * dy, 1e-12)
    d = np.sqrt(d2)
    # H = [[dx/d, dy/d], [-dy/d^2, dx/d^2]] on the position (the velocity columns are 0).
    H = np.stack([np.stack([dx / d, dy / d], -1), np.stack([-dy / d2, dx / d2], -1)], -2)  # (N, I, 2, 2)
    P_pos = P[None, :, :2, :2] if P.ndim == 3 else P[:, :, :2, :2]
    S = H @ P_pos @ np.swapaxes(H, -1, -2) + peaks.R[:, None]  # S = H P H^T + R
    y = np.stack([peaks.z[:, None, 0] - d, peaks.z[:, None, 1] - np.arctan2(dy, dx)], -1)  # (N, I, 2)
    y[..., 1] = np.pi - np.mod(np.pi - y[..., 1], 2 * np.pi)  # wrap to (-pi, pi]
    det = S[..., 0, 0] * S[..., 1, 1] - S[..., 0, 1] * S[..., 1, 0]
    det = np.maximum(det, 1e-300)
    # y^T S^-1 y for a 2x2 S, in closed form
    y0, y1 = y[..., 0], y[..., 1]
    nis = (S[..., 1, 1] * y0 * y0 - 2 * S[..., 0, 1] * y0 * y1 + S[..., 0, 0] * y1 * y1) / det
    logdet = np.log(det)
    ro = peaks.range_only
    if ro.any():
        s_rr = np.maximum(S[ro, :, 0, 0], 1e-300)
        nis[ro] = y0[ro] ** 2 / s_rr
        logdet[ro] = np.log(s_rr)
    return nis, logdet


OTHER_TARGET_COST = 1.0
"""Prior of the label, in cost units (``-2 ln`` of a probability ratio): the pair's beams and gate were
set on its own target, a mild reason to think an echo in them is its own (odds e^0.5 = 1.6 to 1). Kept
small on purpose: a neighbour's echo in the same beams and gate is exactly the case where the label is
wrong. On 10 development episodes (ekf-milp, signal level, I = 8, training-range seeds) the lost fraction
was 0.004-0.010 for 0 and 1, 0.045 for 4.4 (odds 9 to 1). Without any prior, a lone peak between two
tracks goes to the one with the tighter prediction (the ``ln det S`` term) more easily; in the synthetic
6-target world of ``tests/tracking`` (wide angle errors, no second peaks) tracks then swap even at 1."""


def gnn_assign(x: np.ndarray, P: np.ndarray, peaks: PeakSet, bs_positions_m: np.ndarray,
               gate: float = CHI2_GATE_999, other_target_cost: float = OTHER_TARGET_COST,
               allowed: np.ndarray | None = None, innovation: tuple[np.ndarray, np.ndarray] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Global nearest neighbour, scan by scan.

    Args:
        x, P: ``(I, 4)``, ``(I, 4, 4)`` predicted states and covariances of the tracks.
        peaks: the block's :class:`PeakSet`.
        bs_positions_m: ``(M, 2)``.
        gate: NIS gate (chi-square, 2 dof).
        other_target_cost: added to the cost of giving a peak to a track other than the pair's label
            (:data:`OTHER_TARGET_COST`).
        allowed: optional ``(N, I)`` bool, pairs that may be assigned at all (e.g. :func:`same_beams`).
        innovation: optional ``(nis, logdet)`` of :func:`innovation_matrix` for these ``x, P, peaks`` (a caller
            that needs them too computes them once).
    Returns:
        ``track (N,)`` int: the track each peak is assigned to, ``-1`` where none (outside every gate or
        lost the assignment); ``nis (N,)``: its NIS against that track (``inf`` where unassigned).
    """
    num = len(peaks)
    track = np.full(num, -1, np.int64)
    nis_out = np.full(num, np.inf)
    if num == 0:
        return track, nis_out
    nis, logdet = innovation if innovation is not None else innovation_matrix(x, P, peaks, bs_positions_m)
    gated = nis <= peak_gates(peaks, gate)[:, None]
    if allowed is not None:
        gated &= allowed
    # -2 ln of the Gaussian likelihood: d2 + ln det S + dim ln(2 pi) (dim 1 for range-only peaks), + label prior
    dim = np.where(peaks.range_only, 1.0, 2.0)[:, None]
    cost = nis + logdet + dim * LOG_2PI + other_target_cost * (np.arange(x.shape[-2])[None, :] != peaks.label[:, None])
    cost = np.where(gated, cost, np.inf)
    # Scans with a single peak: its cheapest gated track (no conflict possible), all such scans at once.
    order = np.argsort(peaks.scan, kind="stable")
    _, first, counts = np.unique(peaks.scan[order], return_index=True, return_counts=True)
    single = order[first[counts == 1]]
    if single.size:
        j = np.argmin(cost[single], axis=1)
        ok = np.isfinite(cost[single, j])
        track[single[ok]] = j[ok]
        nis_out[single[ok]] = nis[single[ok], j[ok]]
    big = 1e12
    for start, count in zip(first[counts > 1], counts[counts > 1]):
        rows = order[start:start + count]
        sub = cost[rows]
        finite = np.isfinite(sub)
        if not finite.any():
            continue
        r, c = linear_sum_assignment(np.where(finite, sub, big))
        ok = finite[r, c]
        track[rows[r[ok]]] = c[ok]
        nis_out[rows[r[ok]]] = nis[rows[r[ok]], c[ok]]
    return track, nis_out


def label_assign(x: np.ndarray, P: np.ndarray, peaks: PeakSet, bs_positions_m: np.ndarray,
                 gate: float | None = CHI2_GATE_999) -> tuple[np.ndarray, np.ndarray]:
    """The old rule, for comparison: the strongest peak of each pair goes to the pair's own target when
    inside its gate (``gate=None``: always); other peaks are dropped. Same returns as :func:`gnn_assign`."""
    num = len(peaks)
    track = np.full(num, -1, np.int64)
    nis_out = np.full(num, np.inf)
    if num == 0:
        return track, nis_out
    nis, _ = innovation_matrix(x, P, peaks, bs_positions_m)
    own = nis[np.arange(num), peaks.label]
    ok = (peaks.peak == 0) & (True if gate is None else own <= peak_gates(peaks, gate))
    track[ok] = peaks.label[ok]
    nis_out[ok] = own[ok]
    return track, nis_out


ASSOCIATION_RULES = {"gnn": gnn_assign, "label": label_assign}
"""Data-association rules by name (:attr:`rl_isac.tracking.ekf.EKFSettings.data_association`)."""

__all__ = ["widen_for_merges", "merge_partners", "same_beams", "CHI2_GATE_999", "MAX_ANGLE_STD_RAD",
           "range_only_gate", "peak_gates",
           "OTHER_TARGET_COST", "PeakSet", "collect_peaks", "collect_peaks_many",
           "innovation_matrix", "gnn_assign", "label_assign",
           "ASSOCIATION_RULES"]
