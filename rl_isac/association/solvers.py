"""Association solvers for the myopic Fisher-information objective.

Every solver has one verb, ``solve(info, prior_info, num_rf) -> A``, and
returns an association of the same form as the auto-regressive policy
(Sec. 3.2, ``J = M * N_RF`` distinct pairs): every BS tracks exactly
``min(num_rf, num_targets)`` distinct targets (all its RF chains whenever
``num_targets >= num_rf``) and every target has at least one BS, so the
result satisfies (5c)-(5e). They minimise (exactly or approximately)

    sum_i trace(inv(prior_info[i] + sum_m A[m, i] info[m, i]))   [m^2]

(see :mod:`rl_isac.association.objective`).

=============  ============================================================
name           method
=============  ============================================================
``greedy``     cover every target, then fill chains by largest cost decrease
``convex``     Benchmark I: convex relaxation (cvxpy, ``tr_inv``) + rounding (+ optional swaps)
``exhaustive`` Benchmark III: enumerate every association of the form above
``milp``       exact, over per-target BS subsets: warm-started HiGHS LP, reduced-cost DP, MILP fallback
=============  ============================================================

``milp`` and ``exhaustive`` return the same optimal cost; ``milp`` also runs
where exhaustive search cannot (the paper's "OOM" entry of Table 1).
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, linear_sum_assignment, milp

from rl_isac.association.constraints import chains_per_bs, check_association, check_problem_size, uses_all_chains
from rl_isac.association.objective import (
    _entries,
    max_bs_per_target,
    subset_costs,
    subset_sizes,
    trace_inv_2x2,
    validate_information,
)
from rl_isac.errors import ConfigError, RlIsacError

__all__ = [
    "SOLVERS",
    "AssociationSolver",
    "ConvexSolver",
    "ExhaustiveSearchTooLarge",
    "ExhaustiveSolver",
    "GreedySolver",
    "MilpSolver",
    "exhaustive_candidate_count",
    "make_solver",
    "swap_refine",
]


class ExhaustiveSearchTooLarge(RlIsacError):
    """Exhaustive search would enumerate more candidate associations than its budget.

    Attributes
    ----------
    count : int
        Candidate associations ``C(num_targets, min(num_rf, num_targets)) ** num_bs``.
    budget : int
        The solver's ``max_candidates``.
    enumeration_bytes : int
        Bytes to hold the whole enumeration as per-target BS bitmasks
        (``count * num_targets * 8``).
    """

    def __init__(self, count: int, budget: int, num_bs: int, num_targets: int, per_bs: int) -> None:
        self.count = count
        self.budget = budget
        self.enumeration_bytes = count * num_targets * 8
        super().__init__(
            f"exhaustive search over {count} candidate associations (C({num_targets}, {per_bs}) ** {num_bs} = "
            f"{math.comb(num_targets, per_bs)} ** {num_bs}) exceeds max_candidates = {budget}; the enumeration "
            f"as per-target BS bitmasks would need {self.enumeration_bytes} bytes "
            f"({self.enumeration_bytes / 2**30:.3g} GiB = count x num_targets x 8 B). "
            f"The 'milp' solver returns the same optimum."
        )


def exhaustive_candidate_count(num_bs: int, num_targets: int, num_rf: int) -> int:
    """Candidates of exhaustive search: each BS picks ``min(num_rf, I)`` of ``I`` targets, ``C(I, n) ** M``."""
    return math.comb(num_targets, chains_per_bs(num_targets, num_rf)) ** num_bs


def _prepare(info: object, prior_info: object, num_rf: int) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    """Validated ``(info, prior_info, num_bs, num_targets, targets_per_bs)``."""
    info, prior_info = validate_information(info, prior_info)
    num_bs, num_targets = info.shape[:2]
    check_problem_size(num_bs, num_targets, num_rf)
    return info, prior_info, num_bs, num_targets, chains_per_bs(num_targets, num_rf)


def _finish(association: np.ndarray, num_rf: int) -> np.ndarray:
    """Guard every solver's output: (5c)-(5e) and all chains used."""
    out = check_association(association, num_rf)
    if not uses_all_chains(out, num_rf):  # pragma: no cover - would be a solver bug
        raise RlIsacError(f"solver left RF chains unused: per-BS load {out.sum(axis=1).tolist()}")
    return out


class AssociationSolver(ABC):
    """One verb: ``solve(info, prior_info, num_rf) -> A``.

    Shapes:
        info: ``(num_bs, num_targets, 2, 2)`` float, pair position Fisher
        information (1/m^2); prior_info: ``(num_targets, 2, 2)`` float,
        predicted position information (1/m^2); returns ``A``:
        ``(num_bs, num_targets)`` bool, ``[bs, target]``, with exactly
        ``min(num_rf, num_targets)`` targets per BS and every target covered.
    """

    name: ClassVar[str]

    @abstractmethod
    def solve(self, info: np.ndarray, prior_info: np.ndarray, num_rf: int) -> np.ndarray:
        """Association ``A`` (bool, ``(num_bs, num_targets)``) for the next block.

        Raises
        ------
        ConfigError
            ``num_targets > num_bs * num_rf`` (no feasible association) or a bad ``num_rf``.
        RlIsacError
            Malformed ``info`` / ``prior_info``.
        """


