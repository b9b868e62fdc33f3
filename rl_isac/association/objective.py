"""Myopic association objective: posterior position error from Fisher information.

For the next block the CU knows, per target ``i``, the information of its
predicted position ``prior_info[i] = inv(P_pred_i)`` (1/m^2) and, per pair
``(m, i)``, the position Fisher information ``info[m, i]`` (1/m^2) that BS ``m``
would add with its beams well placed (computed by the physics layer). With
independent BS measurements the information adds, so the posterior
position-error bound of target ``i`` tracked by the BS set ``S`` is

    cost_i(S) = trace(inv(prior_info[i] + sum_{m in S} info[m, i]))   [m^2]

(a Bayesian CRB, the myopic stand-in for the per-target term of eq. (5a)),
and the cost of an association ``A`` is ``sum_i cost_i({m : A[m, i]})``.

The objective is separable per target given its BS set, so one table
``subset_costs[i, S]`` over bitmasks ``S`` (bit ``m`` set = BS ``m`` tracks
target ``i``) serves every exact solver.

For a symmetric 2x2 matrix ``[[a, b], [b, d]]``, ``trace(inv(.)) = (a + d) / (a d - b^2)``.

Counting detection (issue 7). A pair only adds its information when its
measurement arrives and is credited to its target: with probability
``p[m, i]`` (``detection_prob``, :mod:`rl_isac.physics.detection`; the
detector's P_d at the predicted position with the beams the CU will transmit,
times the chance that the detection is not a neighbour's echo). Detections of
different pairs are independent (independent noise per pair), so the
objective is the *exact expectation over detection outcomes* of the per-target
cost::

    E cost_i(S) = sum_{D subset of S} prod_{m in D} p[m, i] prod_{m in S - D} (1 - p[m, i])
                  * trace(inv(prior_info[i] + sum_{m in D} info[m, i]))

It is still separable per target given its BS set ``S``, so the per-subset
table and with it the exact MILP / exhaustive search stay exact; the table
costs ``M`` extra vector operations (:func:`expected_subset_costs`). We chose
it over the expected information ``trace(inv(prior + sum_m p J_m))``
(also separable) because ``trace(inv(.))`` is convex, so by Jensen the
expected-information form is optimistic exactly where it matters: it credits
half of a large information to a pair detected half the time, while the track
then coasts (prior-only cost) half the time. The exact expectation charges
that coasting, which is what makes a second BS worth a free chain for a
target whose single BS is unreliable (a neighbour in its beams, or a large
predicted uncertainty that the beams may miss; see
:mod:`rl_isac.physics.detection`). The convex relaxation (Benchmark I) keeps
the expected-information form, its only convex surrogate, and rounds on this
objective.

Idle chains ((5c) is an inequality). Adding a pair never increases the
expected cost, so without a price on a chain the solvers' full-chain form
stays optimal. With ``chain_price = c > 0`` the cost of target ``i`` with the
BS set ``S`` is ``E cost_i(S) * (1 + c)^|S|``: a pair is worth a chain only if
it cuts the target's expected error by more than the fraction ``c / (1 + c)``
(scale-free: the same rule for a fresh track with a metre of uncertainty as
for a converged one with centimetres). A pair detected with probability
``p`` cuts it by at most ``p``, so a pair with ``p <= c / (1 + c)`` never is,
and its chain stays idle (it then adds no interference to the BS's other
chain and no false track candidate). The table stays separable per target, so
the same table serves every exact solver.
"""

from __future__ import annotations

import numpy as np

from rl_isac.association.constraints import _as_binary, chains_per_bs
from rl_isac.errors import ConstraintViolation, RlIsacError

__all__ = [
    "DEFAULT_CHAIN_PRICE",
    "MAX_TABLE_ENTRIES",
    "association_cost",
    "check_price",
    "expected_association_cost",
    "expected_subset_costs",
    "validate_detection",
    "max_bs_per_target",
    "subset_costs",
    "subset_sizes",
    "target_costs",
    "trace_inv_2x2",
    "validate_information",
]

DEFAULT_CHAIN_PRICE = 0.05
"""Chain price the CUs use (see above): a pair must cut its target's expected error by more than
``0.05 / 1.05 = 4.8 %`` to get a chain, so a pair detected less often than that never gets one."""

MAX_TABLE_ENTRIES = 1 << 26
"""Largest ``num_targets * 2**num_bs`` table :func:`subset_costs` builds (512 MiB of float64)."""


