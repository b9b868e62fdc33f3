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
``milp``       exact MILP over per-target BS subsets (HiGHS via scipy)
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
from scipy.optimize import Bounds, LinearConstraint, linear_sum_assignment, linprog, milp

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
    """Exact association by a MILP over per-target BS subsets (HiGHS through scipy).

    The objective is separable per target given its BS set ``S``, so with
    binaries ``x[i, S]`` for every ``S`` with ``1 <= |S| <= s_max``
    (``s_max = min(M, M n - (I - 1))``, :func:`max_bs_per_target`)::

        min  sum_{i,S} cost_i(S) x[i, S]
        s.t. sum_S x[i, S] = 1                   for every target i   (5d)
             sum_{i, S containing m} x[i, S] = n  for every BS m       (5c), n = min(num_rf, I)
             x binary                                                  (5e)

    which is exactly the exhaustive search's problem. The constraint matrix
    is built sparsely (COO from index arrays, no loop over subsets).

    With up to ``I (2^M - 1)`` columns (49k at ``M = I = 12``) HiGHS's MIP
    set-up alone takes minutes and gigabytes, so the columns are first
    reduced exactly:

    1. LP relaxation (``x >= 0``; ``x <= 1`` is implied), by column
       generation when there are more than ``full_lp_columns`` columns
       (pricing every subset is one numpy expression). It gives a lower
       bound ``LB`` and reduced costs ``rc >= 0`` with ``cost(x) = LB +
       rc^T x`` for every feasible ``x``. An integral LP optimum is returned
       at once (most random instances).
    2. Upper bound ``UB``: a MILP restricted to the ``restricted_columns``
       columns of smallest reduced cost plus the greedy association's.
    3. Reduced-cost fixing: a column with ``LB + rc > UB`` (with a 1e-6
       relative margin) cannot be in an optimum. If no column outside the
       restricted set survives, the restricted optimum is proven optimal;
       otherwise the MILP runs on the survivors.

    MILPs run with ``mip_rel_gap = 0`` on costs scaled so that ``LB = 1e3``,
    which makes HiGHS's absolute gap (1e-6) at most a 1e-9 relative one.
    ``last_stats`` records the column counts of the last solve.

    Parameters
    ----------
    mip_rel_gap : float
        HiGHS relative optimality gap (default 0: exact).
    time_limit_s : float, optional
        HiGHS time limit for the MILP, seconds; on expiry the best feasible
        association found is returned.
    """

    name = "milp"

    #: Objective scale: the LP costs map the greedy cost, the MILP costs the LP bound, to this value.
    cost_scale: ClassVar[float] = 1e3
    #: Up to this many columns the LP is solved on all of them; above, by column generation.
    full_lp_columns: ClassVar[int] = 4096
    #: Columns (smallest reduced cost) of the restricted MILP that gives the upper bound.
    restricted_columns: ClassVar[int] = 256

    def __init__(self, mip_rel_gap: float = 0.0, time_limit_s: float | None = None) -> None:
        if not mip_rel_gap >= 0:
            raise ConfigError("mip_rel_gap", mip_rel_gap, "must be >= 0")
        if time_limit_s is not None and not time_limit_s > 0:
            raise ConfigError("time_limit_s", time_limit_s, "must be > 0 seconds")
        self.mip_rel_gap = float(mip_rel_gap)
        self.time_limit_s = time_limit_s
        #: Diagnostics of the last solve: columns, restricted and kept columns, whether the LP was integral.
        self.last_stats: dict[str, Any] = {}

    def solve(self, info: np.ndarray, prior_info: np.ndarray, num_rf: int) -> np.ndarray:
        info, prior_info, num_bs, num_targets, per_bs = _prepare(info, prior_info, num_rf)
        s_max = max_bs_per_target(num_bs, num_targets, num_rf)
        table = subset_costs(info, prior_info, s_max)
        sizes = subset_sizes(num_bs)
        masks = np.flatnonzero((sizes >= 1) & (sizes <= s_max))  # (K,) candidate BS sets
        num_sets = masks.size
        member = ((masks[None, :] >> np.arange(num_bs)[:, None]) & 1).astype(np.float64)  # (M, K)
        # upper bound: greedy association, as columns (target i, its BS bitmask)
        greedy = GreedySolver().solve(info, prior_info, num_rf)
        column_of = np.full(1 << num_bs, -1, dtype=np.int64)
        column_of[masks] = np.arange(num_sets)
        greedy_cols = np.arange(num_targets) * num_sets + column_of[_target_masks(greedy)]
        raw_cost = table[:, masks].ravel()  # variable i * K + k
        cost = raw_cost * (self.cost_scale / float(raw_cost[greedy_cols].sum()))  # LP scale: greedy = 1e3
        lp_x, lp_value, reduced = _set_partition_lp(cost.reshape(num_targets, num_sets), member, per_bs,
                                                   greedy_cols, self.full_lp_columns)
        self.last_stats = {"columns": cost.size}
        if np.all(np.minimum(np.abs(lp_x), np.abs(lp_x - 1)) <= 1e-9):  # integral LP optimum is optimal
            self.last_stats.update(kept=int(np.count_nonzero(lp_x > 0.5)), lp_integral=True)
            return _finish(self._decode(lp_x > 0.5, masks, num_targets, num_bs), num_rf)
        # Upper bound from a restricted MILP on the columns of smallest reduced cost (+ the greedy ones).
        restricted = np.zeros(cost.size, dtype=bool)
        restricted[np.argsort(reduced, kind="stable")[: self.restricted_columns]] = True
        restricted[greedy_cols] = True
        # MILP objective scaled so that the LP bound is 1e3: HiGHS's absolute gap 1e-6 -> relative 1e-9
        milp_scale = self.cost_scale / lp_value
        x, value = self._milp(cost * milp_scale, restricted, member, per_bs)
        upper = value / milp_scale
        # Reduced-cost fixing: cost(x) = LB + rc^T x >= LB + rc_j if x_j = 1; margin 1e-6 relative.
        keep = lp_value + reduced <= upper * (1 + 1e-6)
        self.last_stats.update(restricted=int(restricted.sum()), kept=int(np.count_nonzero(keep)), lp_integral=False)
        if np.any(keep & ~restricted):  # the restricted optimum is not proven optimal: solve on the survivors
            x, _ = self._milp(cost * milp_scale, keep | restricted, member, per_bs)
        return _finish(self._decode(x, masks, num_targets, num_bs), num_rf)

    def _milp(self, cost: np.ndarray, use: np.ndarray, member: np.ndarray, per_bs: int) -> tuple[np.ndarray, float]:
        """Subset MILP on the columns ``use`` (bool, flat); returns the chosen columns (bool, flat) and the value."""
        num_bs, num_sets = member.shape
        num_targets = cost.size // num_sets
        cols = np.flatnonzero(use)
        rhs = np.concatenate([np.ones(num_targets), np.full(num_bs, float(per_bs))])
        options: dict[str, Any] = {"mip_rel_gap": self.mip_rel_gap}
        if self.time_limit_s is not None:
            options["time_limit"] = float(self.time_limit_s)
        res = milp(cost[cols], integrality=np.ones(cols.size), bounds=Bounds(0.0, 1.0),
                   constraints=LinearConstraint(_partition_matrix(cols, num_sets, member, num_targets), rhs, rhs),
                   options=options)
        if res.x is None:
            raise RlIsacError(f"MILP association failed: {res.message} (status {res.status})")
        x = np.zeros(cost.size, dtype=bool)
        x[cols] = res.x > 0.5
        return x, float(cost[x].sum())

    @staticmethod
    def _decode(x: np.ndarray, masks: np.ndarray, num_targets: int, num_bs: int) -> np.ndarray:
        """Association ``(num_bs, num_targets)`` from the selected columns ``x`` (bool, ``I * K``)."""
        chosen = masks[np.argmax(x.reshape(num_targets, masks.size), axis=1)]  # (I,) bitmask per target
        return ((chosen[None, :] >> np.arange(num_bs)[:, None]) & 1).astype(bool)


