"""Behaviour-cloning warm start of the actor on an expert CU's pairs (issue 9's first lever).

Beyond the paper: before PPO, the auto-regressive actor is fitted by maximum likelihood to the
associations of an expert CU (default ``dgnn-milp``: the exact myopic optimum on the DGNN's
estimate), so PPO starts at the myopic optimum and only has to learn what it cannot see. The
critic is regressed on the expert's discounted returns at the same time (a warm value baseline).

Data (:func:`collect`): episodes of the world on *training* seeds (``training_world_seed(seed,
split=2, e)``, never evaluation seeds) driven by the expert; per block the policy's
observation (:class:`~rl_isac.rllib.observation.ObservationBuilder` on a window fed exactly as
the env feeds it), the expert's association as the canonical step sequence
(:func:`rl_isac.association.association_to_sub_actions`: pairs BS-major, then STOPs) and the
reward of eq. (5a) of the expert's estimate. The range gates use the window's ``anchor_next``
like the env.

Fit (:func:`behaviour_clone`): the order-free imitation loss :func:`set_nll` (the policy may build
the expert's association in any order), Adam, minibatches; the frozen encoder's outputs are
computed once.
Reports the pair recall and the exact-association rate of greedy decoding on held-out episodes.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from ray.rllib.core.columns import Columns

from rl_isac.association import association_to_sub_actions
from rl_isac.association.objective import association_cost
from rl_isac.controllers import make_controller
from rl_isac.network import CellFreeNetwork
from rl_isac.rllib.module import ENC_U, ENC_Z
from rl_isac.rllib.observation import ObservationBuilder
from rl_isac.scenario import ScenarioConfig
from rl_isac.seeds import training_world_seed
from rl_isac.tracking.window import MeasurementWindow, stack_observations


def collect(cfg: ScenarioConfig, expert: str, checkpoint: str, episodes: int, seed: int, gamma: float,
            first_episode: int = 0, policy=None, reward: tuple[float, float, bool] = (0.0, 1.0, False),
            detection: bool = False, milp: bool = False) -> dict[str, np.ndarray]:
    """Expert-labelled episodes: ``obs`` (stacked), ``pairs (N, J)``, ``returns (N,)`` (discounted, from each block).

    ``policy`` (DAgger): a callable ``obs -> association (M, I) bool``; when given, the world executes the
    policy's association (with the expert's beams, estimate and range-gate prediction) while the label
    stays the expert's association at the same state (the expert CU is fed the same measurements), so
    the data covers the states the policy visits.

    ``reward = (fisher_weight, reward_scale, normalize)``: the env's reward (:mod:`rl_isac.rllib.env`) the
    critic's targets are computed with, ``-scale ((1 - w) eq. (5a) + w fisher)``; with ``normalize`` the
    returns are divided by their standard deviation (what the env's running normaliser converges to).
    ``detection`` / ``milp``: the observations carry ``pair_detect`` / ``pair_milp`` (a module with
    ``detection_features`` / ``milp_features``).
    """
    w, reward_scale, normalize = reward
    cu = make_controller(expert, cfg, checkpoint=checkpoint)
    builder = ObservationBuilder(cfg, detection=detection, milp=milp)
    obs, pairs, returns = [], [], []
    for e in range(first_episode, first_episode + episodes):
        net = CellFreeNetwork(cfg)
        acq = net.reset(training_world_seed(seed, 2, e))
        window = MeasurementWindow(cfg, anchor="ekf")
        window.reset(acq)
        action = cu.reset(acq)
        rewards = []
        for q in range(cfg.num_blocks):
            obs.append(builder.build(window, q, cfg.num_blocks))
            pairs.append(association_to_sub_actions(action.association, cfg.num_rf))
            # eq. (5a) on the expert's estimate of block q, as the env scores it (block 0: the acquisition, 0)
            err2 = float(np.sum((net.positions_m - np.asarray(action.estimate_m)) ** 2)) if q else 0.0
            executed = action.association if policy is None else policy(obs[-1])
            fisher = float(association_cost(executed, builder.last_info, builder.last_prior_info)) if w else 0.0
            rewards.append(-reward_scale * ((1.0 - w) * err2 + w * fisher))
            meas = net.step(executed, action.beams, predicted_positions_m=window.anchor_next_m)
            window.push(meas)
            action = cu.act(meas)
        ret, acc = [], 0.0
        for r in reversed(rewards):
            acc = r + gamma * acc
            ret.append(acc)
        returns.extend(reversed(ret))
    returns = np.asarray(returns, np.float32)
    if normalize:
        returns = returns / np.float32(np.std(returns) + 1e-8)
    return {"obs": stack_observations(obs), "pairs": np.stack(pairs), "returns": returns}


def set_nll(module, obs: dict, enc: dict, expert_pairs: torch.Tensor) -> torch.Tensor:
    """Order-free imitation loss of the expert's *association* (a set of pairs), ``(B,)``.

    Decoding step by step with the module's own scorer (:meth:`~rl_isac.rllib.module.ISACPPOModule.step_logits`),
    step ``j`` pays ``-log sum_{k in S_j} pi_j(k)``, ``S_j`` the expert's pairs not chosen yet (STOP once
    none is left), and continues with the policy's most likely pair of ``S_j``. Greedy decoding of a
    policy with zero loss returns the expert's association in the order the policy prefers (the
    canonical BS-major order would force one arbitrary order on it). The empty target slots of a clustered
    observation (``target_valid == 0``, :func:`rl_isac.rllib.module.empty_slots`) start covered and chosen, as in
    the module's decoders (the clustered warm start, :mod:`rl_isac.rllib.cluster_warm_start`).
    """
    from rl_isac.rllib.mask import apply_step, initial_state
    from rl_isac.rllib.module import empty_slots

    E, g = module.pair_embeddings(obs, enc)
    B = E.shape[0]
    P = module.num_pairs
    expert = torch.zeros(B, P + 1, dtype=torch.bool)
    expert.scatter_(1, expert_pairs.long(), True)
    expert[:, P] = False
    state = initial_state(B, module.num_bs, module.num_targets, module.num_rf)
    pad = empty_slots(obs)
    if pad is not None:  # an empty slot: not required (5d), not choosable (5e)
        state = (state[0], state[1] | pad, state[2] | pad[:, None, :], state[3])
    loss = torch.zeros(B)
    for j in range(module.num_steps):
        logits = module.step_logits(E, g, obs, *(x[:, None] for x in state), step=torch.tensor([j]))[:, 0]
        left = expert & ~torch.cat([state[2].flatten(1), torch.zeros(B, 1, dtype=torch.bool)], 1)
        target = left.clone()
        target[:, P] = ~left[:, :P].any(1)
        logp = torch.log_softmax(logits, -1)
        loss = loss - torch.logsumexp(logp.masked_fill(~target, -1e9), -1)
        a = logits.detach().masked_fill(~target, -1e9).argmax(-1)
        state = apply_step(state, a, module.num_targets)
    return loss


def _tensors(data: dict, idx: np.ndarray) -> dict:
    return {Columns.OBS: {k: torch.as_tensor(v[idx]) for k, v in data["obs"].items()}}


@torch.no_grad()
def _encode_all(module, data: dict, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    zs, us = [], []
    n = len(data["pairs"])
    for s in range(0, n, batch):
        enc = module.encode(_tensors(data, np.arange(s, min(n, s + batch)))[Columns.OBS])
        zs.append(enc["z"].reshape(enc["z"].shape[0], -1))
        us.append(enc["u_tilde"].reshape(enc["u_tilde"].shape[0], -1))
    return torch.cat(zs), torch.cat(us)


def _batch(module, data, enc, idx):
    """A training batch of the expert's steps (beams/estimate are not scored: zeros of the right size)."""
    b = _tensors(data, idx)
    b[Columns.ACTIONS] = {"pairs": torch.as_tensor(data["pairs"][idx]),
                          "beams": torch.zeros(len(idx), module.num_beam_entries, dtype=torch.int64),
                          "estimate": torch.zeros(len(idx), module.num_estimate)}
    b[ENC_Z], b[ENC_U] = enc[0][idx], enc[1][idx]
    return b


