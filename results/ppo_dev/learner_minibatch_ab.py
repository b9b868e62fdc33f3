"""A/B of the learner's minibatch (issue 8), in one process, taken in turns on the same batch: as shipped; with
the distribution's plain ``exp`` of the log-probabilities (before the flushed
:attr:`~rl_isac.rllib.distribution.MaskedARDistribution.probs`); and with that and the teacher-forced pass's
bilinear term in the ``baddbmm(ctx_e, h^T)`` form (before both changes of 2026-12-04).

One minibatch = ``forward_train`` + ``compute_values`` + a PPO-like loss (ratio, value, entropy, KL to the exploration
distribution) + backward + Adam, on ``N`` (250) exploration-rollout samples of the I = 8 surrogate env with the
shipped module sizes (hidden 64, critic 128) and the committed ``results/checkpoints/dgnn-I8`` encoder.
Thread CPU per minibatch, median over rounds; the two forms' logits must agree exactly (printed).
Run: OMP_NUM_THREADS=1 python results/ppo_dev/learner_minibatch_ab.py [ROUNDS] \
    > results/ppo_dev/learner_minibatch_ab.txt
"""
import sys
import time

import rl_isac  # noqa: F401 (first: it pins OpenBLAS's kernel before numpy loads, rl_isac/__init__.py)
from pathlib import Path

import numpy as np
import torch
from ray.rllib.core.columns import Columns

from rl_isac.rllib.env import ISACMultiAgentEnv
from rl_isac.rllib.module import ENC_U, ENC_Z, ISACPPOModule, exploration_rollout
from rl_isac.training.pretrain import load_configs
from learner_forms import BEFORE_TRAIN_LOGITS, PLAIN_PROBS, SHIPPED, use  # beside this script

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 12
N = 250
torch.set_num_threads(1)
ck = Path(__file__).resolve().parents[1] / "checkpoints" / "dgnn-I8"
env = ISACMultiAgentEnv({"targets": 8, "blocks": 100, "fidelity": "surrogate"})
torch.manual_seed(0)
m = ISACPPOModule(observation_space=env.observation_space, action_space=env.action_space,
                  model_config={"dgnn": load_configs(ck)["dgnn"].to_dict(), "dgnn_weights": str(ck / "model.pt"),
                                "hidden": 64, "critic_hidden": 128})
ob, acts, cat = exploration_rollout(env, m, N, seed=0)
batch = {Columns.OBS: ob, Columns.ACTIONS: acts, ENC_Z: cat[ENC_Z], ENC_U: cat[ENC_U]}
batch.update(m.teacher_forcing_inputs(ob, acts["pairs"]))
opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-4)
old_dist = m.get_train_action_dist_cls().from_logits(cat[Columns.ACTION_DIST_INPUTS])


def minibatch() -> None:
    fo = m.forward_train(batch)
    dist = m.get_train_action_dist_cls().from_logits(fo[Columns.ACTION_DIST_INPUTS])
    v = m.compute_values(batch, fo[Columns.EMBEDDINGS])
    ratio = torch.exp(dist.logp(acts) - cat[Columns.ACTION_LOGP])
    # as RLlib's PPO loss: the entropy term is computed (and logged) even at entropy_coeff 0
    loss = -ratio.mean() + 0.5 * (v ** 2).mean() + 0.2 * old_dist.kl(dist).mean() - 0.0 * dist.entropy().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


shipped = SHIPPED[0]
variants = {"before both": (BEFORE_TRAIN_LOGITS, PLAIN_PROBS), "plain exp": (shipped, PLAIN_PROBS),
            "shipped": SHIPPED}
times = {k: [] for k in variants}
for r in range(ROUNDS):
    for name in (list(variants) if r % 2 else list(variants)[::-1]):
        use(*variants[name])
        minibatch()
        t0 = time.thread_time()
        for _ in range(3):
            minibatch()
        times[name].append((time.thread_time() - t0) / 3 * 1e3)
logits = {}
for name in ("before both", "shipped"):
    use(*variants[name])
    with torch.no_grad():
        logits[name] = m.forward_train(batch)[Columns.ACTION_DIST_INPUTS]
use(*SHIPPED)
for name, t in times.items():
    print(f"{name}: minibatch of {N} thread CPU ms median {np.median(t):.1f} (min {min(t):.1f}, {ROUNDS} rounds)")
a, b = logits.values()
for name in ("plain exp", "shipped"):
    print(f"ratio {name} / before both (medians): {np.median(times[name]) / np.median(times['before both']):.3f}")
print(f"max |logit difference| shipped vs before both: {(a - b).abs().max().item():.3g}")
