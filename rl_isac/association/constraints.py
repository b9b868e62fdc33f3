"""Association constraints (5c)-(5e), pair lists and the auto-regressive mask.

An association matrix ``A`` is indexed ``[bs, target]`` as in the paper
(``alpha_{m,i,q}``, Sec. 2.2). The constraints of problem (5) are

* (5c) ``sum_i alpha_{m,i} <= N_RF`` for every BS ``m`` (RF chains),
* (5d) ``sum_m alpha_{m,i} >= 1`` for every target ``i`` (coverage),
* (5e) ``alpha_{m,i} in {0, 1}`` (binary).

The auto-regressive policy of Sec. 3.2 builds ``A`` from ``J = M * N_RF``
sub-actions, one ``(bs, target)`` pair each, eq. (10). Its mask
(:func:`valid_pair_mask`, :func:`mask_from_state`) allows exactly the pairs
after which the remaining sub-actions can still complete a feasible
association, so no sampled action can break (5c)-(5e):

* (5c) the pair's BS still has an RF chain left,
* (5e) the pair was not chosen before,
* (5d) once the uncovered targets are as many as the remaining sub-actions,
  only pairs with an uncovered target are allowed.

The flat pair index is ``k = bs * num_targets + target`` (the paper's
``k = (m - 1) I + i`` with zero-based indices), i.e. ``mask.reshape(-1)`` in C
order.

Idle RF chains and the STOP token (shared interface 1). (5c) is an
inequality, so an association may leave chains idle. The action form of the
policy (:func:`valid_action_mask`, :func:`apply_action`,
:func:`sub_actions_to_association`, :func:`association_to_sub_actions`) has
``J = M * N_RF`` steps, each an integer in ``[0, M * I]``: ``k < M * I`` is the
flat pair above, ``k == M * I`` is STOP. STOP is sticky (after a STOP every
later step is STOP) and allowed iff every target is already covered (5d) (or
a STOP was already chosen); a pair is allowed iff no STOP was chosen and the
pair rules above hold. In pair-list form a STOP step is the row ``[-1, -1]``.

Why the mask is never all-False (given ``num_rf <= num_targets <= num_bs *
num_rf``): let ``R`` be the remaining sub-actions (the sum of remaining
chains) and ``U`` the uncovered targets; ``U <= R`` holds at the start and is
kept by the mask. A BS with a chain left has chosen fewer than
``num_rf <= num_targets`` targets, so it has an unchosen target (allowed when
``U < R``), and every uncovered target is unchosen by every BS (allowed when
``U == R``). The same argument shows the mask is exact: a pair is allowed iff
some completion of the remaining sub-actions is feasible.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rl_isac.errors import ConfigError, ConstraintViolation

__all__ = [
    "ActionState",
    "MaskState",
    "apply_action",
    "apply_pair",
    "association_to_sub_actions",
    "initial_action_state",
    "stop_action",
    "sub_actions_to_association",
    "valid_action_mask",
    "association_to_pairs",
    "check_association",
    "check_problem_size",
    "chains_per_bs",
    "initial_mask_state",
    "mask_from_state",
    "pairs_to_association",
    "uses_all_chains",
    "valid_pair_mask",
]

_MAX_LISTED = 8


def _list(indices: np.ndarray) -> str:
    """Human list of at most ``_MAX_LISTED`` indices."""
    idx = [int(v) for v in indices]
    text = ", ".join(str(v) for v in idx[:_MAX_LISTED])
    return text + (f", ... ({len(idx)} in all)" if len(idx) > _MAX_LISTED else "")


def check_problem_size(num_bs: int, num_targets: int, num_rf: int, *, need_distinct_pairs: bool = False) -> None:
    """Validate the sizes of an association problem.

    Parameters
    ----------
    num_bs, num_targets, num_rf : int
        ``M >= 1``, ``I >= 1``, ``N_RF >= 1``.
    need_distinct_pairs : bool
        Also require ``num_targets >= num_rf``, so that ``J = M * N_RF``
        distinct pairs exist (the auto-regressive policy needs it).

    Raises
    ------
    ConfigError
        A count is not a positive integer, ``num_targets > num_bs * num_rf``
        (then (5c) and (5d) cannot both hold), or (with
        ``need_distinct_pairs``) ``num_targets < num_rf``.
    """
    for name, value in (("num_bs", num_bs), ("num_targets", num_targets), ("num_rf", num_rf)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(name, value, "must be a positive integer")
    if num_targets > num_bs * num_rf:
        raise ConfigError("num_targets", num_targets,
                          f"(5d) needs every target covered by at least one of num_bs * num_rf = "
                          f"{num_bs} * {num_rf} = {num_bs * num_rf} RF chains")
    if need_distinct_pairs and num_targets < num_rf:
        raise ConfigError("num_targets", num_targets,
                          f"the auto-regressive policy picks J = num_bs * num_rf = {num_bs * num_rf} distinct "
                          f"(bs, target) pairs, which needs num_targets >= num_rf = {num_rf} (5e)")


def chains_per_bs(num_targets: int, num_rf: int) -> int:
    """Targets each BS tracks when it uses every RF chain it can: ``min(num_rf, num_targets)``."""
    return min(int(num_rf), int(num_targets))


def _as_binary(association: object, shape: tuple[int, int] | None) -> np.ndarray:
    """(5e): a 2-D array of 0/1 values of the expected shape, as bool."""
    a = np.asarray(association)
    if a.ndim != 2:
        raise ConstraintViolation("(5e)", f"association must be a 2-D (num_bs, num_targets) array, got shape {a.shape}")
    if shape is not None and a.shape != tuple(shape):
        raise ConstraintViolation("(5e)", f"association has shape {a.shape}, expected (num_bs, num_targets) = "
                                  f"{tuple(shape)}")
    if a.dtype == np.bool_:
        return a.copy()
    if a.dtype.kind not in "iuf":
        raise ConstraintViolation("(5e)", f"association entries must be 0/1 numbers or bools, got dtype {a.dtype}")
    bad = ~((a == 0) | (a == 1))
    if bad.any():
        bs, tg = np.nonzero(bad)
        where = ", ".join(f"[{m}, {i}] = {a[m, i]!r}" for m, i in zip(bs[:_MAX_LISTED], tg[:_MAX_LISTED]))
        raise ConstraintViolation("(5e)", f"association entries must be 0 or 1; {bad.sum()} are not: {where}")
    return a == 1


def _check_chains(a: np.ndarray, num_rf: int) -> None:
    """(5c): at most ``num_rf`` targets per BS."""
    load = a.sum(axis=1)
    over = np.flatnonzero(load > num_rf)
    if over.size:
        details = "; ".join(f"BS {m} tracks {load[m]} targets ({_list(np.flatnonzero(a[m]))})"
                            for m in over[:_MAX_LISTED])
        raise ConstraintViolation("(5c)", f"{details}, but each BS has only num_rf = {num_rf} RF chains")


def check_association(association: object, num_rf: int, *, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Check an association matrix against (5c)-(5e) and return it as bool.

    Parameters
    ----------
    association : array_like, shape (num_bs, num_targets)
        ``A[bs, target]``, bool or 0/1 numbers.
    num_rf : int
        RF chains per BS ``N_RF``.
    shape : (int, int), optional
        Expected ``(num_bs, num_targets)``.

    Returns
    -------
    np.ndarray of bool, shape (num_bs, num_targets)
        A copy of ``association`` as bool.

    Raises
    ------
    ConstraintViolation
        ``"(5e)"`` if it is not 2-D, has the wrong shape, or holds a value
        other than 0/1; ``"(5c)"`` if a BS tracks more than ``num_rf``
        targets; ``"(5d)"`` if a target has no BS. The message names the
        offending BSs/targets and their counts. Checked in that order.
    """
    a = _as_binary(association, shape)
    _check_chains(a, num_rf)
    cover = a.sum(axis=0)
    uncovered = np.flatnonzero(cover == 0)
    if uncovered.size:
        raise ConstraintViolation("(5d)", f"{uncovered.size} of {a.shape[1]} targets have no BS: "
                                  f"target(s) {_list(uncovered)}")
    return a


