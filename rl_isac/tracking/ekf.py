"""Extended Kalman filter of the CU: multi-BS range/angle fusion (the classical mapping ``F`` of eq. (3)).

Pure functions first, filterpy style, batched over targets (batches lead):

* :func:`predict` ``(x, P, F, Q) -> (x, P)``
* :func:`range_angle` / :func:`range_angle_jacobian`: ``h(x) = [||u - p||, atan2(y - y_p, x - x_p)]``
* :func:`update_range_angle`: EKF (or iterated EKF) update with one range/angle measurement per target
* :func:`update_speed`: optional pseudo-measurement ``||v|| = speed`` (the paper's speed is known)

and :class:`EKFEstimator`, a thin class holding the state of all targets of one episode:
``reset(initial_positions_m)`` then, once per block, ``update(meas) -> (u_hat_q, u_tilde_{q+1})``.

State ``[x_m, y_m, vx_mps, vy_mps]``; ``x: (num_targets, 4)``, ``P: (num_targets, 4, 4)``.
The motion model (``F``, ``Q``) lives in :mod:`rl_isac.tracking.motion`.

Choice of the defaults (:class:`EKFSettings`). Measured on the paper's motion (v = 10 m/s,
h = 15 deg, dT = 0.1 s, reflected at the edge margin), I = 6, 100 blocks, 20 seeds, 2-3 random BSs
per target, 10 % misses, range std U(0.1, 1) m, angle std U(0.002, 0.02) rad (the synthetic
world of ``tests/tracking/test_ekf.py``); per-target position RMSE over all targets and blocks:

=====================================================  ========  ==============  ===========
variant                                                RMSE (m)  good meas. (m)  poor* (m)
=====================================================  ========  ==============  ===========
measurement only (per-block information-weighted fix)    0.971       0.138          2.918
``isotropic`` Q, CV ``F``                                0.407       0.092          0.972
``dwna`` Q, CV ``F``                                     0.406         -              -
``heading`` Q, CV ``F``                                  0.389         -              -
``heading`` Q + decay ``kappa``                          0.369       0.080          0.900
``heading`` + decay + speed pseudo-meas. 1 m/s (default) 0.347       0.077          0.882
same, no edge reflection in the predictor                0.798         -              -
=====================================================  ========  ==============  ===========

(*good: range 0.02-0.1 m, angle 0.5-3 mrad; poor: range 0.5-2 m, angle 10-40 mrad, 30 % misses.)
The iterated EKF (3 iterations) changed nothing measurable at these ranges (>= 2 m from any BS,
1 m prior), so it is off by default. With the default the normalised estimation error squared of
the position is 2.1 (posterior and one-block prediction; 2 = consistent), so
:meth:`EKFEstimator.predicted_covariance` can be used as the position information of the
association objective. A tighter speed pseudo-measurement (0.5 m/s, re-applied every block as if
new information) makes the filter overconfident (NEES 3.3) and is worse early on; it is also gated
(:attr:`EKFSettings.speed_gate`, :attr:`EKFSettings.speed_max_std`) so that it does not act before
the heading is resolved.

Speed (exact refactors, same floats): :func:`update_range_angle_gated` takes ``h(x)`` and ``H(x)`` from one
``u - p`` and one ``hypot`` and skips the row selection when every row passes its gate; the sequential
update rounds pick each track's first peak without ``np.unique``; each
:class:`~rl_isac.physics.measurements.Measurements` object is validated once
(:meth:`~rl_isac.physics.measurements.Measurements.validate_once`: an EKF-based CU validates it before its
EKF). :meth:`EKFEstimator.update` time per block, I = 8, signal, ekf-milp's measurements of 2 x 100 blocks
(already validated by the CU), one core of a loaded machine, the code before (26fc549) and after alternating
in one process, median of 10 runs: 1.32 -> 1.13 ms (paired new/old ratio 0.85).

Batched (exact, same floats): :func:`update_many` updates the EKFs of several lockstep envs (an env runner's
vector env) in one pass over their stacked ``(E * I, 4)`` tracks; :meth:`EKFEstimator.update` is the same code
with ``E = 1``. Bit for bit the loop of single updates (``tests/tracking/test_batched_ekf.py``; also checked on
recorded env-runner blocks at both fidelities and ten option sets against the code before). The window push
with its EKF anchor per env step, thread CPU, 1 x 8 envs, I = 8, surrogate (``rl_isac.rllib.bench``'s
breakdown, 40 steps): 0.92 -> 0.30 ms, with the world's own measurements no longer validated twice
(:meth:`~rl_isac.physics.measurements.Measurements.trusted`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from rl_isac.config import ConfigMixin
from rl_isac.errors import ConfigError, MeasurementError
from rl_isac.tracking.data_association import (
    ASSOCIATION_RULES,
    collect_peaks_many,
    gnn_assign,
    innovation_matrix,
    merge_partners,
    peak_gates,
    same_beams,
    widen_for_merges,
)
from rl_isac.tracking.identity import CHI2_MEDIAN_2DOF, DECISIVE_COST, pairwise_nis, retrodiction_cost, swap_margin
from rl_isac.tracking.motion import (
    PROCESS_NOISE_MODELS,
    cv_transition,
    heading_step_moments,
    process_noise,
    reflect_into_area,
)

TRACK_FIELDS = ("x", "P", "missed", "anchor_m", "anchor_var_m2", "anchor_block", "start_block", "trusted_m",
                "trusted_var_m2", "trusted_block", "search_block", "search_heading_rad")
"""Per-track keys of :meth:`EKFEstimator.export_tracks` / :meth:`EKFEstimator.load_tracks`."""
PAIR_FIELDS = ("encounter", "same_blocks", "apart_blocks")
"""Pairwise ``(n, n)`` identity keys of :meth:`EKFEstimator.export_tracks` (between the exported tracks)."""
_FIELD_LAYOUT = {"x": ((4,), float), "P": ((4, 4), float), "missed": ((), float), "anchor_m": ((2,), float),
                 "anchor_var_m2": ((), float), "anchor_block": ((), np.int64), "start_block": ((), np.int64),
                 "trusted_m": ((2,), float), "trusted_var_m2": ((), float), "trusted_block": ((), np.int64),
                 "search_block": ((), np.int64), "search_heading_rad": ((), float)}
_PAIR_DTYPES = {"encounter": bool, "same_blocks": np.int64, "apart_blocks": np.int64}


def empty_tracks(num: int) -> dict[str, np.ndarray]:
    """Zero arrays of every key of :meth:`EKFEstimator.export_tracks` for ``num`` tracks (per-track keys
    ``(num, ...)``, pairwise keys ``(num, num)``, their dtypes): a buffer to gather exported tracks into."""
    out = {k: np.zeros((num, *shape), dtype) for k, (shape, dtype) in _FIELD_LAYOUT.items()}
    out.update({k: np.zeros((num, num), dtype) for k, dtype in _PAIR_DTYPES.items()})
    return out
CHI2_GATE = 13.815510557964274  # 99.9 % point of chi-square(2), the gate of the identity logic without a gate
IDENTITY_MAX_WAIT_BLOCKS = 10
"""Blocks apart after which an undecided encounter is closed with the filter's own pairing (a swap needs a
margin of ``DECISIVE_COST``: the assignment's labelling is evidence too)."""
SEEN_MISS_WEIGHT = 0.34
"""Weight of a block without an accepted peak but with a peak inside the track's gate (see
:attr:`EKFEstimator.missed`): three such blocks count as one miss."""
SEARCH_LOOK_STEP = 1.5
"""Arc between consecutive looks of a ring search (:attr:`EKFSettings.search_reseed`), in range-gate
half-widths (``ScenarioConfig.range_gate_m``): 1.5 leaves a quarter of each window overlapping the next."""
SEARCH_MAX_STD_M = 10.0
"""A searching track's position covariance stops growing at this std per axis, metres (the range gate's
half-width: beyond it the front end would not see the target anyway)."""
_MIN_RANGE_M = 1e-6  # floor of ||u - p|| in the Jacobian (a target never sits on a BS)


# ---------------------------------------------------------------------------------------------- pure functions
def wrap_angle(angle_rad: np.ndarray) -> np.ndarray:
    """Wrap angles to ``(-pi, pi]``, radians (any shape)."""
    return np.pi - np.mod(np.pi - np.asarray(angle_rad, dtype=float), 2 * np.pi)


