"""Greedy marginal-gain association on the expected-cost table."""

from __future__ import annotations

import numpy as np

from rl_isac.association.base import AssociationSolver, check_chain_price, finish

__all__ = ["GreedySolver", "bs_bits", "target_masks"]


def bs_bits(num_bs: int) -> np.ndarray:
    """``1 << m`` for every BS, shape (M,) int64."""
    return np.int64(1) << np.arange(num_bs, dtype=np.int64)


def target_masks(association: np.ndarray) -> np.ndarray:
    """BS bitmask of every target of an association ``(M, I)``: shape (I,) int64."""
    return (np.asarray(association, dtype=np.int64) * bs_bits(association.shape[0])[:, None]).sum(axis=0)


class GreedySolver(AssociationSolver):
    """Greedy marginal-gain association; always feasible, ``O(J * M * I)`` after the table.

    Phase 1 (5d): while a target is uncovered, assign the (BS with a free
    chain, uncovered target) pair with the largest decrease of the objective.
    Phase 2: fill chains with the (BS, target not yet on that BS) pair of
    largest decrease, one at a time: every chain (``chain_price == 0``), or
    while the best decrease is positive (``chain_price > 0``; the rest stay
    idle). Phase 1 always finishes since ``num_targets <= num_bs * min(num_rf,
    num_targets)`` chains exist, and phase 2 always finds a target since a BS
    with a free chain tracks fewer than ``min(num_rf, num_targets)`` targets.

    Parameters
    ----------
    chain_price : float
        See :class:`~rl_isac.association.base.AssociationSolver`.
    """

    name = "greedy"

    def __init__(self, chain_price: float = 0.0) -> None:
        self.chain_price = check_chain_price(chain_price)

    def solve(self, info: np.ndarray, prior_info: np.ndarray, num_rf: int,
              detection_prob: np.ndarray | None = None) -> np.ndarray:
        prob = self.problem(info, prior_info, num_rf, detection_prob)
        table = prob.table()  # (I, 2^M)
        num_bs, num_targets = prob.num_bs, prob.num_targets
        rows = np.arange(num_targets)
        bits = bs_bits(num_bs)
        masks = np.zeros(num_targets, dtype=np.int64)
        association = np.zeros((num_bs, num_targets), dtype=bool)
        remaining = np.full(num_bs, prob.per_bs)
        for _ in range(num_bs * prob.per_bs):
            # (M, I) decrease of target i's cost when BS m joins its set
            gain = table[rows, masks][None, :] - table[rows[None, :], masks[None, :] | bits[:, None]]
            valid = (remaining > 0)[:, None] & ~association
            covered = masks > 0
            if not covered.all():
                valid &= ~covered[None, :]  # phase 1: cover first (5d)
            scores = np.where(valid, gain, -np.inf)
            flat = int(np.argmax(scores))
            if covered.all() and prob.idle and not scores.flat[flat] > 0:
                break  # no pair is worth its chain: the rest stay idle
            m, i = divmod(flat, num_targets)
            association[m, i] = True
            remaining[m] -= 1
            masks[i] |= bits[m]
        return finish(association, num_rf, prob)
