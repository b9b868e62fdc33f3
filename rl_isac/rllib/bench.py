"""PPO figures of ``rl-isac bench`` (a benchmark, never a test): throughput against RLlib's own floor,
decision latency, and where the time goes.

* ``ppo_env_steps_per_s``: the whole pipeline (sampling + learning, ``Algorithm.train()`` wall
  time) at I = 8, surrogate world, with the shipped :class:`~rl_isac.rllib.config.PPOTrainConfig`
  (runner layout, train batch, minibatch, epochs); the first iteration (actor start-up, caches)
  is not counted.
* ``rllib_floor_env_steps_per_s``: in the same run, RLlib's PPO on ``CartPole-v1`` with its default
  module and the same runner layout, resources, batch mode and PPO settings: the framework's own
  cost on this machine. The two algorithms live side by side and their iterations are taken in
  turns, so a load that changes on a shared machine weighs on both alike. Only the ratio
  (``ppo_over_floor``) is comparable across runs and machines.
* ``sampling_env_steps_per_s``: the env runners alone (no learning), per ``RxE`` layout (``R`` runners
  of ``E`` envs), each sampling ``2000 / R`` env steps in parallel (:func:`sampling_throughput`).
* ``ppo_decision_ms_p50/p99``: one block's decision of the ``dgnn-ppo`` CU in the harness (window
  push with its EKF anchor, observation, frozen encoder, greedy decoding; estimate + pairs +
  beams), I = 8, one core (the module of the benchmark's algorithm, saved and reloaded as
  ``rl-isac evaluate`` does; latency does not depend on the weights, but on the actor options: the
  benchmark's module has the default ones); ``ppo_decision_cpu_ms_p50/p99`` the same in thread CPU time (the
  wall time also counts the waits for a core of a shared machine); ``shipped_checkpoint_decision``: the same
  for ``results/checkpoints/ppo-I8`` when present (its ``detection_features`` / ``milp_features`` add the
  detection probabilities and a MILP solve to every block's observation).
* ``ppo_breakdown_ms_per_env_step`` (thread CPU, the runner's 8 envs, :func:`_micro_breakdown`):
  ``env_step`` (the env's whole ``step``) = ``env_world`` (motion + surrogate measurements) +
  ``window_push_ekf`` (the window's push with its EKF anchor) + ``observation`` (window arrays, pair
  FIMs and features) + ``env_other`` (action checks, the Fisher cost, the PCRB bookkeeping);
  ``module_forward`` (RLlib's ``forward_exploration`` at batch 8, per env) of which ``encoder`` (the
  frozen DGNN) and ``ar_sampling`` (pair embeddings + the auto-regressive decoder); ``learner``
  (RLlib's learner-update wall timer per env step trained) and ``learner_driver_cpu`` (the driver
  thread's CPU time per env step: the local learner); ``sampling_total`` (RLlib's sampling wall
  timer per env step). ``ppo_decision_breakdown_ms``: the same pieces at batch 1.

``results/bench_ppo.json`` (2026-12-04 01:25 UTC, 714da8b, with its ``provenance``: a slower 2-core Xeon @ 2.80 GHz
than the runs below, dgnn-ppo's decision p50 9.0 ms where they had 3.0-3.8): ppo / floor 129 / 1256 = **0.103**. The
learner changes of that day (the bilinear term's contiguous gradient, the flushed ``exp`` of the distribution) cut
the learner's driver CPU to 0.885 of the forms before in a same-process A/B of RLlib's update
(``results/ppo_dev/learner_ab_rllib.txt``; RLlib's ``learner_update_timer`` is smoothed over iterations and cannot
resolve it) and a bare minibatch to 0.82 (``learner_minibatch_ab.txt``). End to end the runs on that machine do not
resolve it: 697a3ac (before) 149 / 1296 = 0.115, then 103f193 120 / 1264 = 0.095 and 714da8b 0.103, their sampling
timers 9.4 / 11.9 / 14.7 s an iteration for unchanged sampling code; per env step (thread CPU, ms) env step
1.84 / 1.94, encoder 1.42 / 1.53, learner driver CPU 2.82 / 2.66 (697a3ac / 714da8b).

``results/bench_ppo.json`` (2026-12-02 08:17 UTC, c0d7b45, quiet machine, load 0.3-1.1): ppo / floor 363 / 3534 =
**0.103**; the code before the batched EKF (a clone of c0d7b45 with this session's files at 715d3e0) right after it
(load 1.1-1.6): 232 / 2684 = 0.087; a second pair, before first then after (08:29-08:33, load 0-1.2): 256 / 2908 =
0.088 -> 277 / 2855 = 0.097 (sampling timer 6.52 -> 5.12 s an iteration, learner 3.32 -> 3.70 s: the load that
came up). Per env step, thread CPU, ms (08:17 run): env step 0.77 = world 0.18 + window push/EKF 0.28 +
observation 0.14 + other 0.17; module 0.66 (encoder 0.48, decoder 0.21); learner 1.32 (wall timer; 1.18 driver
CPU); sampling 1x8 / 2x4 / 2x8 / 1x16: 562 / 707 / 1223 / 802 env steps/s; dgnn-ppo decision p50 / p99 3.04 / 3.49
ms wall, 2.95 / 3.45 ms thread CPU.

Fourth session, the first runs (2026-12-02 07:40-08:01 UTC, this 2-core machine at load 4.4-9: the lead's
``reproduce`` and a 400-episode tracker study ran beside it, so only the thread-CPU pieces compare across runs).
The change: the batched EKF of the runner's lockstep envs (:func:`rl_isac.tracking.ekf.update_many` via
:meth:`~rl_isac.tracking.window.MeasurementWindow.push_many`, bit for bit the loop of single updates) and the
world's measurements validated once (:meth:`~rl_isac.physics.measurements.Measurements.trusted`). Two runs each
of the code before (715d3e0, a clone) and after, in the order before / after (load 4.4-5.5) and after / before
(load 5-9); per env step, thread CPU, ms (before -> after, first pair):

* env step 1.48 -> 0.67 = world 0.19 -> 0.15 + window push/EKF **0.96 -> 0.25** + observation 0.14 -> 0.12 +
  other 0.19 -> 0.15 (second pair: 1.75 -> 0.77, push 1.15 -> 0.28);
* module pass at batch 8 0.71 -> 0.58 (encoder 0.53 -> 0.42, decoder 0.22 -> 0.18: unchanged code, the load);
  learner 1.41 -> 1.39 (wall timer; driver CPU 1.18 -> 1.19);
* dgnn-ppo decision thread CPU p50 / p99 3.44 / 4.47 -> 2.73 / 3.06 ms (push at batch 1 1.16 -> 0.90);
* ppo / floor env steps/s: 256 / 3335 = 0.077 -> 280 / 2155 = 0.130 (``results/bench_ppo.json``, the floor fell
  with the load); second pair 183 / 1845 = 0.099 (before, load ~9) and 253 / 3022 = 0.084 (after).

What is left for 0.5 (~0.6 ms per env step all in at a floor of ~3350): the learner alone is ~1.2 ms of driver
CPU per env step, compute-bound at the shipped PPO settings (10 epochs x minibatches of ~250: ~28 ms of CPU a
minibatch for the pair MLP's ``(B, M, I, H)`` activations and the critic's 128-wide MLP); a torch profile of one
minibatch puts ~20-30 % of it in elementwise kernels on a transposed gradient (the bilinear term's ``bmm`` hands
``h`` its gradient transposed: GELU's backward and the gradient sum take torch's strided loops). A GELU whose
backward runs on a contiguous copy gives the same gradients bit for bit but no gain (the copies cost as much);
the bilinear term as ``bmm(h, c^T)^T`` (``h``'s gradient then contiguous) took a minibatch 26.2 / 26.6 / 30.1 ->
22.1 / 25.3 / 26.2 ms (same process, alternating, loaded machine) with the same loss but gradients that differ
in the last bits (1e-8), so training would not repeat bit for bit: not done then. Done since (2026-12-04): a
training run repeats bit for bit on one revision, which is what "same config and seed, same numbers" asks; across
revisions the checkpoints record their ``git_revision``. Measured again (``/work`` scratch A/B, the same batch of
250 rollout samples at I = 8, old and new taken in turns, 12 rounds): 61 -> 53 ms median a minibatch, logits
identical. Then the frozen encoder (0.4-0.5 ms, ``tracking/dgnn/numpy_infer.py``), the decoder (0.2) and RLlib's
runner (connectors, episodes, metrics: ~0.3 ms of CPU per env step in a profile). Sampling alone, 1 x 16 envs,
reached 401-827 env steps/s against 269-435 at 1 x 8 (the batched pieces amortise over more envs); the layout is
the training recipe's (issue 9), not changed here.

``results/bench_ppo.json`` (2026-12-02 05:41 UTC, a clean clone of 02b5eb8, which has the batched env runner
:class:`~rl_isac.rllib.vector_env.ISACEnvRunner` of fb77e41 / 32eafbe; the lead's ``reproduce`` ran on the other
core, load 1-2.3): ppo / floor 170 / 1816 = **0.093**; sampling 1x8 271, 2x4 206, 2x8 288, 1x16 401 env steps/s;
per env step (thread CPU) env step 1.50 = world 0.19 + window push/EKF 0.98 + observation 0.15 + other 0.19,
module pass 0.71 (encoder 0.53, pair MLP + decoder 0.23), learner 2.03 (wall timer; 1.54 driver CPU). The run of
the code before the batched runner (68b9c22, 04:56 UTC, load 6-8): 123 / 2273 = 0.054; env step 3.25 = 0.68 +
1.42 + 0.52 + 0.63, module 0.91, learner 4.00 (1.65 driver CPU). Same-run A/B (05:24 UTC, load ~1-3, a scratch
script: the same PPO config built twice, once with RLlib's plain ``MultiAgentEnvRunner`` and once with
``ISACEnvRunner``, and the floor, 4 iterations each in turns): 141 vs 192 env steps/s (x1.37; sampling timer
12.5 vs 8.4 s per iteration, learner 4.1 vs 3.9 s), floor 2766: ratio 0.051 -> **0.070**. The decision path
(the CU's, unchanged) in that JSON: p50 / p99 3.74 / 6.65 ms wall, 3.27 / 5.37 ms thread CPU (shipped ppo-I8
5.65 / 9.21 wall, 5.91 / 7.46 CPU).

What is left (the goal, 0.5, is ~0.75 ms per env step all in): the learner alone is ~1.5 ms of driver CPU per env
step (10 epochs x minibatches of 250 through the pair MLP's ``(B, M, I, H)`` activations: ~30-40 ms a minibatch),
twice the whole budget, at the fixed PPO settings; the window push with its EKF (the tracker's code, one env at a
time: a batched-EKF request with a profile in ``coord/REQUEST_LEAD.md``) is now ~65 % of the env step; the
frozen encoder ~0.5 ms per env at batch 8 (dense numpy matmuls, compute-bound). A second runner buys nothing
while another job holds the other core.

Earlier (same day, before the batched runner): ``results/bench_ppo.json`` of 03:02 UTC (e6126d6, load 4.3,
after the inference speed-ups of f713e28..e6126d6: numpy encoder, pair MLP and decoder for small CPU batches):
ppo / floor 149 / 2262 = 0.066; sampling 1x8 210,
2x4 215, 2x8 186, 1x16 247 env steps/s; decision p50 / p99 7.6 / 17.0 ms wall, **4.2 / 5.5 ms thread CPU**; the
shipped ``results/checkpoints/ppo-I8`` (detection + MILP actor options: every block's observation adds the
detection probabilities and a MILP solve) 10.8 / 21.5 ms wall, 6.8 / 10.3 ms CPU; per env step (thread CPU) env
step 2.53 = world 0.52 + window push/EKF 1.14 + observation 0.41 + other 0.47, module pass 0.74 (encoder 0.54,
pair MLP + decoder 0.23), learner 2.46 (wall timer; 1.51 driver CPU); at batch 1 push 1.22, observation 0.44,
encoder 1.42, pair MLP + decoder 0.86 ms (the CU's greedy path is cheaper than this exploration one). Two runs
earlier the same day on the same code path (loads 3.5-3.7): decision CPU p50 / p99 4.98 / 6.95 and 6.40 / 8.22 ms,
ppo / floor 0.064 and 0.059. The run before the speed-ups (quiet machine, load 0.6, 01:36 UTC, bb2d1e2): ppo /
floor 153 / 2391 = 0.064; decision 7.4 / 11.6 ms wall, 7.5 / 10.6 ms CPU; module pass 1.01 (encoder 0.76,
decoder 0.29); at batch 1 encoder 2.66, decoder 1.50.

Before / after in ONE process (a scratch A/B, not a committed command: the old code paths -- PyG encoder, torch
pair MLP, the previous numpy decoder loop kept verbatim in ``tests/rllib/test_ar_numpy.py`` -- and the new ones
taken in turns on the same window states of harness episodes, I = 8, surrogate, 3 x 100 blocks, thread CPU p50 /
p99, push included): a plain module (default actor options) 5.66 / 9.00 -> 3.99 / 6.66 ms (load 4.6; push 1.15 /
2.05 of it); the shipped detection + MILP ppo-I8 10.14 / 16.52 -> 6.82 / 10.56 ms (load 3.7); with
:meth:`~rl_isac.rllib.module.ISACPPOModule.decide` in the CU (requested from the controller's owner) 6.72 /
10.39. The same associations and beams in every block, estimates within 2e-5 m.

What the decision still costs (plain module, in the CU, thread CPU p50 at load ~4): window push + EKF 1.2-1.5
(the tracker's, a request with a profile in ``coord/REQUEST_LEAD.md``), observation 0.45-0.5 (the window's
arrays and the pair Fisher information), encoder 1.3-1.7 (numpy: ~250 small calls, ~0.8 ms when the caches are
warm; the in-situ cost is cold caches between blocks), pair MLP 0.2, decoder 0.55-0.65 (12 steps of ~35 numpy
calls), RLlib's wrapper and the distribution inputs ~0.2 (``decide`` removes them), association + beam sweep
0.15. p99 <= 5 ms wall needs a quiet core and the push halved; the shipped ppo-I8's MILP solve (~1.3 ms) and
detection probabilities (~0.7 ms) per block put it out of reach for that checkpoint. The ratio goal (0.5) needs
about 1 ms per env step in all; the env step alone is 2.5 (push 1.1, world 0.5: both outside the RLlib layer).

Where the time goes (I = 8, 1 runner x 8 envs, train batch 2,000, 10 epochs x minibatch 250; this shared
2-core machine at load 4-7, 2026-12-02 00:04-00:35 UTC; the figures below are those runs'). "Before" is
the code at the start of the speed round (commit 9dd5a67) measured with this same benchmark code; "now"
= runs of the same code under load (``results/bench_ppo.json`` is the quiet run above). Thread CPU time
is inflated by the load too (the unchanged env pieces read up to 2.1x higher from one run to the next),
so compare the ratio and the within-run shares, not absolute numbers across runs. Per env step, ms:

* ppo / floor env steps/s: before 96 / 2087 = **0.046** and 44 / 1653 = 0.026 (a load spike on the
  driver); now 127 / 2400 = **0.053**, 98 / 1680 = 0.058, 108 / 2157 = 0.050.
* learner timer per iteration (2,424 env steps): before 7.78 s (15.4 s); now 4.17 s (6.06, 4.55);
  sampling timer per iteration: before 18.9 s (16.6); now 13.7 s (19.9, 19.6); the learner's driver
  thread CPU per env step: before 2.05 (2.47), now 1.51 (1.47, 1.54).
* env step, thread CPU (code not changed this round): now 4.77 = world 0.84 + window push/EKF 2.20 +
  observation 0.95 + other 0.79 (before-run: 2.86 = 0.53 + 1.24 + 0.62 + 0.47).
* module pass at batch 8 per env: now 1.25 (encoder 0.90, embeddings + decoder 0.37) = 0.26 of the
  env step in all three runs; before 0.94 (0.64, 0.25) = 0.33 (0.32 in the other run).
* decision of one block, thread CPU p50 / p99: now 11.2 / 13.1 ms, wall 14.2 / 22.9 ms (pieces at
  batch 1: push 2.5, observation 1.1, encoder 4.6, embeddings + decoder 2.6); before 6.8 / 10.8 and
  8.0 / 12.4 ms CPU in quieter moments (push 1.4-1.6): the decision path did not change (same
  process, interleaved: 3.5 -> 3.7 ms for the module at batch 1), the difference is the load.

The same process, old and new module taken in turns (00:21 UTC, thread CPU): a learner minibatch
(forward + backward + Adam, 249 samples) 38.7 -> 31.8 ms; the exploration pass at batch 8
8.5 -> 7.4 ms; greedy inference at batch 1 3.5 -> 3.7 ms (unchanged). What changed: ``train()``/
``eval()`` flip a flat list of the actor/critic submodules (RLlib toggles them around every runner
pass; the recursive walk was ~0.4 ms a pass); the teacher-forced pass is regrouped (no
``(B, P, H) x (H, H)`` product, the STOP MLP's ``g`` half once per sample) and reads its
parameter-free inputs (context inputs, marginal gains, masks), computed once per train batch by the
learner connector :class:`~rl_isac.rllib.learner.DropEncoderInputs`, which also drops the
encoder-only observation keys (the ``features`` window is ~99 % of the batch's bytes, shuffled and
sliced 10 times an iteration) once the cached encodings are there.

Sampling throughput (``sampling_env_steps_per_s``, ``results/bench_ppo.json``): 1x8 202, 2x4 133,
2x8 167, 1x16 153 env steps/s; other runs: 1x8 180 / 109 / 82 / 65, 2x4 93 / 74 / 82 / 160, 2x8
133 / 89 / 131 / 138: on this loaded 2-core machine a second runner buys nothing reliable (it only
helps when a core is idle), so the default stays 1 runner x 8 envs.

What the rest needs. The floor costs ~0.4-0.6 ms per env step all in; ``ppo_over_floor >= 0.5``
means ~0.8-1.2 ms per env step for env + module + learner, while the env step alone is ~2.9 ms of CPU
(the before run). By share (now): the window push with its EKF ~46 % of the env step (request with
profile in ``coord/REQUEST_TRACKS.md``: cache the anchor-independent block features, closed-form 2x2
solves, no re-validation), the observation ~20 % (a third of it the window's ``as_arrays``, a third
the pair Fisher information), ``env_other`` ~17 % (the PCRB's second Fisher computation on all
48 pairs where the chosen <= 12 suffice; ``coord/REQUEST_CLUSTERS.md``), the world ~18 %. Beyond those
fixes: a vectorised env path (``VectorCellFreeNetwork`` for a runner's envs plus a batched window /
EKF / observation, which needs a hook in ``env.py``), a leaner DGNN inference path (the encoder is
~70 % of the module pass), and free cores for parallel runners. The learner is now ~32 ms per
minibatch of 249, bound by the pair MLP's ``(B, M, I, H)`` activations (GELU forward/backward and
their products); fewer PPO epochs would cut it but also cut the floor's, and the recipe is issue 9's.
The decision's p99 <= 5 ms is out of reach while the push (1.4-2.9 ms) plus the DGNN at batch 1
(2.7-5.5 ms) exceed it; the decoder (1.2-1.5 ms at batch 1: 12 steps of ~95 small numpy ops) would
need a compiled kernel to go below ~0.3 ms.
"""

