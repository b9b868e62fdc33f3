"""Swap / exchange local search on the expected-cost table (the refinement of ``convex-ls``)."""

from __future__ import annotations

import numpy as np

from rl_isac.association.base import prepare
from rl_isac.association.greedy import bs_bits, target_masks

__all__ = ["swap_refine"]


def swap_refine(association: np.ndarray, info: np.ndarray, prior_info: np.ndarray,
                max_moves: int | None = None, *, detection_prob: np.ndarray | None = None,
                chain_price: float = 0.0, num_rf: int | None = None) -> np.ndarray:
    """Steepest-descent local search that keeps (5c)-(5e) (and every BS's load when no chain may idle).

    Moves, each with a cost change that separates over the targets it
    touches (table lookups of :func:`~rl_isac.association.objective.expected_subset_costs`),
    so the best move of each kind is found without enumerating pairs of targets:

    * swap: BS ``m`` drops target ``i`` (which keeps another BS, (5d)) and
      takes a target ``i'`` it does not track yet (5e),
      ``delta = rem[m, i] + add[m, i']`` -- ``O(M I)``;
    * exchange: BSs ``m`` and ``m'`` trade targets ``i`` (on ``m``, not on
      ``m'``) and ``i'`` (on ``m'``, not on ``m``),
      ``delta = rep[m, m', i] + rep[m', m, i']`` -- ``O(M^2 I)``; this is the
      only move when every target has exactly one BS (``I = M N_RF``);
    * with ``chain_price > 0`` also drop (``rem[m, i]``: the chain goes idle)
      and add (``add[m, i']`` on a BS with an idle chain).

    The best move is applied while it decreases the cost by more than 1e-12
    relative.

    Parameters
    ----------
    association : np.ndarray of bool, shape (num_bs, num_targets)
        A feasible association.
    info, prior_info, detection_prob, chain_price
        The objective (see :class:`~rl_isac.association.base.Problem`).
    max_moves : int, optional
        Stop after this many moves (default ``10 * num_bs * num_targets``).
    num_rf : int, optional
        RF chains per BS (default: the largest load of ``association``); only
        the add move with ``chain_price > 0`` reads it.

    Returns
    -------
    np.ndarray of bool, shape (num_bs, num_targets)
        A feasible association with no larger cost.
    """
    a = np.array(association, dtype=bool)
    num_bs, num_targets = a.shape
    if num_rf is None:
        num_rf = max(int(a.sum(axis=1).max()), 1)
    prob = prepare(info, prior_info, num_rf, detection_prob, chain_price)
    table = prob.table()
    bits = bs_bits(num_bs)
    cols = np.arange(num_targets)
    rows = np.arange(num_bs)
    if max_moves is None:
        max_moves = 10 * num_bs * num_targets
    for _ in range(max_moves):
        masks = target_masks(a)  # (I,)
        current = table[cols, masks]
        rem = table[cols[None, :], masks[None, :] & ~bits[:, None]] - current  # (M, I)
        add = table[cols[None, :], masks[None, :] | bits[:, None]] - current
        rem = np.where(a & (a.sum(axis=0) >= 2)[None, :], rem, np.inf)
        add = np.where(~a, add, np.inf)
        best_rem, best_add = rem.argmin(axis=1), add.argmin(axis=1)  # (M,)
        swap = rem[rows, best_rem] + add[rows, best_add]
        # exchange: on target i, BS m is replaced by BS m' -> rep[m, m', i]
        rep = table[cols[None, None, :], (masks[None, None, :] & ~bits[:, None, None]) | bits[None, :, None]] - current
        rep = np.where(a[:, None, :] & ~a[None, :, :], rep, np.inf)  # (M, M', I)
        best_rep = rep.argmin(axis=2)  # (M, M')
        rep_min = rep.min(axis=2)
        exchange = rep_min + rep_min.T  # (m, m') trade best_rep[m, m'] and best_rep[m', m]
        moves = {"swap": float(swap.min()), "exchange": float(exchange.min())}
        if prob.idle:
            moves["drop"] = float(rem.min())
            free = a.sum(axis=1) < prob.per_bs
            moves["add"] = float(np.where(free[:, None], add, np.inf).min())
        kind = min(moves, key=moves.get)
        if not moves[kind] < -1e-12 * float(current.sum()):
            break
        if kind == "swap":
            m = int(np.argmin(swap))
            a[m, best_rem[m]] = False
            a[m, best_add[m]] = True
        elif kind == "exchange":
            m1, m2 = np.unravel_index(int(np.argmin(exchange)), exchange.shape)
            i1, i2 = best_rep[m1, m2], best_rep[m2, m1]
            a[m1, i1], a[m2, i1] = False, True
            a[m2, i2], a[m1, i2] = False, True
        elif kind == "drop":
            a.flat[int(np.argmin(rem))] = False
        else:
            a.flat[int(np.argmin(np.where(free[:, None], add, np.inf)))] = True
    return a
