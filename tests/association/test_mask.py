"""The auto-regressive mask (Sec. 3.2): sampled actions always satisfy (5c)-(5e)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rl_isac.association import (
    apply_pair,
    check_association,
    initial_mask_state,
    mask_from_state,
    pairs_to_association,
    uses_all_chains,
    valid_pair_mask,
)
from rl_isac.errors import ConfigError, ConstraintViolation


def random_sizes(rng: np.random.Generator) -> tuple[int, int, int]:
    """``(M, I, num_rf)`` with ``num_rf <= I <= M * num_rf``."""
    num_bs = int(rng.integers(1, 8))
    num_rf = int(rng.integers(1, 4))
    num_targets = int(rng.integers(num_rf, num_bs * num_rf + 1))
    return num_bs, num_targets, num_rf


def sample_masked(logits: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """One pair from ``softmax(logits)`` restricted to ``mask`` (Gumbel-max)."""
    scores = np.where(mask, logits + rng.gumbel(size=logits.shape), -np.inf)
    return np.unravel_index(int(np.argmax(scores)), mask.shape)


@pytest.mark.parametrize("style", ["normal", "prefer_covered", "prefer_one_bs"])
def test_sampling_from_the_mask_always_gives_a_feasible_full_association(style):
    rng = np.random.default_rng({"normal": 0, "prefer_covered": 1, "prefer_one_bs": 2}[style])
    for _ in range(150):
        num_bs, num_targets, num_rf = random_sizes(rng)
        num_pairs = num_bs * num_rf
        pairs = np.zeros((0, 2), dtype=np.int64)
        state = initial_mask_state(num_bs, num_targets, num_rf)
        for _step in range(num_pairs):
            mask = valid_pair_mask(pairs, num_bs, num_targets, num_rf)
            assert mask.any(), f"all-False mask at step {len(pairs)} for M={num_bs}, I={num_targets}, N_RF={num_rf}"
            np.testing.assert_array_equal(mask, mask_from_state(*state))  # the state form agrees
            logits = 3.0 * rng.standard_normal((num_bs, num_targets))
            chosen = pairs_to_association(pairs, num_bs, num_targets)
            if style == "prefer_covered":  # adversarial for (5d): pile onto covered targets
                logits += 50.0 * chosen.any(axis=0)[None, :]
            elif style == "prefer_one_bs":  # adversarial for (5c): pile onto BS 0
                logits[0] += 50.0
            bs, target = sample_masked(logits, mask, rng)
            pairs = np.vstack([pairs, [[bs, target]]])
            state = apply_pair(state, bs, target)
        assert not valid_pair_mask(pairs, num_bs, num_targets, num_rf).any()  # nothing left after J steps
        association = pairs_to_association(pairs, num_bs, num_targets)  # raises on a duplicate (5e)
        check_association(association, num_rf)  # (5c), (5d), (5e)
        assert uses_all_chains(association, num_rf)
        assert len(pairs) == num_pairs


def test_batched_state_mask_matches_the_pair_list_mask():
    rng = np.random.default_rng(3)
    num_bs, num_targets, num_rf, batch = 4, 5, 2, 16
    state = initial_mask_state(num_bs, num_targets, num_rf, batch_shape=(batch,))
    assert state.remaining_chains.shape == (batch, num_bs) and state.chosen.shape == (batch, num_bs, num_targets)
    pairs = [np.zeros((0, 2), dtype=np.int64) for _ in range(batch)]
    for _ in range(num_bs * num_rf):
        masks = mask_from_state(*state)
        assert masks.shape == (batch, num_bs, num_targets)
        picks = []
        for b in range(batch):
            np.testing.assert_array_equal(masks[b], valid_pair_mask(pairs[b], num_bs, num_targets, num_rf))
            picks.append(sample_masked(rng.standard_normal((num_bs, num_targets)), masks[b], rng))
            pairs[b] = np.vstack([pairs[b], [picks[-1]]])
        bs_idx, target_idx = np.array(picks).T
        state = apply_pair(state, bs_idx, target_idx)
    assert not mask_from_state(*state).any()
    assert (state.remaining_chains == 0).all() and state.covered.all()


def test_apply_pair_does_not_modify_its_input():
    state = initial_mask_state(2, 3, 2)
    new = apply_pair(state, 1, 2)
    assert not state.chosen.any() and (state.remaining_chains == 2).all()
    assert new.chosen[1, 2] and new.remaining_chains[1] == 1 and new.covered[2]


def _completable(chosen: np.ndarray, num_rf: int) -> bool:
    """Brute force: can the remaining chains be filled with new pairs so that (5c)-(5e) hold?"""
    free = num_rf - chosen.sum(axis=1)
    options = [list(itertools.combinations(np.flatnonzero(~chosen[m]), int(free[m]))) for m in range(len(free))]
    for pick in itertools.product(*options):
        full = chosen.copy()
        for m, targets in enumerate(pick):
            full[m, list(targets)] = True
        if full.any(axis=0).all():
            return True
    return False


def test_mask_allows_exactly_the_pairs_that_can_still_be_completed():
    rng = np.random.default_rng(4)
    for num_bs, num_targets, num_rf in [(2, 2, 1), (2, 3, 2), (3, 4, 2), (3, 3, 1), (2, 4, 2), (3, 5, 2), (2, 3, 3)]:
        for _ in range(6):
            pairs = np.zeros((0, 2), dtype=np.int64)
            for _step in range(num_bs * num_rf):
                mask = valid_pair_mask(pairs, num_bs, num_targets, num_rf)
                chosen = pairs_to_association(pairs, num_bs, num_targets)
                for m, i in itertools.product(range(num_bs), range(num_targets)):
                    ok = (not chosen[m, i]) and chosen[m].sum() < num_rf
                    if ok:
                        nxt = chosen.copy()
                        nxt[m, i] = True
                        ok = _completable(nxt, num_rf)
                    assert mask[m, i] == ok, (num_bs, num_targets, num_rf, pairs.tolist(), (m, i))
                pick = sample_masked(rng.standard_normal(mask.shape), mask, rng)
                pairs = np.vstack([pairs, [pick]])


def test_coverage_rule_kicks_in_when_uncovered_targets_equal_remaining_steps():
    # M=2, I=3, N_RF=2: J=4. After (0,0),(0,1): uncovered {2} with 2 steps left -> BS 1 free to pick anything.
    mask = valid_pair_mask([[0, 0], [0, 1]], 2, 3, 2)
    np.testing.assert_array_equal(mask, [[False, False, False], [True, True, True]])
    # After (0,0),(1,0): uncovered {1, 2}, 2 steps left -> only targets 1 and 2.
    mask = valid_pair_mask([[0, 0], [1, 0]], 2, 3, 2)
    np.testing.assert_array_equal(mask, [[False, True, True], [False, True, True]])


@pytest.mark.parametrize(("num_bs", "num_targets", "num_rf", "field"), [
    (3, 1, 2, "num_targets"),  # I < num_rf: J distinct pairs do not exist
    (2, 5, 2, "num_targets"),  # I > M * num_rf: (5d) impossible
    (0, 2, 1, "num_bs"),
    (2, 2, 0, "num_rf"),
])
def test_impossible_sizes_raise_a_config_error_naming_the_field(num_bs, num_targets, num_rf, field):
    with pytest.raises(ConfigError) as err:
        valid_pair_mask(np.zeros((0, 2), int), num_bs, num_targets, num_rf)
    assert err.value.field == field
    with pytest.raises(ConfigError):
        initial_mask_state(num_bs, num_targets, num_rf)


def test_chosen_pairs_that_already_break_a_constraint_are_refused():
    with pytest.raises(ConstraintViolation, match=r"\(5e\)"):
        valid_pair_mask([[0, 1], [0, 1]], 2, 3, 2)
    with pytest.raises(ConstraintViolation, match=r"\(5c\)"):
        valid_pair_mask([[0, 0], [0, 1], [0, 2]], 2, 3, 2)


def test_flat_index_is_bs_major_as_in_the_paper():
    mask = valid_pair_mask([[1, 2]], 2, 3, 2)
    flat = mask.reshape(-1)
    assert not flat[1 * 3 + 2]  # k = m * I + i
    assert flat.sum() == 5