from __future__ import annotations

import functools
import tempfile
import time
from pathlib import Path

import numpy as np


def _train_row(algo) -> tuple[dict, float]:
    t0 = time.thread_time()
    row = algo.train()
    return row, time.thread_time() - t0  # the driver's thread: the local learner (+ the driver's own work)


def _summary(pairs: list[tuple[dict, float]]) -> dict:
    """Throughput of the measured iterations (the first, actor start-up and caches, is dropped)."""
    measured = pairs[1:] if len(pairs) > 1 else pairs
    rows = [r for r, _ in measured]
    steps = sum(float(r["env_runners"]["num_env_steps_sampled"]) for r in rows)
    wall = sum(float(r["time_this_iter_s"]) for r in rows)
    timers = {k: float(np.mean([r["timers"].get(k, np.nan) for r in rows]))
              for k in ("env_runner_sampling_timer", "learner_update_timer", "synch_weights")}
    return {"env_steps_per_s": steps / wall, "env_steps": steps, "wall_s": wall, "timers_s": timers,
            "driver_thread_cpu_s": float(np.mean([c for _, c in measured])), "iterations_measured": len(rows)}


def _measure_interleaved(algos: list, iterations: int) -> list[dict]:
    """``iterations`` of each algorithm, taken in turns (one iteration of each, then the next), so a load
    that changes on a shared machine weighs on all of them alike."""
    rows: list[list] = [[] for _ in algos]
    for _ in range(iterations):
        for k, algo in enumerate(algos):
            rows[k].append(_train_row(algo))
    return [_summary(r) for r in rows]