def uses_all_chains(association: np.ndarray, num_rf: int) -> bool:
    """True iff every BS tracks exactly ``min(num_rf, num_targets)`` targets (the form the solvers return)."""
    a = np.asarray(association, dtype=bool)
    return bool(np.all(a.sum(axis=1) == chains_per_bs(a.shape[1], num_rf)))


def pairs_to_association(pairs: object, num_bs: int, num_targets: int) -> np.ndarray:
    """Association matrix from a list of ``(bs, target)`` pairs, eq. (10).

    Parameters
    ----------
    pairs : array_like of int, shape (J, 2)
        Rows ``[bs_idx, target_idx]``. Rows ``[-1, -1]`` are padding (see
        :func:`association_to_pairs`) and are ignored.
    num_bs, num_targets : int
        ``M`` and ``I``.

    Returns
    -------
    np.ndarray of bool, shape (num_bs, num_targets)
        ``A[m, i] = True`` iff ``(m, i)`` is a row of ``pairs``. Only (5e) is
        checked here; call :func:`check_association` for (5c) and (5d).

    Raises
    ------
    ConstraintViolation
        ``"(5e)"`` if ``pairs`` is not ``(J, 2)`` integers, an index lies
        outside the ``num_bs x num_targets`` matrix (half-padded rows
        included), or a pair appears twice.
    """
    p = np.asarray(pairs)
    if p.size == 0:
        p = p.reshape(0, 2)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ConstraintViolation("(5e)", f"pairs must have shape (J, 2), got {p.shape}")
    if p.dtype.kind not in "iu":
        if p.dtype.kind == "f" and np.all(np.isfinite(p)) and np.all(p == np.round(p)):
            p = p.astype(np.int64)
        else:
            raise ConstraintViolation("(5e)", f"pairs must hold integer indices, got dtype {p.dtype}")
    p = p.astype(np.int64)
    p = p[~np.all(p == -1, axis=1)]
    bad = (p[:, 0] < 0) | (p[:, 0] >= num_bs) | (p[:, 1] < 0) | (p[:, 1] >= num_targets)
    if bad.any():
        rows = p[bad][:_MAX_LISTED]
        raise ConstraintViolation("(5e)", f"pair(s) {[tuple(int(v) for v in r) for r in rows]} lie outside the "
                                  f"num_bs x num_targets = {num_bs} x {num_targets} association matrix")
    flat = p[:, 0] * num_targets + p[:, 1]
    uniq, counts = np.unique(flat, return_counts=True)
    if np.any(counts > 1):
        dup = uniq[counts > 1]
        desc = ", ".join(f"(bs {k // num_targets}, target {k % num_targets}) x{c}"
                         for k, c in zip(dup[:_MAX_LISTED], counts[counts > 1][:_MAX_LISTED]))
        raise ConstraintViolation("(5e)", f"a (bs, target) pair may be chosen once; duplicated: {desc}")
    a = np.zeros((num_bs, num_targets), dtype=bool)
    a[p[:, 0], p[:, 1]] = True
    return a


