"""Torch twin of the auto-regressive mask with the STOP token (shared interface 1).

Mirrors :func:`rl_isac.association.constraints.valid_action_mask` exactly (a test compares
both on random states): step ``j`` of the ``J = M * N_RF`` steps is an integer in
``[0, M * I]``; ``k < M * I`` is the flat pair ``k = bs * I + target``, ``k = M * I`` is STOP.

* STOP is sticky: after a STOP only STOP is allowed;
* STOP is allowed iff every target is covered (5d) (or a STOP was already chosen);
* a pair is allowed iff not stopped, its BS has a chain left (5c), it was not chosen (5e),
  and, once the uncovered targets are as many as the remaining chains, its target is
  uncovered (5d lookahead).

Also the teacher-forcing states: :func:`states_from_actions` gives the state before every
step of stored sequences in one batched pass (no loop over ``j``).
"""

from __future__ import annotations

import torch
from torch import Tensor

MASKED_LOGIT = -1e9
"""Logit of a masked entry: large, finite and negative (``-inf`` makes entropy and KL NaN)."""


def valid_action_mask(remaining_chains: Tensor, covered: Tensor, chosen: Tensor, stopped: Tensor) -> Tensor:
    """Valid next steps.

    Shapes:
        remaining_chains ``(..., M)`` int, covered ``(..., I)`` bool, chosen ``(..., M, I)`` bool,
        stopped ``(...)`` bool; returns ``(..., M * I + 1)`` bool (last entry: STOP).
    """
    num_uncovered = (~covered).sum(-1)
    steps_left = remaining_chains.sum(-1)
    must_cover = (num_uncovered >= steps_left)[..., None, None]                   # (5d) lookahead
    pairs = (remaining_chains > 0)[..., :, None] & ~chosen                        # (5c), (5e)
    pairs = pairs & (~must_cover | ~covered[..., None, :]) & ~stopped[..., None, None]
    stop = stopped | covered.all(-1)
    return torch.cat([pairs.flatten(-2), stop[..., None]], dim=-1)


def states_from_actions(actions: Tensor, num_bs: int, num_targets: int, num_rf: int
                        ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The construction state before each step of stored step sequences (teacher forcing).

    Shapes:
        actions: ``(B, J)`` int64 in ``[0, M * I]``.
        returns ``remaining (B, J, M)`` int64, ``covered (B, J, I)`` bool, ``chosen (B, J, M, I)`` bool,
        ``stopped (B, J)`` bool: the state seen by step ``j`` (after steps ``0 .. j-1``).
    """
    B, J = actions.shape
    P = num_bs * num_targets
    # A step after a STOP does nothing (sticky): only pairs before the first STOP count.
    is_stop = actions == P
    stopped_incl = torch.cumsum(is_stop.to(torch.int64), dim=1) > 0               # (B, J) stopped after step j
    onehot = torch.nn.functional.one_hot(actions.clamp(0, P), P + 1)[..., :P]      # (B, J, P)
    onehot = onehot * (~stopped_incl)[..., None].to(onehot.dtype)
    before = torch.cumsum(onehot, dim=1) - onehot                                 # exclusive cumsum
    chosen = before.reshape(B, J, num_bs, num_targets) > 0
    remaining = num_rf - before.reshape(B, J, num_bs, num_targets).sum(-1)
    covered = chosen.any(-2)
    stopped = torch.cat([torch.zeros_like(stopped_incl[:, :1]), stopped_incl[:, :-1]], dim=1)
    return remaining, covered, chosen, stopped


def initial_state(batch: int, num_bs: int, num_targets: int, num_rf: int, device=None
                  ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """State before the first step: ``remaining (B, M) = N_RF``, nothing covered, chosen or stopped."""
    return (torch.full((batch, num_bs), num_rf, dtype=torch.int64, device=device),
            torch.zeros(batch, num_targets, dtype=torch.bool, device=device),
            torch.zeros(batch, num_bs, num_targets, dtype=torch.bool, device=device),
            torch.zeros(batch, dtype=torch.bool, device=device))


def apply_step(state: tuple[Tensor, Tensor, Tensor, Tensor], action: Tensor, num_targets: int
               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """State after step ``action (B,)`` (a pair or STOP); inputs are not modified."""
    remaining, covered, chosen, stopped = state
    B, M, I = chosen.shape
    P = M * I
    is_pair = (action < P) & ~stopped
    k = action.clamp(max=P - 1)
    bs, tg = k // num_targets, k % num_targets
    rows = torch.arange(B, device=action.device)
    inc = is_pair.to(remaining.dtype)
    remaining = remaining.clone()
    remaining[rows, bs] -= inc
    covered = covered.clone()
    covered[rows, tg] |= is_pair
    chosen = chosen.clone()
    chosen[rows, bs, tg] |= is_pair
    return remaining, covered, chosen, stopped | (action == P)
