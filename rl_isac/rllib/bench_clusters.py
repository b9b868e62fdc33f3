"""Several CU clusters in numbers: env steps/s, decision latency and RMSE per cluster count (a benchmark).

How to run (writes ``results/clusters.json`` and ``results/clusters.md``; about 2-4 minutes on one core)::

    nice -n 10 rl-isac bench --clusters                     # defaults below
    rl-isac bench --clusters --cluster-episodes 30 --cluster-blocks 100 --cluster-fidelity signal --json PATH
    rl-isac bench --clusters --cluster-episodes 30 --cluster-fidelity signal --cluster-seed 1 --json PATH  # seed 1

For each cluster count ``C`` in (1, 2, 4) on the ``large`` preset (12 BSs, 600 m x 100 m; 24 targets = full
load and 12 targets = half load):

* ``env``: the :class:`~rl_isac.rllib.env.ISACMultiAgentEnv` with ``clusters = C`` at surrogate fidelity
  (training's), driven by every cluster's nearest-BS action toward its own predictions
  (:func:`nearest_cluster_actions`; the action's cost is not timed): ``env_steps_per_s`` (one env step =
  one block of the whole network, every agent acting) and ``agent_steps_per_s = C x env_steps_per_s``,
  ``step_ms_p50``. ``C = 1`` is the one-CU env (window + EKF anchor); ``C > 1`` the cluster path (per-cluster
  EKFs, handover, per-cluster windows).
* ``policy``: the shared PPO module's inference time on a cluster's observation (:func:`policy_latency`),
  one agent alone and all ``C`` agents batched (skipped without the phase-1 checkpoint).
* ``decision`` and ``rmse``: the clustered ``ekf-milp`` (:class:`~rl_isac.controllers.clustered.ClusteredCU`,
  one sub-CU per cluster with handover) in the evaluation harness on the evaluation seeds of ``seed``;
  ``C = 1`` is the whole-network ``ekf-milp`` (one CU over all 12 BSs; the same numbers, a test checks it).
  ``decision_ms_p50/p99``: the whole clustered decision per block (sub-CUs one after another, as here);
  ``slowest_cluster_ms_p50/p99``: the slowest sub-CU's share (what a deployment with the clusters in
  parallel waits for). ``rmse_m`` with its 95 % interval over episodes, ``lost_fraction``, and the paired
  per-episode RMSE difference to ``C = 1`` with its 95 % interval (same seeds, same worlds). Every ``C > 1``
  with both capacity-repair rules (:data:`rl_isac.clusters.REPAIRS`: ``information``, the default, paired
  against ``distance``, the earlier rule, on the same worlds).

``--cluster-ppo DIR`` (:func:`ppo_comparison`, writes ``results/clusters_ppo.{json,md}``): instead, a trained
clustered ``dgnn-ppo`` against the clustered ``ekf-milp`` of the same ``C`` and the whole-network ``ekf-milp``.

The defaults (8 episodes x 100 blocks, surrogate fidelity) are a handful of episodes, not the 30 x 100 at
signal level the project judges methods on: the file says so (``protocol``). Timings depend on the
machine's load; only the ratios within one run mean much.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np

from rl_isac.clusters import CLUSTER_COUNTS, REPAIRS, cluster_sub_actions
from rl_isac.controllers.clustered import make_clustered_controller
from rl_isac.evaluation.compare import rmse_ci95
from rl_isac.evaluation.harness import evaluate, git_revision
from rl_isac.io import write_json_atomic
from rl_isac.network import nearest_association
from rl_isac.physics.arrays import beams_toward
from rl_isac.physics.channel import geometry
from rl_isac.scenario import ScenarioConfig

DEFAULT_PRETRAINED = Path(__file__).resolve().parents[2] / "results" / "checkpoints" / "dgnn-I4"
"""Phase-1 encoder of the policy-latency figure (its cost, not its accuracy, matters there)."""


def nearest_cluster_actions(env) -> dict:
    """Every agent's action: nearest-BS association of its owned slots toward its predictions, geometric
    beams, its anchors as the estimate (a cheap feasible policy; works for one cluster too)."""
    if env.num_clusters == 1:
        pred, est = env.window.anchor_next_m, env.window.anchor_m
        assoc = env.world.nearest_association(pred)
        from rl_isac.association import association_to_sub_actions

        return {env.agents[0]: {"pairs": association_to_sub_actions(assoc, env.cfg.num_rf),
                                "beams": env.world.beams_toward(pred).reshape(-1),
                                "estimate": est.reshape(-1).astype(np.float32)}}
    out = {}
    pred_all, est_all = env.tracker.predicted_position(), env.tracker.estimate_m
    for c, a in enumerate(env.agents):
        sub = env._sub[c]
        slots = env.tracker.slots[c]
        valid = slots >= 0
        rows = np.maximum(slots, 0)
        pred = np.where(valid[:, None], pred_all[rows], env._pad_m[c])
        bs_pos = np.asarray(sub.bs_positions_m)
        full = np.zeros((sub.num_bs, sub.num_targets), bool)
        if valid.any():  # a cluster without targets STOPs at once
            full[:, valid] = nearest_association(sub.replace(num_targets=int(valid.sum())), bs_pos, pred[valid])
        _, angle = geometry(bs_pos, pred)
        out[a] = {"pairs": cluster_sub_actions(full, valid, sub.num_rf),
                  "beams": beams_toward(np.cos(angle), sub.codebook_size, sub.num_tracking_symbols).reshape(-1),
                  "estimate": np.where(valid[:, None], est_all[rows], 0.0).reshape(-1).astype(np.float32)}
    return out


def env_throughput(clusters: int, targets: int = 24, episodes: int = 2, blocks: int = 100, seed: int = 0,
                   preset: str = "large") -> dict:
    """Env steps/s of the clustered env (module docstring); only ``reset``/``step`` are timed."""
    from rl_isac.rllib.env import ISACMultiAgentEnv

    env = ISACMultiAgentEnv({"preset": preset, "targets": targets, "clusters": clusters, "blocks": blocks,
                             "fidelity": "surrogate", "seed": seed})
    step_s, handovers = [], 0
    total = 0.0
    for e in range(episodes):
        t0 = time.perf_counter()
        env.reset(seed=seed + e)
        total += time.perf_counter() - t0
        done = False
        while not done:
            acts = nearest_cluster_actions(env)
            t0 = time.perf_counter()
            _, _, term, _, infos = env.step(acts)
            dt = time.perf_counter() - t0
            total += dt
            step_s.append(dt)
            handovers += sum(int(i.get("handovers", 0)) for i in infos.values())
            done = term["__all__"]
    steps = len(step_s)
    return {"clusters": clusters, "env_steps": steps, "env_steps_per_s": steps / total,
            "agent_steps_per_s": clusters * steps / total, "step_ms_p50": 1e3 * float(np.median(step_s)),
            "step_ms_p99": 1e3 * float(np.percentile(step_s, 99)), "handovers": handovers}


def policy_latency(clusters: int, pretrained: str | Path, targets: int = 24, calls: int = 40, seed: int = 0,
                   preset: str = "large") -> dict:
    """Decision time of the shared PPO module (:class:`~rl_isac.rllib.module.ISACPPOModule`, untrained actor on
    the phase-1 encoder ``pretrained``: the cost does not depend on the weights) on one block's observations of
    every agent: ``batch_ms``: all ``C`` agents in one batch; ``agent_ms``: one agent's observation alone (what a
    sub-CU deciding on its own waits for). One torch thread, inference (greedy) pass."""
    import torch
    from ray.rllib.core.columns import Columns

    from rl_isac.rllib.env import ISACMultiAgentEnv
    from rl_isac.rllib.module import ISACPPOModule
    from rl_isac.training.pretrain import load_configs

    torch.set_num_threads(1)
    env = ISACMultiAgentEnv({"preset": preset, "targets": targets, "clusters": clusters, "blocks": 20,
                             "fidelity": "surrogate"})
    obs, _ = env.reset(seed=seed)
    for _ in range(10):  # a window with measurements in it
        obs, *_ = env.step(nearest_cluster_actions(env))
    aid = env.agents[0]
    torch.manual_seed(seed)
    module = ISACPPOModule(observation_space=env.observation_spaces[aid], action_space=env.action_spaces[aid],
                           model_config={"dgnn": load_configs(Path(pretrained))["dgnn"].to_dict(),
                                         "dgnn_weights": str(Path(pretrained) / "model.pt")})
    module.eval()

    def batch(agents):
        return {Columns.OBS: {k: torch.as_tensor(np.stack([obs[a][k] for a in agents])) for k in obs[aid]}}

    def timed(b) -> list[float]:
        out = []
        with torch.no_grad():
            module.forward_inference(b)  # warm-up
            for _ in range(calls):
                t0 = time.perf_counter()
                module.forward_inference(b)
                out.append(1e3 * (time.perf_counter() - t0))
        return out

    all_ms, one_ms = timed(batch(env.agents)), timed(batch([aid]))
    return {"clusters": clusters, "batch_ms_p50": float(np.median(all_ms)),
            "batch_ms_p99": float(np.percentile(all_ms, 99)), "agent_ms_p50": float(np.median(one_ms)),
            "agent_ms_p99": float(np.percentile(one_ms, 99)), "calls": calls}


def clustered_evaluation(clusters: int, targets: int = 24, episodes: int = 8, blocks: int = 100, seed: int = 0,
                         fidelity: str = "surrogate", preset: str = "large", method: str = "ekf-milp",
                         repair: str = REPAIRS[0]) -> dict:
    """The clustered ``method`` in the harness (capacity ``repair`` rule, :mod:`rl_isac.clusters`); adds the
    slowest sub-CU's decision time and the handovers."""
    cfg = ScenarioConfig.preset(preset, num_targets=targets, fidelity=fidelity, num_blocks=blocks)
    cu = make_clustered_controller(method, cfg, clusters, repair=repair)
    r = evaluate(method, cfg=cfg, episodes=episodes, blocks=blocks, seed=seed, preset=preset, progress=False,
                 controller=cu)
    slowest = cu.slowest_cluster_ms
    return {"clusters": clusters, "repair": repair if clusters > 1 else "-", "method": r["method"],
            "rmse_m": r["rmse_m"], "rmse_ci95_m": rmse_ci95(r),
            "rmse_per_episode_m": r["rmse_per_episode_m"],
            "median_episode_rmse_m": float(np.median(r["rmse_per_episode_m"])), "lost_fraction": r["lost_fraction"],
            "pcrb_rmse_m": r["pcrb_rmse_m"], "missed_fraction": r["missed_fraction"],
            "track_losses": r["track_losses"], "decision_ms_p50": r["decision_ms_p50"],
            "decision_ms_p99": r["decision_ms_p99"], "slowest_cluster_ms_p50": float(np.percentile(slowest, 50)),
            "slowest_cluster_ms_p99": float(np.percentile(slowest, 99)), "handovers": cu.handovers,
            "world_seeds": r["world_seeds"]}