@torch.no_grad()
def greedy_accuracy(module, data: dict, enc) -> dict[str, float]:
    """Greedy decoding vs the expert: the fraction of the expert's pairs chosen and the exact-association rate."""
    idx = np.arange(len(data["pairs"]))
    b = _tensors(data, idx)
    obs = b[Columns.OBS]
    E, g = module.pair_embeddings(obs, {"z": enc[0].reshape(len(idx), module.num_targets, -1),
                                        "u_tilde": enc[1].reshape(len(idx), module.num_targets, 2)})
    pairs, _, _ = module.decode(E, g, obs, explore=False)
    pairs = pairs.numpy()
    M, I = module.num_bs, module.num_targets
    onehot = np.zeros((len(idx), M * I + 1), bool)
    np.put_along_axis(onehot, pairs, True, axis=1)
    expert = np.zeros_like(onehot)
    np.put_along_axis(expert, data["pairs"], True, axis=1)
    both = (onehot[:, :-1] & expert[:, :-1]).sum(1)
    return {"pair_recall": float(np.mean(both / np.maximum(expert[:, :-1].sum(1), 1))),
            "exact_association": float(np.mean(np.all(onehot[:, :-1] == expert[:, :-1], axis=1)))}


def greedy_policy(module, num_bs: int, num_targets: int):
    """``obs (one observation dict of numpy arrays) -> association (M, I) bool``: the module's greedy pairs."""
    from rl_isac.association.constraints import sub_actions_to_association

    @torch.no_grad()
    def act(obs: dict) -> np.ndarray:
        out = module.forward_inference({Columns.OBS: {k: torch.from_numpy(v)[None] for k, v in obs.items()}})
        return sub_actions_to_association(out[Columns.ACTIONS]["pairs"][0].numpy(), num_bs, num_targets)

    return act