def trace_inv_2x2(a: np.ndarray, b: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``trace(inv([[a, b], [b, d]]))`` elementwise; ``inf`` where the matrix is singular.

    Parameters
    ----------
    a, b, d : np.ndarray, broadcastable
        Entries of symmetric positive semi-definite 2x2 matrices (1/m^2).

    Returns
    -------
    np.ndarray
        ``(a + d) / (a d - b^2)`` (m^2).
    """
    a, b, d = (np.asarray(x, dtype=np.float64) for x in (a, b, d))
    det = a * d - b * b
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (a + d) / det
    return np.where(det > 0, out, np.inf)


def _entries(mat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(a, b, d)`` of symmetrised 2x2 matrices ``(..., 2, 2)``."""
    return mat[..., 0, 0], 0.5 * (mat[..., 0, 1] + mat[..., 1, 0]), mat[..., 1, 1]


def validate_information(info: object, prior_info: object) -> tuple[np.ndarray, np.ndarray]:
    """Check and convert the Fisher information inputs.

    Parameters
    ----------
    info : array_like, shape (num_bs, num_targets, 2, 2)
        Position Fisher information of each pair (1/m^2); symmetric PSD.
    prior_info : array_like, shape (num_targets, 2, 2)
        Predicted position information ``inv(P_pred)`` (1/m^2); symmetric
        positive definite (a tracker's predicted covariance is finite).

    Returns
    -------
    (np.ndarray, np.ndarray)
        Both as float64, symmetrised.

    Raises
    ------
    RlIsacError
        Wrong shapes, non-finite values, ``info`` not PSD or ``prior_info``
        not positive definite (within a relative tolerance of 1e-9).
    """
    info = np.asarray(info, dtype=np.float64)
    prior_info = np.asarray(prior_info, dtype=np.float64)
    if info.ndim != 4 or info.shape[2:] != (2, 2):
        raise RlIsacError(f"info must have shape (num_bs, num_targets, 2, 2), got {info.shape}")
    if prior_info.shape != (info.shape[1], 2, 2):
        raise RlIsacError(f"prior_info must have shape (num_targets, 2, 2) = ({info.shape[1]}, 2, 2), "
                          f"got {prior_info.shape}")
    if info.shape[0] < 1 or info.shape[1] < 1:
        raise RlIsacError(f"info needs at least one BS and one target, got shape {info.shape}")
    for name, mat in (("info", info), ("prior_info", prior_info)):
        if not np.all(np.isfinite(mat)):
            raise RlIsacError(f"{name} holds non-finite values")
    info = 0.5 * (info + np.swapaxes(info, -1, -2))
    prior_info = 0.5 * (prior_info + np.swapaxes(prior_info, -1, -2))

    def min_eig(mat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, b, d = _entries(mat)
        half_tr = 0.5 * (a + d)
        rad = np.hypot(0.5 * (a - d), b)
        return half_tr - rad, np.abs(half_tr) + rad

    lo, hi = min_eig(info)
    bad = lo < -1e-9 * np.maximum(hi, 1e-300)
    if bad.any():
        m, i = np.argwhere(bad)[0]
        raise RlIsacError(f"info[{m}, {i}] is not positive semi-definite (smallest eigenvalue {lo[m, i]:.3g} 1/m^2); "
                          f"{int(bad.sum())} pair(s) affected")
    lo, hi = min_eig(prior_info)
    bad = ~(lo > 1e-9 * hi)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise RlIsacError(f"prior_info[{i}] must be positive definite (the inverse of a finite predicted "
                          f"covariance), smallest eigenvalue {lo[i]:.3g} 1/m^2; {int(bad.sum())} target(s) affected")
    return info, prior_info


def target_costs(association: object, info: object, prior_info: object) -> np.ndarray:
    """Per-target posterior position error ``trace(inv(prior_i + sum_m A[m, i] info[m, i]))``.

    Parameters
    ----------
    association : array_like, shape (..., num_bs, num_targets)
        0/1 or bool association(s) ``A[bs, target]``; leading batch dims allowed.
        Constraints (5c)/(5d) are not required.
    info : array_like, shape (num_bs, num_targets, 2, 2)
        Pair Fisher information (1/m^2).
    prior_info : array_like, shape (num_targets, 2, 2)
        Predicted position information (1/m^2).

    Returns
    -------
    np.ndarray of float64, shape (..., num_targets)
        Costs (m^2).
    """
    info, prior_info = validate_information(info, prior_info)
    a = np.asarray(association)
    if a.ndim < 2 or a.shape[-2:] != info.shape[:2]:
        raise ConstraintViolation("(5e)", f"association has shape {a.shape}, expected (..., num_bs, num_targets) "
                                  f"= (..., {info.shape[0]}, {info.shape[1]})")
    if a.ndim == 2:
        a = _as_binary(a, None)
    elif a.dtype != np.bool_ and not np.all((a == 0) | (a == 1)):
        raise ConstraintViolation("(5e)", "association entries must be 0 or 1")
    a = a.astype(np.float64)
    # F_i = prior_i + sum_m alpha_{m,i} J_{m,i}
    fim = prior_info + np.einsum("...mi,mijk->...ijk", a, info)
    return trace_inv_2x2(*_entries(fim))


def association_cost(association: object, info: object, prior_info: object) -> np.ndarray | float:
    """Total myopic cost ``sum_i trace(inv(prior_i + sum_m A[m, i] info[m, i]))`` (m^2).

    Parameters
    ----------
    association : array_like, shape (..., num_bs, num_targets)
        See :func:`target_costs`.
    info : array_like, shape (num_bs, num_targets, 2, 2)
        Pair Fisher information (1/m^2).
    prior_info : array_like, shape (num_targets, 2, 2)
        Predicted position information (1/m^2).

    Returns
    -------
    float or np.ndarray of float64, shape (...)
        The sum over targets (m^2); a float for a single association.
    """
    total = target_costs(association, info, prior_info).sum(axis=-1)
    return float(total) if np.ndim(total) == 0 else total


def max_bs_per_target(num_bs: int, num_targets: int, num_rf: int) -> int:
    """Largest BS set one target can get when every BS uses ``min(num_rf, I)`` chains and all are covered.

    ``min(M, M * min(num_rf, I) - (I - 1))``: the other ``I - 1`` targets need
    one chain each (5d).
    """
    per_bs = chains_per_bs(num_targets, num_rf)
    return int(max(1, min(num_bs, num_bs * per_bs - (num_targets - 1))))


def subset_sizes(num_bs: int) -> np.ndarray:
    """Number of BSs in every bitmask ``0 .. 2**num_bs - 1``; shape (2**num_bs,), int64."""
    return np.bitwise_count(np.arange(1 << num_bs, dtype=np.uint64)).astype(np.int64)


def subset_costs(info: object, prior_info: object, max_subset_size: int | None = None) -> np.ndarray:
    """Cost of every target with every BS set, indexed by bitmask.

    Parameters
    ----------
    info : array_like, shape (num_bs, num_targets, 2, 2)
        Pair Fisher information (1/m^2).
    prior_info : array_like, shape (num_targets, 2, 2)
        Predicted position information (1/m^2).
    max_subset_size : int, optional
        Sets with more BSs are skipped: their entry is ``inf`` (no feasible
        association of the solvers' form uses them, see
        :func:`max_bs_per_target`). Default: no limit.

    Returns
    -------
    np.ndarray of float64, shape (num_targets, 2**num_bs)
        ``table[i, S] = trace(inv(prior_info[i] + sum_{m in S} info[m, i]))``
        (m^2), bit ``m`` of ``S`` set iff BS ``m`` is in the set;
        ``table[i, 0]`` is the prior-only cost.

    Raises
    ------
    RlIsacError
        Bad inputs, or a table larger than :data:`MAX_TABLE_ENTRIES`.
    """
    info, prior_info = validate_information(info, prior_info)
    num_bs, num_targets = info.shape[:2]
    if num_targets * (1 << num_bs) > MAX_TABLE_ENTRIES:
        raise RlIsacError(f"subset cost table for num_bs={num_bs}, num_targets={num_targets} would have "
                          f"{num_targets * (1 << num_bs)} entries (> {MAX_TABLE_ENTRIES})")
    a, b, d = _entries(info)  # (M, I) each
    pair = np.stack([a, b, d], axis=-1)  # (M, I, 3)
    # Summed information of every subset: S | 2^m = S + J_m for S < 2^m (doubling, M vector ops).
    summed = np.empty((1 << num_bs, num_targets, 3))
    pa, pb, pd = _entries(prior_info)
    summed[0] = np.stack([pa, pb, pd], axis=-1)
    for m in range(num_bs):
        lo = 1 << m
        np.add(summed[:lo], pair[m], out=summed[lo: 2 * lo])
    cost = trace_inv_2x2(summed[..., 0], summed[..., 1], summed[..., 2]).T  # (I, 2^M)
    if max_subset_size is not None and max_subset_size < num_bs:
        cost[:, subset_sizes(num_bs) > max_subset_size] = np.inf
    return np.ascontiguousarray(cost)


def validate_detection(detection_prob: object, shape: tuple[int, int]) -> np.ndarray:
    """``detection_prob (num_bs, num_targets)`` as float64 in ``[0, 1]``.

    Raises
    ------
    RlIsacError
        Wrong shape, or a value outside ``[0, 1]`` / not finite (the message names the first pair).
    """
    p = np.asarray(detection_prob, dtype=np.float64)
    if p.shape != tuple(shape):
        raise RlIsacError(f"detection_prob must have shape (num_bs, num_targets) = {tuple(shape)}, got {p.shape}")
    bad = ~((p >= 0.0) & (p <= 1.0))
    if bad.any():
        m, i = np.argwhere(bad)[0]
        raise RlIsacError(f"detection_prob[{m}, {i}] = {float(p[m, i])!r} is not a probability in [0, 1]; "
                          f"{int(bad.sum())} pair(s) affected")
    return p


def check_price(chain_price: float) -> float:
    """``chain_price`` as a float ``>= 0``; :class:`RlIsacError` otherwise."""
    if not (np.isfinite(chain_price) and chain_price >= 0):
        raise RlIsacError(f"chain_price = {chain_price!r} must be a finite number >= 0 (the relative cut of a "
                          f"target's expected error one RF chain must buy)")
    return float(chain_price)


def expected_subset_costs(info: object, prior_info: object, detection_prob: object | None = None,
                          chain_price: float = 0.0, max_subset_size: int | None = None) -> np.ndarray:
    """Expected cost over detection outcomes (+ chain prices) of every target with every BS set.

    Parameters
    ----------
    info, prior_info, max_subset_size
        As :func:`subset_costs`.
    detection_prob : array_like, shape (num_bs, num_targets), optional
        Probability that pair ``(m, i)`` yields a measurement credited to
        target ``i``; default 1 (detection assumed: the plain table).
    chain_price : float
        Price of one RF chain: the cost is multiplied by ``(1 + chain_price)``
        per BS in the set (see the module docstring); default 0.

    Returns
    -------
    np.ndarray of float64, shape (num_targets, 2**num_bs)
        ``table[i, S] = E_D[trace(inv(prior_i + sum_{m in D} info[m, i]))]
        * (1 + chain_price)^|S|`` over the detected subset ``D`` of ``S``
        (m^2); ``inf`` beyond ``max_subset_size``.

    The expectation is a product transform over the bits: after processing
    BSs ``0 .. m - 1``, ``h[S]`` is the expectation over the outcomes of
    those BSs in ``S`` with the others in ``S`` fixed as detected; BS ``m``
    then maps ``h[S] <- p_m h[S] + (1 - p_m) h[S - m]`` for every ``S``
    containing ``m`` (``M`` vector operations on the table).
    """
    table = subset_costs(info, prior_info)  # validates; cost of every detected set D
    num_targets, size = table.shape
    num_bs = size.bit_length() - 1
    if detection_prob is not None:
        p = validate_detection(detection_prob, (num_bs, num_targets))
        h = table.T.copy()  # (2^M, I)
        for m in range(num_bs):
            lo = 1 << m
            view = h.reshape(-1, 2, lo, num_targets)  # [..., bit m, lower bits, target]
            view[:, 1] = p[m] * view[:, 1] + (1.0 - p[m]) * view[:, 0]
        # a set with a BS of p = 0 gets exactly the value without it; inf only where every outcome is singular
        table = np.ascontiguousarray(h.T)
    if check_price(chain_price):
        table = table * (1.0 + chain_price) ** subset_sizes(num_bs)[None, :]
    if max_subset_size is not None and max_subset_size < num_bs:
        table = table.copy() if table is not None else table
        table[:, subset_sizes(num_bs) > max_subset_size] = np.inf
    return table


def expected_association_cost(association: object, info: object, prior_info: object,
                              detection_prob: object | None = None, chain_price: float = 0.0) -> float:
    """The solvers' objective of one association: ``sum_i table[i, S_i]`` of :func:`expected_subset_costs` (m^2).

    Parameters
    ----------
    association : array_like, shape (num_bs, num_targets)
        0/1 or bool ``A[bs, target]``; (5c)/(5d) are not required.
    info, prior_info, detection_prob, chain_price
        As :func:`expected_subset_costs`.
    """
    table = expected_subset_costs(info, prior_info, detection_prob, chain_price)
    a = _as_binary(association, (table.shape[1].bit_length() - 1, table.shape[0]))
    masks = (a.astype(np.int64) * (np.int64(1) << np.arange(a.shape[0], dtype=np.int64))[:, None]).sum(axis=0)
    return float(table[np.arange(a.shape[1]), masks].sum())
