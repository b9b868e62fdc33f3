"""Same-process A/B of RLlib's learner update (issue 8): the shipped teacher-forced pass and distribution against
the forms before 2026-12-04 (``baddbmm(ctx_e, h^T)`` bilinear term, plain ``exp`` of the log-probabilities).

Two PPO algorithms of the default ``PPOTrainConfig`` at I = 8 (surrogate, 1 runner x 8 envs, train batch 2,000,
10 epochs x minibatch 250), built alike (seed 0); their iterations are taken in turns, and before each the
classes the local learner (in this driver: ``num_learners=0``) calls are set to that algorithm's forms (the env
runners sample with code neither form changes). Reports RLlib's ``learner_update_timer`` (as RLlib reports it:
smoothed over iterations) and the driver thread's CPU time per iteration (the local learner's work; the first
iteration dropped).
Run: OMP_NUM_THREADS=1 python results/ppo_dev/learner_ab_rllib.py [ITERATIONS] > results/ppo_dev/learner_ab_rllib.txt
"""
import sys
import time

import rl_isac  # noqa: F401 (first: it pins OpenBLAS's kernel before numpy loads, rl_isac/__init__.py)
from pathlib import Path

import numpy as np
import ray
import torch

from rl_isac.rllib.config import PPOTrainConfig, build_ppo_config, env_config_for
from rl_isac.training.pretrain import load_configs
from learner_forms import BEFORE_TRAIN_LOGITS, PLAIN_PROBS, SHIPPED, use  # beside this script

ITER = int(sys.argv[1]) if len(sys.argv) > 1 else 5
torch.set_num_threads(1)
forms = {"before": (BEFORE_TRAIN_LOGITS, PLAIN_PROBS), "shipped": SHIPPED}
ck = Path(__file__).resolve().parents[1] / "checkpoints" / "dgnn-I8"
t = PPOTrainConfig()
ray.init(num_cpus=2 * t.cores, include_dashboard=False, log_to_driver=False, configure_logging=False)
try:
    algos = {k: build_ppo_config(t, env_config_for(t, 8, seed=0), load_configs(ck)["dgnn"].to_dict(),
                                 str(ck / "model.pt"), seed=0).build_algo() for k in forms}
    timers = {k: [] for k in forms}
    cpu = {k: [] for k in forms}
    for it in range(ITER):
        for k in (list(forms) if it % 2 else list(forms)[::-1]):
            use(*forms[k])
            t0 = time.thread_time()
            row = algos[k].train()
            cpu[k].append(time.thread_time() - t0)  # the driver thread: the local learner (runners sample remotely)
            timers[k].append(float(row["timers"]["learner_update_timer"]))
    for a in algos.values():
        a.stop()
finally:
    use(*SHIPPED)
    ray.shutdown()
# RLlib's timer is a smoothed value over iterations; the per-iteration values are printed as reported
for k, v in timers.items():
    print(f"{k}: learner_update_timer per iteration (s) {[round(x, 2) for x in v]}; "
          f"mean of iterations 2.. {np.mean(v[1:]):.2f}, median {np.median(v[1:]):.2f}")
    print(f"{k}: driver thread CPU per iteration (s) {[round(x, 2) for x in cpu[k]]}; "
          f"mean of iterations 2.. {np.mean(cpu[k][1:]):.2f}")
print(f"driver CPU ratio shipped / before (mean of iterations 2..): {np.mean(cpu['shipped'][1:]) / np.mean(cpu['before'][1:]):.3f}")
print(f"timer ratio shipped / before (mean of iterations 2..): {np.mean(timers['shipped'][1:]) / np.mean(timers['before'][1:]):.3f}")
