"""Exact association over per-target BS subsets: warm-started LP, reduced-cost DP, MILP fallback."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, milp

from rl_isac.association.base import AssociationSolver, check_chain_price, finish
from rl_isac.association.greedy import GreedySolver
from rl_isac.association.objective import max_bs_per_target, subset_sizes
from rl_isac.errors import ConfigError, RlIsacError

__all__ = ["MilpSolver"]


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
    ``cost_i(S)`` is the table of :func:`~rl_isac.association.objective.expected_subset_costs`
    (expected error over detection outcomes + chain prices). With
    ``chain_price > 0`` a BS may leave chains idle: its row becomes
    ``sum <= n``, i.e. ``A x + s = b`` with a slack ``0 <= s_m <= n`` of cost
    0 per BS, and everything below holds with the slacks as extra columns
    (reduced cost ``-y_m``; the DP tracks the exact load, so it adds
    ``-y_m (n - load_m)`` at its last stage).

    **Why the answer is exact.** For *any* row prices ``y`` (one per target
    and per BS) let ``rc = c - A^T y``. Every feasible ``x`` has ``A x = b``,
    so ``c^T x = b^T y + rc^T x`` (``+ sum_m (-y_m) s_m`` with idle chains): minimising
    ``c^T x`` and ``rc^T x`` is the same problem, whatever ``y`` is. Every target takes exactly one column,
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
    chain_price : float
        See :class:`~rl_isac.association.base.AssociationSolver`.
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

    def __init__(self, mip_rel_gap: float = 0.0, time_limit_s: float | None = None,
                 chain_price: float = 0.0) -> None:
        if not mip_rel_gap >= 0:
            raise ConfigError("mip_rel_gap", mip_rel_gap, "must be >= 0")
        if time_limit_s is not None and not time_limit_s > 0:
            raise ConfigError("time_limit_s", time_limit_s, "must be > 0 seconds")
        self.mip_rel_gap = float(mip_rel_gap)
        self.time_limit_s = time_limit_s
        self.chain_price = check_chain_price(chain_price)
        #: Diagnostics of the last solve: path ('lp', 'dp' or 'milp'), columns, whether the LP was integral, ...
        self.last_stats: dict[str, Any] = {}
        self._models: dict[tuple[int, int, int, int, bool, bool], _SubsetLp] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the HiGHS models (not picklable; rebuilt on the next solve)."""
        state = self.__dict__.copy()
        state["_models"] = {}
        return state

    def _model(self, num_bs: int, num_targets: int, per_bs: int, s_max: int, idle: bool, start_solver) -> _SubsetLp:
        """The persistent LP of this shape (built on first use; column generation above ``full_lp_columns``)."""
        num_sets = sum(math.comb(num_bs, size) for size in range(1, s_max + 1))
        generate = num_targets * num_sets > self.full_lp_columns
        key = (num_bs, num_targets, per_bs, s_max, generate, idle)
        model = self._models.get(key)
        if model is not None and generate and model.pool.size > 4 * max(self.full_lp_columns, model.base_size):
            model = None  # the generated pool grew large: restart from the base set and the last LP support
        if model is None:
            shape = _SubsetShape(num_bs, num_targets, per_bs, s_max, idle)
            if generate:  # all sets of at most 2 BSs + a feasible solution (keeps the restricted LP feasible)
                old = self._models.get(key)
                start = np.zeros((num_targets, shape.num_sets), dtype=bool)
                start[:, shape.member.sum(axis=0) <= 2] = True
                start = start.ravel()
                base_size = int(start.sum())
                if old is not None:
                    start[old.support] = True
                else:
                    start[shape.columns_of(start_solver())] = True
                model = _SubsetLp(shape, np.flatnonzero(start), base_size)
            else:
                model = _SubsetLp(shape, np.arange(shape.num_columns), shape.num_columns)
            self._models.pop(key, None)
            while len(self._models) >= self.max_cached_models:
                self._models.pop(next(iter(self._models)))
            self._models[key] = model
        return model

    def solve(self, info: np.ndarray, prior_info: np.ndarray, num_rf: int,
              detection_prob: np.ndarray | None = None) -> np.ndarray:
        prob = self.problem(info, prior_info, num_rf, detection_prob)
        table = prob.table()
        num_bs, num_targets, per_bs = prob.num_bs, prob.num_targets, prob.per_bs
        s_max = max_bs_per_target(num_bs, num_targets, num_rf)

        def greedy() -> np.ndarray:  # a feasible association of the same form
            return GreedySolver(self.chain_price).solve(prob.info, prob.prior_info, num_rf, prob.detection_prob)

        model = self._model(num_bs, num_targets, per_bs, s_max, prob.idle, greedy)
        shape = model.shape
        cost = table[:, shape.masks]  # (I, K)
        if not np.all(np.isfinite(cost)):
            raise RlIsacError("subset costs are not finite (singular posterior information)")
        cost = cost * (self.cost_scale / float(cost.min(axis=1).sum()))  # positive, ~1e3 in all
        x, y, reduced = model.solve(cost)  # reduced = c - A^T y for every column, (I, K)
        slack = -y[num_targets:] if prob.idle else None  # reduced cost of each BS's idle-chain slack (M,)
        row_min = reduced.min(axis=1)
        floor = float(row_min.sum()) + shape.slack_floor(slack)  # L: rc^T x (+ slacks) >= L for every feasible x
        lp_value = float(shape.rhs @ y)  # b^T y
        self.last_stats = {"columns": shape.num_columns, "lp_columns": int(model.pool.size)}
        # 2. integral LP optimum, certified by rc^T x - L
        rounded = x > 0.5
        integral = bool(np.all(np.abs(x - rounded) <= 1e-6))
        self.last_stats["lp_integral"] = integral
        rounded_value = (float(reduced[rounded].sum()) + shape.slack_value(slack, rounded)
                         if integral and shape.is_feasible(rounded) else np.inf)
        if rounded_value - floor <= self.certify_rel_tol * float(cost[rounded].sum()):
            self.last_stats.update(path="lp", kept=int(np.count_nonzero(rounded)))
            return finish(shape.decode(rounded), num_rf, prob)
        # 3. reduced-cost DP with a growing threshold T (a feasible rounded LP point bounds the first T)
        margin = 1e-9 * abs(lp_value) + 1e-300
        found, rounds, kept = _reduced_cost_search(
            reduced, shape, min(floor + self.dp_initial_gap * abs(lp_value), rounded_value), margin,
            self.dp_max_entries, slack)
        if found is not None:
            self.last_stats.update(path="dp", dp_rounds=rounds, kept=kept)
            chosen = np.zeros(reduced.shape, dtype=bool)
            chosen[np.arange(num_targets), found] = True
            return finish(shape.decode(chosen), num_rf, prob)
        # 4. MILP fallback: restricted MILP for an upper bound, reduced-cost fixing, MILP on the survivors
        flat_cost, flat_bound = cost.ravel(), (reduced + (floor - row_min)[:, None]).ravel()
        restricted = np.zeros(flat_cost.size, dtype=bool)
        restricted[np.argsort(reduced.ravel(), kind="stable")[: self.restricted_columns]] = True
        restricted[shape.columns_of(greedy())] = True
        milp_scale = self.cost_scale / max(abs(lp_value), 1e-300)
        chosen, _ = self._milp(flat_cost * milp_scale, restricted, shape, num_targets, per_bs)
        upper = float(reduced.ravel()[chosen].sum()) + shape.slack_value(slack, chosen.reshape(reduced.shape))
        keep = flat_bound <= upper + margin
        self.last_stats.update(path="milp", restricted=int(restricted.sum()), kept=int(np.count_nonzero(keep)))
        if np.any(keep & ~restricted):  # the restricted optimum is not proven optimal: solve on the survivors
            chosen, _ = self._milp(flat_cost * milp_scale, keep | restricted, shape, num_targets, per_bs)
        return finish(shape.decode(chosen.reshape(reduced.shape)), num_rf, prob)

    def _milp(self, cost: np.ndarray, use: np.ndarray, shape: _SubsetShape, num_targets: int,
              per_bs: int) -> tuple[np.ndarray, float]:
        """Subset MILP on the columns ``use`` (bool, flat); returns the chosen columns (bool, flat) and the value."""
        cols = np.flatnonzero(use)
        options: dict[str, Any] = {"mip_rel_gap": self.mip_rel_gap}
        if self.time_limit_s is not None:
            options["time_limit"] = float(self.time_limit_s)
        res = milp(cost[cols], integrality=np.ones(cols.size), bounds=Bounds(0.0, 1.0),
                   constraints=LinearConstraint(shape.matrix(cols), shape.lhs, shape.rhs), options=options)
        if res.x is None:
            raise RlIsacError(f"MILP association failed: {res.message} (status {res.status})")
        x = np.zeros(cost.size, dtype=bool)
        x[cols] = res.x > 0.5
        return x, float(cost[x].sum())