def association_to_pairs(association: object, num_rf: int) -> np.ndarray:
    """Pair list of an association matrix, padded to ``J = num_bs * num_rf`` rows.

    Parameters
    ----------
    association : array_like, shape (num_bs, num_targets)
        Must satisfy (5e) and (5c); (5d) is not required here.
    num_rf : int
        RF chains per BS ``N_RF``.

    Returns
    -------
    np.ndarray of int64, shape (num_bs * num_rf, 2)
        Rows ``[bs_idx, target_idx]`` of the chosen pairs in BS-major order
        (by BS, then by target), followed by ``[-1, -1]`` padding rows for
        every unused RF chain. When every BS uses all its chains (the
        policy's and the solvers' form when ``num_targets >= num_rf``) there
        is no padding and the J rows are exactly the J sub-actions of eq. (10)
        in canonical order. :func:`pairs_to_association` ignores the padding,
        so the round trip is exact.

    Raises
    ------
    ConstraintViolation
        ``"(5e)"`` / ``"(5c)"`` as in :func:`check_association`.
    """
    a = _as_binary(association, None)
    _check_chains(a, num_rf)
    num_pairs = a.shape[0] * num_rf
    out = np.full((num_pairs, 2), -1, dtype=np.int64)
    bs, tg = np.nonzero(a)  # C order: BS-major, targets ascending
    out[: bs.size, 0] = bs
    out[: bs.size, 1] = tg
    return out


# --------------------------------------------------------------------------- mask