class GreedySolver(AssociationSolver):
    """Greedy marginal-gain association; always feasible, ``O(J * M * I)``.

    Phase 1 (5d): while a target is uncovered, assign the (BS with a free
    chain, uncovered target) pair with the largest cost decrease. Phase 2:
    fill every remaining chain with the (BS, target not yet on that BS) pair
    of largest cost decrease, one at a time. Phase 1 always finishes since
    ``num_targets <= num_bs * min(num_rf, num_targets)`` chains exist, and
    phase 2 always finds a target since a BS with a free chain tracks fewer
    than ``min(num_rf, num_targets)`` targets.
    """

    name = "greedy"

    def solve(self, info: np.ndarray, prior_info: np.ndarray, num_rf: int) -> np.ndarray:
        info, prior_info, num_bs, num_targets, per_bs = _prepare(info, prior_info, num_rf)
        ia, ib, id_ = _entries(info)  # (M, I)
        fa, fb, fd = (x.copy() for x in _entries(prior_info))  # (I,) current information per target
        current = trace_inv_2x2(fa, fb, fd)
        association = np.zeros((num_bs, num_targets), dtype=bool)
        remaining = np.full(num_bs, per_bs)
        covered = np.zeros(num_targets, dtype=bool)
        for _ in range(num_bs * per_bs):
            gain = current - trace_inv_2x2(fa + ia, fb + ib, fd + id_)  # (M, I) cost decrease
            valid = (remaining > 0)[:, None] & ~association
            if not covered.all():
                valid &= ~covered[None, :]  # phase 1: cover first (5d)
            flat = int(np.argmax(np.where(valid, gain, -np.inf)))
            m, i = divmod(flat, num_targets)
            association[m, i] = True
            remaining[m] -= 1
            covered[i] = True
            fa[i] += ia[m, i]
            fb[i] += ib[m, i]
            fd[i] += id_[m, i]
            current[i] = trace_inv_2x2(fa[i], fb[i], fd[i])
        return _finish(association, num_rf)


