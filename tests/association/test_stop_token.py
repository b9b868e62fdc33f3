"""The STOP token (interface 1): idle chains, sticky STOP, an exact mask over pairs + STOP."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rl_isac.association import (
    apply_action,
    association_to_pairs,
    association_to_sub_actions,
    check_association,
    initial_action_state,
    stop_action,
    sub_actions_to_association,
    valid_action_mask,
)
from rl_isac.errors import ConfigError, ConstraintViolation

# (M, I, N_RF); includes I < N_RF (idle chains are then unavoidable) and I == M * N_RF (no slack)
SIZES = [(1, 1, 1), (2, 1, 2), (2, 2, 1), (2, 3, 2), (3, 4, 2), (3, 3, 1), (2, 4, 2), (3, 2, 3), (4, 6, 2), (6, 8, 2)]


def sample_sequences(num_bs, num_targets, num_rf, batch, rng, stop_bias=0.0):
    """``batch`` sequences of J steps sampled from ``softmax(logits)`` under the mask (Gumbel-max), batched."""
    stop = stop_action(num_bs, num_targets)
    state = initial_action_state(num_bs, num_targets, num_rf, batch_shape=(batch,))
    steps, stopped_before = [], []
    for _ in range(num_bs * num_rf):
        mask = valid_action_mask(*state)
        assert mask.shape == (batch, stop + 1)
        assert mask.any(axis=1).all(), "all-False mask"
        # sticky: once stopped, STOP is the only allowed step
        np.testing.assert_array_equal(mask[state.stopped], np.eye(stop + 1, dtype=bool)[[stop] * state.stopped.sum()])
        logits = 3.0 * rng.standard_normal((batch, stop + 1))
        logits[:, stop] += stop_bias
        act = np.argmax(np.where(mask, logits + rng.gumbel(size=logits.shape), -np.inf), axis=1)
        stopped_before.append(state.stopped.copy())
        steps.append(act)
        state = apply_action(state, act)
    return np.stack(steps, axis=1), np.stack(stopped_before, axis=1), state


@pytest.mark.parametrize("stop_bias", [-5.0, 0.0, 5.0])
def test_ten_thousand_sampled_sequences_satisfy_5c_to_5e_and_stop_is_sticky(stop_bias):
    rng = np.random.default_rng({-5.0: 10, 0.0: 11, 5.0: 12}[stop_bias])
    total, idle_seen = 0, 0
    for num_bs, num_targets, num_rf in SIZES:
        batch = 400
        seqs, stopped_before, state = sample_sequences(num_bs, num_targets, num_rf, batch, rng, stop_bias)
        stop = stop_action(num_bs, num_targets)
        is_stop = seqs == stop
        assert not (is_stop[:, :-1] & ~is_stop[:, 1:]).any(), "a pair after a STOP"
        np.testing.assert_array_equal(stopped_before[:, 1:], is_stop[:, :-1])
        assoc = sub_actions_to_association(seqs, num_bs, num_targets)  # raises on any (5c)-(5e) violation
        assert assoc.shape == (batch, num_bs, num_targets)
        for b in range(batch):
            a = check_association(assoc[b], num_rf)  # (5c), (5d), (5e) independently of the converter
            np.testing.assert_array_equal(a, state.chosen[b])
            assert a.sum() == (~is_stop[b]).sum()
            # canonical form round-trips to the same association
            canon = association_to_sub_actions(a, num_rf)
            np.testing.assert_array_equal(sub_actions_to_association(canon, num_bs, num_targets), a)
        idle_seen += int(is_stop.any(axis=1).sum())
        total += batch
    assert total >= 10_000 // 3  # three stop biases -> >= 10^4 sequences in all
    if stop_bias > 0:
        assert idle_seen > total // 4  # the sampler really exercised STOP


def _feasible_supersets(num_bs, num_targets, num_rf):
    """All associations satisfying (5c)-(5e), as an (n, M, I) bool array (brute force)."""
    grids = np.array(list(itertools.product([False, True], repeat=num_bs * num_targets)), dtype=bool)
    grids = grids.reshape(-1, num_bs, num_targets)
    ok = (grids.sum(axis=2) <= num_rf).all(axis=1) & grids.any(axis=1).all(axis=1)
    return grids[ok]


@pytest.mark.parametrize(("num_bs", "num_targets", "num_rf"),
                         [(1, 1, 1), (2, 1, 2), (2, 2, 1), (2, 3, 2), (3, 3, 1), (2, 4, 2), (3, 2, 3), (4, 4, 1)])
def test_mask_is_exact_on_every_reachable_state(num_bs, num_targets, num_rf):
    """A step is allowed iff some completion (later pairs and STOPs) gives a feasible association."""
    feasible = _feasible_supersets(num_bs, num_targets, num_rf)
    stop = stop_action(num_bs, num_targets)
    checked = 0
    for bits in itertools.product([False, True], repeat=num_bs * num_targets):
        chosen = np.array(bits, dtype=bool).reshape(num_bs, num_targets)
        load = chosen.sum(axis=1)
        if (load > num_rf).any():
            continue
        completable = bool(np.all(feasible >= chosen, axis=(1, 2)).any())
        if not completable:
            continue  # not reachable under an exact mask
        args = (num_rf - load, chosen.any(axis=0), chosen)
        mask = valid_action_mask(*args, np.bool_(False))
        for m, i in itertools.product(range(num_bs), range(num_targets)):
            nxt = chosen.copy()
            nxt[m, i] = True
            expect = (not chosen[m, i]) and bool(np.all(feasible >= nxt, axis=(1, 2)).any())
            assert mask[m * num_targets + i] == expect, (chosen.astype(int).tolist(), (m, i))
        assert mask[stop] == bool(chosen.any(axis=0).all())  # STOP iff the empty completion is feasible
        if chosen.any(axis=0).all():  # a stopped state: only STOP
            stopped_mask = valid_action_mask(*args, np.bool_(True))
            assert stopped_mask[stop] and stopped_mask.sum() == 1
        checked += 1
    assert checked > 1


def test_batched_mask_matches_single_states():
    rng = np.random.default_rng(5)
    num_bs, num_targets, num_rf, batch = 3, 4, 2, 32
    state = initial_action_state(num_bs, num_targets, num_rf, batch_shape=(batch,))
    for _ in range(num_bs * num_rf):
        masks = valid_action_mask(*state)
        for b in range(batch):
            single = valid_action_mask(state.remaining_chains[b], state.covered[b], state.chosen[b], state.stopped[b])
            np.testing.assert_array_equal(masks[b], single)
        act = np.argmax(np.where(masks, rng.standard_normal(masks.shape), -np.inf), axis=1)
        state = apply_action(state, act)


def test_canonical_sub_actions_are_the_pair_rows_then_stops():
    a = np.array([[1, 0, 1], [0, 1, 0]], dtype=bool)  # BS 1 leaves one chain idle
    seq = association_to_sub_actions(a, num_rf=2)
    assert seq.dtype == np.int64
    np.testing.assert_array_equal(seq, [0 * 3 + 0, 0 * 3 + 2, 1 * 3 + 1, 6])
    pairs = association_to_pairs(a, 2)
    np.testing.assert_array_equal(pairs[seq == 6], [[-1, -1]])
    np.testing.assert_array_equal(sub_actions_to_association(seq, 2, 3), a)


def test_apply_action_is_pure_and_stop_only_sets_stopped():
    state = initial_action_state(2, 3, 2)
    new = apply_action(state, 1 * 3 + 2)
    assert not state.chosen.any() and not state.stopped
    assert new.chosen[1, 2] and new.remaining_chains[1] == 1 and new.covered[2] and not new.stopped
    stopped = apply_action(new, 6)
    assert stopped.stopped and stopped.chosen.sum() == 1
    after = apply_action(stopped, 0)  # a pair after STOP changes nothing (the mask forbids it anyway)
    assert after.stopped and after.chosen.sum() == 1
    with pytest.raises(ConstraintViolation, match=r"\(5e\).*outside"):
        apply_action(state, 7)


@pytest.mark.parametrize(("seq", "rule", "text"), [
    ([0, 6, 4, 6], "(5e)", "after STOP"),
    ([0, 0, 4, 5], "(5e)", "more than once"),
    ([0, 1, 7, 6], "(5e)", "outside"),
    ([0, 1, 2, 6], "(5c)", "BS 0 tracks 3"),
    ([0, 1, 6, 6], "(5d)", "target"),
])
def test_bad_sequences_raise_naming_the_rule(seq, rule, text):
    with pytest.raises(ConstraintViolation) as err:
        sub_actions_to_association(np.array([[0, 4, 5, 6], seq]), 2, 3)
    assert err.value.constraint == rule
    assert text in str(err.value) and "sequence 1" in str(err.value)


def test_sequence_length_must_be_a_multiple_of_num_bs():
    with pytest.raises(ConfigError) as err:
        sub_actions_to_association(np.array([0, 1, 6]), 2, 3)
    assert err.value.field == "sub_actions.shape[-1]"