def _concat(a: dict, b: dict) -> dict:
    return {"obs": {k: np.concatenate([a["obs"][k], b["obs"][k]]) for k in a["obs"]},
            "pairs": np.concatenate([a["pairs"], b["pairs"]]), "returns": np.concatenate([a["returns"], b["returns"]])}


def behaviour_clone(module, cfg: ScenarioConfig, checkpoint: str, *, expert: str = "dgnn-milp", episodes: int = 24,
                    val_episodes: int = 4, epochs: int = 20, lr: float = 1e-3, minibatch: int = 128, seed: int = 0,
                    gamma: float = 0.95, value_weight: float = 0.5, dagger_rounds: int = 0,
                    reward: tuple[float, float, bool] = (0.0, 1.0, False), echo=print) -> dict:
    """Fit ``module``'s actor (and critic) in place; returns the metrics (see the module docstring).

    ``dagger_rounds``: after the fit on expert-driven episodes, this many DAgger rounds, each
    collecting ``episodes // 2`` new training episodes driven by the module's greedy associations and
    labelled by the expert (:func:`collect` with ``policy``), aggregated with everything before, and
    refitting ``epochs`` epochs (validation stays on expert-driven episodes).
    """
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    feats = {"detection": bool(getattr(module, "detection_features", False)),
             "milp": bool(getattr(module, "milp_features", False))}
    train = collect(cfg, expert, checkpoint, episodes, seed, gamma, reward=reward, **feats)
    val = collect(cfg, expert, checkpoint, val_episodes, seed, gamma, first_episode=episodes, reward=reward, **feats)
    collect_s = time.perf_counter() - t0
    enc_val = _encode_all(module, val)
    params = [p for n, p in module.named_parameters() if p.requires_grad and not n.startswith("dgnn.")]
    opt = torch.optim.Adam(params, lr=lr)
    history = []
    first = episodes + val_episodes
    for rnd in range(dagger_rounds + 1):
        if rnd:
            t1 = time.perf_counter()
            module.eval()
            new = collect(cfg, expert, checkpoint, max(1, episodes // 2), seed, gamma, first_episode=first,
                          policy=greedy_policy(module, cfg.num_bs, cfg.num_targets), reward=reward, **feats)
            first += max(1, episodes // 2)
            train = _concat(train, new)
            collect_s += time.perf_counter() - t1
            echo(f"dagger round {rnd}: {len(new['pairs'])} policy-driven samples, {len(train['pairs'])} in all")
        history += _fit(module, train, val, enc_val, opt, params, epochs, minibatch, seed + rnd, value_weight, echo,
                        rnd)
    module.eval()
    return {"expert": expert, "episodes": episodes, "val_episodes": val_episodes, "samples": len(train["pairs"]),
            "dagger_rounds": dagger_rounds, "collect_s": collect_s, "wall_s": time.perf_counter() - t0,
            "history": history, "returns_mean": float(np.mean(train["returns"])),
            "final": history[-1] if history else {}}


def _fit(module, train, val, enc_val, opt, params, epochs, minibatch, seed, value_weight, echo, rnd) -> list[dict]:
    enc_train = _encode_all(module, train)
    scale = float(np.std(train["returns"]) + 1e-6)
    rng = np.random.default_rng(seed)
    n = len(train["pairs"])
    history = []
    module.train()
    for epoch in range(epochs):
        perm = rng.permutation(n)
        nll_sum = 0.0
        for s in range(0, n, minibatch):
            idx = perm[s:s + minibatch]
            b = _batch(module, train, enc_train, idx)
            enc = {"z": b[ENC_Z].reshape(len(idx), module.num_targets, -1),
                   "u_tilde": b[ENC_U].reshape(len(idx), module.num_targets, 2)}
            nll = set_nll(module, b[Columns.OBS], enc, b[Columns.ACTIONS]["pairs"]).mean()
            v = module.compute_values(b, embeddings=enc)
            target = torch.as_tensor(train["returns"][idx])
            # the critic is fitted in the reward's units; PPO's value loss continues from there
            v_loss = torch.mean(((v - target) / scale) ** 2)
            loss = nll + value_weight * v_loss
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            nll_sum += float(nll.detach()) * len(idx)
        module.eval()
        acc = greedy_accuracy(module, val, enc_val)
        module.train()
        history.append({"round": rnd, "epoch": epoch + 1, "nll": nll_sum / n, **acc})
        echo(f"bc round {rnd} epoch {epoch + 1:>2}: set nll {nll_sum / n:.3f}  val pair recall "
             f"{acc['pair_recall']:.3f}  exact {acc['exact_association']:.3f}")
    return history