class ConvexSolver(AssociationSolver):
    """Benchmark I: convex relaxation of the association, then feasible rounding.

    Relaxation (convex in ``a``: ``tr_inv`` is convex on PD matrices and its
    argument is affine in ``a``)::

        min_a  sum_i tr_inv(prior_i + sum_m a[m, i] info[m, i])
        s.t.   0 <= a <= 1,  sum_i a[m, i] = min(num_rf, I)  (5c, all chains),
               sum_m a[m, i] >= 1                            (5d)

    solved with cvxpy (CLARABEL if installed, else SCS) as a DPP problem
    whose compiled form is cached per ``(num_bs, num_targets, per_bs)``, so
    a repeat solve costs a few milliseconds. Information is rescaled by a
    common factor first (the argmin is unchanged).

    Rounding never breaks a constraint: (i) cover every target by a
    maximum-weight assignment of targets to distinct RF-chain slots (each BS
    has ``per_bs`` slots; ``scipy.optimize.linear_sum_assignment``) on the
    fractional values; (ii) each BS fills its free chains with its largest
    fractional values among targets it does not track yet. Ties (values
    equal to 1e-4) are broken by the single-pair cost decrease.

    This plain relax-and-round is far from optimal when a target needs two
    BSs with different geometry (median cost 18-60x the MILP optimum on
    random instances with M = 6, I >= 6); ``local_search=True`` adds the
    swap refinement of Joshi & Boyd, "Sensor selection via convex
    optimization" (2009), adapted to RF chains: repeatedly apply the best
    cost-decreasing swap or exchange of targets (:func:`swap_refine`),
    keeping (5c)-(5e).

    Parameters
    ----------
    solver : str, optional
        cvxpy solver name; default CLARABEL, else SCS.
    local_search : bool
        Refine the rounded association by swaps (default False: plain rounding).
    """

    name = "convex"

    def __init__(self, solver: str | None = None, local_search: bool = False) -> None:
        import cvxpy as cp

        installed = cp.installed_solvers()
        if solver is None:
            solver = "CLARABEL" if "CLARABEL" in installed else "SCS"
        if solver not in installed:
            raise ConfigError("solver", solver, f"must be an installed cvxpy solver: {installed}")
        self.solver = solver
        self.local_search = bool(local_search)
        self._cache: dict[tuple[int, int, int], tuple[Any, Any, dict[str, Any]]] = {}

    def _problem(self, num_bs: int, num_targets: int, per_bs: int) -> tuple[Any, Any, dict[str, Any]]:
        key = (num_bs, num_targets, per_bs)
        if key not in self._cache:
            import cvxpy as cp

            a = cp.Variable((num_bs, num_targets), name="a")
            par = {
                "ia": cp.Parameter((num_bs, num_targets), nonneg=True),
                "ib": cp.Parameter((num_bs, num_targets)),
                "id": cp.Parameter((num_bs, num_targets), nonneg=True),
                "pa": cp.Parameter(num_targets, nonneg=True),
                "pb": cp.Parameter(num_targets),
                "pd": cp.Parameter(num_targets, nonneg=True),
            }
            # F_i = prior_i + sum_m a_{m,i} J_{m,i}, entrywise (DPP: parameter x variable)
            f00 = par["pa"] + cp.sum(cp.multiply(a, par["ia"]), axis=0)
            f01 = par["pb"] + cp.sum(cp.multiply(a, par["ib"]), axis=0)
            f11 = par["pd"] + cp.sum(cp.multiply(a, par["id"]), axis=0)
            objective = sum(cp.tr_inv(cp.bmat([[f00[i], f01[i]], [f01[i], f11[i]]])) for i in range(num_targets))
            constraints = [a >= 0, a <= 1,
                           cp.sum(a, axis=1) == per_bs,  # (5c), every chain used
                           cp.sum(a, axis=0) >= 1]  # (5d)
            self._cache[key] = (cp.Problem(cp.Minimize(objective), constraints), a, par)
        return self._cache[key]

    def relaxed(self, info: np.ndarray, prior_info: np.ndarray, num_rf: int) -> np.ndarray:
        """Fractional solution ``a`` of the relaxation, shape (num_bs, num_targets), in [0, 1]."""
        return self._relaxed(*_prepare(info, prior_info, num_rf))

    def _relaxed(self, info: np.ndarray, prior_info: np.ndarray, num_bs: int, num_targets: int,
                 per_bs: int) -> np.ndarray:
        problem, a, par = self._problem(num_bs, num_targets, per_bs)
        ia, ib, id_ = _entries(info)
        pa, pb, pd = _entries(prior_info)
        # common scale: typical full information ~ 1 (argmin unchanged)
        scale = 1.0 / max(float(np.median(0.5 * (pa + pd + (ia + id_).sum(axis=0)))), 1e-300)
        par["ia"].value = np.maximum(ia * scale, 0.0)
        par["ib"].value = ib * scale
        par["id"].value = np.maximum(id_ * scale, 0.0)
        par["pa"].value = pa * scale
        par["pb"].value = pb * scale
        par["pd"].value = pd * scale
        try:
            problem.solve(solver=self.solver)
        except Exception as exc:  # cvxpy.SolverError and numerical failures
            raise RlIsacError(f"convex relaxation failed with {self.solver}: {exc}") from exc
        if a.value is None or problem.status not in ("optimal", "optimal_inaccurate"):
            raise RlIsacError(f"convex relaxation ended with status {problem.status!r} ({self.solver})")
        return np.clip(np.asarray(a.value, dtype=np.float64), 0.0, 1.0)

    def solve(self, info: np.ndarray, prior_info: np.ndarray, num_rf: int) -> np.ndarray:
        info, prior_info, num_bs, num_targets, per_bs = _prepare(info, prior_info, num_rf)
        frac = self._relaxed(info, prior_info, num_bs, num_targets, per_bs)
        ia, ib, id_ = _entries(info)
        pa, pb, pd = _entries(prior_info)
        gain = trace_inv_2x2(pa, pb, pd) - trace_inv_2x2(pa + ia, pb + ib, pd + id_)  # (M, I)
        gain = gain / max(float(gain.max()), 1e-300)
        score = np.round(frac, 4) + 1e-6 * gain  # fractional value, ties by single-pair gain
        # (i) cover (5d): targets -> distinct chain slots (slot s belongs to BS s // per_bs)
        slots = np.repeat(score, per_bs, axis=0).T  # (I, M * per_bs)
        rows, cols = linear_sum_assignment(slots, maximize=True)
        association = np.zeros((num_bs, num_targets), dtype=bool)
        association[cols // per_bs, rows] = True
        # (ii) fill each BS's free chains (5c) with its best new targets (5e)
        for m in range(num_bs):
            free = per_bs - int(association[m].sum())
            if free > 0:
                order = np.argsort(-np.where(association[m], -np.inf, score[m]), kind="stable")
                association[m, order[:free]] = True
        if self.local_search:
            association = swap_refine(association, info, prior_info)
        return _finish(association, num_rf)


def swap_refine(association: np.ndarray, info: np.ndarray, prior_info: np.ndarray,
                max_moves: int | None = None) -> np.ndarray:
    """Steepest-descent local search that keeps (5c)-(5e) and every BS's load.

    Two moves, each with a cost change that separates over the two targets
    it touches, so the best move of each kind is found without enumerating
    pairs of targets:

    * swap: BS ``m`` drops target ``i`` (which keeps another BS, (5d)) and
      takes a target ``i'`` it does not track yet (5e),
      ``delta = rem[m, i] + add[m, i']`` -- ``O(M I)``;
    * exchange: BSs ``m`` and ``m'`` trade targets ``i`` (on ``m``, not on
      ``m'``) and ``i'`` (on ``m'``, not on ``m``),
      ``delta = rep[m, m', i] + rep[m', m, i']`` -- ``O(M^2 I)``; this is the
      only move when every target has exactly one BS (``I = M N_RF``).

    The best move is applied while it decreases the cost by more than 1e-12
    relative.

    Parameters
    ----------
    association : np.ndarray of bool, shape (num_bs, num_targets)
        A feasible association.
    info : np.ndarray, shape (num_bs, num_targets, 2, 2)
        Pair Fisher information (1/m^2), validated.
    prior_info : np.ndarray, shape (num_targets, 2, 2)
        Predicted position information (1/m^2), validated.
    max_moves : int, optional
        Stop after this many moves (default ``10 * num_bs * num_targets``).

    Returns
    -------
    np.ndarray of bool, shape (num_bs, num_targets)
        A feasible association with the same per-BS load and no larger cost.
    """
    a = np.array(association, dtype=bool)
    num_bs, num_targets = a.shape
    ia, ib, id_ = _entries(info)  # (M, I)
    rows = np.arange(num_bs)
    if max_moves is None:
        max_moves = 10 * num_bs * num_targets
    for _ in range(max_moves):
        fa, fb, fd = (p + (a * x).sum(axis=0) for p, x in zip(_entries(prior_info), (ia, ib, id_)))  # (I,)
        current = trace_inv_2x2(fa, fb, fd)
        # swap: remove BS m from target i (if i keeps another BS) / add BS m to target i
        rem = trace_inv_2x2(fa - ia, fb - ib, fd - id_) - current
        add = trace_inv_2x2(fa + ia, fb + ib, fd + id_) - current
        rem = np.where(a & (a.sum(axis=0) >= 2)[None, :], rem, np.inf)
        add = np.where(~a, add, np.inf)
        best_rem, best_add = rem.argmin(axis=1), add.argmin(axis=1)  # (M,)
        swap = rem[rows, best_rem] + add[rows, best_add]
        # exchange: on target i, BS m is replaced by BS m' -> rep[m, m', i]
        rep = trace_inv_2x2(fa - ia[:, None, :] + ia[None, :, :], fb - ib[:, None, :] + ib[None, :, :],
                            fd - id_[:, None, :] + id_[None, :, :]) - current
        rep = np.where(a[:, None, :] & ~a[None, :, :], rep, np.inf)  # (M, M', I)
        best_rep = rep.argmin(axis=2)  # (M, M')
        rep_min = rep.min(axis=2)
        exchange = rep_min + rep_min.T  # (m, m') trade best_rep[m, m'] and best_rep[m', m]
        m = int(np.argmin(swap))
        m1, m2 = np.unravel_index(int(np.argmin(exchange)), exchange.shape)
        threshold = -1e-12 * current.sum()
        if swap[m] <= exchange[m1, m2] and swap[m] < threshold:
            a[m, best_rem[m]] = False
            a[m, best_add[m]] = True
        elif exchange[m1, m2] < threshold:
            i1, i2 = best_rep[m1, m2], best_rep[m2, m1]
            a[m1, i1], a[m2, i1] = False, True
            a[m2, i2], a[m1, i2] = False, True
        else:
            break
    return a


class ExhaustiveSolver(AssociationSolver):
    """Benchmark III: exhaustive search over every association of the solvers' form.

    Each BS picks ``n = min(num_rf, I)`` distinct targets (``C(I, n)``
    ways), giving ``C(I, n) ** M`` candidates; those leaving a target
    uncovered (5d) are discarded. Costs come from the subset cost table and
    are evaluated vectorised: the last BSs' partial bitmasks are enumerated
    once into a block of about ``block_entries / I`` rows, and the remaining
    BSs' prefixes are swept over it in chunks. Ties go to the first
    candidate in enumeration order.

    Parameters
    ----------
    max_candidates : int
        Refuse (:class:`ExhaustiveSearchTooLarge`) above this many
        candidates. The default 5e7 runs ``M = 6, I = 6, N_RF = 2``
        (``15 ** 6 = 1.1e7``) in about a second and refuses ``I = 8``
        (``28 ** 6 = 4.8e8``).
    block_entries : int
        Working-set size (array entries) of one vectorised chunk.
    """

    name = "exhaustive"

    def __init__(self, max_candidates: int = 50_000_000, block_entries: int = 1 << 21) -> None:
        if max_candidates < 1:
            raise ConfigError("max_candidates", max_candidates, "must be >= 1")
        if block_entries < 1:
            raise ConfigError("block_entries", block_entries, "must be >= 1")
        self.max_candidates = int(max_candidates)
        self.block_entries = int(block_entries)

    def solve(self, info: np.ndarray, prior_info: np.ndarray, num_rf: int) -> np.ndarray:
        info, prior_info, num_bs, num_targets, per_bs = _prepare(info, prior_info, num_rf)
        count = exhaustive_candidate_count(num_bs, num_targets, num_rf)
        if count > self.max_candidates:
            raise ExhaustiveSearchTooLarge(count, self.max_candidates, num_bs, num_targets, per_bs)
        table = subset_costs(info, prior_info, max_bs_per_target(num_bs, num_targets, num_rf))
        table[:, 0] = np.inf  # uncovered target: (5d) violated
        flat_table = table.ravel()
        offsets = np.arange(num_targets, dtype=np.int64) << num_bs  # row i of the table

        combos = np.array(list(itertools.combinations(range(num_targets), per_bs)))
        bits = np.zeros((len(combos), num_targets), dtype=np.int64)  # (C, I): target in combo
        np.put_along_axis(bits, combos, 1, axis=1)
        num_combos = len(combos)

        # inner block: the last k BSs, all C**k partial masks at once (BS order = C-order digits)
        k = 1
        while k < num_bs and num_combos ** (k + 1) * num_targets <= self.block_entries:
            k += 1
        inner_bs = range(num_bs - k, num_bs)
        outer_bs = range(num_bs - k)
        inner = np.zeros((1, num_targets), dtype=np.int64)
        for m in inner_bs:
            inner = (inner[:, None, :] + (bits << m)[None, :, :]).reshape(-1, num_targets)
        inner = inner + offsets  # flat table index; bits of distinct BSs never collide, so + is |
        outer = np.zeros((1, num_targets), dtype=np.int64)
        for m in outer_bs:
            outer = (outer[:, None, :] + (bits << m)[None, :, :]).reshape(-1, num_targets)

        chunk = max(1, self.block_entries // inner.size)
        best_cost, best_index = np.inf, -1
        for start in range(0, len(outer), chunk):
            idx = outer[start: start + chunk, None, :] + inner[None, :, :]  # (P, B, I)
            cost = np.take(flat_table, idx).sum(axis=-1)  # (P, B)
            j = int(np.argmin(cost))
            if cost.flat[j] < best_cost:
                best_cost, best_index = float(cost.flat[j]), start * len(inner) + j
        if best_index < 0:  # pragma: no cover - a feasible candidate always exists
            raise RlIsacError("exhaustive search found no feasible association")
        digits = np.unravel_index(best_index, (num_combos,) * num_bs)
        association = bits[np.asarray(digits)].astype(bool)  # (M, I)
        return _finish(association, num_rf)


class MilpSolver(AssociationSolver):
    """Exact association over per-target BS subsets: warm-started LP, reduced-cost DP, MILP fallback.

    The objective is separable per target given its BS set ``S``, so with
    binaries ``x[i, S]`` for every ``S`` with ``1 <= |S| <= s_max``
    (``s_max = min(M, M n - (I - 1))``, :func:`max_bs_per_target`)::

        min  sum_{i,S} cost_i(S) x[i, S]
        s.t. sum_S x[i, S] = 1                   for every target i   (5d)
             sum_{i, S containing m} x[i, S] = n  for every BS m       (5c), n = min(num_rf, I)
             x binary                                                  (5e)

    which is exactly the exhaustive search's problem, written ``min c^T x,
    A x = b``. Columns are flat ``j = i K + k`` (``K`` candidate sets).

    **Why the answer is exact.** For *any* row prices ``y`` (one per target
    and per BS) let ``rc = c - A^T y``. Every feasible ``x`` has ``A x = b``,
    so ``c^T x = b^T y + rc^T x``: minimising ``c^T x`` and ``rc^T x`` is the
    same problem, whatever ``y`` is. Every target takes exactly one column,
    so ``rc^T x >= L = sum_i min_k rc[i, k]``, and a solution that uses
    column ``j`` of target ``i`` has ``rc^T x >= bound_j = rc_j + L -
    min_k rc[i, k]``. Good prices (the LP duals) make ``rc >= 0`` nearly
    everywhere and ``L`` close to the optimum, so these bounds are tight;
    but the argument itself never relies on the LP being solved accurately.

    Per call:

    1. **LP relaxation** on a persistent HiGHS model, one per problem shape
       ``(M, I, n, s_max)`` kept on the solver: the constraint matrix depends
       only on the shape, so a call only replaces the column costs
       (``changeColsCost``) and re-runs primal simplex from the previous
       optimal basis, which stays primal feasible because only costs changed
       (consecutive blocks have similar costs: a handful of pivots). Above
       ``full_lp_columns`` columns the model holds a pool of columns that
       grows by column generation (pricing every subset is one numpy
       expression) and persists between calls. The LP gives the prices
       ``y``; ``rc`` is then computed for *every* column.
    2. **Integral LP** (most instances): if the LP optimum rounds to a
       feasible ``x`` with ``rc^T x - L <= certify_rel_tol * c^T x``, that
       ``x`` is optimal (nothing is below ``L``).
    3. **Reduced-cost DP** otherwise: for a threshold ``T``, only columns
       with ``bound_j <= T`` can appear in a solution with ``rc^T x <= T``.
       A dynamic programme over targets, whose state is the per-BS chain
       load (packed bit fields, one state per load vector with its least
       partial value), minimises ``rc^T x`` over those columns under the
       exact loads (5c), pruning partial values that cannot finish
       ``<= T``. A solution found is optimal: any solution using a dropped
       column is worse than ``T``. If none is found ``T - L`` grows 4x and
       the DP repeats (:func:`_reduced_cost_search`). ``T`` starts at
       ``L + dp_initial_gap * |b^T y|`` (or the rounded LP point's value).
    4. **MILP fallback**, only if the DP state space exceeds
       ``dp_max_entries`` (or the load vector does not fit 62 bits; HiGHS's
       MIP on all columns takes tens of ms at ``M = 6, I = 8`` and minutes
       at ``M = I = 12``, hence the reductions): an upper
       bound from a MILP restricted to the ``restricted_columns`` columns of
       smallest ``rc`` plus the greedy association's, then reduced-cost fixing
       (keep ``bound_j <= UB`` with a 1e-9 relative margin) and, if a column
       outside the restricted set survives, the MILP on the survivors
       (``scipy.optimize.milp``, ``mip_rel_gap = 0`` on costs scaled so
       that ``b^T y = 1e3``: HiGHS's 1e-6 absolute gap is 1e-9 relative).

    Exact ties (equal-cost associations) may be broken differently
    depending on the previous solves (the warm basis); the cost is the same.
    ``last_stats`` records the path and column counts of the last solve.

    Parameters
    ----------
    mip_rel_gap : float
        HiGHS relative optimality gap of the MILP fallback (default 0: exact).
    time_limit_s : float, optional
        HiGHS time limit for the MILP fallback, seconds; on expiry the best
        feasible association found is returned.
    """

    name = "milp"

    #: Objective scale: the LP costs map ``sum_i min_S cost_i(S)`` (a lower bound) to this value.
    cost_scale: ClassVar[float] = 1e3
    #: Up to this many columns the LP is solved on all of them; above, by column generation.
    full_lp_columns: ClassVar[int] = 4096
    #: Columns (smallest reduced cost) of the restricted MILP of the fallback.
    restricted_columns: ClassVar[int] = 256
    #: An integral LP optimum is accepted when ``rc^T x - L`` is at most this fraction of its cost.
    certify_rel_tol: ClassVar[float] = 1e-10
    #: First DP threshold ``T - L``, relative to the LP value (the LP/MILP gap is a few % at most typically).
    dp_initial_gap: ClassVar[float] = 0.05
    #: Largest (states x candidate columns) of one DP stage; above it the MILP fallback runs.
    dp_max_entries: ClassVar[int] = 1 << 20
    #: LP models kept (one per problem shape).
    max_cached_models: ClassVar[int] = 8

    def __init__(self, mip_rel_gap: float = 0.0, time_limit_s: float | None = None) -> None:
        if not mip_rel_gap >= 0:
            raise ConfigError("mip_rel_gap", mip_rel_gap, "must be >= 0")
        if time_limit_s is not None and not time_limit_s > 0:
            raise ConfigError("time_limit_s", time_limit_s, "must be > 0 seconds")
        self.mip_rel_gap = float(mip_rel_gap)
        self.time_limit_s = time_limit_s
        #: Diagnostics of the last solve: path ('lp', 'dp' or 'milp'), columns, whether the LP was integral, ...
        self.last_stats: dict[str, Any] = {}
        self._models: dict[tuple[int, int, int, int, bool], _SubsetLp] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the HiGHS models (not picklable; rebuilt on the next solve)."""
        state = self.__dict__.copy()
        state["_models"] = {}
        return state

    def _model(self, num_bs: int, num_targets: int, per_bs: int, s_max: int, info: np.ndarray,
               prior_info: np.ndarray, num_rf: int) -> _SubsetLp:
        """The persistent LP of this shape (built on first use; column generation above ``full_lp_columns``)."""
        num_sets = sum(math.comb(num_bs, size) for size in range(1, s_max + 1))
        generate = num_targets * num_sets > self.full_lp_columns
        key = (num_bs, num_targets, per_bs, s_max, generate)
        model = self._models.get(key)
        if model is not None and generate and model.pool.size > 4 * max(self.full_lp_columns, model.base_size):
            model = None  # the generated pool grew large: restart from the base set and the last LP support
        if model is None:
            shape = _SubsetShape(num_bs, num_targets, per_bs, s_max)
            if generate:  # all sets of at most 2 BSs + a feasible solution (keeps the restricted LP feasible)
                old = self._models.get(key)
                start = np.zeros((num_targets, shape.num_sets), dtype=bool)
                start[:, shape.member.sum(axis=0) <= 2] = True
                start = start.ravel()
                base_size = int(start.sum())
                if old is not None:
                    start[old.support] = True
                else:
                    start[shape.columns_of(GreedySolver().solve(info, prior_info, num_rf))] = True
                model = _SubsetLp(shape, np.flatnonzero(start), base_size)
            else:
                model = _SubsetLp(shape, np.arange(shape.num_columns), shape.num_columns)
            self._models.pop(key, None)
            while len(self._models) >= self.max_cached_models:
                self._models.pop(next(iter(self._models)))
            self._models[key] = model
        return model

    def solve(self, info: np.ndarray, prior_info: np.ndarray, num_rf: int) -> np.ndarray:
        table = subset_costs(info, prior_info)  # validates info / prior_info
        num_targets, num_bs = table.shape[0], table.shape[1].bit_length() - 1
        check_problem_size(num_bs, num_targets, num_rf)
        per_bs = chains_per_bs(num_targets, num_rf)
        s_max = max_bs_per_target(num_bs, num_targets, num_rf)
        model = self._model(num_bs, num_targets, per_bs, s_max, info, prior_info, num_rf)
        shape = model.shape
        cost = table[:, shape.masks]  # (I, K)
        if not np.all(np.isfinite(cost)):
            raise RlIsacError("subset costs are not finite (singular posterior information)")
        cost = cost * (self.cost_scale / float(cost.min(axis=1).sum()))  # positive, ~1e3 in all
        x, y, reduced = model.solve(cost)  # reduced = c - A^T y for every column, (I, K)
        row_min = reduced.min(axis=1)
        floor = float(row_min.sum())  # L: rc^T x >= L for every feasible x
        lp_value = float(shape.rhs @ y)  # b^T y
        self.last_stats = {"columns": shape.num_columns, "lp_columns": int(model.pool.size)}
        # 2. integral LP optimum, certified by rc^T x - L
        rounded = x > 0.5
        integral = bool(np.all(np.abs(x - rounded) <= 1e-6))
        self.last_stats["lp_integral"] = integral
        rounded_value = float(reduced[rounded].sum()) if integral and shape.is_feasible(rounded) else np.inf
        if rounded_value - floor <= self.certify_rel_tol * float(cost[rounded].sum()):
            self.last_stats.update(path="lp", kept=int(np.count_nonzero(rounded)))
            return _finish(shape.decode(rounded), num_rf)
        # 3. reduced-cost DP with a growing threshold T (a feasible rounded LP point bounds the first T)
        margin = 1e-9 * abs(lp_value) + 1e-300
        found, rounds, kept = _reduced_cost_search(
            reduced, shape, min(floor + self.dp_initial_gap * abs(lp_value), rounded_value), margin,
            self.dp_max_entries)
        if found is not None:
            self.last_stats.update(path="dp", dp_rounds=rounds, kept=kept)
            chosen = np.zeros(reduced.shape, dtype=bool)
            chosen[np.arange(num_targets), found] = True
            return _finish(shape.decode(chosen), num_rf)
        # 4. MILP fallback: restricted MILP for an upper bound, reduced-cost fixing, MILP on the survivors
        flat_cost, flat_bound = cost.ravel(), (reduced + (floor - row_min)[:, None]).ravel()
        restricted = np.zeros(flat_cost.size, dtype=bool)
        restricted[np.argsort(reduced.ravel(), kind="stable")[: self.restricted_columns]] = True
        restricted[shape.columns_of(GreedySolver().solve(info, prior_info, num_rf))] = True
        milp_scale = self.cost_scale / max(abs(lp_value), 1e-300)
        chosen, _ = self._milp(flat_cost * milp_scale, restricted, shape, num_targets, per_bs)
        upper = float(reduced.ravel()[chosen].sum())
        keep = flat_bound <= upper + margin
        self.last_stats.update(path="milp", restricted=int(restricted.sum()), kept=int(np.count_nonzero(keep)))
        if np.any(keep & ~restricted):  # the restricted optimum is not proven optimal: solve on the survivors
            chosen, _ = self._milp(flat_cost * milp_scale, keep | restricted, shape, num_targets, per_bs)
        return _finish(shape.decode(chosen.reshape(reduced.shape)), num_rf)

    def _milp(self, cost: np.ndarray, use: np.ndarray, shape: _SubsetShape, num_targets: int,
              per_bs: int) -> tuple[np.ndarray, float]:
        """Subset MILP on the columns ``use`` (bool, flat); returns the chosen columns (bool, flat) and the value."""
        cols = np.flatnonzero(use)
        options: dict[str, Any] = {"mip_rel_gap": self.mip_rel_gap}
        if self.time_limit_s is not None:
            options["time_limit"] = float(self.time_limit_s)
        res = milp(cost[cols], integrality=np.ones(cols.size), bounds=Bounds(0.0, 1.0),
                   constraints=LinearConstraint(shape.matrix(cols), shape.rhs, shape.rhs), options=options)
        if res.x is None:
            raise RlIsacError(f"MILP association failed: {res.message} (status {res.status})")
        x = np.zeros(cost.size, dtype=bool)
        x[cols] = res.x > 0.5
        return x, float(cost[x].sum())


class _SubsetShape:
    """Everything about the subset problem that depends only on ``(M, I, n, s_max)``.

    Attributes: ``masks`` (K,) candidate BS bitmasks; ``member`` (M, K) 1.0
    where BS m is in set k; ``rhs`` (I + M,) = ``b``; ``packing`` the DP's
    load encoding ``(increment (K,), overflow, high, full)`` or None when the
    loads do not fit 62 bits.
    """

    def __init__(self, num_bs: int, num_targets: int, per_bs: int, s_max: int) -> None:
        sizes = subset_sizes(num_bs)
        self.num_bs, self.num_targets, self.per_bs = num_bs, num_targets, per_bs
        self.masks = np.flatnonzero((sizes >= 1) & (sizes <= s_max))
        self.num_sets = int(self.masks.size)
        self.num_columns = num_targets * self.num_sets
        self.member_int = (self.masks[None, :] >> np.arange(num_bs)[:, None]) & 1  # (M, K)
        self.member = self.member_int.astype(np.float64)
        self.rhs = np.concatenate([np.ones(num_targets), np.full(num_bs, float(per_bs))])
        self.column_of = np.full(1 << num_bs, -1, dtype=np.int64)
        self.column_of[self.masks] = np.arange(self.num_sets)
        # DP load encoding: BS m's load in bits [w m, w m + w), w - 1 = bit length of per_bs, so that a
        # field holds per_bs + 1 without carry and "field > per_bs" is bit w - 1 of field + 2^(w-1) - 1 - per_bs.
        width = per_bs.bit_length() + 1
        self.packing: tuple[np.ndarray, int, int, int] | None = None
        if num_bs * width <= 62:
            field = np.int64(1) << (width * np.arange(num_bs, dtype=np.int64))  # (M,)
            increment = (self.member_int.astype(np.int64) * field[:, None]).sum(axis=0)  # (K,)
            half = 1 << (width - 1)
            self.packing = (increment, int((half - 1 - per_bs) * field.sum()), int(half * field.sum()),
                            int(per_bs * field.sum()))

    def matrix(self, cols: np.ndarray) -> sp.csc_matrix:
        """``A`` restricted to the flat columns ``cols``: rows 0..I-1 one set per target, I..I+M-1 chains per BS."""
        target, k = np.divmod(cols, self.num_sets)
        bs_rows, col_pos = np.nonzero(self.member[:, k])  # (nnz,) BS m in the set of column col_pos
        rows = np.concatenate([target, self.num_targets + bs_rows])
        columns = np.concatenate([np.arange(cols.size), col_pos])
        shape = (self.num_targets + self.num_bs, cols.size)
        return sp.csc_matrix((np.ones(rows.size), (rows, columns)), shape=shape)

    def columns_of(self, association: np.ndarray) -> np.ndarray:
        """Flat columns (one per target) of an association ``(M, I)``."""
        weights = np.int64(1) << np.arange(association.shape[0], dtype=np.int64)
        target_masks = (association.astype(np.int64) * weights[:, None]).sum(axis=0)
        return np.arange(self.num_targets) * self.num_sets + self.column_of[target_masks]

    def is_feasible(self, chosen: np.ndarray) -> bool:
        """``chosen`` (bool (I, K)) has one column per target and exactly ``per_bs`` targets per BS."""
        return bool(np.all(chosen.sum(axis=1) == 1) and np.all(self.decode(chosen).sum(axis=1) == self.per_bs))

    def decode(self, chosen: np.ndarray) -> np.ndarray:
        """Association ``(num_bs, num_targets)`` from one chosen column per target (bool (I, K))."""
        target_masks = self.masks[np.argmax(chosen, axis=1)]  # (I,) bitmask per target
        return ((target_masks[None, :] >> np.arange(self.num_bs)[:, None]) & 1).astype(bool)


class _SubsetLp:
    """Persistent HiGHS LP relaxation ``min c^T x, A x = b, x >= 0`` over a pool of columns of one shape.

    The rows never change; a solve replaces the costs and re-runs primal
    simplex from the last basis. With a pool smaller than all columns the
    solve adds columns of negative reduced cost until none is left (column
    generation); added columns stay for later solves.
    """

    #: Pricing tolerance of column generation (costs ~1e3 in all).
    price_tol: ClassVar[float] = 1e-6
    #: Columns added per target and pricing round.
    per_round: ClassVar[int] = 16

    def __init__(self, shape: _SubsetShape, columns: np.ndarray, base_size: int) -> None:
        try:
            import highspy
        except ImportError as exc:  # pragma: no cover - highspy comes with cvxpy
            raise RlIsacError("the 'milp' association solver needs highspy (pip install highspy)") from exc

        self.shape = shape
        self.base_size = base_size
        # highspy._Highs: the bare solver (highspy.Highs adds Python callbacks and prints a banner once)
        self._highs = getattr(highspy, "_Highs", highspy.Highs)()
        for option, value in (("output_flag", False), ("threads", 1), ("presolve", "off"),
                              ("solver", "simplex"), ("simplex_strategy", 4)):  # 4 = primal simplex
            self._highs.setOptionValue(option, value)
        self._optimal = highspy.HighsModelStatus.kOptimal
        self._inf = highspy.kHighsInf
        num_rows = shape.rhs.size
        empty = np.zeros(0, dtype=np.int32)
        self._check(self._highs.addRows(num_rows, shape.rhs, shape.rhs, 0, empty, empty, np.zeros(0)), "addRows")
        self.pool = np.zeros(0, dtype=np.int64)  # flat column of every LP column
        self.in_pool = np.zeros(shape.num_columns, dtype=bool)
        self.support = np.zeros(0, dtype=np.int64)  # flat columns with x > 0 at the last optimum
        self._index = np.zeros(0, dtype=np.int32)
        self._add(np.asarray(columns, dtype=np.int64), np.zeros(len(columns)))

    @staticmethod
    def _check(status: Any, what: str) -> None:
        if status.name == "kError":  # pragma: no cover - HiGHS API misuse
            raise RlIsacError(f"HiGHS {what} failed")

    def _add(self, columns: np.ndarray, cost: np.ndarray) -> None:
        mat = self.shape.matrix(columns)
        n = columns.size
        self._check(self._highs.addCols(n, cost, np.zeros(n), np.full(n, self._inf), mat.nnz,
                                        mat.indptr[:-1].astype(np.int32), mat.indices.astype(np.int32), mat.data),
                    "addCols")
        self.pool = np.concatenate([self.pool, columns])
        self.in_pool[columns] = True
        self._index = np.arange(self.pool.size, dtype=np.int32)

    def _run(self) -> None:
        self._highs.run()
        if self._highs.getModelStatus() != self._optimal:  # retry once from scratch
            self._highs.clearSolver()
            self._highs.run()
            status = self._highs.getModelStatus()
            if status != self._optimal:
                raise RlIsacError(f"association LP relaxation failed: {self._highs.modelStatusToString(status)}")

    def solve(self, cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """LP optimum for costs ``cost`` (I, K).

        Returns ``x`` (I, K) with zeros outside the pool, the row duals ``y``
        (I + M,) and the reduced costs ``c - A^T y`` of every column (I, K).
        """
        shape = self.shape
        flat = cost.ravel()
        self._check(self._highs.changeColsCost(self.pool.size, self._index, flat[self.pool]), "changeColsCost")
        for _ in range(1000):
            self._run()
            solution = self._highs.getSolution()
            y = np.asarray(solution.row_dual)
            reduced = cost - y[: shape.num_targets, None] - (y[shape.num_targets:] @ shape.member)[None, :]
            if self.pool.size == shape.num_columns:
                break
            candidates = (reduced < -self.price_tol) & ~self.in_pool.reshape(reduced.shape)
            if not candidates.any():
                break
            # add the most negative columns, at most per_round per target
            order = np.argsort(np.where(candidates, reduced, np.inf), axis=1)[:, : self.per_round]
            take = np.take_along_axis(candidates, order, axis=1)
            rows = np.broadcast_to(np.arange(shape.num_targets)[:, None], order.shape)
            new = (rows * shape.num_sets + order)[take]
            self._add(new, flat[new])
        x = np.zeros(shape.num_columns)
        x[self.pool] = solution.col_value
        self.support = np.flatnonzero(x > 1e-9)
        return x.reshape(cost.shape), y, reduced


def _reduced_cost_search(reduced: np.ndarray, shape: _SubsetShape, threshold: float, margin: float,
                         max_entries: int) -> tuple[np.ndarray | None, int, int]:
    """Exact ``argmin rc^T x`` over all feasible ``x`` by the DP on a growing threshold ``T``.

    Valid for *any* ``reduced`` (I, K): every target takes one column, so a
    solution using column ``j`` of target ``i`` has ``rc^T x >= bound_j =
    rc_j + L - min_k rc[i, k]`` with ``L = sum_i min_k rc[i, k]``. Only
    columns with ``bound_j <= T`` can be in a solution with ``rc^T x <=
    T``, so a DP optimum over them (which is ``<= T``) is a global
    optimum. Without one ``T - L`` grows 4x, up to ``sum_i max_k rc[i, k]``
    (no pruning at all). ``margin`` (absolute) widens every comparison
    against rounding.

    Returns
    -------
    (chosen, rounds, kept)
        ``chosen``: the set ``k`` of each target (I,), or None when the
        state space exceeds ``max_entries`` or the loads do not fit the
        packing; ``rounds``: DP runs; ``kept``: columns kept in the last.
    """
    if shape.packing is None:
        return None, 0, 0
    row_min = reduced.min(axis=1)
    floor = float(row_min.sum())
    bound = reduced + (floor - row_min)[:, None]  # least rc^T x of a solution using the column
    ceiling = float(reduced.max(axis=1).sum())  # every feasible x has rc^T x <= ceiling
    threshold = min(max(threshold, floor), ceiling)
    rounds = 0
    while True:
        rounds += 1
        keep = bound <= threshold + margin
        found = _subset_dp(reduced, keep, shape, threshold + margin, max_entries)
        if found is None:
            return None, rounds, int(np.count_nonzero(keep))
        if found is not False:
            return found, rounds, int(np.count_nonzero(keep))
        if threshold >= ceiling:  # pragma: no cover - nothing pruned, yet (5c)-(5d) are satisfiable
            raise RlIsacError("association DP found no feasible association")
        threshold = min(floor + max(4.0 * (threshold - floor), margin), ceiling)


def _subset_dp(reduced: np.ndarray, keep: np.ndarray, shape: _SubsetShape, threshold: float,
               max_entries: int) -> np.ndarray | bool | None:
    """Least ``rc^T x`` over the kept columns under the exact per-BS loads, if it is ``<= threshold``.

    Targets are taken one at a time (fewest kept columns first); a state is
    a packed per-BS load vector holding the least partial value reaching
    it. A partial value plus the least kept ``rc`` of every remaining
    target above ``threshold`` is pruned, as is a load above ``per_bs`` or
    too low to be filled by the remaining targets (each adds at most one
    chain per BS).

    Returns
    -------
    np.ndarray of int, shape (num_targets,)
        The chosen set ``k`` of each target (an optimum over the kept columns).
    False
        No solution with value ``<= threshold`` uses only kept columns.
    None
        A stage would exceed ``max_entries`` (states x columns).
    """
    assert shape.packing is not None
    increment, overflow, high, full = shape.packing
    num_targets = reduced.shape[0]
    counts = keep.sum(axis=1)
    if np.any(counts == 0):
        return False
    order = np.argsort(counts, kind="stable")
    least = np.where(keep, reduced, np.inf).min(axis=1)[order]
    remaining_least = np.concatenate([np.cumsum(least[::-1])[::-1][1:], [0.0]])  # after stage t
    field_sum = (full // shape.per_bs) if shape.per_bs else 0  # sum over BSs of one unit per field
    codes = np.zeros(1, dtype=np.int64)
    values = np.zeros(1)
    history = []
    for t, i in enumerate(order):
        cols = np.flatnonzero(keep[i])
        if codes.size * cols.size > max_entries:
            return None
        new = (codes[:, None] + increment[cols][None, :]).ravel()
        new_values = (values[:, None] + reduced[i, cols][None, :]).ravel()
        ok = ((new + overflow) & high) == 0  # no BS above per_bs (5c)
        ok &= new_values + remaining_least[t] <= threshold
        left = num_targets - 1 - t
        if left < shape.per_bs:  # every BS needs load >= per_bs - left: bit w-1 of field + 2^(w-1) - (per_bs - left)
            ok &= ((new + high - (shape.per_bs - left) * field_sum) & high) == high
        idx = np.flatnonzero(ok)
        if idx.size == 0:
            return False
        order_codes = np.lexsort((new_values[idx], new[idx]))  # by code, then value
        sorted_codes = new[idx][order_codes]
        first = np.ones(sorted_codes.size, dtype=bool)
        np.not_equal(sorted_codes[1:], sorted_codes[:-1], out=first[1:])
        best = idx[order_codes[first]]  # least value per load vector
        codes, values = new[best], new_values[best]
        history.append((best // cols.size, cols[best % cols.size]))
    hit = np.flatnonzero(codes == full)
    if hit.size == 0:
        return False
    chosen = np.empty(num_targets, dtype=np.int64)
    pos = int(hit[0])
    for t in range(num_targets - 1, -1, -1):
        parent, col = history[t]
        chosen[order[t]] = col[pos]
        pos = int(parent[pos])
    return chosen


SOLVERS: dict[str, type[AssociationSolver]] = {
    "greedy": GreedySolver,
    "convex": ConvexSolver,
    "exhaustive": ExhaustiveSolver,
    "milp": MilpSolver,
}
"""Solver classes by name; ``SOLVERS[name](**kwargs).solve(info, prior_info, num_rf)``."""


def make_solver(name: str, **kwargs: Any) -> AssociationSolver:
    """Instantiate a solver from :data:`SOLVERS` by name.

    Raises
    ------
    ConfigError
        Unknown name.
    """
    if name not in SOLVERS:
        raise ConfigError("solver", name, f"must be one of {sorted(SOLVERS)}")
    return SOLVERS[name](**kwargs)