def _micro_breakdown(cfg, module, batch: int, steps: int = 40) -> dict:
    """Per-env-step thread CPU time (ms) of the sampling pieces at the runner's batch (``batch`` envs).

    The envs are stepped as the runner's vector env steps them (:func:`rl_isac.rllib.env.step_envs`, all
    ``batch`` of them in one call); the world step (:func:`rl_isac.vector_network.step_networks`), the
    window pushes and the observations (:func:`rl_isac.rllib.observation.build_observations`) are timed inside it
    (wrapped), ``env_other`` is the rest (action checks, the Fisher cost, the PCRB bookkeeping, infos). The
    module pieces are timed on the same observations: ``encoder`` (frozen DGNN), ``ar_sampling`` (pair
    embeddings + the auto-regressive decoder the module uses at this batch), ``module_forward`` (the whole
    ``forward_exploration``, RLlib's wrapper included). Thread CPU time, so a busy shared machine's waits are
    not counted.
    """
    import torch
    from ray.rllib.core.columns import Columns

    from rl_isac import vector_network
    from rl_isac.rllib import ar_numpy, observation
    from rl_isac.rllib.env import ISACMultiAgentEnv, step_envs
    from rl_isac.tracking.window import OBS_KEYS, MeasurementWindow, stack_observations

    acc = {"env_step": 0.0, "env_world": 0.0, "window_push_ekf": 0.0, "observation": 0.0}

    def timed(fn, key):
        def wrapper(*args, **kwargs):
            t0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                acc[key] += time.thread_time() - t0
        return wrapper

    env_config = {"targets": cfg.num_targets, "blocks": steps + 5, "fidelity": "surrogate",
                  "detection_features": module.detection_features, "milp_features": module.milp_features}
    envs = [ISACMultiAgentEnv(env_config) for _ in range(batch)]  # the observations the module reads
    obs = [e.reset(seed=100 + k)[0]["cu_0"] for k, e in enumerate(envs)]
    for e in envs:  # instance attributes shadow the methods: the env's own step calls the wrapped ones
        if batch == 1:  # step_envs of one env is its step (else the batched functions below)
            e.world.step = timed(e.world.step, "env_world")
            e._observation = timed(e._observation, "observation")
        if batch == 1:
            e.window.push = timed(e.window.push, "window_push_ekf")
    # step_envs looks these up at each call: the batched world step, window push (batched EKF) and observations
    patched = [(vector_network, "step_networks"), (observation, "build_observations")]
    saved = [getattr(mod, name) for mod, name in patched]
    vector_network.step_networks = timed(saved[0], "env_world")
    observation.build_observations = timed(saved[1], "observation")
    saved_push = MeasurementWindow.__dict__["push_many"]
    if batch > 1:
        MeasurementWindow.push_many = staticmethod(timed(saved_push.__func__, "window_push_ekf"))
    t_enc = t_dec = t_fwd = 0.0
    was_training = module.training
    module.train()  # as on a runner: RLlib flips eval()/train() around each exploration pass
    try:
        for _ in range(steps):
            ob = {k: torch.as_tensor(v) for k, v in stack_observations(obs).items()}
            with torch.inference_mode():  # the pieces of the module's _act at this batch (numpy or torch path)
                if module._numpy_path(ob):
                    t0 = time.thread_time()
                    ob_np = {k: v.numpy() for k, v in ob.items()}
                    enc = module._encode_numpy({k: ob_np[k] for k in OBS_KEYS})
                    t1 = time.thread_time()
                    E, g = ar_numpy.pair_embeddings(module, ob_np, enc["z"], enc["u_tilde"])
                    module.decode_auto(torch.from_numpy(E), torch.from_numpy(g), ob, explore=True)
                else:
                    t0 = time.thread_time()
                    enc = module.encode(ob)
                    t1 = time.thread_time()
                    E, g = module.pair_embeddings(ob, enc)
                    module.decode_auto(E, g, ob, explore=True)
                t2 = time.thread_time()
            t_enc += t1 - t0
            t_dec += t2 - t1
            t0 = time.thread_time()
            out = module.forward_exploration({Columns.OBS: ob}, t=0)[Columns.ACTIONS]
            t_fwd += time.thread_time() - t0
            acts = [{"cu_0": {key: v[k].numpy() for key, v in out.items()}} for k in range(batch)]
            t0 = time.thread_time()
            results = step_envs(envs, acts)
            acc["env_step"] += time.thread_time() - t0
            obs = [r[0]["cu_0"] for r in results]
    finally:
        module.train(was_training)
        for (mod, name), fn in zip(patched, saved):
            setattr(mod, name, fn)
        MeasurementWindow.push_many = saved_push
    n = steps * batch
    res = {k: 1e3 * v / n for k, v in acc.items()}
    res["env_other"] = res["env_step"] - res["env_world"] - res["window_push_ekf"] - res["observation"]
    res.update(encoder=1e3 * t_enc / n, ar_sampling=1e3 * t_dec / n, module_forward=1e3 * t_fwd / n)
    return res