class MaskState(NamedTuple):
    """State of the auto-regressive construction after ``k`` sub-actions.

    Leading batch dimensions ``...`` are allowed; all three share them.

    Attributes
    ----------
    remaining_chains : np.ndarray of int64, shape (..., num_bs)
        ``v^{(j)}_m = N_RF - #{chosen pairs of BS m}``, the paper's context
        vector (Sec. 3.2). Its sum is the number of remaining sub-actions
        ``J - k``.
    covered : np.ndarray of bool, shape (..., num_targets)
        Target already has at least one BS.
    chosen : np.ndarray of bool, shape (..., num_bs, num_targets)
        Pair already chosen (the association built so far).
    """

    remaining_chains: np.ndarray
    covered: np.ndarray
    chosen: np.ndarray


def initial_mask_state(num_bs: int, num_targets: int, num_rf: int, batch_shape: tuple[int, ...] = ()) -> MaskState:
    """State before the first sub-action: all chains free, nothing covered or chosen.

    Raises
    ------
    ConfigError
        Sizes for which ``J = num_bs * num_rf`` distinct pairs covering every
        target do not exist (see :func:`check_problem_size`).
    """
    check_problem_size(num_bs, num_targets, num_rf, need_distinct_pairs=True)
    batch_shape = tuple(batch_shape)
    return MaskState(
        remaining_chains=np.full(batch_shape + (num_bs,), num_rf, dtype=np.int64),
        covered=np.zeros(batch_shape + (num_targets,), dtype=bool),
        chosen=np.zeros(batch_shape + (num_bs, num_targets), dtype=bool),
    )