def predict(x: np.ndarray, P: np.ndarray, F: np.ndarray, Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kalman prediction, batched over targets.

    Shapes:
        x: ``(num_targets, 4)``; P: ``(num_targets, 4, 4)``;
        F: ``(4, 4)`` or ``(num_targets, 4, 4)``; Q: ``(4, 4)`` or ``(num_targets, 4, 4)``.
    Returns:
        ``(x, P)`` predicted, same shapes as the inputs (new arrays).
    """
    x = np.asarray(x, dtype=float)
    P = np.asarray(P, dtype=float)
    F = np.asarray(F, dtype=float)
    x_new = np.einsum("...ij,...j->...i", F, x)  # x = F x
    P_new = F @ P @ np.swapaxes(F, -1, -2) + Q  # P = F P F^T + Q
    return x_new, 0.5 * (P_new + np.swapaxes(P_new, -1, -2))


def range_angle(x: np.ndarray, bs_pos_m: np.ndarray) -> np.ndarray:
    """Measurement function ``h(x) = [||u - p||, atan2(y - y_p, x - x_p)]``.

    Args:
        x: ``(num_targets, 4)`` states (only the position is used).
        bs_pos_m: ``(2,)`` or ``(num_targets, 2)`` BS positions, metres.
    Returns:
        ``(num_targets, 2)``: range (m) and angle (rad, in ``(-pi, pi]``).
    """
    delta = np.asarray(x, dtype=float)[..., :2] - np.asarray(bs_pos_m, dtype=float)
    return np.stack([np.hypot(delta[..., 0], delta[..., 1]), np.arctan2(delta[..., 1], delta[..., 0])], axis=-1)


def range_angle_jacobian(x: np.ndarray, bs_pos_m: np.ndarray) -> np.ndarray:
    """Jacobian ``H = dh/dx`` of :func:`range_angle`.

    ``H = [[dx/d, dy/d, 0, 0], [-dy/d^2, dx/d^2, 0, 0]]`` with ``(dx, dy) = u - p``, ``d = ||u - p||``.

    Args:
        x: ``(num_targets, 4)`` states.
        bs_pos_m: ``(2,)`` or ``(num_targets, 2)`` BS positions, metres.
    Returns:
        ``H``: ``(num_targets, 2, 4)`` (rows: range in m, angle in rad).
    """
    delta = np.asarray(x, dtype=float)[..., :2] - np.asarray(bs_pos_m, dtype=float)
    dx, dy = delta[..., 0], delta[..., 1]
    d = np.maximum(np.hypot(dx, dy), _MIN_RANGE_M)
    H = np.zeros((*delta.shape[:-1], 2, 4))
    H[..., 0, 0] = dx / d
    H[..., 0, 1] = dy / d
    H[..., 1, 0] = -dy / d**2
    H[..., 1, 1] = dx / d**2
    return H


def _first_of_each(values: np.ndarray) -> np.ndarray:
    """``np.unique(values, return_index=True)[1]`` for a short 1-D int array (the index of each distinct value's
    first occurrence, ordered by value), without its sort machinery."""
    first: dict[int, int] = {}
    for k, v in enumerate(values.tolist()):
        first.setdefault(v, k)
    return np.array([first[v] for v in sorted(first)], dtype=np.intp)


def _range_angle_and_jacobian(x: np.ndarray, bs_pos_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`range_angle` and :func:`range_angle_jacobian` from one ``u - p`` and one ``hypot`` (the same
    expressions, evaluated once: bit-identical to calling both). Returns ``(h (n, 2), H (n, 2, 4))``."""
    delta = np.asarray(x, dtype=float)[..., :2] - np.asarray(bs_pos_m, dtype=float)
    dx, dy = delta[..., 0], delta[..., 1]
    r = np.hypot(dx, dy)
    h = np.stack([r, np.arctan2(dy, dx)], axis=-1)
    d = np.maximum(r, _MIN_RANGE_M)
    H = np.zeros((*delta.shape[:-1], 2, 4))
    H[..., 0, 0] = dx / d
    H[..., 0, 1] = dy / d
    H[..., 1, 0] = -dy / d**2
    H[..., 1, 1] = dx / d**2
    return h, H


def innovation_nis(x: np.ndarray, P: np.ndarray, z: np.ndarray, R: np.ndarray, bs_pos_m: np.ndarray) -> np.ndarray:
    """Normalised innovation squared ``y^T S^-1 y`` of one range/angle measurement per target.

    Shapes as :func:`update_range_angle`; returns ``(num_targets,)``.
    """
    H = range_angle_jacobian(x, bs_pos_m)
    S = H @ P @ np.swapaxes(H, -1, -2) + np.asarray(R, dtype=float)  # S = H P H^T + R
    y = np.asarray(z, dtype=float) - range_angle(x, bs_pos_m)
    y[..., 1] = wrap_angle(y[..., 1])
    return np.einsum("...i,...i->...", y, np.linalg.solve(S, y[..., None])[..., 0])


def update_range_angle(x: np.ndarray, P: np.ndarray, z: np.ndarray, R: np.ndarray, bs_pos_m: np.ndarray,
                       *, num_iterations: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """EKF update with one range/angle measurement per target, batched over targets.

    With ``num_iterations = 1`` this is the plain EKF (filterpy's ``ExtendedKalmanFilter.update``)::

        H = dh/dx (x)                      # Jacobian at the prior
        S = H P H^T + R                    # innovation covariance
        K = P H^T S^-1                     # gain
        y = z - h(x), angle wrapped to (-pi, pi]
        x = x + K y
        P = (I - K H) P (I - K H)^T + K R K^T   # Joseph form

    With ``num_iterations = n > 1`` it is the iterated EKF (Gauss-Newton on the MAP cost,
    Bell & Cathey 1993): ``x_{i+1} = x0 + K_i (z - h(x_i) - H_i (x0 - x_i))`` with ``H_i``, ``K_i``
    at ``x_i``; ``P`` from the last ``H``, ``K``.

    Args:
        x: ``(num_targets, 4)`` prior states.
        P: ``(num_targets, 4, 4)`` prior covariances.
        z: ``(num_targets, 2)`` measured ``(range_m, angle_rad)``.
        R: ``(num_targets, 2, 2)`` or ``(2, 2)`` measurement covariance of ``(range_m, angle_rad)``.
        bs_pos_m: ``(2,)`` or ``(num_targets, 2)`` position of the measuring BS, metres.
        num_iterations: 1 = EKF, more = iterated EKF.
    Returns:
        ``(x, P)`` posterior, same shapes (new arrays).
    """
    if isinstance(num_iterations, bool) or not isinstance(num_iterations, int) or num_iterations < 1:
        raise ConfigError("num_iterations", num_iterations, "must be an integer >= 1")
    x0 = np.asarray(x, dtype=float)
    P0 = np.asarray(P, dtype=float)
    z = np.asarray(z, dtype=float)
    R = np.broadcast_to(np.asarray(R, dtype=float), (*z.shape[:-1], 2, 2))
    xi = x0
    for _ in range(num_iterations):
        H = range_angle_jacobian(xi, bs_pos_m)
        HP = H @ P0  # (I, 2, 4)
        S = HP @ np.swapaxes(H, -1, -2) + R  # S = H P H^T + R
        K = np.swapaxes(np.linalg.solve(S, HP), -1, -2)  # K = P H^T S^-1  (S, P symmetric)
        y = z - range_angle(xi, bs_pos_m)  # y = z - h(x)
        y[..., 1] = wrap_angle(y[..., 1])
        y = y - np.einsum("...ij,...j->...i", H, x0 - xi)  # IEKF correction (zero on the first pass)
        xi = x0 + np.einsum("...ij,...j->...i", K, y)  # x = x + K y
    I_KH = np.eye(4) - K @ H
    P_new = I_KH @ P0 @ np.swapaxes(I_KH, -1, -2) + K @ R @ np.swapaxes(K, -1, -2)  # Joseph form
    return xi, 0.5 * (P_new + np.swapaxes(P_new, -1, -2))


def update_range_angle_gated(x: np.ndarray, P: np.ndarray, z: np.ndarray, R: np.ndarray, bs_pos_m: np.ndarray,
                             gate: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`innovation_nis` and the plain EKF :func:`update_range_angle` in one pass (``H``, ``S``, ``y``
    computed once), updating only the targets whose NIS is within ``gate (num_targets,)``.

    Returns:
        ``(x, P, keep)``: posterior (the prior where not kept) and ``keep (num_targets,)`` bool.
    """
    x0 = np.asarray(x, dtype=float)
    P0 = np.asarray(P, dtype=float)
    h, H = _range_angle_and_jacobian(x0, bs_pos_m)
    HP = H @ P0
    S = HP @ np.swapaxes(H, -1, -2) + R  # S = H P H^T + R
    y = z - h
    y[..., 1] = wrap_angle(y[..., 1])
    Sinv_y = np.linalg.solve(S, y[..., None])[..., 0]
    keep = np.einsum("...i,...i->...", y, Sinv_y) <= gate  # NIS y^T S^-1 y
    if not keep.any():
        return x0, P0, keep
    every = bool(keep.all())  # then no row selection (the same per-row arithmetic, fewer copies)
    if not every:
        H, HP, S, y, R = H[keep], HP[keep], S[keep], y[keep], R[keep]
    K = np.swapaxes(np.linalg.solve(S, HP), -1, -2)  # K = P H^T S^-1
    I_KH = np.eye(4) - K @ H
    Pk = I_KH @ (P0 if every else P0[keep]) @ np.swapaxes(I_KH, -1, -2) + K @ R @ np.swapaxes(K, -1, -2)  # Joseph
    if every:
        return x0 + np.einsum("...ij,...j->...i", K, y), 0.5 * (Pk + np.swapaxes(Pk, -1, -2)), keep
    x_new, P_new = x0.copy(), P0.copy()
    x_new[keep] = x0[keep] + np.einsum("...ij,...j->...i", K, y)
    P_new[keep] = 0.5 * (Pk + np.swapaxes(Pk, -1, -2))
    return x_new, P_new, keep


def update_merged(xi: np.ndarray, Pi: np.ndarray, xj: np.ndarray, Pj: np.ndarray, z: np.ndarray, R: np.ndarray,
                  bs_pos_m: np.ndarray, gate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """Fuse one merged echo of two unresolved targets into both of their tracks (centroid model).

    Two echoes closer than a range cell and a beam add up to one peak near their centroid, so the
    measurement is ``z = h(c) + n`` with ``c = (u_i + u_j) / 2``: linearised at the predicted centroid,
    ``H_i = H_j = H_c / 2`` (``H_c`` the :func:`range_angle_jacobian` at ``c``), and on the stacked state
    ``[x_i; x_j]`` with the tracks independent a priori::

        S   = H_i P_i H_i^T + H_j P_j H_j^T + R
        K_k = P_k H_k^T S^-1,   x_k += K_k y,   P_k -= K_k S K_k^T      (k = i, j; y = z - h(c))

    Both tracks move with the centroid; their difference is not measured, so neither is pulled onto
    the other (the single-track update of such a peak drags the track it is given to halfway onto its
    neighbour: mechanism A of tracks_findings, start-up coalescence and swaps). The cross-covariance the
    joint update creates is dropped (marginals kept). ``R`` should already hold the merge's bias
    (:func:`~rl_isac.tracking.data_association.widen_for_merges`).

    Args:
        xi, xj: ``(4,)`` predicted states; Pi, Pj: ``(4, 4)``; z: ``(2,)`` ``(range_m, angle_rad)``;
        R: ``(2, 2)``; bs_pos_m: ``(2,)``; gate: NIS gate (2 dof) of the centroid innovation.
    Returns:
        ``(xi, Pi, xj, Pj, kept)``: posteriors (the priors where not kept) and whether the NIS passed.
    """
    c = 0.5 * (xi + xj)
    h, Hc = _range_angle_and_jacobian(c[None], bs_pos_m)
    H = 0.5 * Hc[0]  # (2, 4), the same for both tracks
    HPi, HPj = H @ Pi, H @ Pj
    S = HPi @ H.T + HPj @ H.T + R
    y = z - h[0]
    y[1] = float(wrap_angle(np.array(y[1])))
    if float(y @ np.linalg.solve(S, y)) > gate:
        return xi, Pi, xj, Pj, False
    out = []
    for x0, P0, HP in ((xi, Pi, HPi), (xj, Pj, HPj)):
        K = np.linalg.solve(S, HP).T  # P H^T S^-1 (4, 2)
        P_new = P0 - K @ S @ K.T
        out += [x0 + K @ y, 0.5 * (P_new + P_new.T)]
    return out[0], out[1], out[2], out[3], True


def update_range(x: np.ndarray, P: np.ndarray, range_m: np.ndarray, var_range_m2: np.ndarray, bs_pos_m: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """EKF update with a range-only measurement per target (the angle of a peak near a BS's endfire is
    unusable), batched over targets: the scalar form of :func:`update_range_angle` with ``h = ||u - p||``,
    ``H`` its first Jacobian row::

        S = H P H^T + var_r,   K = P H^T / S,   x = x + K (r - ||u - p||),
        P = (I - K H) P (I - K H)^T + K var_r K^T

    Args:
        x: ``(num_targets, 4)``; P: ``(num_targets, 4, 4)``.
        range_m: ``(num_targets,)`` measured ranges; var_range_m2: ``(num_targets,)`` their variances.
        bs_pos_m: ``(2,)`` or ``(num_targets, 2)``.
    Returns:
        ``(x, P)`` posterior (new arrays).
    """
    x = np.asarray(x, dtype=float)
    P = np.asarray(P, dtype=float)
    H = range_angle_jacobian(x, bs_pos_m)[..., :1, :]  # (I, 1, 4)
    PHt = P @ np.swapaxes(H, -1, -2)  # (I, 4, 1)
    var = np.asarray(var_range_m2, dtype=float)
    S = (H @ PHt)[..., 0, 0] + var  # S = H P H^T + R
    K = PHt[..., 0] / S[..., None]  # (I, 4)
    y = np.asarray(range_m, dtype=float) - range_angle(x, bs_pos_m)[..., 0]
    x_new = x + K * y[..., None]
    I_KH = np.eye(4) - K[..., :, None] * H  # (I, 4, 4)
    P_new = I_KH @ P @ np.swapaxes(I_KH, -1, -2) + var[..., None, None] * K[..., :, None] * K[..., None, :]
    return x_new, 0.5 * (P_new + np.swapaxes(P_new, -1, -2))


def update_speed(x: np.ndarray, P: np.ndarray, speed_mps: float, std_mps: float) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-measurement ``||v|| = speed`` (soft speed knowledge), batched over targets.

    A scalar EKF update with ``h(x) = sqrt(vx^2 + vy^2)``, ``H = [0, 0, vx, vy] / ||v||``::

        S = H P H^T + std^2,   K = P H^T / S,   x = x + K (speed - ||v||),
        P = (I - K H) P (I - K H)^T + K std^2 K^T

    Only meaningful where ``||v||`` is well away from 0 (the caller gates it).

    Args:
        x: ``(num_targets, 4)``; P: ``(num_targets, 4, 4)``.
        speed_mps: known speed ``v``, m/s.
        std_mps: std of the pseudo-measurement, m/s (small = hard constraint).
    Returns:
        ``(x, P)`` posterior (new arrays).
    """
    x = np.asarray(x, dtype=float)
    P = np.asarray(P, dtype=float)
    vel = x[..., 2:]
    s = np.maximum(np.hypot(vel[..., 0], vel[..., 1]), 1e-9)
    H = np.zeros((*x.shape[:-1], 1, 4))
    H[..., 0, 2:] = vel / s[..., None]
    PHt = P @ np.swapaxes(H, -1, -2)  # (I, 4, 1)
    S = (H @ PHt)[..., 0, 0] + std_mps**2  # S = H P H^T + R
    K = PHt[..., 0] / S[..., None]  # K = P H^T S^-1, (I, 4)
    x_new = x + K * (speed_mps - s)[..., None]  # x = x + K y
    I_KH = np.eye(4) - K[..., :, None] * H  # (I, 4, 4)
    P_new = I_KH @ P @ np.swapaxes(I_KH, -1, -2) + std_mps**2 * K[..., :, None] * K[..., None, :]
    return x_new, 0.5 * (P_new + np.swapaxes(P_new, -1, -2))


# ---------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class EKFSettings(ConfigMixin):
    """Options of :class:`EKFEstimator`; round-trips through :meth:`to_dict` / :meth:`from_dict`."""

    process_noise_model: str = "heading"
    """One of :data:`~rl_isac.tracking.motion.PROCESS_NOISE_MODELS`; forms in
    :func:`~rl_isac.tracking.motion.process_noise`."""
    turn_noise_scale: float = 2.5
    """Turn-aware inflation of the ``heading`` process noise: factor on its directional part (see
    :func:`~rl_isac.tracking.motion.process_noise`). That part is the exact one-block moment of the
    heading walk around the *true* velocity; around an estimated one (its direction uncertain, its length
    held by the speed pseudo-measurement re-applied every block) the prediction was overconfident: in the
    6-target synthetic world of ``tests/tracking`` 1.0 % of the one-block predictions fell outside the
    99.9 % gate against the truth with the moment as is, 0.37 % with 2x, 0.12 % with 2.5x (RMSE 0.352 ->
    0.370 m there) and 0.04 % with 3x; a test checks the default within 2x nominal."""
    velocity_decay: bool = True
    """Use ``F`` with ``v_{q+1} = kappa v_q``, ``kappa = E[cos db]`` (exact mean of the heading walk)."""
    num_iterations: int = 1
    """Iterations of the measurement update: 1 = EKF, more = iterated EKF."""
    speed_std_mps: float | None = 1.0
    """Std of the pseudo-measurement ``||v|| = speed_mps`` applied after each block's update, m/s;
    ``None`` switches it off."""
    speed_gate: float = 0.5
    """The speed pseudo-measurement is applied only where ``||v_hat|| >= speed_gate * speed_mps``
    (the linearisation of ``||v||`` is poor near 0)."""
    speed_max_std: float = 0.3
    """... and only where the velocity is already known: ``sqrt(tr P_vv) <= speed_max_std * speed_mps``
    (before the heading is resolved the pseudo-measurement would make the filter overconfident)."""
    speed_cap: float | None = None
    """... or, whatever ``P_vv``, where the estimated speed exceeds ``speed_cap * speed_mps`` (every
    target moves at ``speed_mps``: a track pulled by a neighbour's merged echoes or an outlier can reach
    an impossible speed while its velocity covariance is wide, and then outruns its target); ``None``
    off. Only for tracks past their start-up (:attr:`speed_cap_after_blocks`)."""
    speed_cap_after_blocks: int = 10
    """Blocks since a track started (the acquisition, or its re-initialisation) before :attr:`speed_cap`
    applies to it: in the first blocks a fast estimate is an unresolved heading, and the pseudo-measurement
    would lock it (development world I=8 e68: a target lost from block 1 with no wait)."""
    innovation_gate: float | None = 13.8
    """Validation gate: a measurement whose normalised innovation squared ``y^T S^-1 y`` exceeds it is
    rejected as an outlier (13.8 = the 99.9 % point of chi-square with 2 degrees of freedom); ``None``
    fuses everything. At the signal level a few percent of detections are ML outliers (a sidelobe
    maximum of the angle likelihood at low SNR, or another target in the same beam and range gate)
    whose reported CRB covariance does not cover them; one such update can pull a track off its
    target for good, so a tracker must gate."""
    reflect_at_edges: bool = True
    """Mirror predicted states that leave ``[edge_margin, size - edge_margin]`` (position and that velocity
    component), as ``ScenarioConfig.edge_margin_m`` says the world reflects targets; switch off if the
    world's rule differs."""
    data_association: str = "gnn"
    """Which measurement feeds which track (:mod:`rl_isac.tracking.data_association`): ``"gnn"``, every
    valid peak of the block against every track, global nearest neighbour per scan inside the
    ``innovation_gate``; ``"label"``, the old rule (the strongest peak of a pair to the pair's own target,
    gated). With ``innovation_gate=None`` the label rule fuses everything (a textbook EKF)."""
    widen_merges: bool = True
    """Widen the covariance of peaks two unresolved tracks share
    (:func:`~rl_isac.tracking.data_association.widen_for_merges`)."""
    merged_update: bool = False
    """Fuse a peak that is the merge of two unresolved tracks' echoes
    (:func:`~rl_isac.tracking.data_association.merge_partners`) into both tracks at once, as a measurement
    of their centroid (:func:`update_merged`), instead of into the one track the assignment gives it.
    Only for two tracks past their start-up (:attr:`merged_after_blocks`) and neither searching: the
    centroid model holds their separation where it was, which keeps crossing and co-moving targets apart
    on their velocities; at start-up (velocities unknown) it held both tracks on the average motion and
    the pair swapped when the targets parted (``merged_after_blocks=0`` on 100 development worlds: lost
    fraction 0.0129 vs 0.0070 at I = 6, start-up swaps in 3 more episodes). With the wait, on 200
    development worlds (``results/tracks/dev_variants.md``): 0.0065 / 0.0069 at I = 6 / 8 against
    0.0051 / 0.0092 without it -- two mid-episode crossing swaps fewer at I = 8, one slow-crossing swap
    more at I = 6; off by default until a larger study separates it from the noise of start-up swaps."""
    merged_after_blocks: int = 10
    """Blocks since a track started (the acquisition, or its re-initialisation on a peak) before
    :attr:`merged_update` applies to it (its velocity is learnt by then; the marginal velocity covariance
    cannot tell, because the centroid model itself leaves the pair's velocity difference unmeasured)."""
    search_after_blocks: int | None = 3
    """A track with no accepted measurement for this many consecutive blocks is *searching*: each further
    block its predicted position covariance grows by ``search_growth_m^2`` per axis (so the association
    objective, the beam selector and the gate see how little it knows) and the first peak the assignment
    gives it re-initialises it at that peak (position from the measurement, velocity back to the uniform
    heading prior). ``None``: never."""
    range_only_peaks: bool = True
    """Use the range of peaks whose angle is unusable (endfire; ``MAX_ANGLE_STD_RAD``) as a 1-D measurement
    (``False`` drops them). Targets along the top or bottom edge of the area sit at the endfire of every BS
    on that edge, so without their ranges such a target has no accepted look for blocks, goes searching and
    drifts off. On by default with :attr:`range_only_unambiguous` since this revision; on its own (only the
    beams check of :func:`~rl_isac.tracking.data_association.same_beams`) a range-only peak was sometimes
    given to the wrong track (one development episode lost 252 target-blocks that way)."""
    range_only_ends_search: bool = False
    """Whether a range-only peak fused into a *searching* track (:attr:`search_after_blocks`) ends its search.
    ``False``: it is fused (the range is good) but the track keeps searching, its prediction covariance
    growing, until a peak that pins the position re-initialises it, as a range alone does not say where on
    its circle the target is. ``True`` (the rule before this option): the range-only update counts as an
    accepted measurement and the track stops searching wherever it stands on the circle (evaluation world
    1000000046 at I = 6, ``dgnn-ppo``: a track 17 m off its target held there for 80 blocks by its target's
    range-only echoes, the angle never corrected). Development worlds (``results/tracks/dev_variants.md``, rows
    ``mismatch-spread`` / ``ro-keeps-search``, 800 per I): ``ekf-milp`` 0.0054 both at I = 6, 0.0064 both at
    I = 8 (the rule rarely fires there); ``dgnn-ppo`` 0.0053 -> 0.0054 at I = 6, 0.0078 -> 0.0080 at I = 8."""
    unexplained_is_miss: bool = True
    """A track that fused nothing while a 2-D peak of its own scan (a pair serving it: beams aimed at its
    prediction) lies outside every track's gate counts a full miss, even where a neighbour's peak fell inside
    its gate (``SEEN_MISS_WEIGHT`` otherwise). An echo in its own beams that no track explains is the sign
    of a gate lockout (the track pulled off its target, its covariance too small to take the target's echo
    back), so it goes searching after :attr:`search_after_blocks` such blocks instead of about three times
    as many, while the target is still in its beams (evaluation world 1000000046 at I = 6, ``dgnn-ppo``:
    the target's own echoes at SNR 16-25 dB and NIS 15-24 for 7 blocks, unexplained, before its track went
    searching 10 m away and never saw it again). On by default since this revision, chosen on development
    worlds (``results/tracks/dev_variants.md``, rows ``ro-keeps-search`` / ``unexplained-miss``, 800 worlds
    per I, ``ekf-milp``): lost fraction 0.0054 -> 0.0052 at I = 6 (identity-free 0.0009 -> 0.0007), 0.0064 both
    at I = 8 (identity-free 0.0016 -> 0.0013); 7 episodes better, 1 worse (of 1600); ``dgnn-ppo``
    (``results/ppo_dev/fit_test_ppo.txt``): 0.0054 both at I = 6 (300 worlds), 0.0080 -> 0.0077 at I = 8 (200,
    identity-free 0.0010 -> 0.0008)."""
    range_only_unambiguous: bool = True
    """With :attr:`range_only_peaks`: a range-only peak may go only to its scan's own target, and only where
    no other track lies in the same beams within two range cells
    (:func:`~rl_isac.tracking.data_association.same_beams`). The default since this revision, chosen on
    400 development worlds (``results/tracks/dev_variants.md``, never the evaluation seeds): with ekf-milp
    the pair lost 1274 / 2579 target-blocks at I = 6 / 8 against 1313 / 2762 with both off (better in 6 / 24
    episodes, worse in 3 / 10: a sign test at I = 8 gives p ~ 0.02), with ekf-greedy 1249 / 2743 against
    1517 / 4180 (better in 24 / 83, worse in 3 / 8); on 200 of them range-only peaks with the beams check
    alone lost more than both off (0.0072 / 0.0095 vs 0.0051 / 0.0092). ``results/full`` and the other
    tables made before this revision used both off (their ``git_revision`` says which)."""
    resolve_identities: bool = False
    """Keep track identities through close encounters (:mod:`rl_isac.tracking.identity`): when two tracks
    that were confusable separate, swap them if the retrodiction to their pre-encounter anchors says so;
    two tracks indistinguishable for ``duplicate_after_blocks`` blocks in which their beams saw an
    unclaimed peak are one target tracked twice, and the one whose anchor fits worse goes searching.
    Off by default: on 40 development worlds (``rl_isac.seeds.training_world_seed(7, 2, e)``, ``ekf-milp``,
    signal level, 100 blocks) this rule with range-only peaks (beams check only) lost 0.030 / 0.0093 of the
    target-blocks at I = 6 / 8 against 0.0094 / 0.0037 with both off; at the signal level the
    retrodiction margins of true start-up swaps (1.9-2.8) are no larger than those of pairs that were right
    all along, so even the decisive threshold swapped correct pairs (30-84 target-blocks lost per episode
    on four development worlds)."""
    detect_duplicates: bool = False
    """The duplicate half of :attr:`resolve_identities` alone (no swaps): two tracks indistinguishable for
    ``duplicate_after_blocks`` blocks in which their beams saw an unclaimed peak are one target tracked
    twice, and the one whose pre-encounter anchor fits worse goes searching. ``resolve_identities=True``
    implies it."""
    duplicate_after_blocks: int = 3
    """See :attr:`resolve_identities`."""
    search_reseed: bool = True
    """Search from the last trusted position (issue 7's re-acquisition) instead of around the track's own
    coasted prediction. A track is *trusted* at a block in which it fused a 2-D peak while no other track
    stood within two range cells of it (its position is then its target's, not a neighbour's). When it
    goes searching (:attr:`search_after_blocks`) its state is re-seeded as the track that would have
    started at that trusted position ``p_t`` and block ``q_t`` with the uniform-heading velocity prior and no
    look since: mean ``[p_t, 0, 0]``, ``P_pp = (s_t^2 + (v t)^2 / 2) I``, ``P_pv = v^2 t / 2 I``,
    ``P_vv = v^2 / 2 I`` (``t = (q - q_t) dT``), the moment-matched Gaussian of the ring of radius ``v t`` on
    which a target of known speed lies; its velocity, the thing that failed (a track pulled off by a
    neighbour's echoes coasts away on that neighbour's velocity), is dropped. The BSs then look (the
    track's :meth:`EKFEstimator.predicted_position`, which sets the range gates and the beams) at points of
    that ring in turn, one block each, ``SEARCH_LOOK_STEP`` range-gate half-widths of arc apart, starting in
    the direction of the coasted velocity and alternating to both sides of it; while the ring is no wider
    than one range gate they look at its centre. A range-only peak fused into the searching track (it
    does not end the search, :attr:`range_only_ends_search`) ends the ring of looks: its posterior is no
    longer the ring (the range pins it to an arc across it), and the BSs look at its prediction from then
    on, as without this option (development world ``training_world_seed(7, 2, 191)`` at I = 8: a target
    along the top edge, held by its ranges, was searched for on a 60 m ring). The posterior of a searching
    track (its reported estimate) is the ring's centre. ``False``: the coasted state with a growing
    covariance (:attr:`search_growth_m`, up to ``SEARCH_MAX_STD_M``), the looks at its own prediction (the
    rule before this revision).

    On by default since this revision (with :attr:`reseed_min_age_blocks`), chosen on development worlds only
    (``results/tracks/dev_variants.md``, rows ``now`` / ``reseed3``, ``ekf-milp``, signal level, 100 blocks):
    lost fraction at I = 6 (worlds 0-399) 0.0069 -> 0.0066, identity-free 0.0012 -> 0.00025; at I = 8
    (0-399) 0.0070 -> 0.0064, identity-free 0.0013 -> 0.0005, and (400-799) 0.0059 -> 0.0049, identity-free
    0.0013 -> 0.0009; ``dgnn-milp`` at I = 8 (150 worlds, the window's EKF anchor, measured with
    ``reseed_min_age_blocks=0``) 0.0085 -> 0.0081, identity-free 0.0012 -> 0.0007. Every track lost for good
    there (its error 30-68 m at the end: I = 6 worlds 159, 375, I = 8 worlds 267, 298) is found again; a few
    short searches get longer (the ring's centre is reported while the target is looked for: 4-20
    target-blocks in 8 of 1200 worlds)."""
    reseed_min_age_blocks: int = 4
    """:attr:`search_reseed` re-seeds only a track whose last trusted block is more than this many blocks old
    when it goes searching; a younger one (trusted until its misses began: a target that went unseen, e.g.
    at the endfire of its BSs, whose velocity was estimated on clean looks) keeps its coasted state and
    searches around its prediction as without the option. From the search starts of the development
    episodes the re-seed (with 0 here) changed at I = 8 (worlds 400-799): those it made worse started 3-4
    blocks after their last trusted look with the coast 0-1 m from the target, those it fixed 5-12 blocks
    after, with the coast 7-19 m off. Over all development worlds it is neutral against 0
    (``results/tracks/dev_variants.md``, rows ``reseed2`` (0) / ``reseed3`` (4): 0.0066 both at I = 6,
    0.0063 / 0.0064 and 0.0049 both at I = 8; on worlds 0-399, not used to choose it, 3 episodes better and
    3 worse); kept because a coast estimated on clean looks is the better bet for a target merely unseen."""
    search_growth_m: float = 2.0
    """Extra position std per axis added (in quadrature) to a searching track's prediction each block, m
    (until ``SEARCH_MAX_STD_M``); also the largest position std (major axis) of a peak that may
    re-initialise a track (a less precise one is fused as an ordinary update)."""

    def __post_init__(self) -> None:
        if self.process_noise_model not in PROCESS_NOISE_MODELS:
            raise ConfigError("process_noise_model", self.process_noise_model,
                              f"must be one of {PROCESS_NOISE_MODELS}")
        if isinstance(self.num_iterations, bool) or not isinstance(self.num_iterations, int) \
                or self.num_iterations < 1:
            raise ConfigError("num_iterations", self.num_iterations, "must be an integer >= 1")
        if self.speed_std_mps is not None and not (math.isfinite(self.speed_std_mps) and self.speed_std_mps > 0):
            raise ConfigError("speed_std_mps", self.speed_std_mps, "must be a finite number > 0, or None (off)")
        if self.speed_cap is not None and (isinstance(self.speed_cap, bool)
                                           or not (math.isfinite(self.speed_cap) and self.speed_cap >= 1)):
            raise ConfigError("speed_cap", self.speed_cap, "must be a finite number >= 1 (a multiple of speed_mps), "
                                                           "or None (off)")
        if isinstance(self.speed_cap_after_blocks, bool) or not isinstance(self.speed_cap_after_blocks, int) \
                or self.speed_cap_after_blocks < 0:
            raise ConfigError("speed_cap_after_blocks", self.speed_cap_after_blocks, "must be an integer >= 0")
        if not (math.isfinite(self.speed_gate) and 0 <= self.speed_gate <= 1):
            raise ConfigError("speed_gate", self.speed_gate, "must be in [0, 1]")
        if not (math.isfinite(self.speed_max_std) and self.speed_max_std > 0):
            raise ConfigError("speed_max_std", self.speed_max_std, "must be a finite number > 0")
        if self.innovation_gate is not None and not (math.isfinite(self.innovation_gate)
                                                     and self.innovation_gate > 0):
            raise ConfigError("innovation_gate", self.innovation_gate, "must be a finite number > 0, or None (off)")
        if self.data_association not in ASSOCIATION_RULES:
            raise ConfigError("data_association", self.data_association, f"must be one of {sorted(ASSOCIATION_RULES)}")
        if self.search_after_blocks is not None and (isinstance(self.search_after_blocks, bool)
                                                     or not isinstance(self.search_after_blocks, int)
                                                     or self.search_after_blocks < 1):
            raise ConfigError("search_after_blocks", self.search_after_blocks, "must be an integer >= 1, or None")
        if not (math.isfinite(self.turn_noise_scale) and self.turn_noise_scale > 0):
            raise ConfigError("turn_noise_scale", self.turn_noise_scale, "must be a finite number > 0")
        for flag in ("merged_update", "range_only_peaks", "range_only_unambiguous", "range_only_ends_search",
                     "unexplained_is_miss", "detect_duplicates", "search_reseed",
                     "resolve_identities", "widen_merges"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(flag, getattr(self, flag), "must be True or False")
        if isinstance(self.merged_after_blocks, bool) or not isinstance(self.merged_after_blocks, int) \
                or self.merged_after_blocks < 0:
            raise ConfigError("merged_after_blocks", self.merged_after_blocks, "must be an integer >= 0")
        if isinstance(self.reseed_min_age_blocks, bool) or not isinstance(self.reseed_min_age_blocks, int) \
                or self.reseed_min_age_blocks < 0:
            raise ConfigError("reseed_min_age_blocks", self.reseed_min_age_blocks, "must be an integer >= 0")
        if not (math.isfinite(self.search_growth_m) and self.search_growth_m >= 0):
            raise ConfigError("search_growth_m", self.search_growth_m, "must be a finite number >= 0")

# ---------------------------------------------------------------------------------------------- estimator
class EKFEstimator:
    """Classical CU estimator: one EKF per target fusing every detected BS measurement of a block.

    Usage::

        est = EKFEstimator(cfg)
        est.reset(initial_positions_m)           # q = 0: acquisition (num_targets, 2)
        u_hat, u_tilde_next = est.update(meas)   # q = 1, 2, ...: one call per block

    Each :meth:`update` predicts one block (``q-1 -> q``; the first call after :meth:`reset`
    predicts ``0 -> 1``), fuses the block's detected pairs sequentially in BS order (one EKF
    update per detected ``[bs, target]`` pair), applies the optional speed pseudo-measurement,
    and returns the posterior ``u_hat_q`` and the one-block-ahead prediction ``u_tilde_{q+1}``.
    A target without a detection in a block is only predicted; its covariance grows until it is
    measured again.

    Args:
        cfg: a :class:`~rl_isac.scenario.ScenarioConfig` (BS positions, speed, heading step,
            block duration, acquisition std, area and edge margin).
        settings: :class:`EKFSettings` (defaults if omitted).
    """

    def __init__(self, cfg, settings: EKFSettings | None = None) -> None:
        self.cfg = cfg
        self.settings = settings if settings is not None else EKFSettings()
        self.bs_positions_m = np.asarray(cfg.bs_positions_m, dtype=float).reshape(-1, 2)
        kappa, _, _ = heading_step_moments(cfg.heading_step_rad)
        self._F = cv_transition(cfg.block_duration_s, velocity_decay=kappa if self.settings.velocity_decay else 1.0)
        margin = cfg.edge_margin_m
        self._lower_m = np.array([margin, margin])
        self._upper_m = np.asarray(cfg.area_size_m, dtype=float) - margin
        self._x: np.ndarray | None = None
        self._P: np.ndarray | None = None
        self._pred: tuple[np.ndarray, np.ndarray] | None = None
        self.block = 0
        self.rejected = 0
        """Valid peaks fused into no track since the last reset (outside every gate, lost the assignment,
        or failed the gate at the update)."""
        self.missed = np.zeros(0)
        """``(I,)`` consecutive blocks without an accepted measurement, per track (a block in which a peak
        lay inside the track's gate but went to another track counts ``SEEN_MISS_WEIGHT``)."""
        self.losses = 0
        """Tracks that became searching (:attr:`EKFSettings.search_after_blocks`) since the last reset."""
        self.reacquired_after: list[int] = []
        """Blocks without a measurement of each track re-initialised on a peak, since the last reset."""
        self.identity_swaps = 0
        """Pairs of tracks swapped after a close encounter (:attr:`EKFSettings.resolve_identities`)."""
        self.duplicates = 0
        """Tracks sent searching as the duplicate of another (:attr:`EKFSettings.resolve_identities`)."""
        self._anchor_m = np.zeros((0, 2))
        self._anchor_var_m2 = np.zeros(0)
        self._anchor_block = np.zeros(0, np.int64)
        self._start_block = np.zeros(0, np.int64)
        """``(I,)`` block at which each track was started (0: the acquisition) or re-initialised on a peak."""
        self._trusted_m = np.zeros((0, 2))
        """``(I, 2)`` last trusted position of each track (:attr:`EKFSettings.search_reseed`), metres."""
        self._trusted_var_m2 = np.zeros(0)
        """``(I,)`` its variance per axis, m^2."""
        self._trusted_block = np.zeros(0, np.int64)
        """``(I,)`` the block it is the posterior of."""
        self._search_block = np.zeros(0, np.int64)
        """``(I,)`` block at which a re-seeded search started (-1: not searching from a re-seed)."""
        self._search_heading_rad = np.zeros(0)
        """``(I,)`` direction of the first look of that search (the coasted velocity's), radians."""
        self._encounter = np.zeros((0, 0), bool)
        self._same_blocks = np.zeros((0, 0), np.int64)
        self._apart_blocks = np.zeros((0, 0), np.int64)

    # ------------------------------------------------------------------ state
    @property
    def transition(self) -> np.ndarray:
        """``F``: ``(4, 4)``, the one-block transition used."""
        return self._F.copy()

    @property
    def state(self) -> np.ndarray:
        """Posterior states ``(num_targets, 4)``: ``[x_m, y_m, vx_mps, vy_mps]`` at block :attr:`block`."""
        self._require_reset()
        return self._x.copy()

    @property
    def covariance(self) -> np.ndarray:
        """Posterior covariances ``(num_targets, 4, 4)`` at block :attr:`block` (m, m/s)."""
        self._require_reset()
        return self._P.copy()

    def process_noise(self, x: np.ndarray, P: np.ndarray) -> np.ndarray:
        """``Q`` of one block from states ``x (I, 4)`` and covariances ``P (I, 4, 4)``: ``(4, 4)`` or ``(I, 4, 4)``."""
        return process_noise(self.cfg, model=self.settings.process_noise_model, velocity_mps=x[:, 2:],
                             velocity_cov=P[:, 2:, 2:], turn_scale=self.settings.turn_noise_scale)

    def _predict(self, x: np.ndarray, P: np.ndarray, searching: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """One block's prediction of states ``x (n, 4)``, ``P (n, 4, 4)``; ``searching (n,)`` which of them are
        searching (default: this estimator's :attr:`searching`; the batched update passes its stacked tracks')."""
        x, P = predict(x, P, self._F, self.process_noise(x, P))
        if self.settings.reflect_at_edges:
            x, P = reflect_into_area(x, P, self._lower_m, self._upper_m)
        # Searching tracks widen, up to a position std of SEARCH_MAX_STD_M per axis.
        searching = self.searching if searching is None else searching
        searching = searching & (np.maximum(P[:, 0, 0], P[:, 1, 1]) < SEARCH_MAX_STD_M**2)
        if searching.any():
            P = P.copy()
            P[searching, 0, 0] += self.settings.search_growth_m**2
            P[searching, 1, 1] += self.settings.search_growth_m**2
        return x, P

    @property
    def searching(self) -> np.ndarray:
        """``(I,)`` bool: tracks without an accepted measurement for ``search_after_blocks`` blocks or more."""
        after = self.settings.search_after_blocks
        if after is None or self.missed.size == 0:
            return np.zeros(self.missed.shape, bool)
        return self.missed >= after

    def _prediction(self) -> tuple[np.ndarray, np.ndarray]:
        self._require_reset()
        if self._pred is None:
            self._pred = self._predict(self._x, self._P)
        return self._pred

    def predicted_state(self) -> np.ndarray:
        """States predicted for block ``q+1``: ``(num_targets, 4)``."""
        return self._prediction()[0].copy()

    def predicted_position(self) -> np.ndarray:
        """``u_tilde_{q+1}``: ``(num_targets, 2)`` metres, where the BSs look at block ``q+1``: the predicted mean
        (``predicted_state()[:, :2]``), except for a track on a re-seeded search (:attr:`EKFSettings.search_reseed`),
        whose entry is the point of its ring the search looks at next (:meth:`_search_looks`)."""
        pos = self._prediction()[0][:, :2].copy()
        return self._search_looks(pos) if self.settings.search_reseed else pos

    @property
    def ring_search(self) -> np.ndarray:
        """``(I,)`` bool: tracks on a re-seeded search (:attr:`EKFSettings.search_reseed`) whose
        :meth:`predicted_position` is the search's next look (the ring's centre while it is narrow), not a
        prediction of where the target is; a CU whose own predictor serves the other targets takes these."""
        if not self.settings.search_reseed or self.missed.size == 0:
            return np.zeros(self.missed.shape, bool)
        return self.searching & (self._search_block >= 0)

    def _search_looks(self, pos: np.ndarray) -> np.ndarray:
        """``pos (I, 2)`` with the rows of tracks on a re-seeded search replaced by their next look (a new array
        where one changed): for the block ``q' = block + 1``, the ring of radius ``r = v dT (q' - q_t)`` around
        the predicted mean (the trusted position), look ``k = q' - q_s - 1`` of the search started at ``q_s``:
        angle ``phi_0 + j dphi``, ``j = 0, +1, -1, +2, ...`` (``dphi = SEARCH_LOOK_STEP g / r``, ``g`` the
        range gate's half-width, the sequence restarting once it has gone round), clipped into the area; the
        centre itself while ``r <= g``."""
        rows = np.flatnonzero(self.ring_search)
        if rows.size == 0:
            return pos
        pos = pos.copy()
        q_next = self.block + 1
        gate = float(self.cfg.range_gate_m)
        for i in rows:
            radius = self.cfg.step_m * (q_next - self._trusted_block[i])
            if radius <= gate:
                continue
            dphi = min(math.pi, SEARCH_LOOK_STEP * gate / radius)
            k = (q_next - self._search_block[i] - 1) % math.ceil(2 * math.pi / dphi)
            j = (k + 1) // 2 * (1 if k % 2 else -1)
            phi = self._search_heading_rad[i] + j * dphi
            pos[i] = np.clip(pos[i] + radius * np.array([math.cos(phi), math.sin(phi)]), self._lower_m, self._upper_m)
        return pos

    def _trust_and_reseed(self, x: np.ndarray, P: np.ndarray, measured_2d: np.ndarray, was_searching: np.ndarray
                          ) -> None:
        """:attr:`EKFSettings.search_reseed`'s bookkeeping at the end of an update (in place on this block's
        posterior ``x (I, 4)``, ``P (I, 4, 4)``): the trusted positions of tracks that fused a 2-D peak
        (``measured_2d (I,)``) with no other track within two range cells, and the re-seeded state of the tracks
        that went searching at this block (``was_searching (I,)``: before it)."""
        cfg = self.cfg
        q = self.block + 1
        searching = self.searching
        alone = np.ones(len(x), bool)
        if len(x) > 1:
            dist = np.linalg.norm(x[:, None, :2] - x[None, :, :2], axis=-1)
            np.fill_diagonal(dist, np.inf)
            alone = dist.min(axis=1) > 2.0 * cfg.range_resolution_m
        ok = measured_2d & alone & ~searching
        self._trusted_m[ok] = x[ok, :2]
        self._trusted_var_m2[ok] = 0.5 * np.trace(P[ok, :2, :2], axis1=-2, axis2=-1)
        self._trusted_block[ok] = q
        self._search_block[~searching] = -1
        v = cfg.speed_mps
        eye = np.eye(2)
        for i in np.flatnonzero(searching & ~was_searching):
            if q - self._trusted_block[i] <= self.settings.reseed_min_age_blocks:
                continue  # trusted until the misses began: its coasted velocity stands (reseed_min_age_blocks)
            coast = x[i, :2] - self._trusted_m[i]
            if math.hypot(x[i, 2], x[i, 3]) > 0.5 * v:
                heading = math.atan2(x[i, 3], x[i, 2])
            else:
                heading = math.atan2(coast[1], coast[0]) if np.any(coast) else 0.0
            t = (q - self._trusted_block[i]) * cfg.block_duration_s
            x[i] = [*self._trusted_m[i], 0.0, 0.0]
            P[i, :2, :2] = (self._trusted_var_m2[i] + 0.5 * (v * t) ** 2) * eye
            P[i, :2, 2:] = P[i, 2:, :2] = 0.5 * v * v * t * eye
            P[i, 2:, 2:] = 0.5 * v * v * eye
            self._search_block[i] = q
            self._search_heading_rad[i] = heading

    def predicted_covariance(self) -> np.ndarray:
        """Covariances predicted for block ``q+1``: ``(num_targets, 4, 4)``; ``[:, :2, :2]`` is the position (m^2)."""
        return self._prediction()[1].copy()

    def _require_reset(self) -> None:
        if self._x is None:
            raise RuntimeError("EKFEstimator: call reset(initial_positions_m) first")

    # ------------------------------------------------------------------ episode
    def reset(self, initial_positions_m: np.ndarray) -> np.ndarray:
        """Start an episode from the q = 0 acquisition.

        Prior: position ``N(acquisition, acquisition_std_m^2 I)``; velocity ``N(0, v^2/2 I)`` (heading
        uniform, speed known: ``E[v] = 0``, ``Cov[v] = v^2/2 I``); position and velocity uncorrelated.

        Args:
            initial_positions_m: ``(num_targets, 2)`` acquired positions, metres.
        Returns:
            ``(num_targets, 2)``: the same positions (``u_hat_0``).
        """
        u0 = np.asarray(initial_positions_m, dtype=float)
        if u0.ndim != 2 or u0.shape[1] != 2 or u0.shape[0] < 1:
            raise MeasurementError(f"initial_positions_m must be (num_targets, 2), got shape {u0.shape}")
        if not np.all(np.isfinite(u0)):
            tgt = int(np.argwhere(~np.isfinite(u0))[0, 0])
            raise MeasurementError(f"initial_positions_m[{tgt}] = {u0[tgt]}: the acquisition must be finite")
        num = u0.shape[0]
        self._x = np.concatenate([u0, np.zeros((num, 2))], axis=1)
        var = np.array([self.cfg.acquisition_std_m**2] * 2 + [self.cfg.speed_mps**2 / 2.0] * 2)
        self._P = np.broadcast_to(np.diag(var), (num, 4, 4)).copy()
        self._pred = None
        self.block = 0
        self.rejected = 0
        self.missed = np.zeros(num)
        self.losses = 0
        self.reacquired_after = []
        self.identity_swaps = self.duplicates = 0
        self._anchor_m = u0.copy()
        self._anchor_var_m2 = np.full(num, self.cfg.acquisition_std_m**2)
        self._anchor_block = np.zeros(num, np.int64)
        self._start_block = np.zeros(num, np.int64)
        self._trusted_m = u0.copy()
        self._trusted_var_m2 = np.full(num, self.cfg.acquisition_std_m**2)
        self._trusted_block = np.zeros(num, np.int64)
        self._search_block = np.full(num, -1, np.int64)
        self._search_heading_rad = np.zeros(num)
        self._encounter = np.zeros((num, num), bool)
        self._same_blocks = np.zeros((num, num), np.int64)
        self._apart_blocks = np.zeros((num, num), np.int64)
        return u0.copy()

    # ------------------------------------------------------------------ track export / import
    def export_tracks(self, rows=None) -> dict[str, np.ndarray]:
        """The posterior tracks of ``rows`` (default: all, in order), as copies, for :meth:`load_tracks` (e.g. a
        handover of tracks between the EKFs of several CU clusters, :mod:`rl_isac.clusters`).

        Args:
            rows: ``(n,)`` distinct track indices, or ``None`` for every track.
        Returns:
            ``{key: array}`` with the per-track keys of :data:`TRACK_FIELDS` (``x (n, 4)``, ``P (n, 4, 4)``,
            ``missed (n,)``, identity anchors ``anchor_m (n, 2)``, ``anchor_var_m2 (n,)``, ``anchor_block (n,)``
            int64, ``start_block (n,)`` int64: the block each track was started or re-initialised; the search
            state of :attr:`EKFSettings.search_reseed`: ``trusted_m (n, 2)``, ``trusted_var_m2 (n,)``,
            ``trusted_block (n,)`` int64, ``search_block (n,)`` int64, ``search_heading_rad (n,)``) and the
            pairwise identity counters of :data:`PAIR_FIELDS` restricted to ``rows``
            (``encounter (n, n)`` bool, ``same_blocks (n, n)`` / ``apart_blocks (n, n)`` int64).
        Raises:
            ConfigError: a row out of range or repeated.
        """
        self._require_reset()
        num = self._x.shape[0]
        r = np.arange(num) if rows is None else np.asarray(rows)
        if r.ndim != 1 or (r.size and r.dtype.kind not in "iu"):
            raise ConfigError("rows", rows, "must be a 1-D array of integer track indices")
        r = r.astype(np.int64)
        if r.size and (r.min() < 0 or r.max() >= num or np.unique(r).size != r.size):
            raise ConfigError("rows", r.tolist(), f"must be distinct track indices in [0, {num - 1}]")
        grid = np.ix_(r, r)
        return {"x": self._x[r].copy(), "P": self._P[r].copy(), "missed": np.array(self.missed, float)[r],
                "anchor_m": self._anchor_m[r].copy(), "anchor_var_m2": self._anchor_var_m2[r].copy(),
                "anchor_block": self._anchor_block[r].copy(), "start_block": self._start_block[r].copy(),
                "trusted_m": self._trusted_m[r].copy(), "trusted_var_m2": self._trusted_var_m2[r].copy(),
                "trusted_block": self._trusted_block[r].copy(), "search_block": self._search_block[r].copy(),
                "search_heading_rad": self._search_heading_rad[r].copy(),
                "encounter": self._encounter[grid].copy(),
                "same_blocks": self._same_blocks[grid].copy(), "apart_blocks": self._apart_blocks[grid].copy()}

    def load_tracks(self, tracks: dict, block: int) -> None:
        """Replace every track by ``tracks`` (the posterior of block ``block``; the number of tracks ``n`` may
        differ from before). Works on an estimator never reset.

        Args:
            tracks: ``x (n, 4)``, ``P (n, 4, 4)``, ``missed (n,)`` (required) and optionally the identity and
                search fields of :meth:`export_tracks`; a missing one takes the value :meth:`reset` gives (anchor
                and trusted position = the position, their variance ``acquisition_std_m^2``, their block 0, no
                re-seeded search, no encounter, counters 0).
            block: the block index the tracks are the posterior of (:attr:`block`).
        The episode statistics (:attr:`rejected`, :attr:`losses`, :attr:`reacquired_after`,
        :attr:`identity_swaps`, :attr:`duplicates`) are this estimator's and are kept.

        Raises:
            ConfigError: an unknown key, a missing required key, a wrong shape, or a non-finite value (named).
        """
        unknown = sorted(set(tracks) - set(TRACK_FIELDS) - set(PAIR_FIELDS))
        if unknown:
            raise ConfigError("tracks", unknown, f"unknown keys; known: {list(TRACK_FIELDS + PAIR_FIELDS)}")
        missing = [k for k in ("x", "P", "missed") if k not in tracks]
        if missing:
            raise ConfigError("tracks", missing, "x, P and missed are required")
        x = np.array(tracks["x"], dtype=float)
        num = x.shape[0] if x.ndim == 2 else -1
        if num < 1 or x.shape != (num, 4):
            raise ConfigError("tracks.x", x.shape, "must be (n, 4) with n >= 1")
        shapes = {"x": (num, 4), "P": (num, 4, 4), "missed": (num,), "anchor_m": (num, 2), "anchor_var_m2": (num,),
                  "anchor_block": (num,), "start_block": (num,), "trusted_m": (num, 2), "trusted_var_m2": (num,),
                  "trusted_block": (num,), "search_block": (num,), "search_heading_rad": (num,),
                  "encounter": (num, num), "same_blocks": (num, num),
                  "apart_blocks": (num, num)}
        val = {"x": x}
        for key, dtype in (("P", float), ("missed", float), ("anchor_m", float), ("anchor_var_m2", float),
                           ("anchor_block", np.int64), ("start_block", np.int64), ("trusted_m", float),
                           ("trusted_var_m2", float), ("trusted_block", np.int64), ("search_block", np.int64),
                           ("search_heading_rad", float), ("encounter", bool),
                           ("same_blocks", np.int64),
                           ("apart_blocks", np.int64)):
            if key in tracks:
                arr = np.asarray(tracks[key])
                if arr.shape != shapes[key]:
                    raise ConfigError(f"tracks.{key}", arr.shape, f"must be {shapes[key]}")
                val[key] = np.array(arr, dtype=dtype)
        for key in ("x", "P", "missed", "anchor_m", "anchor_var_m2", "trusted_m", "trusted_var_m2",
                    "search_heading_rad"):
            if key in val and not np.all(np.isfinite(val[key])):
                raise ConfigError(f"tracks.{key}", val[key].tolist(), "must be finite")
        if np.any(val["missed"] < 0):
            raise ConfigError("tracks.missed", val["missed"].tolist(), "must be >= 0")
        if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 0:
            raise ConfigError("block", block, "must be an integer >= 0")
        self._x, self._P = val["x"], val["P"]
        self.missed = val["missed"]
        self._pred = None
        self.block = int(block)
        self._anchor_m = val.get("anchor_m", x[:, :2].copy())
        self._anchor_var_m2 = val.get("anchor_var_m2", np.full(num, self.cfg.acquisition_std_m**2))
        self._anchor_block = val.get("anchor_block", np.zeros(num, np.int64))
        self._start_block = val.get("start_block", np.zeros(num, np.int64))
        self._trusted_m = val.get("trusted_m", x[:, :2].copy())
        self._trusted_var_m2 = val.get("trusted_var_m2", np.full(num, self.cfg.acquisition_std_m**2))
        self._trusted_block = val.get("trusted_block", np.zeros(num, np.int64))
        self._search_block = val.get("search_block", np.full(num, -1, np.int64))
        self._search_heading_rad = val.get("search_heading_rad", np.zeros(num))
        self._encounter = val.get("encounter", np.zeros((num, num), bool))
        self._same_blocks = val.get("same_blocks", np.zeros((num, num), np.int64))
        self._apart_blocks = val.get("apart_blocks", np.zeros((num, num), np.int64))

    def _initial_state(self, z: np.ndarray, R: np.ndarray, bs_pos_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """State ``(4,)`` and covariance ``(4, 4)`` started from one range/angle peak ``z (2,)``, ``R (2, 2)``:
        position ``p + d [cos t, sin t]`` with covariance ``J R J^T`` (``J = d(x, y)/d(d, t)``), velocity
        the uniform-heading prior ``N(0, v^2 / 2 I)`` as at :meth:`reset`."""
        d, t = z
        c, s_ = math.cos(t), math.sin(t)
        J = np.array([[c, -d * s_], [s_, d * c]])
        x = np.array([bs_pos_m[0] + d * c, bs_pos_m[1] + d * s_, 0.0, 0.0])
        P = np.zeros((4, 4))
        P[:2, :2] = J @ R @ J.T
        P[2, 2] = P[3, 3] = self.cfg.speed_mps**2 / 2.0
        return x, P

    def _resolve_identities(self, x: np.ndarray, P: np.ndarray, unclaimed_labels: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray]:
        """Swaps after encounters, duplicates, anchors (:mod:`rl_isac.tracking.identity`); posterior
        ``x (I, 4)``, ``P (I, 4, 4)`` of the new block; ``unclaimed_labels``: labels of the scans with a 2-D
        peak no track fused. Returns ``(x, P)`` (rows of swapped tracks exchanged)."""
        cfg = self.cfg
        q = self.block + 1
        gate = CHI2_GATE if self.settings.innovation_gate is None else self.settings.innovation_gate
        nis = pairwise_nis(x, P)
        dist = np.linalg.norm(x[:, None, :2] - x[None, :, :2], axis=-1)
        # confusable: inside each other's gate and near enough for merged echoes (2 range cells)
        close = (nis <= gate) & (dist <= 2.0 * cfg.range_resolution_m)
        vel_std = np.sqrt(np.trace(P[:, 2:, 2:], axis1=-2, axis2=-1))
        vel_known = vel_std <= self.settings.speed_max_std * cfg.speed_mps
        heading_var = cfg.heading_step_rad**2 / 3.0  # var of U(-h, h)

        def cost(rows, anchors):
            return retrodiction_cost(x[rows], P[rows], self._anchor_m[anchors], self._anchor_var_m2[anchors],
                                     q - self._anchor_block[anchors], cfg.block_duration_s, cfg.step_m, heading_var)

        # 1. Encounters that ended (apart for duplicate_after_blocks blocks, so that the velocities come from
        # clean looks again, and both known): keep or swap the identities.
        apart = self._encounter & ~close
        self._apart_blocks = np.where(apart, self._apart_blocks + 1, 0)
        ended = np.triu(apart & (self._apart_blocks >= self.settings.duplicate_after_blocks)
                        & vel_known[:, None] & vel_known[None, :], 1)
        last_chance = self._apart_blocks >= IDENTITY_MAX_WAIT_BLOCKS
        for i, j in zip(*np.nonzero(ended)):
            margin = swap_margin(cost([i, j], [i, j])) if self.settings.resolve_identities else -np.inf
            if not self.settings.resolve_identities:  # duplicates only: the encounter ends, identities kept
                last_chance[i, j] = True
            if margin < DECISIVE_COST and not last_chance[i, j]:
                continue  # not decisive yet: wait for better velocities, anchors kept
            if margin >= DECISIVE_COST:  # the filter's own pairing stands unless the swap is clearly likelier
                x[[i, j]], P[[i, j]] = x[[j, i]], P[[j, i]]
                self.missed[[i, j]] = self.missed[[j, i]]
                self.identity_swaps += 1
            self._encounter[i, j] = self._encounter[j, i] = False
            self._apart_blocks[i, j] = self._apart_blocks[j, i] = 0
        # 2. Duplicates: indistinguishable while their beams see a peak nobody claims.
        watched = np.isin(np.arange(len(x)), unclaimed_labels)
        same = (nis <= CHI2_MEDIAN_2DOF) & (watched[:, None] | watched[None, :])
        self._same_blocks = np.where(same, self._same_blocks + 1, 0)
        after = self.settings.search_after_blocks
        if after is not None:
            searching = self.searching
            for i, j in zip(*np.nonzero(np.triu(self._same_blocks >= self.settings.duplicate_after_blocks, 1))):
                if searching[i] or searching[j]:
                    continue
                c = cost([i], [i, j])[0]  # the common state against both anchors
                k = i if c[0] > c[1] else j
                self.missed[k] = max(self.missed[k], float(after))
                self.losses += 1
                self.duplicates += 1
                self._same_blocks[i, j] = self._same_blocks[j, i] = 0
        # 3. New encounters; anchors of the tracks confusable with no other.
        self._encounter |= close
        free = ~self._encounter.any(axis=1) & ~self.searching  # no pending encounter
        self._anchor_m[free] = x[free, :2]
        self._anchor_var_m2[free] = 0.5 * np.trace(P[free, :2, :2], axis1=-2, axis2=-1)
        self._anchor_block[free] = q
        return x, P

    def _check(self, meas) -> None:
        num = self._x.shape[0]
        if meas.assigned.shape != (self.bs_positions_m.shape[0], num):
            raise MeasurementError(f"measurements are {meas.assigned.shape} [bs, target]; the estimator expects "
                                   f"({self.bs_positions_m.shape[0]}, {num})")
        if meas.__dict__.get("_validated", False):
            return  # validated before (or the world's own output): its finiteness checks passed then
        det = np.asarray(meas.detected, dtype=bool)
        bad = det & ~(np.isfinite(meas.range_m) & np.isfinite(meas.angle_rad)
                      & np.all(np.isfinite(meas.cov), axis=(-2, -1)))
        if np.any(bad):
            bs, tgt = (int(v) for v in np.argwhere(bad)[0])
            raise MeasurementError(f"pair (bs={bs}, target={tgt}) is detected but its measurement is not finite: "
                                   f"range_m={meas.range_m[bs, tgt]}, angle_rad={meas.angle_rad[bs, tgt]}, "
                                   f"cov={meas.cov[bs, tgt].tolist()}")
        meas.validate_once()  # each Measurements object is checked once (a CU may have validated it already)

    def update(self, meas) -> tuple[np.ndarray, np.ndarray]:
        """Advance one block and fuse its measurements.

        Args:
            meas: :class:`~rl_isac.physics.measurements.Measurements` of the new block. Every valid
                peak (``peak_*`` arrays; the ``(M, I)`` fields when there is one peak per pair) is a
                candidate for every track; :attr:`EKFSettings.data_association` decides which track
                fuses it (``R = peak_cov``), and a peak no track takes is dropped (:attr:`rejected`).
        Returns:
            ``(u_hat, u_tilde_next)``: ``(num_targets, 2)`` posterior position ``u_hat_q`` and
            ``(num_targets, 2)`` predicted position ``u_tilde_{q+1}``, metres.
        Raises:
            MeasurementError: wrong shape, or a non-finite value on a detected pair (named); the
                state is left unchanged.

        The code is that of :func:`update_many` with one estimator (the batched EKF of lockstep envs).
        """
        return update_many([self], [meas])[0]


# ---------------------------------------------------------------------------------------------- batched update
def _batchable(a: EKFEstimator, b: EKFEstimator) -> bool:
    """Can ``a`` and ``b`` be updated in one batch (same scenario, settings and number of tracks)?"""
    return (a.settings == b.settings and (a.cfg is b.cfg or a.cfg == b.cfg)
            and a._x.shape[0] == b._x.shape[0])


def _predict_many(ests: list[EKFEstimator]) -> None:
    """Fill the cached one-block prediction of every estimator of one batch that has none: one
    :meth:`EKFEstimator._predict` over all their tracks (every step of it is per track: the same numbers as one
    estimator at a time)."""
    todo = [e for e in ests if e._pred is None]
    if not todo:
        return
    if len(todo) == 1:
        todo[0]._pred = todo[0]._predict(todo[0]._x, todo[0]._P, todo[0].searching)
        return
    n = todo[0]._x.shape[0]
    x, P = todo[0]._predict(np.concatenate([e._x for e in todo]), np.concatenate([e._P for e in todo]),
                            np.concatenate([e.searching for e in todo]))
    for k, e in enumerate(todo):
        e._pred = (x[k * n:(k + 1) * n], P[k * n:(k + 1) * n])


def update_many(estimators: list[EKFEstimator], metas: list) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[est.update(meas) for est, meas in zip(estimators, metas)]``, batched: the same numbers, bit for bit.

    The batched EKF of lockstep envs (an env runner's vector env pushes every env's window at once): the
    estimators of one scenario, settings and number of tracks ``I`` are stacked into one ``(E * I, 4)`` state.
    The prediction, the peaks (:func:`~rl_isac.tracking.data_association.collect_peaks_many`), the merge
    widening, the innovation matrix of every peak against its own estimator's tracks, the beams check, the
    sequential EKF updates (round ``r`` of BS ``m``: every estimator's round-``r`` peaks of BS ``m`` in one
    :func:`update_range_angle_gated` call) and the speed pseudo-measurement run once for all of them; every step
    is per track or per peak, so each estimator's arithmetic is the one it does alone. Per estimator stay: the
    assignment (scan by scan, as alone: the scan ids are per estimator), the searching tracks' logic, the merged
    updates and the identity logic. :meth:`EKFEstimator.update` is this function with one estimator.

    Every estimator is checked (reset, shapes, finiteness) before any changes: a refused block changes none.
    Estimators that cannot share a batch (other scenario, settings or ``I``) are updated in their own batches.
    """
    if len(estimators) != len(metas):
        raise ValueError(f"{len(estimators)} estimators but {len(metas)} measurements")
    for est, meas in zip(estimators, metas):
        est._require_reset()
        est._check(meas)
    groups: list[list[int]] = []
    for k, est in enumerate(estimators):
        for g in groups:
            if _batchable(estimators[g[0]], est):
                g.append(k)
                break
        else:
            groups.append([k])
    out: list = [None] * len(estimators)
    for g in groups:
        for k, res in zip(g, _update_batch([estimators[k] for k in g], [metas[k] for k in g])):
            out[k] = res
    return out


def _update_batch(ests: list[EKFEstimator], metas: list) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`update_many` of estimators that share scenario, settings and ``I`` (already checked)."""
    first = ests[0]
    cfg, settings, bs_positions_m = first.cfg, first.settings, first.bs_positions_m
    E, I = len(ests), first._x.shape[0]
    _predict_many(ests)  # q-1 -> q (normally cached by the previous block's predicted_position)
    if E == 1:
        x, P = first._pred
        x, P = x.copy(), P.copy()
    else:
        x = np.concatenate([e._pred[0] for e in ests])
        P = np.concatenate([e._pred[1] for e in ests])
    peaks = collect_peaks_many(metas, keep_range_only=settings.range_only_peaks)
    env = peaks.env
    bounds = np.searchsorted(env, np.arange(E + 1))  # env e's peaks: bounds[e]:bounds[e + 1]
    rows_of = env * I  # + local track: the peak's estimator's row of a track
    # the tracks each peak is compared with: (I, ...) for one estimator, (N, I, ...) per peak for several
    xt = x if E == 1 else x.reshape(E, I, 4)[env]
    Pt = P if E == 1 else P.reshape(E, I, 4, 4)[env]
    beam_u = 2.0 / cfg.codebook_size
    if settings.widen_merges:
        peaks = widen_for_merges(peaks, xt, bs_positions_m, cfg.range_resolution_m, beam_u)
    gate = settings.innovation_gate
    partners = None
    if settings.merged_update and gate is not None:
        partners = np.full((len(peaks), 2), -1, np.int64)
        for e in range(E):
            a, b = bounds[e], bounds[e + 1]
            partners[a:b] = merge_partners(_peak_rows(peaks, a, b), x[e * I:(e + 1) * I], bs_positions_m,
                                           cfg.range_resolution_m, beam_u)
        if not (partners[:, 0] >= 0).any():
            partners = None
    innovation = innovation_matrix(xt, Pt, peaks, bs_positions_m) if len(peaks) else None  # once a block
    if gate is None:
        track, _ = ASSOCIATION_RULES["label"](xt, Pt, peaks, bs_positions_m, gate=None)
    else:
        rule = ASSOCIATION_RULES[settings.data_association]
        allowed = None
        if rule is gnn_assign and peaks.range_only.any():
            allowed = same_beams(peaks, xt, bs_positions_m, beam_u,
                                 cfg.range_resolution_m if settings.range_only_unambiguous else None)
        if rule is gnn_assign:
            track, _ = rule(xt, Pt, peaks, bs_positions_m, gate, allowed=allowed, innovation=innovation)
        else:
            track, _ = rule(xt, Pt, peaks, bs_positions_m, gate)
    accepted = np.zeros(E * I, bool)
    accepted_2d = np.zeros(E * I, bool)  # a 2-D peak fused (the trusted positions of search_reseed)
    ranged = np.zeros(E * I, bool)  # a range-only peak fused into a searching track (ends its ring of looks)
    fused = np.zeros(len(peaks), bool)
    # Searching tracks: a peak another track also gates is not theirs to take (a searching track's wide
    # gate must not capture a neighbour's echo, neither by a restart nor by an update with its wide P);
    # of the rest only the one nearest the prediction (lowest NIS) is kept, the others dropped (with a
    # wide gate several echoes fit, and the most precise is not the most likely); it re-initialises the
    # track if it pins the position (largest eigenvalue of its position covariance at most
    # search_growth_m^2), and is fused as an ordinary update otherwise.
    nis_all = innovation[0] if innovation is not None else np.zeros((0, I))
    gates = peak_gates(peaks, np.inf if gate is None else gate)  # (N,): 2-D or range-only gate
    for e, est in enumerate(ests):
        a, b = bounds[e], bounds[e + 1]
        for i in np.flatnonzero(est.searching):
            mine = a + np.flatnonzero(track[a:b] == i)
            if gate is not None and mine.size and I > 1:
                shared = (np.delete(nis_all[mine], i, axis=1) <= gates[mine, None]).any(axis=1)
                track[mine[shared]] = -1
                mine = mine[~shared]
            if mine.size == 0:
                continue
            best = mine[np.argmin(nis_all[mine, i])]
            track[mine[mine != best]] = -1
            if peaks.range_only[best]:  # a range alone does not pin the position: an ordinary update
                continue
            start_x, start_P = est._initial_state(peaks.z[best], peaks.R[best], bs_positions_m[peaks.bs[best]])
            if np.linalg.eigvalsh(start_P[:2, :2])[-1] > settings.search_growth_m**2:
                continue
            x[e * I + i], P[e * I + i] = start_x, start_P
            est._start_block[i] = est.block + 1
            fused[best] = accepted[e * I + i] = accepted_2d[e * I + i] = True
            est.reacquired_after.append(int(np.ceil(est.missed[i])))
    # Sequential EKF updates, BS by BS (a track takes at most one peak per update round); every estimator's
    # round r of BS m in one call (rows: the peak's estimator's track, so no row twice in a call).
    searching = np.concatenate([e.searching for e in ests]) if E > 1 else first.searching
    if partners is not None:  # the centroid model only for tracks past their start-up (see merged_update)
        start = np.concatenate([e._start_block for e in ests])
        blk = np.repeat([e.block for e in ests], I)
        blind = searching | (blk + 1 - start < settings.merged_after_blocks)
        partners[blind[rows_of[:, None] + np.maximum(partners, 0)].any(axis=1)] = -1
    row = rows_of + track  # global row of each assigned peak (meaningless where track < 0)
    for bs_idx in range(bs_positions_m.shape[0]):
        bs_pos = bs_positions_m[bs_idx]
        todo = np.flatnonzero((peaks.bs == bs_idx) & (track >= 0) & ~fused)
        if partners is not None and todo.size:  # merged echoes first, into both tracks of their pair
            for n in todo[(partners[todo] == track[todo, None]).any(axis=1) & ~peaks.range_only[todo]]:
                i, j = rows_of[n] + partners[n]
                x[i], P[i], x[j], P[j], ok = update_merged(x[i], P[i], x[j], P[j], peaks.z[n], peaks.R[n],
                                                           bs_pos, gates[n])
                if ok:
                    fused[n] = accepted[i] = accepted[j] = accepted_2d[i] = accepted_2d[j] = True
            todo = todo[~fused[todo]]
        while todo.size:
            first_peaks = _first_of_each(row[todo])
            batch, todo = todo[first_peaks], np.delete(todo, first_peaks)
            kinds = peaks.range_only[batch]
            for ro in (False, True):  # 2-D peaks, then range-only ones (1-D)
                if not (kinds.any() if ro else not kinds.all()):
                    continue
                sub = batch[kinds == ro]
                rows = row[sub]
                z, R = peaks.z[sub], peaks.R[sub]
                if not ro and gate is not None and settings.num_iterations == 1:
                    # re-gate (the state may have moved since the assignment) and update in one pass
                    x[rows], P[rows], keep = update_range_angle_gated(x[rows], P[rows], z, R, bs_pos, gates[sub])
                    fused[sub[keep]] = accepted[rows[keep]] = accepted_2d[rows[keep]] = True
                    continue
                if gate is not None:  # the state may have moved since the assignment: gate again
                    if ro:
                        H = range_angle_jacobian(x[rows], bs_pos)[:, 0, :]
                        s_rr = np.einsum("na,nab,nb->n", H, P[rows], H) + R[:, 0, 0]
                        y = z[:, 0] - range_angle(x[rows], bs_pos)[:, 0]
                        nis = y * y / s_rr
                    else:
                        nis = innovation_nis(x[rows], P[rows], z, R, bs_pos)
                    keep = nis <= gates[sub]
                    sub, rows, z, R = sub[keep], rows[keep], z[keep], R[keep]
                if rows.size == 0:
                    continue
                fused[sub] = True
                if ro:
                    x[rows], P[rows] = update_range(x[rows], P[rows], z[:, 0], R[:, 0, 0], bs_pos)
                    # a range alone does not end a search (see range_only_ends_search)
                    ranged[rows[searching[rows]]] = True
                    accepted[rows if settings.range_only_ends_search else rows[~searching[rows]]] = True
                else:
                    x[rows], P[rows] = update_range_angle(x[rows], P[rows], z, R, bs_pos,
                                                          num_iterations=settings.num_iterations)
                    accepted[rows] = accepted_2d[rows] = True
    # A track that fused nothing but had a peak inside its gate (it lost that peak to a neighbour's track:
    # the two echoes merge while the targets pass each other) is probably not missing its target: such a
    # block counts SEEN_MISS_WEIGHT of a miss (a track that stays merged into its neighbour's echo for
    # good is a duplicate, and searches after a while all the same).
    seen = np.zeros((E, I), bool)
    if len(peaks):
        hit_peak, hit_track = np.nonzero(nis_all <= gates[:, None])
        seen[env[hit_peak], hit_track] = True
    seen = seen.reshape(-1)
    if settings.unexplained_is_miss and len(peaks) and gate is not None:  # a lockout sign (see its docstring)
        lone = ~(nis_all <= gates[:, None]).any(axis=1) & ~peaks.range_only
        unexplained = np.zeros(E * I, bool)
        unexplained[rows_of[lone] + peaks.label[lone]] = True
        seen &= ~unexplained
    missed = np.concatenate([e.missed for e in ests]) if E > 1 else first.missed
    missed = np.where(accepted, 0.0, missed + np.where(seen, SEEN_MISS_WEIGHT, 1.0))
    if settings.speed_std_mps is not None:
        v = cfg.speed_mps
        vel_std = np.sqrt(np.trace(P[:, 2:, 2:], axis1=-2, axis2=-1))
        speed = np.hypot(x[:, 2], x[:, 3])
        known = vel_std <= settings.speed_max_std * v
        if settings.speed_cap is not None:
            start = np.concatenate([e._start_block for e in ests])
            blk = np.repeat([e.block for e in ests], I)
            started = blk + 1 - start >= settings.speed_cap_after_blocks
            known |= (speed >= settings.speed_cap * v) & started
        rows = np.flatnonzero((speed >= settings.speed_gate * v) & known)
        if rows.size and v > 0:
            x[rows], P[rows] = update_speed(x[rows], P[rows], v, settings.speed_std_mps)
    identities = (settings.resolve_identities or settings.detect_duplicates) and I > 1
    for e, est in enumerate(ests):
        a, b = bounds[e], bounds[e + 1]
        est.rejected += int((b - a) - fused[a:b].sum())
        was_searching = est.searching
        est.missed = missed if E == 1 else missed[e * I:(e + 1) * I].copy()
        est.losses += int(np.sum(est.searching & ~was_searching))
        xe, Pe = (x, P) if E == 1 else (x[e * I:(e + 1) * I].copy(), P[e * I:(e + 1) * I].copy())
        if identities:
            unclaimed = ~fused[a:b] & ~peaks.range_only[a:b]
            xe, Pe = est._resolve_identities(xe, Pe, np.unique(peaks.label[a:b][unclaimed]))
        if settings.search_reseed:
            est._search_block[ranged[e * I:(e + 1) * I]] = -1  # looks at its prediction from now on
            est._trust_and_reseed(xe, Pe, accepted_2d[e * I:(e + 1) * I], was_searching)
        est._x, est._P = xe, Pe
        est._pred = None
        est.block += 1
    _predict_many(ests)  # q -> q + 1, for u_tilde_{q+1}
    return [(e._x[:, :2].copy(), e.predicted_position()) for e in ests]


def _peak_rows(peaks, a: int, b: int):
    """The peaks ``a:b`` of a :class:`~rl_isac.tracking.data_association.PeakSet` (one estimator's, in a batch)."""
    return dataclasses.replace(peaks, **{f.name: None if getattr(peaks, f.name) is None else getattr(peaks, f.name)[a:b]
                                         for f in dataclasses.fields(peaks)})


__all__ = ["TRACK_FIELDS", "PAIR_FIELDS", "empty_tracks", "wrap_angle", "predict", "range_angle",
           "range_angle_jacobian",
           "update_range_angle", "update_range_angle_gated", "update_merged", "update_range", "update_speed",
           "update_many",
           "EKFSettings", "EKFEstimator"]