def _sampled_env_steps(runner, num_timesteps: int) -> int:
    return int(sum(e.env_steps() for e in runner.sample(num_timesteps=num_timesteps, explore=True)))


def sampling_throughput(t, targets: int, ckpt: Path, layouts=((1, 8), (2, 4), (2, 8)), steps: int = 2000,
                        echo=print) -> dict:
    """Env steps/s of the remote env runners alone (no learning), per ``(runners, envs per runner)`` layout.

    Each layout builds its algorithm (same module, env and resources rule as training), samples once to
    warm up, then times one parallel ``sample(num_timesteps=steps / runners)`` on every runner (complete
    episodes, so each runner returns whole episodes and may overshoot).
    """
    from rl_isac.rllib.config import build_ppo_config, env_config_for
    from rl_isac.training.pretrain import load_configs

    out = {}
    for runners, envs in layouts:
        tl = t.replace(num_env_runners=runners, num_envs_per_env_runner=envs)
        algo = build_ppo_config(tl, env_config_for(tl, targets, seed=0), load_configs(ckpt)["dgnn"].to_dict(),
                                str(ckpt / "model.pt"), seed=0).build_algo()
        try:
            per = max(1, steps // runners)
            group = algo.env_runner_group
            group.foreach_env_runner(functools.partial(_sampled_env_steps, num_timesteps=envs),
                                     local_env_runner=False)  # warm-up
            t0 = time.perf_counter()
            counts = group.foreach_env_runner(functools.partial(_sampled_env_steps, num_timesteps=per),
                                              local_env_runner=False)
            wall = time.perf_counter() - t0
        finally:
            algo.stop()
        key = f"{runners}x{envs}"
        out[key] = {"env_runners": runners, "envs_per_env_runner": envs, "env_steps": int(sum(counts)),
                    "wall_s": wall, "env_steps_per_s": sum(counts) / wall}
        echo(f"sampling {key} (runners x envs): {out[key]['env_steps_per_s']:.0f} env steps/s")
    return out


def ppo_bench(targets: int = 8, iterations: int = 3, quick: bool = False, echo=print,
              config: str | None = None) -> dict:
    """Run the PPO benchmarks (starts and stops a local Ray); returns the JSON entries.

    ``config``: a YAML of :class:`~rl_isac.rllib.config.PPOTrainConfig` fields (``rl-isac train --config``,
    e.g. a reference checkpoint's recipe) instead of the defaults: its PPO settings, runner layout and actor
    features are measured, and the CartPole floor runs with the same PPO settings and layout.
    """
    import ray
    import torch
    from ray.rllib.algorithms.ppo import PPOConfig

    from rl_isac.rllib.callbacks import MODULE_ID
    from rl_isac.rllib.config import build_ppo_config, env_config_for, load_train_config
    from rl_isac.training.pretrain import load_configs

    torch.set_num_threads(1)
    root = Path(__file__).resolve().parents[2]
    ckpt = root / "results" / "checkpoints" / f"dgnn-I{targets}"
    t = load_train_config(config)
    if quick:  # smoke-test sizes: the figures are then meaningless, the code path is the same
        t = t.replace(train_batch_size=200, minibatch_size=100, num_epochs=2, blocks=20)
        iterations = 2
    out: dict = {"settings": {"targets": targets, "iterations": iterations, "train": t.to_dict(),
                              "pretrained": str(ckpt), "config": config}}
    started = not ray.is_initialized()
    if started:  # both algorithms live at once (each asks for t.cores CPUs) but never run at the same time
        ray.init(num_cpus=2 * t.cores, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        algo = build_ppo_config(t, env_config_for(t, targets, seed=0), load_configs(ckpt)["dgnn"].to_dict(),
                                str(ckpt / "model.pt"), seed=0).build_algo()
        floor_cfg = (PPOConfig().environment("CartPole-v1")
                     .env_runners(num_env_runners=t.num_env_runners, num_envs_per_env_runner=t.num_envs_per_env_runner,
                                  num_cpus_per_env_runner=t.cpus_per_env_runner, batch_mode="complete_episodes",
                                  rollout_fragment_length="auto")
                     .learners(num_learners=0, num_cpus_per_learner=1).resources(num_cpus_for_main_process=1)
                     .training(train_batch_size_per_learner=t.train_batch_size, minibatch_size=t.minibatch_size,
                               num_epochs=t.num_epochs, lr=t.lr, gamma=t.gamma, lambda_=t.lambda_)
                     .debugging(seed=0))
        floor_algo = floor_cfg.build_algo()
        try:
            ours, floor = _measure_interleaved([algo, floor_algo], iterations)
            module_dir = Path(tempfile.mkdtemp(prefix="ppo-bench-"))
            learner_module = algo.learner_group._learner.module[MODULE_ID]
            learner_module.save_to_path(str(module_dir))
        finally:
            algo.stop()
            floor_algo.stop()
        echo(f"ppo I={targets}: {ours['env_steps_per_s']:.0f} env steps/s ({ours['timers_s']})")
        echo(f"rllib floor (CartPole-v1, same layout and PPO settings): {floor['env_steps_per_s']:.0f} env steps/s")
        layouts = ((1, 2), (2, 1)) if quick else ((1, 8), (2, 4), (2, 8), (1, 16))
        out["sampling_env_steps_per_s"] = sampling_throughput(t, targets, ckpt, layouts=layouts,
                                                              steps=40 if quick else 2000, echo=echo)
    finally:
        if started:
            ray.shutdown()
    out["ppo_env_steps_per_s"] = ours["env_steps_per_s"]
    out["rllib_floor_env_steps_per_s"] = floor["env_steps_per_s"]
    out["ppo_over_floor"] = ours["env_steps_per_s"] / floor["env_steps_per_s"]
    out["ppo_detail"], out["floor_detail"] = ours, floor

    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):  # the decision and the pieces on one core
        _decision_figures(out, ours, module_dir, targets, t, quick, echo)
    return out


def _decision_cpu_ms(cfg, module, blocks: int) -> tuple[float, float]:
    """p50/p99 of the CU's ``act`` in thread CPU time (what a busy shared machine's wall time hides)."""
    from rl_isac.network import CellFreeNetwork
    from rl_isac.rllib.controller import PPOController
    from rl_isac.seeds import training_world_seed

    cu = PPOController(cfg.replace(num_blocks=blocks), module)
    net = CellFreeNetwork(cfg)
    action = cu.reset(net.reset(training_world_seed(0, 3, 0)))
    cpu = []
    for _ in range(blocks):
        meas = net.step(action.association, action.beams, predicted_positions_m=action.prediction_m)
        t0 = time.thread_time()
        action = cu.act(meas)
        cpu.append(1e3 * (time.thread_time() - t0))
    return float(np.percentile(cpu, 50)), float(np.percentile(cpu, 99))


def _decision_figures(out: dict, ours: dict, module_dir: Path, targets: int, t, quick: bool, echo) -> None:
    from rl_isac.evaluation.harness import evaluate
    from rl_isac.rllib.controller import PPOController, load_module
    from rl_isac.scenario import ScenarioConfig

    cfg = ScenarioConfig.paper(targets, fidelity="surrogate")
    module = load_module(module_dir)
    blocks = 20 if quick else 100
    r = evaluate("dgnn-ppo", cfg=cfg, episodes=1 if quick else 3, blocks=blocks, progress=False,
                 controller=PPOController(cfg.replace(num_blocks=blocks), module))
    out["ppo_decision_ms_p50"], out["ppo_decision_ms_p99"] = r["decision_ms_p50"], r["decision_ms_p99"]
    echo(f"dgnn-ppo decision I={targets}: p50 {r['decision_ms_p50']:.2f} ms, p99 {r['decision_ms_p99']:.2f} ms")
    out["ppo_decision_cpu_ms_p50"], out["ppo_decision_cpu_ms_p99"] = _decision_cpu_ms(cfg, module, blocks)
    shipped = Path(__file__).resolve().parents[2] / "results" / "checkpoints" / f"ppo-I{targets}"
    if (shipped / "checkpoint").is_dir():  # the reference checkpoint: its actor options may cost more per block
        ref = load_module(shipped)
        r = evaluate("dgnn-ppo", cfg=cfg, episodes=1 if quick else 3, blocks=blocks, progress=False,
                     controller=PPOController(cfg.replace(num_blocks=blocks), ref))
        cpu50, cpu99 = _decision_cpu_ms(cfg, ref, blocks)
        out["shipped_checkpoint_decision"] = {
            "checkpoint": str(shipped), "detection_features": bool(ref.detection_features),
            "milp_features": bool(ref.milp_features), "ms_p50": r["decision_ms_p50"], "ms_p99": r["decision_ms_p99"],
            "cpu_ms_p50": cpu50, "cpu_ms_p99": cpu99}
        echo(f"dgnn-ppo decision I={targets}, shipped {shipped.name} (detection {ref.detection_features}, milp "
             f"{ref.milp_features}): p50 {r['decision_ms_p50']:.2f} ms, p99 {r['decision_ms_p99']:.2f} ms wall; "
             f"{cpu50:.2f} / {cpu99:.2f} ms thread CPU")
    echo(f"dgnn-ppo decision I={targets}, thread CPU time: p50 {out['ppo_decision_cpu_ms_p50']:.2f} ms, "
         f"p99 {out['ppo_decision_cpu_ms_p99']:.2f} ms")
    micro = _micro_breakdown(cfg, module, t.num_envs_per_env_runner, steps=10 if quick else 40)
    trained = ours["env_steps"] / ours["iterations_measured"]
    micro["learner"] = 1e3 * ours["timers_s"]["learner_update_timer"] / trained
    micro["learner_driver_cpu"] = 1e3 * ours["driver_thread_cpu_s"] / trained
    micro["sampling_total"] = 1e3 * ours["timers_s"]["env_runner_sampling_timer"] / trained
    out["ppo_breakdown_ms_per_env_step"] = micro
    echo("ppo time per env step (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in micro.items()))
    single = _micro_breakdown(cfg, module, 1, steps=10 if quick else 60)
    out["ppo_decision_breakdown_ms"] = {k: single[k] for k in ("window_push_ekf", "observation", "encoder",
                                                                "ar_sampling", "module_forward")}
    echo("dgnn-ppo decision pieces at batch 1 (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                              out["ppo_decision_breakdown_ms"].items()))
