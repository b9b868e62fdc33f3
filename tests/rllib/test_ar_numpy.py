"""The lean numpy decoder (rl_isac.rllib.ar_numpy) gives the numbers of the previous loop bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rl_isac.rllib.mask import MASKED_LOGIT
from rl_isac.rllib.module import detection_tables, empty_slots
from rl_isac.rllib.observation import DETECTION_OBS_KEY, MILP_OBS_KEY


def reference_decode_numpy(self, E: torch.Tensor, g: torch.Tensor, obs: dict[str, torch.Tensor], explore: bool,
                           rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``ISACPPOModule.decode_numpy`` before the lean loop (commit 8426fe9), verbatim."""
    from scipy.special import erf

    def gelu(x):  # torch's default (exact) GELU
        return 0.5 * x * (1.0 + erf(x * np.float32(0.7071067811865476)))

    def tr_inv(m):
        a, b, c = m[..., 0], m[..., 1], m[..., 2]
        return (a + c) / np.maximum(a * c - b * b, np.float32(1e-12))

    En, gn = E.detach().cpu().numpy(), g.detach().cpu().numpy()
    B, P, H = En.shape
    M, I, R, J = self.num_bs, self.num_targets, self.num_rf, self.num_steps
    Wc = self.ctx_lin.weight.detach().numpy()
    bc = self.ctx_lin.bias.detach().numpy()
    W_state, w_step = Wc[:, :M + I].T.copy(), Wc[:, M + I]
    heads = En @ self.pair_heads.weight.detach().numpy().T + self.pair_heads.bias.detach().numpy()
    alpha, beta, gamma, bias = heads[..., 0], heads[..., 1], heads[..., 2], heads[..., 3]
    if self.num_extra:  # the extra features from the torch function (one call a step)
        keys = ("prior_fim", "pair_fim", DETECTION_OBS_KEY) + ((MILP_OBS_KEY,) if self.milp_features else ())
        det_obs = {k: obs[k].detach().cpu().float() for k in keys}
        tables = detection_tables(det_obs["prior_fim"], det_obs["pair_fim"])
    W1, b1 = self.stop_mlp[0].weight.detach().numpy(), self.stop_mlp[0].bias.detach().numpy()
    W2, b2 = self.stop_mlp[2].weight.detach().numpy(), self.stop_mlp[2].bias.detach().numpy()
    stop_g = gn @ W1[:, :H].T + b1
    stop_ctx_w = W1[:, H:].T.copy()
    pb, pt = self.pair_bs.cpu().numpy(), self.pair_target.cpu().numpy()
    fim = obs["pair_fim"].detach().cpu().numpy().astype(np.float32).reshape(B, P, 3)
    prior_p = obs["prior_fim"].detach().cpu().numpy().astype(np.float32)[:, pt]
    rem = np.ones((B, M), np.float32)
    cov = np.zeros((B, I), np.float32)
    cho = np.zeros((B, P), np.float32)
    pad = empty_slots(obs)
    if pad is not None:  # an empty target slot: covered (not required, (5d)) and chosen at every BS ((5e))
        cov = pad.cpu().numpy().astype(np.float32)
        cho = cov[:, pt].copy()
    acc = np.zeros((B, I, 3), np.float32)
    stopped = np.zeros(B, bool)
    rows_idx = np.arange(B)
    if explore:
        rng = rng if rng is not None else np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        gumbel = rng.gumbel(size=(J, B, P + 1)).astype(np.float32)
    actions, rows = np.empty((B, J), np.int64), np.empty((B, J, P + 1), np.float32)
    for j in range(J):
        ctx = np.concatenate([rem, cov], 1) @ W_state + (bc + np.float32(j / J) * w_step)
        rem_p, cov_p = rem[:, pb], cov[:, pt]
        A = prior_p + acc[:, pt]
        gain = np.log10(np.maximum(tr_inv(A) - tr_inv(A + fim), 0.0) + np.float32(1e-6)) / np.float32(4.0)
        pair_logits = (np.matmul(En, ctx[:, :, None])[..., 0] + alpha * cov_p + beta * rem_p + gamma * gain
                       + bias)
        if self.num_extra:
            extra = self._extra_features(det_obs, torch.from_numpy(cho.reshape(B, 1, M, I)), tables)[:, 0]
            pair_logits = pair_logits + (heads[..., 4:] * extra.numpy()).sum(-1)
        stop = gelu(stop_g + ctx @ stop_ctx_w) @ W2.T + b2                             # (B, 1)
        n_cov = cov.sum(1)
        must_cover = (I - n_cov) >= rem.sum(1) * R - 0.5
        ok = (rem_p > 0) & (cho < 0.5) & (~must_cover[:, None] | (cov_p < 0.5)) & ~stopped[:, None]
        mask = np.concatenate([ok, (stopped | (n_cov >= I))[:, None]], 1)
        logits = np.where(mask, np.concatenate([pair_logits, stop], 1), np.float32(MASKED_LOGIT))
        a = (logits + gumbel[j]).argmax(-1) if explore else logits.argmax(-1)
        actions[:, j] = a
        rows[:, j] = logits
        k = np.minimum(a, P - 1)
        f = ((a < P) & ~stopped).astype(np.float32)
        rem[rows_idx, pb[k]] -= f / R
        cho[rows_idx, k] += f
        t = pt[k]
        cov[rows_idx, t] = np.maximum(cov[rows_idx, t], f)
        acc[rows_idx, t] += f[:, None] * fim[rows_idx, k]
        stopped |= a == P
    pairs, logits = torch.from_numpy(actions), torch.from_numpy(rows)
    logp = torch.log_softmax(logits, -1).gather(-1, pairs[..., None])[..., 0].sum(1)
    return pairs, logp, logits


