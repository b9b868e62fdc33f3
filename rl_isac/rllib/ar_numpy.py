"""The auto-regressive decoder of eq. (11) in float32 numpy, lean (the env runners' and the CU's small batches).

:func:`decode_numpy` is :meth:`rl_isac.rllib.module.ISACPPOModule.decode_numpy`'s step loop with the same float
operations on the same values in the same order, so the same numbers bit for bit (the extra features of the
actor options aside, see below) (a test compares it with a
verbatim copy of the previous loop on random inputs, batch 1 and more, both modes, empty slots); only the
bookkeeping around them is cheaper, which is what a step of ~50 numpy ops on arrays of ~50 entries costs:

* the context bias ``b_c + (j / J) w_step`` of every step in one go, the state ``[v / N_RF, covered]`` kept as
  one array (no concatenation a step), the per-pair gathers of both in one indexing;
* ``tr A^-1`` and ``tr (A + J)^-1`` of the marginal gain in one pass over a stacked array;
* the STOP scorer (an MLP) only at steps where some row may STOP (otherwise the mask overwrites it);
* at batch 1 (the CU's decision) the state update with scalars instead of fancy indexing, the mask from two
  maintained boolean rows (a chain left and not chosen; target uncovered) and two counters (covered targets,
  chains left: the (5d) lookahead ``uncovered >= chains left`` of the float state is the same test on integers),
  nothing but the STOP scorer after a STOP;
* the actor options' extra step features (``detection_features`` / ``milp_features``, issue 9): a target's
  features depend on its own chosen BS set only, so ``module._extra_features`` runs ONCE on all ``2^M`` sets and
  each step gathers its targets' rows (it ran once a step: ~2 ms of a batch-1 decision). The one exception to
  bit-identity: the batched call's reductions round differently, logits agree to ~4e-7 relative and the decoded
  pairs were identical on 920 random sequences (a test checks pairs exactly, logits to 1e-5).

Shapes as :meth:`~rl_isac.rllib.module.ISACPPOModule.decode`: ``E (B, P, H)``, ``g (B, H)``; returns ``pairs (B, J)``
int64, joint ``logp (B,)``, masked logits ``(B, J, P + 1)`` (torch tensors).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.special import erf

from rl_isac.rllib.mask import MASKED_LOGIT

_F32 = np.float32


def _gelu(x: np.ndarray) -> np.ndarray:
    """torch's default (exact) GELU."""
    return 0.5 * x * (1.0 + erf(x * _F32(0.7071067811865476)))


def _linear(x: np.ndarray, layer) -> np.ndarray:
    y = x @ layer.weight.detach().numpy().T
    return y if layer.bias is None else y + layer.bias.detach().numpy()


def _torch_gelu(x: np.ndarray) -> np.ndarray:
    """torch's exact GELU kernel on the array's memory (vectorised)."""
    return torch.nn.functional.gelu(torch.from_numpy(x)).numpy()


