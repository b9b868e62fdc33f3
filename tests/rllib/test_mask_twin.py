"""The torch mask twin equals rl_isac.association's numpy mask; teacher-forcing states equal sequential ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rl_isac.association import apply_action, initial_action_state, sub_actions_to_association, valid_action_mask
from rl_isac.rllib import mask as tmask
from rl_isac.rllib.module import ar_decode

SIZES = [(2, 1, 2), (2, 2, 1), (2, 3, 2), (3, 4, 2), (3, 2, 3), (6, 4, 2), (6, 8, 2)]


def _np_sequences(M, I, R, batch, rng):
    """Random feasible sequences (numpy mask, random logits) and the numpy state before each step."""
    state = initial_action_state(M, I, R, batch_shape=(batch,))
    seqs, states = [], []
    for _ in range(M * R):
        states.append(state)
        mask = valid_action_mask(*state)
        logits = 3.0 * rng.standard_normal(mask.shape)
        logits[:, -1] += rng.normal(0, 3)  # vary how often STOP is taken
        act = np.argmax(np.where(mask, logits + rng.gumbel(size=mask.shape), -np.inf), axis=1)
        seqs.append(act)
        state = apply_action(state, act)
    return np.stack(seqs, 1), states


@pytest.mark.parametrize("M,I,R", SIZES)
def test_torch_mask_equals_numpy_on_reachable_and_random_states(M, I, R):
    rng = np.random.default_rng(M * 100 + I * 10 + R)
    seqs, states = _np_sequences(M, I, R, 256, rng)
    for st in states:
        t = tmask.valid_action_mask(torch.as_tensor(st.remaining_chains), torch.as_tensor(st.covered),
                                    torch.as_tensor(st.chosen), torch.as_tensor(st.stopped))
        np.testing.assert_array_equal(t.numpy(), valid_action_mask(*st))
    # arbitrary (also unreachable) states: the two must still agree entry by entry
    B = 512
    rem = rng.integers(0, R + 1, (B, M))
    cov = rng.random((B, I)) < 0.5
    cho = rng.random((B, M, I)) < 0.3
    stp = rng.random(B) < 0.2
    t = tmask.valid_action_mask(*(torch.as_tensor(x) for x in (rem, cov, cho, stp)))
    np.testing.assert_array_equal(t.numpy(), valid_action_mask(rem, cov, cho, stp))


@pytest.mark.parametrize("M,I,R", SIZES)
def test_teacher_forcing_states_equal_sequential_states(M, I, R):
    rng = np.random.default_rng(7 + M + I + R)
    seqs, states = _np_sequences(M, I, R, 128, rng)
    rem, cov, cho, stp = tmask.states_from_actions(torch.as_tensor(seqs), M, I, R)
    for j, st in enumerate(states):
        np.testing.assert_array_equal(rem[:, j].numpy(), st.remaining_chains)
        np.testing.assert_array_equal(cov[:, j].numpy(), st.covered)
        np.testing.assert_array_equal(cho[:, j].numpy(), st.chosen)
        np.testing.assert_array_equal(stp[:, j].numpy(), st.stopped)


@pytest.mark.parametrize("explore", [True, False])
@pytest.mark.parametrize("M,I,R", [(6, 4, 2), (6, 8, 2), (3, 2, 3)])
def test_1e5_decoded_actions_from_random_logits_never_violate(M, I, R, explore):
    """The module's decoder with random logits: every one of 10^5 sequences satisfies (5c)-(5e)."""
    gen = torch.Generator().manual_seed(M + I + R)
    B = 100_000

    def score(state, j):  # random logits, large spread and a random STOP preference
        logits = 4.0 * torch.randn(B, M * I + 1, generator=gen)
        logits[:, -1] += 4.0 * torch.randn(B, generator=gen)
        return logits

    pairs, logp, rows = ar_decode(score, B, M, I, R, explore, generator=gen)
    assoc = sub_actions_to_association(pairs.numpy(), M, I)  # raises on any (5c)-(5e)/STOP violation
    assert assoc.shape == (B, M, I)
    assert (assoc.sum(-1) <= R).all() and assoc.any(-2).all()
    assert torch.isfinite(logp).all()
    # the stored rows give back the same joint log-probability (what PPO's teacher forcing relies on)
    lp = torch.log_softmax(rows, -1).gather(-1, pairs[..., None]).squeeze(-1).sum(-1)
    torch.testing.assert_close(lp, logp)
    if explore:  # sampling explores: STOP and several distinct associations occur
        assert len(np.unique(assoc.reshape(B, -1)[:2000], axis=0)) > 20
