"""Association solvers for the myopic Fisher-information objective: the registry and re-exports.

Every solver has one verb, ``solve(info, prior_info, num_rf, detection_prob=None) -> A``
(:class:`~rl_isac.association.base.AssociationSolver`), reads the same problem
(:class:`~rl_isac.association.base.Problem`) and minimises (exactly or approximately) the same
objective, the expected posterior position error over detection outcomes plus a price per
used RF chain (:func:`rl_isac.association.objective.expected_subset_costs`). One module each:

=============  ==================================  ========================================================
name           module                              method
=============  ==================================  ========================================================
``greedy``     :mod:`~rl_isac.association.greedy`      cover every target, then fill chains by largest decrease
``convex``     :mod:`~rl_isac.association.convex`      Benchmark I: convex relaxation (cvxpy, ``tr_inv``) + rounding
                                                   (+ optional swaps, :mod:`~rl_isac.association.local_search`)
``exhaustive`` :mod:`~rl_isac.association.exhaustive`  Benchmark III: enumerate every association of the form
``milp``       :mod:`~rl_isac.association.milp`        exact, over per-target BS subsets: warm-started HiGHS LP,
                                                   reduced-cost DP, MILP fallback
=============  ==================================  ========================================================

``milp`` and ``exhaustive`` return the same optimal cost; ``milp`` also runs
where exhaustive search cannot (the paper's "OOM" entry of Table 1).
"""

from __future__ import annotations

from typing import Any

from rl_isac.association.base import AssociationSolver, Problem
from rl_isac.association.convex import ConvexSolver
from rl_isac.association.exhaustive import ExhaustiveSearchTooLarge, ExhaustiveSolver, exhaustive_candidate_count
from rl_isac.association.greedy import GreedySolver
from rl_isac.association.local_search import swap_refine
from rl_isac.association.milp import MilpSolver, _reduced_cost_search, _subset_dp, _SubsetLp, _SubsetShape
from rl_isac.errors import ConfigError

__all__ = [
    "SOLVERS",
    "AssociationSolver",
    "ConvexSolver",
    "ExhaustiveSearchTooLarge",
    "ExhaustiveSolver",
    "GreedySolver",
    "MilpSolver",
    "Problem",
    "exhaustive_candidate_count",
    "make_solver",
    "swap_refine",
]

# the MILP's internals, re-exported for the tests that exercise them directly
_INTERNALS = (_SubsetShape, _SubsetLp, _reduced_cost_search, _subset_dp)

SOLVERS: dict[str, type[AssociationSolver]] = {
    "greedy": GreedySolver,
    "convex": ConvexSolver,
    "exhaustive": ExhaustiveSolver,
    "milp": MilpSolver,
}
"""Solver classes by name; ``SOLVERS[name](**kwargs).solve(info, prior_info, num_rf, detection_prob)``."""


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
