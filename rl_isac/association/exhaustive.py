"""Benchmark III: exhaustive search over every association of the solvers' form."""

from __future__ import annotations

import itertools
import math

import numpy as np

from rl_isac.association.base import AssociationSolver, check_chain_price, finish
from rl_isac.association.constraints import chains_per_bs
from rl_isac.association.objective import max_bs_per_target
from rl_isac.errors import ConfigError, RlIsacError

__all__ = ["ExhaustiveSearchTooLarge", "ExhaustiveSolver", "exhaustive_candidate_count"]


class ExhaustiveSearchTooLarge(RlIsacError):
    """Exhaustive search would enumerate more candidate associations than its budget.

    Attributes
    ----------
    count : int
        Candidate associations ``C(num_targets, min(num_rf, num_targets)) ** num_bs`` (with idle
        chains ``(sum_{k <= n} C(num_targets, k)) ** num_bs``).
    budget : int
        The solver's ``max_candidates``.
    enumeration_bytes : int
        Bytes to hold the whole enumeration as per-target BS bitmasks
        (``count * num_targets * 8``).
    """

    def __init__(self, count: int, budget: int, num_bs: int, num_targets: int, per_bs: int,
                 idle: bool = False) -> None:
        self.count = count
        self.budget = budget
        self.enumeration_bytes = count * num_targets * 8
        per = _choices(num_targets, per_bs, idle)
        form = (f"sum_k<={per_bs} C({num_targets}, k)" if idle else f"C({num_targets}, {per_bs})")
        super().__init__(
            f"exhaustive search over {count} candidate associations ({form} ** {num_bs} = "
            f"{per} ** {num_bs}) exceeds max_candidates = {budget}; the enumeration "
            f"as per-target BS bitmasks would need {self.enumeration_bytes} bytes "
            f"({self.enumeration_bytes / 2**30:.3g} GiB = count x num_targets x 8 B). "
            f"The 'milp' solver returns the same optimum."
        )


def _choices(num_targets: int, per_bs: int, idle: bool) -> int:
    """Target sets of one BS: ``C(I, n)``, or ``sum_{k <= n} C(I, k)`` with idle chains."""
    if idle:
        return sum(math.comb(num_targets, k) for k in range(per_bs + 1))
    return math.comb(num_targets, per_bs)


def exhaustive_candidate_count(num_bs: int, num_targets: int, num_rf: int, idle: bool = False) -> int:
    """Candidates of exhaustive search: each BS picks ``n = min(num_rf, I)`` of ``I`` targets, ``C(I, n) ** M``
    (at most ``n`` with idle chains: ``(sum_{k <= n} C(I, k)) ** M``)."""
    return _choices(num_targets, chains_per_bs(num_targets, num_rf), idle) ** num_bs




class ExhaustiveSolver(AssociationSolver):
    """Benchmark III: exhaustive search over every association of the solvers' form.

    Each BS picks ``n = min(num_rf, I)`` distinct targets (``C(I, n)``
    ways; with ``chain_price > 0`` at most ``n``, idle chains included),
    giving ``C(I, n) ** M`` candidates; those leaving a target uncovered
    (5d) are discarded. Costs come from the subset cost table and
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
    chain_price : float
        See :class:`~rl_isac.association.base.AssociationSolver`.
    """

    name = "exhaustive"

    def __init__(self, max_candidates: int = 50_000_000, block_entries: int = 1 << 21,
                 chain_price: float = 0.0) -> None:
        if max_candidates < 1:
            raise ConfigError("max_candidates", max_candidates, "must be >= 1")
        if block_entries < 1:
            raise ConfigError("block_entries", block_entries, "must be >= 1")
        self.max_candidates = int(max_candidates)
        self.block_entries = int(block_entries)
        self.chain_price = check_chain_price(chain_price)

    def solve(self, info: np.ndarray, prior_info: np.ndarray, num_rf: int,
              detection_prob: np.ndarray | None = None) -> np.ndarray:
        prob = self.problem(info, prior_info, num_rf, detection_prob)
        num_bs, num_targets, per_bs = prob.num_bs, prob.num_targets, prob.per_bs
        count = exhaustive_candidate_count(num_bs, num_targets, num_rf, prob.idle)
        if count > self.max_candidates:
            raise ExhaustiveSearchTooLarge(count, self.max_candidates, num_bs, num_targets, per_bs, prob.idle)
        table = prob.table(max_bs_per_target(num_bs, num_targets, num_rf))
        table[:, 0] = np.inf  # uncovered target: (5d) violated
        flat_table = table.ravel()
        offsets = np.arange(num_targets, dtype=np.int64) << num_bs  # row i of the table

        sizes = range(per_bs + 1) if prob.idle else (per_bs,)
        combos = [c for k in sizes for c in itertools.combinations(range(num_targets), k)]
        bits = np.zeros((len(combos), num_targets), dtype=np.int64)  # (C, I): target in combo
        for row, combo in enumerate(combos):
            bits[row, list(combo)] = 1
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
        return finish(association, num_rf, prob)