def _inputs(module, B: int, seed: int, pad: bool):
    gen = torch.Generator().manual_seed(seed)
    M, I, H = module.num_bs, module.num_targets, module.hidden

    def fim(shape):
        a = 10 ** (5 * torch.rand(shape, generator=gen) - 2)
        c = 10 ** (5 * torch.rand(shape, generator=gen) - 2)
        b = (2 * torch.rand(shape, generator=gen) - 1) * 0.9 * torch.sqrt(a * c)
        return torch.stack([a, b, c], -1)

    E = 3.0 * torch.randn(B, M * I, H, generator=gen)
    g = 3.0 * torch.randn(B, H, generator=gen)
    obs = {"pair_fim": fim((B, M, I)), "prior_fim": fim((B, I))}
    if pad:
        obs["target_valid"] = (torch.rand(B, I, generator=gen) < 0.6).float()
    if module.detection_features:
        obs[DETECTION_OBS_KEY] = torch.rand(B, M, I, generator=gen)
    if module.milp_features:
        obs[MILP_OBS_KEY] = (torch.rand(B, M, I, generator=gen) < 0.3).float()
    return E, g, obs


def _assert_bit_identical(module, cases, explore: bool, pad: bool, rtol: float = 0.0) -> int:
    """``rtol = 0``: pairs, joint logp and logits bit for bit; else pairs exactly, logp and logits to ``rtol``."""
    from rl_isac.rllib import ar_numpy

    stops = 0
    with torch.no_grad():
        for B, seed in cases:
            E, g, obs = _inputs(module, B, seed + 7919 * pad + 104729 * explore, pad)
            ref = reference_decode_numpy(module, E, g, obs, explore, rng=np.random.default_rng(seed))
            new = ar_numpy.decode_numpy(module, E, g, obs, explore, rng=np.random.default_rng(seed))
            via_module = module.decode_numpy(E, g, obs, explore, rng=np.random.default_rng(seed))
            for k, (r, n, v) in enumerate(zip(ref, new, via_module)):
                assert r.dtype == n.dtype and torch.equal(n, v), (B, seed)
                if rtol == 0.0 or k == 0:
                    assert torch.equal(r, n), (B, seed)
                else:
                    torch.testing.assert_close(n, r, rtol=rtol, atol=rtol)
            stops += int((ref[0] == module.num_pairs).sum())
    return stops


@pytest.mark.parametrize("pad", [False, True])
@pytest.mark.parametrize("explore", [False, True])
def test_lean_decoder_is_bit_identical_to_the_previous_loop(module4, explore, pad):
    """Pairs, joint log-probabilities and every step's masked logits equal exactly, at batch 1 (the CU's scalar
    state update, 300 draws) and at batches of 2-64 (the vectorised one), greedy and sampled (same Gumbel
    noise), with and without empty target slots; the module's own decode_numpy is the lean one."""
    cases = [(1, s) for s in range(300)] + [(B, 1000 + B) for B in (2, 3, 8, 16, 64)]
    assert _assert_bit_identical(module4, cases, explore, pad) > 0  # the STOP branch was exercised


