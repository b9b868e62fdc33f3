"""Target-BS association: constraints (5c)-(5e), the auto-regressive mask, objective, solvers.

* :mod:`~rl_isac.association.constraints`: (5c)-(5e), pair lists, the pair mask and the STOP-token
  action form of the policy (interface 1: :func:`valid_action_mask`, :func:`apply_action`,
  :func:`sub_actions_to_association`, :func:`association_to_sub_actions`);
* :mod:`~rl_isac.association.objective`: the expected posterior error over detection outcomes
  (``detection_prob`` from :mod:`rl_isac.physics.detection`) times ``(1 + chain_price)`` per BS;
* one module per solver (:mod:`~rl_isac.association.solvers` lists and re-exports them), all on
  that objective: ``solve(info, prior_info, num_rf, detection_prob=None)``.

Plain numpy/scipy/cvxpy (cvxpy is imported only when a :class:`ConvexSolver`
is built); never torch or Ray.

Example:
    >>> import numpy as np
    >>> from rl_isac.association import SOLVERS, association_cost, check_association
    >>> info = np.tile(np.eye(2), (6, 4, 1, 1))          # (num_bs, num_targets, 2, 2), 1/m^2
    >>> prior_info = np.tile(0.1 * np.eye(2), (4, 1, 1))  # (num_targets, 2, 2), 1/m^2
    >>> A = SOLVERS["milp"]().solve(info, prior_info, num_rf=2)
    >>> check_association(A, num_rf=2).sum(axis=1).tolist()
    [2, 2, 2, 2, 2, 2]
"""

from rl_isac.association.constraints import (
    ActionState,
    MaskState,
    apply_action,
    apply_pair,
    association_to_pairs,
    association_to_sub_actions,
    chains_per_bs,
    check_association,
    check_problem_size,
    initial_action_state,
    initial_mask_state,
    mask_from_state,
    pairs_to_association,
    stop_action,
    sub_actions_to_association,
    uses_all_chains,
    valid_action_mask,
    valid_pair_mask,
)
from rl_isac.association.objective import (
    DEFAULT_CHAIN_PRICE,
    association_cost,
    expected_association_cost,
    expected_subset_costs,
    max_bs_per_target,
    subset_costs,
    subset_sizes,
    target_costs,
    trace_inv_2x2,
    validate_detection,
    validate_information,
)
from rl_isac.association.solvers import (
    SOLVERS,
    AssociationSolver,
    ConvexSolver,
    ExhaustiveSearchTooLarge,
    ExhaustiveSolver,
    GreedySolver,
    MilpSolver,
    Problem,
    exhaustive_candidate_count,
    make_solver,
    swap_refine,
)

__all__ = [
    "DEFAULT_CHAIN_PRICE",
    "SOLVERS",
    "ActionState",
    "AssociationSolver",
    "ConvexSolver",
    "ExhaustiveSearchTooLarge",
    "ExhaustiveSolver",
    "GreedySolver",
    "MaskState",
    "MilpSolver",
    "Problem",
    "apply_action",
    "apply_pair",
    "association_cost",
    "association_to_pairs",
    "association_to_sub_actions",
    "chains_per_bs",
    "check_association",
    "check_problem_size",
    "exhaustive_candidate_count",
    "expected_association_cost",
    "expected_subset_costs",
    "initial_action_state",
    "initial_mask_state",
    "make_solver",
    "mask_from_state",
    "max_bs_per_target",
    "pairs_to_association",
    "stop_action",
    "sub_actions_to_association",
    "subset_costs",
    "subset_sizes",
    "swap_refine",
    "target_costs",
    "trace_inv_2x2",
    "uses_all_chains",
    "valid_action_mask",
    "valid_pair_mask",
    "validate_detection",
    "validate_information",
]
