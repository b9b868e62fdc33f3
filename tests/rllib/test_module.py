"""The RLModule and its distribution, without Ray: teacher forcing, masks, finite entropy/KL, cached encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns

from rl_isac.association import sub_actions_to_association
from rl_isac.rllib.distribution import MaskedARDistribution
from rl_isac.rllib.mask import MASKED_LOGIT
from rl_isac.rllib.module import ENC_U, ENC_Z, ISACPPOModule
from rl_isac.rllib.module import exploration_rollout as rollout


def test_teacher_forced_logp_equals_exploration_logp(env4, module4):
    ob, acts, cat = rollout(env4, module4, 12)
    fo = module4.forward_train({Columns.OBS: ob, Columns.ACTIONS: acts})
    dist = module4.get_train_action_dist_cls().from_logits(fo[Columns.ACTION_DIST_INPUTS])
    torch.testing.assert_close(dist.logp(acts), cat[Columns.ACTION_LOGP], atol=1e-5, rtol=0)
    torch.testing.assert_close(fo[Columns.ACTION_DIST_INPUTS], cat[Columns.ACTION_DIST_INPUTS], atol=1e-5, rtol=1e-4)
    # the exploration distribution rebuilt from the stored inputs scores the same
    old = module4.get_exploration_action_dist_cls().from_logits(cat[Columns.ACTION_DIST_INPUTS])
    torch.testing.assert_close(old.logp(acts), cat[Columns.ACTION_LOGP], atol=1e-5, rtol=0)
    assert torch.isfinite(old.kl(dist)).all() and old.kl(dist).abs().max() < 1e-4
    # gradients flow to the actor only (the encoder is frozen) and are finite
    loss = -(dist.logp(acts).mean() + 0.01 * dist.entropy().mean())
    loss.backward()
    assert all(p.grad is None for p in module4.dgnn.parameters())
    grads = [p.grad for n, p in module4.named_parameters() if not n.startswith("dgnn") and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    module4.zero_grad(set_to_none=True)


def test_regrouped_training_logits_equal_the_step_scorer_and_its_gradients(env4, module4):
    """train_logits (the learner's cheaper regrouping) is step_logits on E = pair_hidden(h): same logits and
    the same parameter gradients, on a rollout's observations and stored steps."""
    from rl_isac.rllib.mask import states_from_actions

    ob, acts, _ = rollout(env4, module4, 10, seed=5)
    M, I, R, J = module4.num_bs, module4.num_targets, module4.num_rf, module4.num_steps
    enc = module4.encode(ob)
    pairs = acts["pairs"].long()
    w = torch.randn(10, J, M * I + 1, generator=torch.Generator().manual_seed(0))
    outs = []
    for regrouped in (False, True):
        module4.zero_grad(set_to_none=True)
        if regrouped:
            logits = module4.train_logits(ob, enc, pairs)
        else:
            E, g = module4.pair_embeddings(ob, enc)
            logits = module4.step_logits(E, g, ob, *states_from_actions(pairs, M, I, R), step=torch.arange(J))
        valid = logits > -1e8
        (torch.where(valid, logits, 0.0) * w).sum().backward()
        outs.append((logits.detach(), {n: p.grad.clone() for n, p in module4.named_parameters() if p.grad is not None}))
    module4.zero_grad(set_to_none=True)
    torch.testing.assert_close(outs[1][0], outs[0][0], atol=1e-4, rtol=1e-5)
    assert outs[0][1].keys() == outs[1][1].keys() and "pair_hidden.weight" in outs[0][1]
    for name, grad in outs[0][1].items():
        torch.testing.assert_close(outs[1][1][name], grad, atol=1e-4, rtol=1e-4, msg=name)


def test_cached_encoder_outputs_give_the_same_training_pass_and_values(env4, module4):
    ob, acts, cat = rollout(env4, module4, 8, seed=3)
    fresh = module4.forward_train({Columns.OBS: ob, Columns.ACTIONS: acts})
    cached = module4.forward_train({Columns.OBS: ob, Columns.ACTIONS: acts, ENC_Z: cat[ENC_Z], ENC_U: cat[ENC_U]})
    torch.testing.assert_close(cached[Columns.ACTION_DIST_INPUTS], fresh[Columns.ACTION_DIST_INPUTS])
    with torch.no_grad():
        v1 = module4.compute_values({Columns.OBS: ob})
        v2 = module4.compute_values({Columns.OBS: ob, ENC_Z: cat[ENC_Z], ENC_U: cat[ENC_U]})
        v3 = module4.compute_values({Columns.OBS: ob}, embeddings=fresh[Columns.EMBEDDINGS])
    torch.testing.assert_close(v1, v2)
    torch.testing.assert_close(v1, v3)
    assert v1.shape == (8,)


def test_learner_batch_without_encoder_inputs_gives_the_same_training_pass(env4, module4):
    """DropEncoderInputs removes the DGNN-only keys (features, ...) where the cached encodings are, and the
    training pass and the values of the lighter batch are the full batch's; a batch without the cache keeps all."""
    from rl_isac.rllib.learner import DropEncoderInputs
    from rl_isac.rllib.module import ENCODER_ONLY_OBS_KEYS

    ob, acts, cat = rollout(env4, module4, 8, seed=4)
    full = {Columns.OBS: ob, Columns.ACTIONS: acts, ENC_Z: cat[ENC_Z], ENC_U: cat[ENC_U]}
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModule

    multi = MultiRLModule(rl_module_specs={})
    multi.add_module("cu_policy", module4)
    batch = DropEncoderInputs()(rl_module=multi, batch={"cu_policy": dict(full), "other": {Columns.OBS: dict(ob)}},
                                episodes=[])
    light = batch["cu_policy"]
    assert "features" in ENCODER_ONLY_OBS_KEYS and not set(ENCODER_ONLY_OBS_KEYS) & set(light[Columns.OBS])
    assert set(batch["other"][Columns.OBS]) == set(ob)  # no cached encodings: nothing dropped
    from rl_isac.rllib.module import TF_KEYS

    assert set(TF_KEYS) <= set(light) and not set(TF_KEYS) & set(full)  # the teacher-forcing inputs were added
    with torch.no_grad():
        a, b = module4.forward_train(full), module4.forward_train(light)
        torch.testing.assert_close(b[Columns.ACTION_DIST_INPUTS], a[Columns.ACTION_DIST_INPUTS], atol=0, rtol=0)
        torch.testing.assert_close(module4.compute_values(light), module4.compute_values(full), atol=0, rtol=0)
        # a minibatch of the batch (rows sliced, as RLlib's iterator does) reads its rows of the columns
        rows = torch.tensor([5, 0, 3])
        sub = {Columns.OBS: {k: v[rows] for k, v in light[Columns.OBS].items()},
               Columns.ACTIONS: {k: v[rows] for k, v in acts.items()}, ENC_Z: cat[ENC_Z][rows], ENC_U: cat[ENC_U][rows],
               **{k: light[k][rows] for k in TF_KEYS}}
        torch.testing.assert_close(module4.forward_train(sub)[Columns.ACTION_DIST_INPUTS],
                                   a[Columns.ACTION_DIST_INPUTS][rows], atol=1e-5, rtol=1e-5)


def test_actions_are_feasible_and_outputs_deterministic(env4, module4):
    ob, acts, cat = rollout(env4, module4, 6)
    sub_actions_to_association(acts["pairs"].numpy(), env4.cfg.num_bs, env4.cfg.num_targets)
    with torch.no_grad():
        a = module4.forward_inference({Columns.OBS: ob})[Columns.ACTIONS]
        b = module4.forward_inference({Columns.OBS: ob})[Columns.ACTIONS]
        enc = module4.encode(ob)
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    # estimate and beams are the encoder's deterministic outputs, the same in exploration
    torch.testing.assert_close(a["estimate"], enc["u_hat"].reshape(6, -1).float())
    torch.testing.assert_close(acts["estimate"], a["estimate"])
    torch.testing.assert_close(acts["beams"], a["beams"])


def test_entropy_and_kl_finite_with_all_but_one_masked():
    B, J, C = 5, 12, 25
    gen = torch.Generator().manual_seed(0)
    logits = torch.full((B, J, C), MASKED_LOGIT)
    keep = torch.randint(0, C, (B, J), generator=gen)
    logits.scatter_(-1, keep[..., None], torch.randn(B, J, 1, generator=gen))
    extra = torch.zeros(B, 48 * 8 + 8)
    inp = torch.cat([logits.reshape(B, -1), extra], -1).requires_grad_(True)
    kw = dict(num_steps=J, num_choices=C, num_beams=48 * 8, num_estimate=8)
    d = MaskedARDistribution.from_logits(inp, **kw)
    other = MaskedARDistribution.from_logits(inp.detach() + torch.randn(inp.shape, generator=gen), **kw)
    ent, kl = d.entropy(), d.kl(other)
    assert torch.isfinite(ent).all() and torch.isfinite(kl).all()
    torch.testing.assert_close(ent, torch.zeros(B), atol=1e-6, rtol=0)
    torch.testing.assert_close(kl, torch.zeros(B), atol=1e-6, rtol=0)
    torch.testing.assert_close(d.logp({"pairs": keep}), torch.zeros(B), atol=1e-6, rtol=0)
    (ent.sum() + kl.sum() + d.logp(keep).sum()).backward()
    assert torch.isfinite(inp.grad).all()
    # partially masked rows: entropy positive, finite, bounded by log(#allowed) per step
    logits = torch.where(torch.rand(B, J, C, generator=gen) < 0.5, torch.randn(B, J, C, generator=gen),
                         torch.full((B, J, C), MASKED_LOGIT))
    logits[..., 0] = 0.0
    d = MaskedARDistribution.from_logits(torch.cat([logits.reshape(B, -1), extra], -1), **kw)
    allowed = (logits > MASKED_LOGIT / 2).sum(-1).float()
    assert (d.entropy() <= torch.log(allowed).sum(-1) + 1e-5).all() and (d.entropy() > 0).all()
    s = d.sample()
    assert (logits.gather(-1, s["pairs"][..., None]) > MASKED_LOGIT / 2).all()  # samples never masked entries
    assert (logits.gather(-1, d.deterministic_sample()["pairs"][..., None]) > MASKED_LOGIT / 2).all()
    with pytest.raises(ValueError, match="columns"):
        MaskedARDistribution.from_logits(inp[:, :-1], **kw)


def test_probabilities_are_exact_except_below_the_float32_floor():
    """The flushed exp of MaskedARDistribution.probs: masked entries exactly 0, every other probability the plain
    exp (bit for bit) unless it lies below exp(LOG_PROB_FLOOR); entropy and KL then equal the float64 reference."""
    from rl_isac.rllib.distribution import LOG_PROB_FLOOR

    gen = torch.Generator().manual_seed(3)
    B, J, C = 64, 12, 49
    logits = torch.randn(B, J, C, generator=gen) * 40.0  # wide: some allowed entries fall below the floor
    logits = torch.where(torch.rand(B, J, C, generator=gen) < 0.6, logits, torch.full_like(logits, MASKED_LOGIT))
    logits[..., 0] = 0.0
    kw = dict(num_steps=J, num_choices=C, num_beams=4, num_estimate=2)
    d = MaskedARDistribution.from_logits(torch.cat([logits.reshape(B, -1), torch.zeros(B, 6)], -1), **kw)
    other = MaskedARDistribution.from_logits(
        torch.cat([(logits + torch.randn(B, J, C, generator=gen)).reshape(B, -1), torch.zeros(B, 6)], -1), **kw)
    lp = d.log_probs
    above = lp > LOG_PROB_FLOOR
    assert (~above).any() and (logits[~above] > MASKED_LOGIT / 2).any()  # the case is exercised
    assert torch.equal(d.probs[above], lp[above].exp()) and (d.probs[~above] == 0).all()
    lp64, olp64 = lp.double(), other.log_probs.double()
    torch.testing.assert_close(d.entropy().double(), -(lp64.exp() * lp64).sum((-1, -2)), atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(d.kl(other).double(), (lp64.exp() * (lp64 - olp64)).sum((-1, -2)), atol=1e-4,
                               rtol=1e-6)


def test_module_needs_the_dgnn_config(env4):
    with pytest.raises(ValueError, match="dgnn"):
        ISACPPOModule(observation_space=env4.observation_space, action_space=env4.action_space, model_config={})


def _random_fim(gen, shape):
    """Random positive-definite [xx, xy, yy] entries, log-uniform scales in [1e-2, 1e3] 1/m^2."""
    a = 10 ** (5 * torch.rand(shape, generator=gen) - 2)
    c = 10 ** (5 * torch.rand(shape, generator=gen) - 2)
    b = (2 * torch.rand(shape, generator=gen) - 1) * 0.9 * torch.sqrt(a * c)
    return torch.stack([a, b, c], -1)


@pytest.mark.parametrize("method", ["decode", "decode_numpy"])
@pytest.mark.parametrize("explore", [True, False])
def test_decoder_never_violates_and_agrees_with_teacher_forcing(module4, explore, method):
    """2 x 10^4 sequences of the module's decoder on random pair embeddings and informations satisfy
    (5c)-(5e) (the 10^5-sample property test of the shared mask logic is in test_mask_twin.py); the
    teacher-forced pass on the decoded steps gives back the decoder's logits, and greedy decoding
    takes their argmax at every step."""
    from rl_isac.rllib.mask import states_from_actions

    M, I, R = module4.num_bs, module4.num_targets, module4.num_rf
    H, J = module4.hidden, module4.num_steps
    gen = torch.Generator().manual_seed(1 + explore)
    with torch.no_grad():
        for _ in range(2):
            B = 10_000
            E = 3.0 * torch.randn(B, M * I, H, generator=gen)
            g = 3.0 * torch.randn(B, H, generator=gen)
            obs = {"pair_fim": _random_fim(gen, (B, M, I)), "prior_fim": _random_fim(gen, (B, I))}
            if method == "decode":
                pairs, logp, logits = module4.decode(E, g, obs, explore, generator=gen)
            else:
                pairs, logp, logits = module4.decode_numpy(E, g, obs, explore, rng=np.random.default_rng(B))
            sub_actions_to_association(pairs.numpy(), M, I)  # raises on any violation
            assert torch.isfinite(logp).all()
        n = 500
        sub = {k: v[:n] for k, v in obs.items()}
        tf = module4.step_logits(E[:n], g[:n], sub, *states_from_actions(pairs[:n], M, I, R), step=torch.arange(J))
    torch.testing.assert_close(tf, logits[:n], atol=1e-3, rtol=1e-4)  # logits of O(100) here
    if not explore:
        np.testing.assert_array_equal(tf.argmax(-1).numpy(), pairs[:n].numpy())
    lp = torch.log_softmax(tf, -1).gather(-1, pairs[:n, :, None])[..., 0].sum(-1)
    torch.testing.assert_close(lp, logp[:n], atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("method", ["decode", "decode_numpy"])
@pytest.mark.parametrize("explore", [True, False])
def test_empty_target_slots_are_never_chosen_nor_required(module4, explore, method):
    """A clustered observation's ``target_valid``: decoding never pairs an empty slot and covers every owned
    one (the env's own checker, rl_isac.clusters.check_cluster_pairs), and the teacher-forced mask of the
    decoded steps is the decoder's; without the key nothing changes (the other tests)."""
    from rl_isac.clusters import check_cluster_pairs
    from rl_isac.rllib.module import TF_MASK

    M, I, R, H = module4.num_bs, module4.num_targets, module4.num_rf, module4.hidden
    gen = torch.Generator().manual_seed(7 + 2 * explore)
    B = 3000
    valid = (torch.rand(B, I, generator=gen) < 0.6).float()
    valid[:50] = 0.0  # no owned target at all: STOP from the first step
    obs = {"pair_fim": _random_fim(gen, (B, M, I)), "prior_fim": _random_fim(gen, (B, I)), "target_valid": valid}
    E, g = 3.0 * torch.randn(B, M * I, H, generator=gen), 3.0 * torch.randn(B, H, generator=gen)
    with torch.no_grad():
        if method == "decode":
            pairs, logp, logits = module4.decode(E, g, obs, explore, generator=gen)
        else:
            pairs, logp, logits = module4.decode_numpy(E, g, obs, explore, rng=np.random.default_rng(B))
        tf_mask = module4.teacher_forcing_inputs(obs, pairs)[TF_MASK]
    assert torch.isfinite(logp).all()
    for b in range(B):
        assoc = check_cluster_pairs(pairs[b].numpy(), M, I, R, valid[b].numpy())  # raises on any violation
        np.testing.assert_array_equal(assoc.any(axis=0), valid[b].numpy() > 0.5)
    assert (pairs[:50] == M * I).all()
    np.testing.assert_array_equal(tf_mask.numpy(), (logits > MASKED_LOGIT / 2).numpy())


def test_warm_start_fits_the_expert_and_seeds_the_module(env4, dgnn_i4, tmp_path):
    """Behaviour cloning lowers the order-free imitation loss on the expert's associations, and a module
    built with ``init_state`` (what every runner and the learner get) has exactly its weights."""
    from rl_isac.rllib.warm_start import _encode_all, behaviour_clone, collect, set_nll
    from tests.rllib.conftest import make_module

    module = make_module(env4, dgnn_i4)
    cfg = env4.cfg.replace(num_blocks=5)
    data = collect(cfg, "dgnn-milp", str(dgnn_i4), episodes=2, seed=9, gamma=0.9)
    assert data["pairs"].shape == (10, cfg.num_pairs) and np.isfinite(data["returns"]).all()
    sub_actions_to_association(data["pairs"], cfg.num_bs, cfg.num_targets)
    z, u = _encode_all(module, data)
    obs = {k: torch.as_tensor(v) for k, v in data["obs"].items()}
    enc = {"z": z.reshape(10, cfg.num_targets, -1), "u_tilde": u.reshape(10, cfg.num_targets, 2)}

    def loss():
        with torch.no_grad():
            return float(set_nll(module, obs, enc, torch.as_tensor(data["pairs"])).mean())

    before = loss()
    metrics = behaviour_clone(module, cfg, str(dgnn_i4), episodes=2, val_episodes=2, epochs=6, seed=9, gamma=0.9,
                              echo=lambda msg: None)
    assert loss() < before and len(metrics["history"]) == 6
    assert 0.0 <= metrics["final"]["pair_recall"] <= 1.0
    path = tmp_path / "ws.pt"
    torch.save(module.state_dict(), path)
    from rl_isac.rllib.module import ISACPPOModule

    again = ISACPPOModule(observation_space=env4.observation_space, action_space=env4.action_space,
                          model_config={**module.model_config, "init_state": str(path)})
    for (name, a), (_, b) in zip(module.state_dict().items(), again.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_train_eval_modes_and_the_frozen_encoder(env4, dgnn_i4):
    from tests.rllib.conftest import make_module

    m = make_module(env4, dgnn_i4)
    m.train()
    assert m.training and m.pair_hidden.training and not m.dgnn.training
    assert not any(mod.training for mod in m.dgnn.modules())
    m.eval()
    assert not any(mod.training for mod in m.modules())
    m.train()
    ob, _, _ = rollout(env4, m, 2)
    assert m.training and m.pair_hidden.training and not m.dgnn.training  # forward_* restore the mode
    assert all(not p.requires_grad for p in m.dgnn.parameters())


def test_dagger_labels_policy_states_with_the_expert_and_critic_targets_follow_the_reward(env4, dgnn_i4):
    """DAgger data: the world executes the policy's association while the label stays the expert's; the
    warm start's returns use the env's reward (Fisher weight, scale, normalisation)."""
    from rl_isac.association.constraints import check_association
    from rl_isac.rllib.warm_start import behaviour_clone, collect, greedy_policy
    from tests.rllib.conftest import make_module

    module = make_module(env4, dgnn_i4)
    cfg = env4.cfg.replace(num_blocks=4)
    executed = []
    base = greedy_policy(module, cfg.num_bs, cfg.num_targets)

    def policy(obs):
        executed.append(base(obs))
        return executed[-1]

    expert = collect(cfg, "dgnn-milp", str(dgnn_i4), episodes=1, seed=3, gamma=0.9)
    dag = collect(cfg, "dgnn-milp", str(dgnn_i4), episodes=1, seed=3, gamma=0.9, policy=policy)
    assert len(executed) == 4 and all(check_association(a, cfg.num_rf).shape == (cfg.num_bs, 4) for a in executed)
    # same world seed, same first observation and label; the label is the expert's, never the policy's
    np.testing.assert_array_equal(dag["pairs"][0], expert["pairs"][0])
    fisher = collect(cfg, "dgnn-milp", str(dgnn_i4), episodes=1, seed=3, gamma=0.9, reward=(1.0, 2.0, False))
    assert fisher["returns"][-1] < 0 and not np.allclose(fisher["returns"], 2 * expert["returns"])
    norm = collect(cfg, "dgnn-milp", str(dgnn_i4), episodes=1, seed=3, gamma=0.9, reward=(0.0, 1.0, True))
    assert np.std(norm["returns"]) == pytest.approx(1.0, rel=1e-4)
    metrics = behaviour_clone(module, cfg, str(dgnn_i4), episodes=2, val_episodes=2, epochs=1, seed=9, gamma=0.9,
                              dagger_rounds=1, echo=lambda msg: None)
    assert metrics["samples"] == 2 * 4 + 1 * 4 and [h["round"] for h in metrics["history"]] == [0, 1]