def _paired(a: list[float], b: list[float]) -> tuple[float, float]:
    d = np.asarray(a, float) - np.asarray(b, float)
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    return float(d.mean()), float(half)


def bench_clusters(counts: tuple[int, ...] = CLUSTER_COUNTS, targets: tuple[int, ...] = (24, 12), episodes: int = 8,
                   blocks: int = 100, env_episodes: int = 2, seed: int = 0, fidelity: str = "surrogate",
                   pretrained: str | Path | None = DEFAULT_PRETRAINED, policy_calls: int = 40,
                   repairs: tuple[str, ...] = REPAIRS, json_path: str = "results/clusters.json", echo=print) -> dict:
    """Every figure of the module docstring, per cluster count; returns the JSON dict (with ``table_md``).

    The env throughput runs at ``targets[0]``; the evaluation at every entry of ``targets`` (24 = full load:
    every RF chain has a target, so each cluster owns exactly ``M_c N_RF`` targets and the capacity repair
    places some with a neighbour; 12 = half load, no cluster is ever full). ``repairs``: the capacity-repair
    rules evaluated for every ``C > 1`` (default both: the default ``information`` rule is also paired against
    ``distance`` on the same worlds)."""
    if 1 not in counts:
        counts = (1, *counts)
    load_start = os.getloadavg()[0]
    env_rows, eval_rows = [], []
    for C in counts:
        env_rows.append(env_throughput(C, targets=targets[0], episodes=env_episodes, blocks=blocks, seed=seed))
        echo(f"C={C}: env {env_rows[-1]['env_steps_per_s']:.1f} steps/s")
    policy_rows, policy_note = [], None
    if pretrained is not None and (Path(pretrained) / "model.pt").is_file():
        for C in counts:
            policy_rows.append(policy_latency(C, pretrained, targets=targets[0], calls=policy_calls, seed=seed))
            echo(f"C={C}: policy {policy_rows[-1]['agent_ms_p50']:.1f} ms per agent")
    else:
        policy_note = f"no phase-1 checkpoint at {pretrained}: policy latency not measured"
    for I in targets:
        rows = []
        for C in counts:
            for rep in (repairs if C > 1 else repairs[:1]):
                rows.append(clustered_evaluation(C, targets=I, episodes=episodes, blocks=blocks, seed=seed,
                                                 fidelity=fidelity, repair=rep))
                rows[-1]["targets"] = I
                echo(f"I={I} C={C} {rows[-1]['repair']}: rmse {rows[-1]['rmse_m']:.3f} m, decision p50 "
                     f"{rows[-1]['decision_ms_p50']:.1f} ms")
        base = rows[0]["rmse_per_episode_m"]
        for r in rows:
            r["paired_rmse_diff_m"], r["paired_rmse_diff_ci95_m"] = _paired(r["rmse_per_episode_m"], base)
            other = [o for o in rows if o["clusters"] == r["clusters"] and o["repair"] == REPAIRS[1]]
            if r["repair"] == REPAIRS[0] and other:  # the default repair against the distance rule, same worlds
                r["vs_distance_repair_m"] = _paired(r["rmse_per_episode_m"], other[0]["rmse_per_episode_m"])
        eval_rows += rows
    data = {"protocol": {"preset": "large", "targets": list(targets), "episodes": episodes, "blocks": blocks,
                         "fidelity": fidelity, "evaluation_seed": seed, "env_episodes": env_episodes,
                         "repairs": list(repairs), "json": str(json_path),
                         "load_average_1min": [load_start, os.getloadavg()[0]], "cpu_count": os.cpu_count(),
                         "note": _protocol_note(episodes, blocks, fidelity)},
            "env": env_rows, "policy": policy_rows, "policy_note": policy_note, "evaluation": eval_rows,
            "machine": platform.processor() or platform.machine(),
            "git_revision": git_revision()}
    data["table_md"] = markdown(data)
    return data