def mask_from_state(remaining_chains: np.ndarray, covered: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Valid-pair mask from the construction state (batched; the torch twin mirrors it).

    Parameters
    ----------
    remaining_chains : array_like of int, shape (..., num_bs)
        RF chains still free per BS.
    covered : array_like of bool, shape (..., num_targets)
        Targets that already have a BS.
    chosen : array_like of bool, shape (..., num_bs, num_targets)
        Pairs already chosen.

    Returns
    -------
    np.ndarray of bool, shape (..., num_bs, num_targets)
        True = the pair may be chosen next. All-False only when no sub-action
        remains (``remaining_chains.sum(-1) == 0``).
    """
    remaining_chains = np.asarray(remaining_chains)
    covered = np.asarray(covered, dtype=bool)
    chosen = np.asarray(chosen, dtype=bool)
    # (5c) chains left, (5e) not chosen yet
    mask = (remaining_chains > 0)[..., :, None] & ~chosen
    # (5d): uncovered targets == remaining sub-actions J - k -> only uncovered targets
    steps_left = remaining_chains.sum(axis=-1)
    num_uncovered = (~covered).sum(axis=-1)
    must_cover = (num_uncovered >= steps_left)[..., None, None]
    return mask & (~must_cover | ~covered[..., None, :])


def apply_pair(state: MaskState, bs_idx: object, target_idx: object) -> MaskState:
    """State after choosing pair ``(bs_idx, target_idx)`` in every batch element.

    Parameters
    ----------
    state : MaskState
        Batch shape ``...``.
    bs_idx, target_idx : array_like of int, shape (...)
        The chosen pair per batch element. Not checked against the mask.

    Returns
    -------
    MaskState
        A new state (inputs are not modified).
    """
    remaining, covered, chosen = (np.array(x) for x in state)
    bs_idx = np.asarray(bs_idx, dtype=np.int64)
    target_idx = np.asarray(target_idx, dtype=np.int64)
    batch = chosen.shape[:-2]
    bs_idx = np.broadcast_to(bs_idx, batch)
    target_idx = np.broadcast_to(target_idx, batch)
    idx = np.indices(batch) if batch else ()
    idx = tuple(idx)
    remaining[idx + (bs_idx,)] -= 1
    covered[idx + (target_idx,)] = True
    chosen[idx + (bs_idx, target_idx)] = True
    return MaskState(remaining, covered, chosen)


def valid_pair_mask(chosen_pairs: object, num_bs: int, num_targets: int, num_rf: int) -> np.ndarray:
    """Mask of the next sub-action given the pairs chosen so far (Sec. 3.2).

    Parameters
    ----------
    chosen_pairs : array_like of int, shape (k, 2)
        Rows ``[bs_idx, target_idx]`` of the ``k`` sub-actions so far,
        ``0 <= k <= J = num_bs * num_rf``.
    num_bs, num_targets, num_rf : int
        ``M``, ``I``, ``N_RF``; need ``num_rf <= num_targets <= num_bs * num_rf``.

    Returns
    -------
    np.ndarray of bool, shape (num_bs, num_targets)
        True = allowed: the BS has an RF chain left (5c), the pair is new
        (5e), and, once the uncovered targets equal the ``J - k`` remaining
        sub-actions, the target is uncovered (5d).

    Raises
    ------
    ConfigError
        Sizes for which J distinct covering pairs do not exist.
    ConstraintViolation
        The chosen pairs already break (5e) (duplicate or out of range) or
        (5c) (a BS used more than ``num_rf`` chains).
    """
    check_problem_size(num_bs, num_targets, num_rf, need_distinct_pairs=True)
    chosen = pairs_to_association(chosen_pairs, num_bs, num_targets)
    _check_chains(chosen, num_rf)
    remaining = num_rf - chosen.sum(axis=1).astype(np.int64)
    return mask_from_state(remaining, chosen.any(axis=0), chosen)


# --------------------------------------------------------------------------- STOP token (interface 1)


def stop_action(num_bs: int, num_targets: int) -> int:
    """The STOP sub-action ``M * I`` (one past the last flat pair ``k = bs * I + target``)."""
    return int(num_bs) * int(num_targets)


class ActionState(NamedTuple):
    """State of the auto-regressive construction with the STOP token (batch dims ``...``).

    Attributes
    ----------
    remaining_chains : np.ndarray of int64, shape (..., num_bs)
        RF chains still free per BS. Before a STOP its sum is the number of
        remaining steps ``J - j``.
    covered : np.ndarray of bool, shape (..., num_targets)
        Target already has at least one BS.
    chosen : np.ndarray of bool, shape (..., num_bs, num_targets)
        Pairs chosen so far.
    stopped : np.ndarray of bool, shape (...)
        A STOP was chosen; every later step is STOP.
    """

    remaining_chains: np.ndarray
    covered: np.ndarray
    chosen: np.ndarray
    stopped: np.ndarray


def initial_action_state(num_bs: int, num_targets: int, num_rf: int,
                         batch_shape: tuple[int, ...] = ()) -> ActionState:
    """State before the first step: all chains free, nothing covered, chosen or stopped.

    Raises
    ------
    ConfigError
        A size is not a positive integer or ``num_targets > num_bs * num_rf``
        (see :func:`check_problem_size`). ``num_targets < num_rf`` is allowed:
        idle chains end with STOP.
    """
    check_problem_size(num_bs, num_targets, num_rf)
    batch_shape = tuple(batch_shape)
    return ActionState(
        remaining_chains=np.full(batch_shape + (num_bs,), num_rf, dtype=np.int64),
        covered=np.zeros(batch_shape + (num_targets,), dtype=bool),
        chosen=np.zeros(batch_shape + (num_bs, num_targets), dtype=bool),
        stopped=np.zeros(batch_shape, dtype=bool),
    )


def valid_action_mask(remaining_chains: np.ndarray, covered: np.ndarray, chosen: np.ndarray,
                      stopped: np.ndarray) -> np.ndarray:
    """Mask of the next step over the ``M * I`` pairs and STOP (batched; the torch twin mirrors it).

    Parameters
    ----------
    remaining_chains : array_like of int, shape (..., num_bs)
        RF chains still free per BS.
    covered : array_like of bool, shape (..., num_targets)
        Targets that already have a BS.
    chosen : array_like of bool, shape (..., num_bs, num_targets)
        Pairs already chosen.
    stopped : array_like of bool, shape (...)
        A STOP was already chosen.

    Returns
    -------
    np.ndarray of bool, shape (..., num_bs * num_targets + 1)
        Entry ``k = bs * I + target`` for the pair, the last entry for STOP.
        After a STOP only STOP is allowed (sticky). Before it, STOP is allowed
        iff every target is covered (5d), and a pair iff its BS has a chain
        left (5c), it is new (5e) and, once the uncovered targets equal the
        remaining chains, its target is uncovered (5d).

    The mask is exact (a step is allowed iff some completion by later pairs
    and STOPs satisfies (5c)-(5e)) and never all-False: with ``U`` uncovered
    targets and ``R`` free chains, ``U <= R`` holds at the start and is kept;
    ``U == 0`` allows STOP, and ``U > 0`` allows every uncovered target
    (unchosen by every BS) at every BS with a chain left. When ``U < R`` a
    pair with a covered target keeps ``U <= R - 1``, and the ``U`` uncovered
    targets can still be spread over the ``R - 1`` free chains (each is
    unchosen everywhere), then STOP.

    Raises
    ------
    ConstraintViolation
        ``"(5e)"`` if the leading shapes of the four inputs do not agree.
    """
    remaining_chains = np.asarray(remaining_chains)
    covered = np.asarray(covered, dtype=bool)
    chosen = np.asarray(chosen, dtype=bool)
    stopped = np.asarray(stopped, dtype=bool)
    batch = chosen.shape[:-2]
    if (remaining_chains.shape != batch + chosen.shape[-2:-1] or covered.shape != batch + chosen.shape[-1:]
            or stopped.shape != batch):
        raise ConstraintViolation("(5e)", f"state shapes disagree: remaining_chains {remaining_chains.shape}, "
                                  f"covered {covered.shape}, chosen {chosen.shape}, stopped {stopped.shape}; "
                                  f"expected (..., M), (..., I), (..., M, I), (...)")
    pairs = mask_from_state(remaining_chains, covered, chosen) & ~stopped[..., None, None]
    stop = stopped | covered.all(axis=-1)
    return np.concatenate([pairs.reshape(batch + (-1,)), stop[..., None]], axis=-1)


def apply_action(state: ActionState, action: object) -> ActionState:
    """State after step ``action`` (flat pair ``bs * I + target`` or STOP ``M * I``) in every batch element.

    Parameters
    ----------
    state : ActionState
        Batch shape ``...``.
    action : array_like of int, shape (...)
        Not checked against the mask (use :func:`valid_action_mask`), only
        against the range ``[0, M * I]``.

    Returns
    -------
    ActionState
        A new state (inputs are not modified). A STOP (or any step after one)
        only sets ``stopped``.

    Raises
    ------
    ConstraintViolation
        ``"(5e)"`` if an action lies outside ``[0, M * I]``.
    """
    remaining, covered, chosen, stopped = (np.array(x) for x in state)
    num_bs, num_targets = chosen.shape[-2:]
    stop = num_bs * num_targets
    batch = chosen.shape[:-2]
    act = np.broadcast_to(np.asarray(action, dtype=np.int64), batch)
    bad = (act < 0) | (act > stop)
    if bad.any():
        raise ConstraintViolation("(5e)", f"action(s) {_list(act[bad])} outside [0, M * I] = [0, {stop}] "
                                  f"(pairs k = bs * I + target, STOP = {stop})")
    is_pair = (act < stop) & ~stopped
    idx = tuple(np.indices(batch)) if batch else ()
    sel = tuple(ix[is_pair] for ix in idx) if batch else ()
    if is_pair.any():
        k = act[is_pair] if batch else act
        bs, tg = k // num_targets, k % num_targets
        remaining[sel + (bs,)] -= 1
        covered[sel + (tg,)] = True
        chosen[sel + (bs, tg)] = True
    stopped = stopped | (act == stop)
    return ActionState(remaining, covered, chosen, np.asarray(stopped))


def sub_actions_to_association(sub_actions: object, num_bs: int, num_targets: int) -> np.ndarray:
    """Association matrices from the policy's step sequences (pairs, then sticky STOPs).

    Parameters
    ----------
    sub_actions : array_like of int, shape (..., J)
        ``J = num_bs * num_rf`` steps per sequence, each in ``[0, M * I]``
        (flat pair ``bs * I + target`` or STOP ``M * I``).
    num_bs, num_targets : int
        ``M`` and ``I``.

    Returns
    -------
    np.ndarray of bool, shape (..., num_bs, num_targets)
        ``A[..., m, i] = True`` iff pair ``(m, i)`` is a step of the sequence.

    Raises
    ------
    ConfigError
        ``J`` is not a positive multiple of ``num_bs`` (``num_rf = J / M``).
    ConstraintViolation
        ``"(5e)"`` for a non-integer or out-of-range step, a pair after a
        STOP (STOP is sticky) or a pair chosen twice; ``"(5c)"`` if a BS has
        more than ``num_rf`` pairs; ``"(5d)"`` if a target has no BS. The
        message names the first offending sequence (flat batch index).
    """
    for name, value in (("num_bs", num_bs), ("num_targets", num_targets)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(name, value, "must be a positive integer")
    a = np.asarray(sub_actions)
    if a.ndim < 1:
        raise ConstraintViolation("(5e)", f"sub_actions must have shape (..., J), got a scalar {a!r}")
    if a.dtype.kind not in "iu":
        if a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
            a = a.astype(np.int64)
        else:
            raise ConstraintViolation("(5e)", f"sub_actions must hold integer steps, got dtype {a.dtype}")
    a = a.astype(np.int64)
    num_steps = a.shape[-1]
    if num_steps < 1 or num_steps % num_bs:
        raise ConfigError("sub_actions.shape[-1]", num_steps,
                          f"must be J = num_bs * num_rf, a positive multiple of num_bs = {num_bs}")
    num_rf = num_steps // num_bs
    check_problem_size(num_bs, num_targets, num_rf)
    stop = num_bs * num_targets
    batch = a.shape[:-1]
    flat = a.reshape(-1, num_steps)

    def first(bad_rows: np.ndarray) -> int:
        return int(np.flatnonzero(bad_rows)[0])

    bad = ((flat < 0) | (flat > stop)).any(axis=1)
    if bad.any():
        b = first(bad)
        raise ConstraintViolation("(5e)", f"sequence {b} {flat[b].tolist()} has a step outside [0, M * I] = "
                                  f"[0, {stop}] (pairs k = bs * I + target, STOP = {stop})")
    is_stop = flat == stop
    bad = (is_stop[:, :-1] & ~is_stop[:, 1:]).any(axis=1)
    if bad.any():
        b = first(bad)
        raise ConstraintViolation("(5e)", f"sequence {b} {flat[b].tolist()} has a pair after STOP = {stop} "
                                  f"(STOP is sticky)")
    counts = np.zeros((flat.shape[0], stop + 1), dtype=np.int64)
    np.add.at(counts, (np.arange(flat.shape[0])[:, None], flat), 1)
    counts = counts[:, :stop].reshape(-1, num_bs, num_targets)
    bad = (counts > 1).any(axis=(1, 2))
    if bad.any():
        b = first(bad)
        dup = np.argwhere(counts[b] > 1)
        raise ConstraintViolation("(5e)", f"sequence {b} chooses (bs, target) pair(s) "
                                  f"{[tuple(int(v) for v in r) for r in dup[:_MAX_LISTED]]} more than once")
    assoc = counts.astype(bool)
    load = assoc.sum(axis=2)
    bad = (load > num_rf).any(axis=1)
    if bad.any():
        b = first(bad)
        m = int(np.flatnonzero(load[b] > num_rf)[0])
        raise ConstraintViolation("(5c)", f"sequence {b}: BS {m} tracks {int(load[b, m])} targets, but each BS has "
                                  f"only num_rf = J / num_bs = {num_rf} RF chains")
    bad = ~assoc.any(axis=1).all(axis=1)
    if bad.any():
        b = first(bad)
        raise ConstraintViolation("(5d)", f"sequence {b}: target(s) {_list(np.flatnonzero(~assoc[b].any(axis=0)))} "
                                  f"have no BS")
    return assoc.reshape(batch + (num_bs, num_targets))


def association_to_sub_actions(association: object, num_rf: int) -> np.ndarray:
    """Canonical step sequence of an association: its pairs in BS-major order, then STOPs.

    Parameters
    ----------
    association : array_like, shape (num_bs, num_targets)
        Must satisfy (5c)-(5e) (checked).
    num_rf : int
        RF chains per BS ``N_RF``.

    Returns
    -------
    np.ndarray of int64, shape (num_bs * num_rf,)
        ``bs * I + target`` for each chosen pair (by BS, then by target),
        followed by STOP ``= M * I`` for every idle chain. The same order as
        :func:`association_to_pairs` (whose ``[-1, -1]`` rows are the STOPs);
        :func:`sub_actions_to_association` inverts it exactly.

    Raises
    ------
    ConstraintViolation
        As :func:`check_association`.
    """
    a = check_association(association, num_rf)
    num_bs, num_targets = a.shape
    pairs = association_to_pairs(a, num_rf)
    out = np.full(num_bs * num_rf, num_bs * num_targets, dtype=np.int64)
    used = pairs[:, 0] >= 0
    out[used] = pairs[used, 0] * num_targets + pairs[used, 1]
    return out