@pytest.mark.parametrize("explore", [False, True])
def test_lean_decoder_with_the_detection_and_milp_features_agrees(env4, dgnn_i4, explore):
    """The actor options of issue 9 (extra step features, from one call on every BS set instead of one call a
    step) take the same lean loop: the same pairs, logits and logp to float rounding (1e-5 relative)."""
    from rl_isac.rllib.env import action_space, observation_space
    from rl_isac.rllib.module import ISACPPOModule
    from rl_isac.training.pretrain import load_configs

    torch.manual_seed(0)
    module = ISACPPOModule(observation_space=observation_space(env4.cfg, detection=True, milp=True),
                           action_space=action_space(env4.cfg),
                           model_config={"dgnn": load_configs(dgnn_i4)["dgnn"].to_dict(), "hidden": 16,
                                         "critic_hidden": 16, "detection_features": True, "milp_features": True})
    assert module.num_extra == 3
    cases = [(1, s) for s in range(60)] + [(B, 2000 + B) for B in (2, 8, 16)]
    _assert_bit_identical(module, cases, explore, pad=False, rtol=1e-5)
    _assert_bit_identical(module, [(1, 90 + s) for s in range(20)] + [(8, 3000)], explore, pad=True, rtol=1e-5)


def _env_observations(env, module, steps: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Observations of a greedy rollout of ``module`` in ``env`` (real windows, informations, coverage)."""
    from ray.rllib.core.columns import Columns

    obs, _ = env.reset(seed=seed)
    out = []
    for _ in range(steps):
        out.append(obs["cu_0"])
        act = module.forward_inference({Columns.OBS: {k: torch.as_tensor(v)[None] for k, v in obs["cu_0"].items()}})
        obs, _, term, _, _ = env.step({"cu_0": {k: v[0].numpy() for k, v in act[Columns.ACTIONS].items()}})
        if term["__all__"]:
            obs, _ = env.reset()
    return out


def test_numpy_inference_path_equals_the_torch_path(env4, module4, monkeypatch):
    """The CU's and the runners' small batches (numpy encoder, pair MLP and decoder) against the torch modules on
    real observations: encodings, pair embeddings and logits to 1e-5 (relative), the same pairs and beams."""
    from ray.rllib.core.columns import Columns

    from rl_isac.rllib import ar_numpy
    from rl_isac.rllib.module import ISACPPOModule
    from rl_isac.tracking.window import OBS_KEYS, stack_observations

    obs_list = _env_observations(env4, module4, 8, seed=3)  # a runner's batch (NUMPY_ENCODE_MAX_BATCH)
    ob = {k: torch.as_tensor(v) for k, v in stack_observations(obs_list).items()}
    assert module4._numpy_path(ob)
    with torch.no_grad():
        enc_np = module4.encode(ob)
        enc_t = module4.dgnn.infer({k: ob[k] for k in OBS_KEYS})
        torch.testing.assert_close(enc_np["u_hat"], enc_t["u_hat"], rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(enc_np["z"], enc_t["target_embedding"], rtol=1e-5, atol=1e-5)
        E_t, g_t = module4.pair_embeddings(ob, enc_np)
        E_n, g_n = ar_numpy.pair_embeddings(module4, {k: v.numpy() for k, v in ob.items()}, enc_np["z"].numpy(),
                                            enc_np["u_tilde"].numpy())
    np.testing.assert_allclose(E_n, E_t.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g_n, g_t.numpy(), rtol=1e-5, atol=1e-5)
    fast = module4.forward_inference({Columns.OBS: ob})
    monkeypatch.setattr(ISACPPOModule, "_numpy_path", lambda self, obs: False)  # the torch modules throughout
    slow = module4.forward_inference({Columns.OBS: ob})
    for key in ("pairs", "beams"):
        torch.testing.assert_close(fast[Columns.ACTIONS][key], slow[Columns.ACTIONS][key], rtol=0, atol=0)
    torch.testing.assert_close(fast[Columns.ACTIONS]["estimate"], slow[Columns.ACTIONS]["estimate"], rtol=1e-5,
                               atol=1e-4)
    torch.testing.assert_close(fast[Columns.ACTION_DIST_INPUTS], slow[Columns.ACTION_DIST_INPUTS], rtol=1e-5,
                               atol=1e-3)


def test_decide_is_forward_inference_of_one_observation(env4, module4):
    """The CU's decision (:meth:`ISACPPOModule.decide`) returns exactly the ACTIONS of forward_inference."""
    from ray.rllib.core.columns import Columns

    for obs in _env_observations(env4, module4, 8, seed=5):
        pairs, beams, estimate = module4.decide(obs)
        ref = module4.forward_inference({Columns.OBS: {k: torch.as_tensor(v)[None] for k, v in obs.items()}})
        act = ref[Columns.ACTIONS]
        np.testing.assert_array_equal(pairs, act["pairs"][0].numpy())
        np.testing.assert_array_equal(beams, act["beams"][0].numpy())
        np.testing.assert_array_equal(estimate, act["estimate"][0].numpy())
        assert pairs.dtype == np.int64 and beams.dtype == np.int64 and estimate.dtype == np.float32