def _protocol_note(episodes: int, blocks: int, fidelity: str) -> str:
    """What the evaluation's size means against the project's claim protocol (30+ x 100, signal level)."""
    if episodes >= 30 and blocks >= 100 and fidelity == "signal":
        size = f"{episodes} x {blocks} at signal fidelity (the claim protocol)"
    else:
        size = (f"a handful of episodes ({episodes} x {blocks}) at {fidelity} fidelity, not the 30 x 100 "
                "signal-level protocol")
    return size + "; timings on a shared machine, one process"


def _command(p: dict) -> str:
    """The ``rl-isac bench --clusters`` command line that reproduces ``p`` (the protocol block)."""
    cmd = "rl-isac bench --clusters"
    if p.get("episodes", 8) != 8:
        cmd += f" --cluster-episodes {p['episodes']}"
    if p.get("blocks", 100) != 100:
        cmd += f" --cluster-blocks {p['blocks']}"
    if p.get("fidelity", "surrogate") != "surrogate":
        cmd += f" --cluster-fidelity {p['fidelity']}"
    if list(p.get("targets", [24, 12])) != [24, 12]:
        cmd += " --cluster-targets " + " ".join(str(t) for t in p["targets"])
    if p.get("evaluation_seed", 0):
        cmd += f" --cluster-seed {p['evaluation_seed']}"
    if p.get("json", "results/clusters.json") != "results/clusters.json":
        cmd += f" --json {p['json']}"
    return cmd