class _SubsetShape:
    """Everything about the subset problem that depends only on ``(M, I, n, s_max)``.

    Attributes: ``masks`` (K,) candidate BS bitmasks; ``member`` (M, K) 1.0
    where BS m is in set k; ``rhs`` (I + M,) = ``b``; ``lhs`` the rows' lower
    bounds (``b``, or 0 for the BS rows with idle chains); ``packing`` the DP's
    load encoding ``(increment (K,), overflow, high, full)`` or None when the
    loads do not fit 62 bits.
    """

    def __init__(self, num_bs: int, num_targets: int, per_bs: int, s_max: int, idle: bool = False) -> None:
        sizes = subset_sizes(num_bs)
        self.num_bs, self.num_targets, self.per_bs, self.idle = num_bs, num_targets, per_bs, bool(idle)
        self.masks = np.flatnonzero((sizes >= 1) & (sizes <= s_max))
        self.num_sets = int(self.masks.size)
        self.num_columns = num_targets * self.num_sets
        self.member_int = (self.masks[None, :] >> np.arange(num_bs)[:, None]) & 1  # (M, K)
        self.member = self.member_int.astype(np.float64)
        self.rhs = np.concatenate([np.ones(num_targets), np.full(num_bs, float(per_bs))])
        self.lhs = self.rhs.copy()
        if self.idle:
            self.lhs[num_targets:] = 0.0
        self.column_of = np.full(1 << num_bs, -1, dtype=np.int64)
        self.column_of[self.masks] = np.arange(self.num_sets)
        # DP load encoding: BS m's load in bits [w m, w m + w), w - 1 = bit length of per_bs, so that a
        # field holds per_bs + 1 without carry and "field > per_bs" is bit w - 1 of field + 2^(w-1) - 1 - per_bs.
        width = per_bs.bit_length() + 1
        self.width = width
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
        """``chosen`` (bool (I, K)) has one column per target and exactly (at most, idle) ``per_bs`` targets per BS."""
        if not np.all(chosen.sum(axis=1) == 1):
            return False
        load = self.decode(chosen).sum(axis=1)
        return bool(np.all(load <= self.per_bs) if self.idle else np.all(load == self.per_bs))

    def slack_floor(self, slack: np.ndarray | None) -> float:
        """Least ``sum_m slack_m s_m`` over ``0 <= s_m <= per_bs`` (0 without idle chains)."""
        return 0.0 if slack is None else float(self.per_bs * np.minimum(slack, 0.0).sum())

    def slack_ceiling(self, slack: np.ndarray | None) -> float:
        """Largest ``sum_m slack_m s_m`` over ``0 <= s_m <= per_bs``."""
        return 0.0 if slack is None else float(self.per_bs * np.maximum(slack, 0.0).sum())

    def slack_value(self, slack: np.ndarray | None, chosen: np.ndarray) -> float:
        """``sum_m slack_m (per_bs - load_m)`` of one chosen column per target (bool (I, K))."""
        if slack is None:
            return 0.0
        return float(slack @ (self.per_bs - self.decode(chosen).sum(axis=1)))

    def loads(self, codes: np.ndarray) -> np.ndarray:
        """Per-BS loads ``(len(codes), M)`` of packed DP codes."""
        shifts = self.width * np.arange(self.num_bs, dtype=np.int64)
        return (codes[:, None] >> shifts[None, :]) & ((1 << self.width) - 1)

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
        self._check(self._highs.addRows(num_rows, shape.lhs, shape.rhs, 0, empty, empty, np.zeros(0)), "addRows")
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
                         max_entries: int, slack: np.ndarray | None = None) -> tuple[np.ndarray | None, int, int]:
    """Exact ``argmin rc^T x`` over all feasible ``x`` by the DP on a growing threshold ``T``.

    Valid for *any* ``reduced`` (I, K): every target takes one column, so a
    solution using column ``j`` of target ``i`` has ``rc^T x >= bound_j =
    rc_j + L - min_k rc[i, k]`` with ``L = sum_i min_k rc[i, k]``. Only
    columns with ``bound_j <= T`` can be in a solution with ``rc^T x <=
    T``, so a DP optimum over them (which is ``<= T``) is a global
    optimum. Without one ``T - L`` grows 4x, up to ``sum_i max_k rc[i, k]``
    (no pruning at all). ``margin`` (absolute) widens every comparison
    against rounding. ``slack`` (M,): reduced costs of the BSs' idle-chain
    slacks (idle chains only); they enter ``L`` by their least value and the
    DP exactly.

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
    floor = float(row_min.sum()) + shape.slack_floor(slack)
    bound = reduced + (floor - row_min)[:, None]  # least rc^T x of a solution using the column
    ceiling = float(reduced.max(axis=1).sum()) + shape.slack_ceiling(slack)  # every feasible x is below
    threshold = min(max(threshold, floor), ceiling)
    rounds = 0
    while True:
        rounds += 1
        keep = bound <= threshold + margin
        found = _subset_dp(reduced, keep, shape, threshold + margin, max_entries, slack)
        if found is None:
            return None, rounds, int(np.count_nonzero(keep))
        if found is not False:
            return found, rounds, int(np.count_nonzero(keep))
        if threshold >= ceiling:  # pragma: no cover - nothing pruned, yet (5c)-(5d) are satisfiable
            raise RlIsacError("association DP found no feasible association")
        threshold = min(floor + max(4.0 * (threshold - floor), margin), ceiling)


def _subset_dp(reduced: np.ndarray, keep: np.ndarray, shape: _SubsetShape, threshold: float,
               max_entries: int, slack: np.ndarray | None = None) -> np.ndarray | bool | None:
    """Least ``rc^T x`` over the kept columns under the exact per-BS loads, if it is ``<= threshold``.

    Targets are taken one at a time (fewest kept columns first); a state is
    a packed per-BS load vector holding the least partial value reaching
    it. A partial value plus the least kept ``rc`` of every remaining
    target above ``threshold`` is pruned, as is a load above ``per_bs`` or
    too low to be filled by the remaining targets (each adds at most one
    chain per BS; not with idle chains, where the last stage adds
    ``slack_m (per_bs - load_m)`` to every state instead and keeps the least).

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
    remaining_least += shape.slack_floor(slack)
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
        if slack is None and left < shape.per_bs:
            # every BS needs load >= per_bs - left: bit w-1 of field + 2^(w-1) - (per_bs - left)
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
    if slack is None:
        hit = np.flatnonzero(codes == full)
    else:  # idle chains: every state is complete; add the slacks' value and keep the least
        final = values + (shape.per_bs - shape.loads(codes)) @ slack
        best_final = int(np.argmin(final))
        hit = np.array([best_final]) if final[best_final] <= threshold else np.zeros(0, dtype=np.int64)
    if hit.size == 0:
        return False
    chosen = np.empty(num_targets, dtype=np.int64)
    pos = int(hit[0])
    for t in range(num_targets - 1, -1, -1):
        parent, col = history[t]
        chosen[order[t]] = col[pos]
        pos = int(parent[pos])
    return chosen