def _partition_matrix(cols: np.ndarray, num_sets: int, member: np.ndarray, num_targets: int) -> sp.csc_matrix:
    """Equality matrix of the subset MILP restricted to columns ``cols`` (flat ``i * K + k``).

    Rows ``0 .. I-1``: one set per target; rows ``I .. I+M-1``: chains per BS.
    Shape ``(num_targets + num_bs, cols.size)``, built without Python loops.
    """
    target, k = np.divmod(cols, num_sets)
    bs_rows, col_pos = np.nonzero(member[:, k])  # (nnz,) BS m in the set of column col_pos
    rows = np.concatenate([target, num_targets + bs_rows])
    columns = np.concatenate([np.arange(cols.size), col_pos])
    shape = (num_targets + member.shape[0], cols.size)
    return sp.csc_matrix((np.ones(rows.size), (rows, columns)), shape=shape)


def _set_partition_lp(cost: np.ndarray, member: np.ndarray, per_bs: int, start_cols: np.ndarray,
                      full_lp_columns: int) -> tuple[np.ndarray, float, np.ndarray]:
    """LP relaxation of the subset MILP, by column generation when it is large.

    Parameters
    ----------
    cost : np.ndarray, shape (num_targets, K)
        Column costs (scaled).
    member : np.ndarray, shape (num_bs, K)
        1.0 where BS m is in set k.
    per_bs : int
        Chains each BS uses.
    start_cols : np.ndarray of int
        Flat columns of a feasible integer solution (keeps every restricted LP feasible).
    full_lp_columns : int
        Solve on every column when there are at most this many.

    Returns
    -------
    x : np.ndarray, shape (num_targets * K,)
        LP optimum (zeros outside the generated columns).
    value : float
        LP optimum value, a lower bound of the MILP.
    reduced : np.ndarray, shape (num_targets * K,)
        Reduced costs ``c - A^T y`` of every column (>= -1e-6 at the optimum).
    """
    num_targets, num_sets = cost.shape
    num_bs = member.shape[0]
    rhs = np.concatenate([np.ones(num_targets), np.full(num_bs, float(per_bs))])
    flat_cost = cost.ravel()
    if flat_cost.size <= full_lp_columns:
        active = np.ones(flat_cost.size, dtype=bool)
    else:  # start: all sets of at most 2 BSs + the feasible solution
        active = np.zeros((num_targets, num_sets), dtype=bool)
        active[:, member.sum(axis=0) <= 2] = True
        active = active.ravel()
        active[start_cols] = True
    price_tol, per_round = 1e-6, 16
    for _ in range(1000):
        cols = np.flatnonzero(active)
        lp = linprog(flat_cost[cols], A_eq=_partition_matrix(cols, num_sets, member, num_targets), b_eq=rhs,
                     bounds=(0, None), method="highs")
        if lp.status != 0:  # pragma: no cover - feasible (start_cols) and bounded (costs > 0)
            raise RlIsacError(f"association LP relaxation failed: {lp.message}")
        y = lp.eqlin.marginals  # duals: d(objective)/d(rhs)
        reduced = cost - y[:num_targets, None] - (y[num_targets:] @ member)[None, :]  # rc = c - A^T y
        candidates = (reduced < -price_tol) & ~active.reshape(num_targets, num_sets)
        if not candidates.any():
            break
        # add the most negative columns, at most per_round per target
        order = np.argsort(np.where(candidates, reduced, np.inf), axis=1)[:, :per_round]
        take = np.take_along_axis(candidates, order, axis=1)
        rows = np.broadcast_to(np.arange(num_targets)[:, None], order.shape)
        active[(rows * num_sets + order)[take]] = True
    x = np.zeros(flat_cost.size)
    x[cols] = lp.x
    return x, float(lp.fun), reduced.ravel()


def _target_masks(association: np.ndarray) -> np.ndarray:
    """BS bitmask of every target, shape (num_targets,), int64: bit m set iff ``A[m, i]``."""
    weights = np.int64(1) << np.arange(association.shape[0], dtype=np.int64)
    return (association.astype(np.int64) * weights[:, None]).sum(axis=0)


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
