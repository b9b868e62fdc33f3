"""Benchmark I: convex relaxation of the association, then feasible rounding."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from rl_isac.association.base import AssociationSolver, Problem, check_chain_price, finish
from rl_isac.association.local_search import swap_refine
from rl_isac.association.objective import _entries, trace_inv_2x2
from rl_isac.errors import ConfigError, RlIsacError

__all__ = ["ConvexSolver"]


class ConvexSolver(AssociationSolver):
    """Benchmark I: convex relaxation of the association, then feasible rounding.

    Relaxation (convex in ``a``: ``tr_inv`` is convex on PD matrices and its
    argument is affine in ``a``)::

        min_a  sum_i tr_inv(prior_i + sum_m a[m, i] p[m, i] info[m, i]) + sum_{m,i} a[m, i] price[m, i]
        s.t.   0 <= a <= 1,  sum_i a[m, i] = min(num_rf, I)  (5c, all chains; "<=" if chain_price > 0),
               sum_m a[m, i] >= 1                            (5d)

    with ``p`` the detection probabilities (1 if not given) and ``price[m, i] =
    chain_price * tr(inv(prior_i + p[m, i] info[m, i]))`` (the linear stand-in
    for the factor ``(1 + chain_price)^|S|``): the expected-information form of
    the objective, its convex surrogate (the exact expectation over detection
    outcomes of :mod:`rl_isac.association.objective` is not convex in ``a``).

    solved with cvxpy (CLARABEL if installed, else SCS) as a DPP problem
    whose compiled form is cached per ``(num_bs, num_targets, per_bs)``, so
    a repeat solve costs a few milliseconds. Information is rescaled by a
    common factor first (the argmin is unchanged).

    Rounding never breaks a constraint: (i) cover every target by a
    maximum-weight assignment of targets to distinct RF-chain slots (each BS
    has ``per_bs`` slots; ``scipy.optimize.linear_sum_assignment``) on the
    fractional values; (ii) each BS fills its free chains with its largest
    fractional values among targets it does not track yet (with
    ``chain_price > 0`` only values ``>= 0.5``: the other chains stay idle).
    Ties (values equal to 1e-4) are broken by the single-pair cost decrease.

    This plain relax-and-round is far from optimal when a target needs two
    BSs with different geometry (median cost 18-60x the MILP optimum on
    random instances with M = 6, I >= 6); ``local_search=True`` adds the
    swap refinement of Joshi & Boyd, "Sensor selection via convex
    optimization" (2009), adapted to RF chains: repeatedly apply the best
    cost-decreasing swap or exchange of targets (:func:`swap_refine`),
    keeping (5c)-(5e), on the exact expected-cost objective.

    Parameters
    ----------
    solver : str, optional
        cvxpy solver name; default CLARABEL, else SCS.
    local_search : bool
        Refine the rounded association by swaps (default False: plain rounding).
    chain_price : float
        See :class:`~rl_isac.association.base.AssociationSolver`.
    """

    name = "convex"

    def __init__(self, solver: str | None = None, local_search: bool = False, chain_price: float = 0.0) -> None:
        import cvxpy as cp

        installed = cp.installed_solvers()
        if solver is None:
            solver = "CLARABEL" if "CLARABEL" in installed else "SCS"
        if solver not in installed:
            raise ConfigError("solver", solver, f"must be an installed cvxpy solver: {installed}")
        self.solver = solver
        self.local_search = bool(local_search)
        self.chain_price = check_chain_price(chain_price)
        self._cache: dict[tuple[int, int, int, bool], tuple[Any, Any, dict[str, Any]]] = {}

    def _problem(self, num_bs: int, num_targets: int, per_bs: int, idle: bool) -> tuple[Any, Any, dict[str, Any]]:
        key = (num_bs, num_targets, per_bs, idle)
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
                "price": cp.Parameter((num_bs, num_targets), nonneg=True),
            }
            # F_i = prior_i + sum_m a_{m,i} J_{m,i}, entrywise (DPP: parameter x variable)
            f00 = par["pa"] + cp.sum(cp.multiply(a, par["ia"]), axis=0)
            f01 = par["pb"] + cp.sum(cp.multiply(a, par["ib"]), axis=0)
            f11 = par["pd"] + cp.sum(cp.multiply(a, par["id"]), axis=0)
            objective = sum(cp.tr_inv(cp.bmat([[f00[i], f01[i]], [f01[i], f11[i]]])) for i in range(num_targets))
            chains = cp.sum(a, axis=1)
            constraints = [a >= 0, a <= 1,
                           chains <= per_bs if idle else chains == per_bs,  # (5c), every chain used unless idle
                           cp.sum(a, axis=0) >= 1]  # (5d)
            if idle:
                objective = objective + cp.sum(cp.multiply(a, par["price"]))
            self._cache[key] = (cp.Problem(cp.Minimize(objective), constraints), a, par)
        return self._cache[key]

    def relaxed(self, info: np.ndarray, prior_info: np.ndarray, num_rf: int,
                detection_prob: np.ndarray | None = None) -> np.ndarray:
        """Fractional solution ``a`` of the relaxation, shape (num_bs, num_targets), in [0, 1]."""
        return self._relaxed(self.problem(info, prior_info, num_rf, detection_prob))

    def _relaxed(self, prob: Problem) -> np.ndarray:
        num_bs, num_targets = prob.num_bs, prob.num_targets
        problem, a, par = self._problem(num_bs, num_targets, prob.per_bs, prob.idle)
        ia, ib, id_ = _entries(prob.weighted_info())
        pa, pb, pd = _entries(prob.prior_info)
        # common scale: typical full information ~ 1 (argmin unchanged)
        scale = 1.0 / max(float(np.median(0.5 * (pa + pd + (ia + id_).sum(axis=0)))), 1e-300)
        par["ia"].value = np.maximum(ia * scale, 0.0)
        par["ib"].value = ib * scale
        par["id"].value = np.maximum(id_ * scale, 0.0)
        par["pa"].value = pa * scale
        par["pb"].value = pb * scale
        par["pd"].value = pd * scale
        # linear stand-in for the factor (1 + c)^|S|: c times the target's cost with that pair alone
        par["price"].value = prob.chain_price * trace_inv_2x2(par["pa"].value + par["ia"].value,
                                                              par["pb"].value + par["ib"].value,
                                                              par["pd"].value + par["id"].value)
        try:
            problem.solve(solver=self.solver)
        except Exception as exc:  # cvxpy.SolverError and numerical failures
            raise RlIsacError(f"convex relaxation failed with {self.solver}: {exc}") from exc
        if a.value is None or problem.status not in ("optimal", "optimal_inaccurate"):
            raise RlIsacError(f"convex relaxation ended with status {problem.status!r} ({self.solver})")
        return np.clip(np.asarray(a.value, dtype=np.float64), 0.0, 1.0)

    def solve(self, info: np.ndarray, prior_info: np.ndarray, num_rf: int,
              detection_prob: np.ndarray | None = None) -> np.ndarray:
        prob = self.problem(info, prior_info, num_rf, detection_prob)
        num_bs, num_targets, per_bs = prob.num_bs, prob.num_targets, prob.per_bs
        frac = self._relaxed(prob)
        ia, ib, id_ = _entries(prob.weighted_info())
        pa, pb, pd = _entries(prob.prior_info)
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
                order = np.argsort(-np.where(association[m], -np.inf, score[m]), kind="stable")[:free]
                if prob.idle:  # a chain is used only where the relaxation mostly uses it
                    order = order[frac[m, order] >= 0.5]
                association[m, order] = True
        if self.local_search:
            association = swap_refine(association, prob.info, prob.prior_info, detection_prob=prob.detection_prob,
                                      chain_price=prob.chain_price, num_rf=num_rf)
        return finish(association, num_rf, prob)