def pair_embeddings(module: Any, obs: dict[str, np.ndarray], z: np.ndarray, u_tilde: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`~rl_isac.rllib.module.ISACPPOModule.pair_embeddings` in float32 numpy (inference, small batches):
    ``E (B, P, H)`` and ``g (B, H)`` from the observation arrays and the encoder's ``z (B, I, D)`` and
    ``u_tilde (B, I, 2)`` metres. The same function (a test checks 1e-5 against the torch one)."""
    from rl_isac.rllib.observation import DETECTION_OBS_KEY, MILP_OBS_KEY

    B, I, D = z.shape
    M = module.num_bs
    scales = obs["scales_m"]
    s0 = scales[:, 0, None, None, None]
    bs = obs["bs_positions"]                                                           # (B, M, 2) normalised
    rel = (u_tilde[:, None] - bs[:, :, None] * s0) / s0                                # (B, M, I, 2)
    dist = np.sqrt((rel * rel).sum(-1, keepdims=True)) * (scales[:, 0] / scales[:, 2])[:, None, None, None]
    tgt = np.concatenate([z, obs["prior_cov"], obs["anchor_log_std"][..., None], obs["anchor_age"][..., None]], -1)
    parts = [obs["pair_info"], np.broadcast_to(bs[:, :, None], (B, M, I, 2)), rel, dist]
    if module.detection_features:
        parts.append(obs[DETECTION_OBS_KEY][..., None])
    if module.milp_features:
        parts.append(obs[MILP_OBS_KEY][..., None])
    h = _torch_gelu(_linear(tgt, module.pair_in_target)[:, None] + _linear(np.concatenate(parts, -1),
                                                                            module.pair_in_pair))  # (B, M, I, H)
    t1, t2 = module.target_mlp[0], module.target_mlp[2]
    g = _linear(_torch_gelu(_linear(tgt, t1)), t2).mean(1)
    return _linear(h, module.pair_hidden).reshape(B, module.num_pairs, module.hidden), g


class _ExtraFeatures:
    """:meth:`~rl_isac.rllib.module.ISACPPOModule._extra_features` of chosen BS sets in float32 numpy, per target
    (the decoder at batch 1 recomputes the one target a step changes): :func:`~rl_isac.rllib.module.
    detection_gain_features` (expected-objective gain of each pair over the detection outcomes, log and
    relative) and the MILP bit, from the observation's ``detection_tables``. The same arithmetic in float32
    (reductions in another order: ~1e-7 relative; a test checks pairs exactly and logits to 1e-5)."""

    def __init__(self, module: Any, det_obs: dict[str, torch.Tensor], tables, bits: np.ndarray) -> None:
        from rl_isac.rllib.observation import DETECTION_OBS_KEY, MILP_OBS_KEY

        cost, delta, _ = tables
        self.cost = cost[0].numpy()                                       # (S, I)
        self.delta = delta[0].numpy()                                     # (M, S, I)
        self.detect = det_obs[DETECTION_OBS_KEY][0].numpy()               # (M, I)
        self.milp = det_obs[MILP_OBS_KEY][0].numpy() if module.milp_features else None   # (M, I)
        self.bits = bits                                                  # (S, M) bool
        self.set_bits = bits.astype(_F32)                                 # row s: the BSs of set s, 0/1
        self.M = bits.shape[1]
        self.width = module.num_extra

    def update(self, rows: np.ndarray, t: int, chosen: int) -> None:
        """Rewrite target ``t``'s rows of ``rows (M * I, num_extra)`` (pairs ``m * I + t``) for its chosen-BS
        bitmask ``chosen``: :meth:`rows` for one target, with fewer ops."""
        I = self.cost.shape[1]
        p = self.detect[:, t]                                             # (M,)
        cp = self.set_bits[chosen] * p
        w = np.where(self.bits, cp, _F32(1.0) - cp).prod(-1)              # (S,)
        gain = p * (self.delta[:, :, t] @ w)                              # (M,)
        rows[t::I, 0] = np.log10(np.maximum(gain, _F32(0.0)) + _F32(1e-6)) / _F32(4.0)
        rows[t::I, 1] = gain / np.maximum(w @ self.cost[:, t], _F32(1e-12))

    def rows(self, targets: np.ndarray, sets: np.ndarray) -> np.ndarray:
        """Rows ``(M * T, num_extra)`` in pair order ``m * T + t`` (so ``rows[t::T]`` is target ``t``'s) for the
        targets ``(T,)`` with chosen-BS bitmasks ``sets (T,)``."""
        M = self.M
        p = self.detect[:, targets].T                                     # (T, M)
        cp = ((sets[:, None] >> np.arange(M)) & 1).astype(_F32) * p       # (T, M) chosen x detection probability
        w = np.where(self.bits[None], cp[:, None, :], _F32(1.0) - cp[:, None, :]).prod(-1)   # (T, S)
        expected = (w * self.cost[:, targets].T).sum(-1)                  # (T,)
        gain = p * np.einsum("ts,mst->tm", w, self.delta[:, :, targets])  # (T, M)
        rel = gain / np.maximum(expected, _F32(1e-12))[:, None]
        out = [np.log10(np.maximum(gain, _F32(0.0)) + _F32(1e-6)) / _F32(4.0), rel]
        if self.milp is not None:
            out.append(self.milp[:, targets].T)
        return np.stack(out, -1).transpose(1, 0, 2).reshape(M * len(targets), self.width).astype(_F32)


def decode_numpy(module: Any, E: torch.Tensor, g: torch.Tensor, obs: dict[str, torch.Tensor], explore: bool,
                 rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Greedy (``explore=False``) or Gumbel-max sampled decoding of ``module`` (an ``ISACPPOModule``)."""
    from rl_isac.rllib.module import empty_slots

    En, gn = E.detach().cpu().numpy(), g.detach().cpu().numpy()
    B, P, H = En.shape
    M, I, R, J = module.num_bs, module.num_targets, module.num_rf, module.num_steps
    Wc = module.ctx_lin.weight.detach().numpy()
    bc = module.ctx_lin.bias.detach().numpy()
    W_state, w_step = Wc[:, :M + I].T.copy(), Wc[:, M + I]
    # b_c + (j / J) w_step of every step: float32(j / J) as the per-step expression rounded it
    ctx_bias = bc + (np.arange(J) / J).astype(_F32)[:, None] * w_step
    heads = En @ module.pair_heads.weight.detach().numpy().T + module.pair_heads.bias.detach().numpy()
    alpha, beta, gamma, bias = heads[..., 0], heads[..., 1], heads[..., 2], heads[..., 3]
    if module.num_extra:  # the extra step features (detection gains, MILP bit) from the torch function
        from rl_isac.rllib.module import detection_tables
        from rl_isac.rllib.observation import DETECTION_OBS_KEY, MILP_OBS_KEY

        keys = ("prior_fim", "pair_fim", DETECTION_OBS_KEY) + ((MILP_OBS_KEY,) if module.milp_features else ())
        det_obs = {k: obs[k].detach().cpu().float() for k in keys}
        tables = detection_tables(det_obs["prior_fim"], det_obs["pair_fim"])
        # a target's extra features depend on its own chosen BS set only: all 2^M sets in ONE call (row s = set s
        # for every target at once), then each step gathers its targets' rows (instead of one call a step)
        n_sets = 1 << M
        bits = ((np.arange(n_sets)[:, None] >> np.arange(M)) & 1).astype(bool)          # (2^M, M)
        if B > 1:
            sets = torch.from_numpy(np.ascontiguousarray(np.broadcast_to(bits[None, :, :, None], (B, n_sets, M, I))))
            extra_table = module._extra_features(det_obs, sets, tables).numpy()          # (B, 2^M, P, num_extra)
        pair_index = np.arange(P)
    W1, b1 = module.stop_mlp[0].weight.detach().numpy(), module.stop_mlp[0].bias.detach().numpy()
    W2, b2 = module.stop_mlp[2].weight.detach().numpy(), module.stop_mlp[2].bias.detach().numpy()
    stop_g = gn @ W1[:, :H].T + b1
    stop_ctx_w = W1[:, H:].T.copy()
    W2t = W2.T
    pb, pt = module.pair_bs.cpu().numpy(), module.pair_target.cpu().numpy()
    state_index = np.concatenate([pb, M + pt])                         # [v, covered] -> per pair (rem_p | cov_p)
    fim = obs["pair_fim"].detach().cpu().numpy().astype(_F32).reshape(B, P, 3)
    prior_p = obs["prior_fim"].detach().cpu().numpy().astype(_F32)[:, pt]
    state = np.zeros((B, M + I), _F32)                                 # [remaining chains / N_RF, covered]
    rem, cov = state[:, :M], state[:, M:]
    rem[:] = 1.0
    cho = np.zeros((B, P), _F32)
    pad = empty_slots(obs)
    if pad is not None:  # an empty target slot: covered (not required, (5d)) and chosen at every BS ((5e))
        cov[:] = pad.cpu().numpy().astype(_F32)
        cho = cov[:, pt].copy()
    acc = np.zeros((B, I, 3), _F32)
    if module.num_extra:  # each target's chosen BS set as a bitmask (empty slots: every BS)
        chosen_set = ((cho.reshape(B, M, I) >= 0.5).astype(np.int64) << np.arange(M)[None, :, None]).sum(1)  # (B, I)
        if B == 1:  # the CU: each target's rows from its own set, recomputed for the one target a step changes
            extra_of = _ExtraFeatures(module, det_obs, tables, bits)
            extra_rows = extra_of.rows(np.arange(I), chosen_set[0])                       # (P, num_extra)
    stopped = np.zeros(B, bool)
    rows_idx = np.arange(B)
    step_rf = (np.ones(1, _F32) / R)[0]                                # f / R of a chosen pair (f = 1)
    if explore:
        rng = rng if rng is not None else np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        gumbel = rng.gumbel(size=(J, B, P + 1)).astype(_F32)
    actions, rows = np.empty((B, J), np.int64), np.empty((B, J, P + 1), _F32)
    infos = np.empty((2, B, P, 3), _F32)                               # [A, A + J] of the marginal gain
    masked = _F32(MASKED_LOGIT)
    single = B == 1
    if single:  # the CU's decision: the mask's bookkeeping in scalars and two maintained boolean rows
        avail = (rem[0, pb] > 0) & (cho[0] < 0.5)                     # a chain left at its BS, not chosen yet
        uncovered = cov[0, pt] < 0.5                                   # its target not covered yet
        n_covered, chains, stopped_1 = int(round(float(cov[0].sum()))), M * R, False
    for j in range(J):
        ctx = state @ W_state + ctx_bias[j]
        logits = rows[:, j]
        if single and stopped_1:  # after a STOP every pair is masked and STOP is allowed (sticky)
            logits[0, :P] = masked
            stop_any, stop_ok = True, None
        else:
            per_pair = state[:, state_index]
            rem_p, cov_p = per_pair[:, :P], per_pair[:, P:]
            np.add(prior_p, acc[:, pt], out=infos[0])
            np.add(infos[0], fim, out=infos[1])
            a_, b_, c_ = infos[..., 0], infos[..., 1], infos[..., 2]
            tr_inv = (a_ + c_) / np.maximum(a_ * c_ - b_ * b_, _F32(1e-12))
            gain = np.log10(np.maximum(tr_inv[0] - tr_inv[1], 0.0) + _F32(1e-6)) / _F32(4.0)
            pair_logits = (np.matmul(En, ctx[:, :, None])[..., 0] + alpha * cov_p + beta * rem_p + gamma * gain
                           + bias)
            if module.num_extra:
                extra = (extra_rows[None] if single else
                         extra_table[rows_idx[:, None], chosen_set[:, pt], pair_index])     # (B, P, num_extra)
                pair_logits = pair_logits + (heads[..., 4:] * extra).sum(-1)
            if single:  # (5d) lookahead: as many uncovered targets as chains left -> only uncovered targets
                ok = avail & uncovered if I - n_covered >= chains else avail
                logits[0, :P] = np.where(ok, pair_logits[0], masked)
                stop_any, stop_ok = n_covered >= I, None
            else:
                n_cov = cov.sum(1)
                stop_ok = stopped | (n_cov >= I)
                free = ~((I - n_cov) >= rem.sum(1) * R - 0.5)              # not yet at the (5d) lookahead
                ok = (rem_p > 0) & (cho < 0.5) & (free[:, None] | (cov_p < 0.5)) & ~stopped[:, None]
                logits[:, :P] = np.where(ok, pair_logits, masked)
                stop_any = stop_ok.any()
        if stop_any:
            stop = _gelu(stop_g + ctx @ stop_ctx_w) @ W2t + b2                                 # (B, 1)
            logits[:, P] = stop[:, 0] if stop_ok is None else np.where(stop_ok, stop[:, 0], masked)
        else:
            logits[:, P] = masked
        a = (logits + gumbel[j]).argmax(-1) if explore else logits.argmax(-1)
        actions[:, j] = a
        if single:
            k = int(a[0])
            if stopped_1:
                continue
            if k == P:
                stopped_1 = True
                continue
            m, t = divmod(k, I)
            rem[0, m] -= step_rf
            if not rem[0, m] > 0:
                avail[m * I:(m + 1) * I] = False
            cho[0, k] += _F32(1.0)
            avail[k] = False
            if module.num_extra:
                chosen_set[0, t] |= 1 << m
                extra_of.update(extra_rows, t, int(chosen_set[0, t]))
            if cov[0, t] < 0.5:
                n_covered += 1
                uncovered[t::I] = False
            cov[0, t] = max(cov[0, t], _F32(1.0))
            acc[0, t] += fim[0, k]
            chains -= 1
            continue
        k = np.minimum(a, P - 1)
        f = ((a < P) & ~stopped).astype(_F32)
        rem[rows_idx, pb[k]] -= f / R
        cho[rows_idx, k] += f
        t = pt[k]
        if module.num_extra:
            chosen_set[rows_idx, t] |= (f > 0).astype(np.int64) << pb[k]
        cov[rows_idx, t] = np.maximum(cov[rows_idx, t], f)
        acc[rows_idx, t] += f[:, None] * fim[rows_idx, k]
        stopped |= a == P
    pairs, logits_t = torch.from_numpy(actions), torch.from_numpy(rows)
    logp = torch.log_softmax(logits_t, -1).gather(-1, pairs[..., None])[..., 0].sum(1)
    return pairs, logp, logits_t