def markdown(data: dict) -> str:
    """The Markdown summary of :func:`bench_clusters`'s result."""
    p = data["protocol"]
    lines = ["# Several CU clusters on the `large` preset (12 BSs, 600 m x 100 m)", "",
             f"Command: `nice -n 10 {_command(p)}` (rl_isac/rllib/bench_clusters.py). "
             f"Protocol: {p['note']}. Load average at start/end: {p['load_average_1min'][0]:.1f} / "
             f"{p['load_average_1min'][1]:.1f} on {p['cpu_count']} cores.", "",
             f"Env throughput at {p['targets'][0]} targets:", "",
             "| C | BSs per cluster | env steps/s | agent steps/s | env step p50 ms | handovers (env) |",
             "|---|---|---|---|---|---|"]
    for r in data["env"]:
        lines.append(f"| {r['clusters']} | {12 // r['clusters']} | {r['env_steps_per_s']:.1f} | "
                     f"{r['agent_steps_per_s']:.1f} | {r['step_ms_p50']:.1f} | {r['handovers']} |")
    if data.get("policy"):
        lines += ["", f"Shared PPO module (`ISACPPOModule`, inference pass, one torch thread) on one block's "
                      f"observations at {p['targets'][0]} targets:", "",
                  "| C | one agent p50/p99 ms | all C agents in one batch p50/p99 ms |", "|---|---|---|"]
        for r in data["policy"]:
            lines.append(f"| {r['clusters']} | {r['agent_ms_p50']:.1f} / {r['agent_ms_p99']:.1f} | "
                         f"{r['batch_ms_p50']:.1f} / {r['batch_ms_p99']:.1f} |")
    elif data.get("policy_note"):
        lines += ["", data["policy_note"]]
    lines += ["", f"Clustered `ekf-milp` vs whole-network `ekf-milp` (C = 1), {p['episodes']} episodes x "
                  f"{p['blocks']} blocks, {p['fidelity']}, evaluation seeds of seed {p['evaluation_seed']} "
                  "(the same worlds for every C):", "",
              "| I | C | repair | RMSE m (95 %) | median episode m | vs C=1, paired m (95 %) | "
              "vs distance repair, paired m (95 %) | lost | PCRB m | "
              "decision p50/p99 ms | slowest cluster p50/p99 ms | handovers |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["evaluation"]:
        vs = r.get("vs_distance_repair_m")
        lines.append(f"| {r['targets']} | {r['clusters']} | {r.get('repair', 'distance')} | "
                     f"{r['rmse_m']:.3f} +- {r['rmse_ci95_m']:.3f} | "
                     f"{r['median_episode_rmse_m']:.3f} | "
                     f"{r['paired_rmse_diff_m']:+.3f} +- {r['paired_rmse_diff_ci95_m']:.3f} | "
                     + (f"{vs[0]:+.3f} +- {vs[1]:.3f} | " if vs else "- | ") +
                     f"{r['lost_fraction']:.4f} | {r['pcrb_rmse_m']:.3f} | {r['decision_ms_p50']:.1f} / "
                     f"{r['decision_ms_p99']:.1f} | {r['slowest_cluster_ms_p50']:.1f} / "
                     f"{r['slowest_cluster_ms_p99']:.1f} | {r['handovers']} |")
    lines += ["", "I = 24 is full load (24 RF chains): each cluster must own exactly M_c N_RF targets, so targets "
                  "beyond a cluster's share are placed with a neighbour (capacity repair) and tracked from its farther "
                  "BSs; fewer targets (e.g. 12) leave spare chains in every cluster. Repair `information` (the "
                  "default) passes the targets that lose least expected information, re-chosen every block; "
                  "`distance` (the earlier rule) the ones nearest the neighbour's area (rl_isac.clusters).",
              "", "RMSE per target over targets, blocks and episodes; lost: target-blocks with error > 5 m. The "
                  "decision is all sub-CUs one after another; 'slowest cluster' is what parallel sub-CUs would wait "
                  "for. Env steps: one block of the whole network (every agent acting), surrogate fidelity, "
                  "nearest-BS actions per cluster; the cluster path runs its C EKFs and C windows one after "
                  "another in one process (per-call overhead dominates at these sizes), so env steps/s fall with "
                  "C while agent steps/s rise."]
    return "\n".join(lines)


def _episode_rows(cu, cfg: ScenarioConfig, seeds: list[int], blocks: int) -> dict:
    """One CU on the evaluation worlds ``seeds`` (:func:`rl_isac.evaluation.harness.run_episode`, which checks
    (5c)-(5f) every block): RMSE with its 95 % interval, per-episode RMSE and lost fraction, PCRB, decision times."""
    from rl_isac.evaluation.harness import LOST_M, run_episode

    eps = [run_episode(cu, cfg, s, blocks) for s in seeds]
    sq = np.stack([e["sq_err"] for e in eps])                                   # (E, Q, I) m^2
    lost_ep = np.mean(sq > LOST_M**2, axis=(1, 2))
    dec = 1e3 * np.concatenate([e["decision_s"] for e in eps])
    r = {"method": cu.name, "rmse_m": float(np.sqrt(sq.mean())),
         "rmse_per_episode_m": np.sqrt(sq.mean(axis=(1, 2))).tolist(),
         "lost_fraction": float(lost_ep.mean()), "lost_per_episode": lost_ep.tolist(),
         "lost_ci95": float(1.96 * lost_ep.std(ddof=1) / np.sqrt(len(eps))) if len(eps) > 1 else float("nan"),
         "pcrb_rmse_m": float(np.sqrt(np.stack([e["pcrb"] for e in eps]).mean())),
         "missed_fraction": float(1 - sum(e["detected"] for e in eps) / max(sum(e["assigned"] for e in eps), 1)),
         "decision_ms_p50": float(np.percentile(dec, 50)), "decision_ms_p99": float(np.percentile(dec, 99)),
         "violations": 0, "world_seeds": list(seeds)}
    r["rmse_ci95_m"] = rmse_ci95(r)
    r["median_episode_rmse_m"] = float(np.median(r["rmse_per_episode_m"]))
    return r


def ppo_comparison(checkpoint: str | Path, targets: int = 24, episodes: int = 30, blocks: int = 100, seed: int = 0,
                   fidelity: str = "signal", json_path: str | Path = "results/clusters_ppo.json", echo=print) -> dict:
    """The trained clustered ``dgnn-ppo`` (a ``rl-isac train --preset large --clusters C`` run directory) against
    the clustered ``ekf-milp`` with the same ``C`` (its warm start's expert) and the whole-network ``ekf-milp``
    (one CU over the 12 BSs), on the same evaluation worlds (:func:`rl_isac.seeds.evaluation_seeds` of ``seed``).

    Per method: RMSE (95 % interval over episodes), median episode RMSE, lost fraction (target-blocks with error
    > 5 m; 95 % interval over episodes), PCRB, decision p50/p99; paired per-episode RMSE differences (95 %) to both
    ``ekf-milp`` rows. ``dgnn-milp`` has no row: the phase-1 DGNNs are trained on the paper's BS layout, which the
    whole ``large`` network is not (``rl-isac evaluate --preset large --method dgnn-milp`` refuses it); the shared
    module's encoder is applied per cluster (:mod:`rl_isac.training.ppo`, several CU clusters)."""
    import json

    from rl_isac.controllers import make_controller
    from rl_isac.seeds import evaluation_seeds

    meta = json.loads((Path(checkpoint) / "train_config.json").read_text())
    C = int(meta["env_config"].get("clusters", 1))
    cfg = ScenarioConfig.preset("large", num_targets=targets, fidelity=fidelity, num_blocks=blocks)
    seeds = evaluation_seeds(seed, episodes)
    load_start = os.getloadavg()[0]
    t0 = time.perf_counter()
    cus = [make_controller("clustered-dgnn-ppo", cfg, checkpoint=str(checkpoint)),
           make_clustered_controller("ekf-milp", cfg, C), make_controller("ekf-milp", cfg)]
    rows = []
    for cu in cus:
        t1 = time.perf_counter()
        rows.append(_episode_rows(cu, cfg, seeds, blocks))
        rows[-1]["wall_s"] = time.perf_counter() - t1
        echo(f"{rows[-1]['method']}: rmse {rows[-1]['rmse_m']:.3f} m, lost {rows[-1]['lost_fraction']:.4f} "
             f"({rows[-1]['wall_s']:.0f} s)")
    rows[-1]["method"] = "ekf-milp (whole network)"
    for r in rows:
        r["vs_clustered_ekf_milp_m"] = _paired(r["rmse_per_episode_m"], rows[1]["rmse_per_episode_m"])
        r["vs_whole_ekf_milp_m"] = _paired(r["rmse_per_episode_m"], rows[2]["rmse_per_episode_m"])
    training = {k: meta.get(k) for k in ("iterations", "env_steps", "git_revision", "pretrained", "seed",
                                         "cluster_repair")}
    curve_path = Path(checkpoint) / "learning_curve.json"
    if curve_path.is_file():
        curve = json.loads(curve_path.read_text())["iterations"]
        training["wall_s"] = curve[-1]["wall_s"] if curve else None
        training["curve"] = [{k: row[k] for k in ("iteration", "env_steps", "wall_s", "return_mean", "rmse_m",
                                                  "lost_fraction")} for row in curve]
    ws = meta.get("warm_start") or {}
    training["warm_start"] = {k: ws.get(k) for k in ("expert", "episodes", "samples", "dagger_rounds", "wall_s",
                                                     "final", "train_accuracy")}
    training["train"] = meta.get("train")
    data = {"protocol": {"preset": "large", "targets": targets, "clusters": C, "episodes": episodes,
                         "blocks": blocks, "fidelity": fidelity, "evaluation_seed": seed,
                         "repair": cus[1].layout.repair,
                         "note": _protocol_note(episodes, blocks, fidelity),
                         "load_average_1min": [load_start, os.getloadavg()[0]], "cpu_count": os.cpu_count(),
                         "wall_s": time.perf_counter() - t0},
            "checkpoint": str(checkpoint), "json_path": str(json_path), "training": training, "evaluation": rows,
            "git_revision": git_revision()}
    data["table_md"] = ppo_markdown(data)
    return data


def _ppo_command(p: dict, checkpoint: str, json_path: str = "results/clusters_ppo.json") -> str:
    cmd = f"rl-isac bench --clusters --cluster-ppo {checkpoint}"
    if p["episodes"] != 8:
        cmd += f" --cluster-episodes {p['episodes']}"
    if p["blocks"] != 100:
        cmd += f" --cluster-blocks {p['blocks']}"
    if p["fidelity"] != "surrogate":
        cmd += f" --cluster-fidelity {p['fidelity']}"
    if p["targets"] != 24:
        cmd += f" --cluster-targets {p['targets']}"
    if p.get("evaluation_seed", 0):
        cmd += f" --cluster-seed {p['evaluation_seed']}"
    return cmd + f" --json {json_path}"


def _relative(path: str | None) -> str | None:
    """``results/checkpoints/...`` of an absolute checkpoint path (the repository-relative form), else the path."""
    if path and "results/checkpoints/" in path:
        return "results/checkpoints/" + path.split("results/checkpoints/", 1)[1]
    return path


def ppo_markdown(data: dict) -> str:
    """The Markdown summary of :func:`ppo_comparison`."""
    p, t = data["protocol"], data["training"]
    ws = t.get("warm_start") or {}
    train = t.get("train") or {}
    cmd = _ppo_command(p, data["checkpoint"], data.get("json_path", "results/clusters_ppo.json"))
    seed_arg = f" --seed {t['seed']}" if t.get("seed") else ""
    lines = [f"# Clustered dgnn-ppo (C = {p['clusters']}) vs clustered and whole-network ekf-milp, `large` preset, "
             f"{p['targets']} targets", "",
             f"Command: `nice -n 10 {cmd}`"
             " (rl_isac/rllib/bench_clusters.py). "
             f"Protocol: {p['note']}; evaluation seeds of seed {p['evaluation_seed']} (the same worlds for every "
             f"row). Load average at start/end: {p['load_average_1min'][0]:.1f} / {p['load_average_1min'][1]:.1f} "
             f"on {p['cpu_count']} cores; evaluation wall time {p['wall_s']:.0f} s. Clusters' capacity repair: "
             f"`{p.get('repair', 'distance')}` (rl_isac.clusters), for the clustered rows and the training env.", "",
             f"Policy: `{data['checkpoint']}`, {t.get('iterations')} PPO iterations, {t.get('env_steps')} env steps"
             + (f", {t['wall_s']:.0f} s of PPO" if t.get("wall_s") is not None else "")
             + f" at surrogate fidelity (config `results/clusters_ppo_train.yaml`: train batch "
               f"{train.get('train_batch_size')}, {train.get('num_epochs')} epochs), after the clustered warm start "
               f"(behaviour cloning of {ws.get('expert')} on {ws.get('episodes')} training episodes + "
               f"{ws.get('dagger_rounds')} DAgger round(s), {ws.get('samples')} agent samples"
             + (f", {ws['wall_s']:.0f} s" if ws.get("wall_s") is not None else "") + ").", "",
             f"Training command: `nice -n 10 rl-isac train --preset large --clusters {p['clusters']} --targets "
             f"{p['targets']} --pretrained {_relative(t.get('pretrained'))} --out {data['checkpoint']} --config "
             f"results/clusters_ppo_train.yaml --num-env-runners {train.get('num_env_runners')} --iterations "
             f"{t.get('iterations')}{seed_arg}` (one process, OMP_NUM_THREADS=1; a run continued with `--resume` "
             f"counts its iterations in total).", ""]
    if ws.get("final"):
        f, ta = ws["final"], ws.get("train_accuracy") or {}
        lines += [f"Warm start, greedy decoding vs the expert's sub-actions: pair recall {f['pair_recall']:.3f} on "
                  f"held-out expert episodes (exact association {f['exact_association']:.3f}), "
                  f"{ta.get('pair_recall', float('nan')):.3f} on the training states.", ""]
    if t.get("curve"):
        lines += ["| PPO iteration | env steps | wall s | return | training RMSE m | training lost |",
                  "|---|---|---|---|---|---|"]
        for row in t["curve"]:
            lines.append(f"| {row['iteration']} | {row['env_steps']} | {row['wall_s']:.0f} | "
                         f"{row['return_mean']:.1f} | {row['rmse_m']:.3f} | {row['lost_fraction']:.4f} |")
        lines.append("")
    lines += ["| method | RMSE m (95 %) | median episode m | lost (95 %) | vs clustered ekf-milp, paired m (95 %) | "
              "vs whole ekf-milp, paired m (95 %) | PCRB m | missed | decision p50/p99 ms |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in data["evaluation"]:
        a, b = r["vs_clustered_ekf_milp_m"], r["vs_whole_ekf_milp_m"]
        lines.append(f"| {r['method']} | {r['rmse_m']:.3f} +- {r['rmse_ci95_m']:.3f} | "
                     f"{r['median_episode_rmse_m']:.3f} | {r['lost_fraction']:.4f} +- {r['lost_ci95']:.4f} | "
                     f"{a[0]:+.3f} +- {a[1]:.3f} | {b[0]:+.3f} +- {b[1]:.3f} | {r['pcrb_rmse_m']:.3f} | "
                     f"{r['missed_fraction']:.3f} | {r['decision_ms_p50']:.1f} / {r['decision_ms_p99']:.1f} |")
    lines += ["", "RMSE per target over targets, blocks and episodes; lost: target-blocks with error > 5 m. Every "
                  "action passed the harness's (5c)-(5f) check. dgnn-milp has no row: the phase-1 DGNNs are trained "
                  "on the paper's BS layout, which `rl-isac evaluate` refuses for the whole large network; the PPO "
                  "module applies that encoder per cluster (6 BSs, 12 slots)."]
    return "\n".join(lines)


def _rows_by_key(data: dict) -> tuple[str, dict[tuple, dict], dict[str, tuple]]:
    """``(kind, {row key: row}, {baseline name: row key})`` of a :func:`bench_clusters` or :func:`ppo_comparison`
    result: rows keyed by ``(targets, clusters, repair)`` resp. by method; the baselines their paired rows use."""
    if "env" in data:
        rows = {(r["targets"], r["clusters"], r["repair"]): r for r in data["evaluation"]}
        return "clusters", rows, {"C=1": None, "distance repair": None}
    rows = {(r["method"],): r for r in data["evaluation"]}
    names = [k for k in rows]
    return "ppo", rows, {"clustered ekf-milp": names[1], "whole ekf-milp": names[2]}


def pool_seeds(datas: list[dict], paths: list[str], json_path: str | None = None) -> dict:
    """Every row of several evaluation seeds' runs of one protocol (same command but ``--cluster-seed``) side by side
    and pooled: per seed and over all ``sum(E_s)`` episodes, the RMSE with its 95 % interval (delta method,
    :func:`rl_isac.evaluation.compare.rmse_ci95`), the lost fraction (its 95 % interval over episodes where the file
    has per-episode values) and the paired per-episode RMSE differences to the baselines (95 %).

    Raises:
        ConfigError: the runs differ in anything but the evaluation seed, or share a seed (the pooled episodes
            must be distinct worlds)."""
    from rl_isac.errors import ConfigError

    kinds = [_rows_by_key(d) for d in datas]
    keep = ("preset", "targets", "clusters", "episodes", "blocks", "fidelity", "repair", "repairs")
    protocols = [{k: d["protocol"].get(k) for k in keep} for d in datas]
    for path, kind, proto in zip(paths, kinds, protocols):
        if kind[0] != kinds[0][0] or proto != protocols[0] or set(kind[1]) != set(kinds[0][1]):
            raise ConfigError("pool", path, f"is not the same protocol as {paths[0]} ({proto} vs {protocols[0]}): "
                                            "only the evaluation seed may differ")
    seeds = [d["protocol"]["evaluation_seed"] for d in datas]
    if len(set(seeds)) != len(seeds):
        raise ConfigError("pool", seeds, "each run must have its own evaluation seed (distinct worlds)")
    if "env" not in datas[0] and len({d["checkpoint"] for d in datas}) != 1:
        raise ConfigError("pool", [d["checkpoint"] for d in datas], "the PPO runs must evaluate one checkpoint")
    kind, first, baselines = kinds[0]
    out_rows = []
    for key in first:
        per = [k[1][key] for k in kinds]
        mse = np.concatenate([np.square(r["rmse_per_episode_m"]) for r in per])
        rmse = float(np.sqrt(mse.mean()))
        row = {"key": list(key), "seeds": seeds,
               "rmse_m": [r["rmse_m"] for r in per], "rmse_ci95_m": [r["rmse_ci95_m"] for r in per],
               "lost_fraction": [r["lost_fraction"] for r in per], "episodes": int(len(mse)),
               "pooled_rmse_m": rmse, "pooled_rmse_ci95_m": rmse_ci95({"rmse_per_episode_m": np.sqrt(mse).tolist(),
                                                                       "rmse_m": rmse}),
               "pooled_lost_fraction": float(np.mean([r["lost_fraction"] for r in per]))}  # equal-size seeds
        if all("lost_per_episode" in r for r in per):
            lost = np.concatenate([r["lost_per_episode"] for r in per])
            row["pooled_lost_fraction"] = float(lost.mean())
            row["pooled_lost_ci95"] = float(1.96 * lost.std(ddof=1) / np.sqrt(len(lost)))
        row["paired_m"] = {}
        for name, base in baselines.items():
            if kind == "clusters":
                base_key = (key[0], 1, "-") if name == "C=1" else (key[0], key[1], REPAIRS[1])
                if name != "C=1" and (key[2] != REPAIRS[0] or base_key not in first):
                    continue  # the default repair against the distance rule, as bench_clusters pairs them
            else:
                base_key = base
            diffs = [np.asarray(r["rmse_per_episode_m"], float)
                     - np.asarray(k[1][base_key]["rmse_per_episode_m"], float) for r, k in zip(per, kinds)]
            row["paired_m"][name] = {"per_seed": [_paired_d(d) for d in diffs],
                                     "pooled": _paired_d(np.concatenate(diffs))}
        out_rows.append(row)
    data = {"kind": kind, "files": list(paths), "protocol": protocols[0], "evaluation_seeds": seeds, "rows": out_rows,
            "git_revisions": [d.get("git_revision") for d in datas], "json": json_path}
    data["table_md"] = pool_markdown(data)
    return data


def _paired_d(d: np.ndarray) -> list[float]:
    """Mean and 95 % half-width of paired per-episode differences."""
    return [float(d.mean()), float(1.96 * d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")]


def pool_markdown(data: dict) -> str:
    """The Markdown table of :func:`pool_seeds`."""
    seeds, p = data["evaluation_seeds"], data["protocol"]
    s = " / ".join(str(x) for x in seeds)
    files = " ".join(data["files"])
    lines = [f"# {'Clustered vs whole-network ekf-milp' if data['kind'] == 'clusters' else 'Clustered dgnn-ppo'}, "
             f"evaluation seeds {s} and pooled", "",
             f"Command: `python -m rl_isac.rllib.bench_clusters pool {files} --json {data.get('json') or 'OUT.json'}` "
             f"(rl_isac/rllib/bench_clusters.py, pool_seeds). Protocol per seed: {p['episodes']} x {p['blocks']} at "
             f"{p['fidelity']} fidelity, `{p['preset']}` preset; each seed its own worlds "
             f"(rl_isac.seeds.evaluation_seeds), so 'pooled' is {len(seeds) * p['episodes']} distinct episodes. "
             f"Revisions of the files: {', '.join(str(r) for r in data['git_revisions'])}.", ""]
    names = list(dict.fromkeys(n for r in data["rows"] for n in r["paired_m"]))
    head = "| " + (" | ".join(["I", "C", "repair"]) if data["kind"] == "clusters" else "method")
    lines += [head + f" | RMSE m, seed {s} (95 %) | pooled RMSE m (95 %) | lost, seed {s} | pooled lost | "
              + " | ".join(f"vs {n}, paired m, seed {s} | vs {n}, pooled" for n in names) + " |"]
    ncol = (3 if data["kind"] == "clusters" else 1) + 4 + 2 * len(names)
    lines.append("|" + "---|" * ncol)
    for r in data["rows"]:
        key = " | ".join(str(k) for k in r["key"])
        per = " / ".join(f"{m:.3f} +- {c:.3f}" for m, c in zip(r["rmse_m"], r["rmse_ci95_m"]))
        lost = " / ".join(f"{x:.4f}" for x in r["lost_fraction"])
        pooled_lost = f"{r['pooled_lost_fraction']:.4f}" + (f" +- {r['pooled_lost_ci95']:.4f}"
                                                            if "pooled_lost_ci95" in r else "")
        cells = []
        for n in names:
            pm = r["paired_m"].get(n)
            if pm is None:
                cells += ["-", "-"]
                continue
            cells.append(" / ".join(f"{m:+.3f} +- {c:.3f}" for m, c in pm["per_seed"]))
            cells.append(f"{pm['pooled'][0]:+.3f} +- {pm['pooled'][1]:.3f}")
        lines.append(f"| {key} | {per} | {r['pooled_rmse_m']:.3f} +- {r['pooled_rmse_ci95_m']:.3f} | {lost} | "
                     f"{pooled_lost} | " + " | ".join(cells) + " |")
    lines += ["", "RMSE per target over targets, blocks and episodes; lost: target-blocks with error > 5 m; paired: "
                  "per-episode RMSE difference on the same worlds (row minus baseline), mean +- 1.96 sd / sqrt(E)."]
    return "\n".join(lines)


def write_bench_clusters(data: dict, json_path: str | Path) -> None:
    """``json_path`` and the Markdown table beside it (``.md``)."""
    write_json_atomic(data, str(json_path))
    Path(json_path).with_suffix(".md").write_text(data["table_md"] + "\n")


def main(argv: list[str] | None = None) -> int:
    """``python -m rl_isac.rllib.bench_clusters pool A.json B.json ... --json OUT.json``: :func:`pool_seeds`."""
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m rl_isac.rllib.bench_clusters",
                                description="pool several evaluation seeds' bench --clusters (or --cluster-ppo) runs")
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("pool", help="the runs side by side and pooled over their episodes")
    q.add_argument("files", nargs="+", help="JSON files of the same command but --cluster-seed")
    q.add_argument("--json", required=True, help="output JSON (the Markdown beside it, .md)")
    args = p.parse_args(argv)
    data = pool_seeds([json.loads(Path(f).read_text()) for f in args.files], args.files, args.json)
    print(data["table_md"])
    write_bench_clusters(data, args.json)
    return 0


__all__ = ["nearest_cluster_actions", "env_throughput", "policy_latency", "clustered_evaluation", "bench_clusters",
           "markdown", "write_bench_clusters", "ppo_comparison", "ppo_markdown", "pool_seeds", "pool_markdown"]


if __name__ == "__main__":
    raise SystemExit(main())
