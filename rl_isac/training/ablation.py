"""``rl-isac ppo-ablation``: the paper's PPO recipe against what we ship, and each lever alone (issue 9).

Every variant trains with the same small budget (``--iterations`` x ``--train-batch`` env steps on
the surrogate world, training seeds only) from the same phase-1 checkpoint and is then
evaluated in closed loop by the harness (:func:`rl_isac.evaluation.harness.evaluate`) on the
same evaluation seeds (:func:`rl_isac.seeds.evaluation_seeds`, never trained or tuned on),
beside the reference CUs (``--references``, default ``dgnn-milp`` and ``ekf-convex``). Per row:
RMSE with a 95 % bootstrap interval over episodes (:func:`rmse_interval`), the median episode,
the lost fraction, the PCRB of the associations used, training env steps and wall time (BC
warm start included).

Variants (:data:`VARIANTS`; overrides of :class:`~rl_isac.rllib.config.PPOTrainConfig`):

* ``paper``: eq. (5a) reward, no warm start, an uninformed actor (``gain_prior 0``);
* ``gain_prior``, ``normalize``, ``fisher``, ``mix``, ``warm_start``: one lever each on top of ``paper``;
  ``dagger``: the warm start plus one DAgger round;
* ``shipped``: the combination the reference checkpoints use (:data:`SHIPPED`);
* ``detection``: ``shipped`` + the actor's detection features (``detection_features``: each pair's credited
  detection probability and the expected objective's marginal gains, :mod:`rl_isac.rllib.module`);
  ``milp_features``: ``detection`` + the MILP's association on the observation's own quantities as a pair feature.

Each variant's run lives in ``--out/<variant>`` and its evaluation in ``--out/<variant>/ablation_eval.json``;
a rerun reuses both (delete the folder to redo one). Writes ``--json`` and a Markdown table beside it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from rl_isac.errors import ConfigError

SHIPPED: dict[str, Any] = {"reward": "mse", "reward_normalize": False, "warm_start": True, "dagger_rounds": 1,
                           "gain_prior": 8.0}
"""The levers of the shipped checkpoints ``results/checkpoints/ppo-I*`` (on top of the defaults)."""
PAPER: dict[str, Any] = {"reward": "mse", "reward_normalize": False, "warm_start": False, "gain_prior": 0.0}
VARIANTS: dict[str, dict[str, Any]] = {
    "paper": PAPER,
    "gain_prior": {**PAPER, "gain_prior": 8.0},
    "normalize": {**PAPER, "reward_normalize": True},
    "fisher": {**PAPER, "reward": "fisher"},
    "mix": {**PAPER, "reward": "mix", "reward_mix": 0.5},
    "warm_start": {**PAPER, "warm_start": True},
    "dagger": {**PAPER, "warm_start": True, "dagger_rounds": 1},
    "shipped": SHIPPED,
    "detection": {**SHIPPED, "detection_features": True},
    "milp_features": {**SHIPPED, "detection_features": True, "milp_features": True},
}
"""Ablation variants (PPOTrainConfig overrides)."""
EVAL_FILE = "ablation_eval.json"


def rmse_interval(rmse_per_episode_m, level: float = 0.95, resamples: int = 4000, seed: int = 0
                  ) -> tuple[float, float]:
    """Percentile-bootstrap interval of the RMSE over episodes (every episode has the same blocks and targets,
    so the RMSE is ``sqrt(mean_e mse_e)``); ``rmse_per_episode_m (E,)`` metres."""
    mse = np.asarray(rmse_per_episode_m, float) ** 2
    if mse.ndim != 1 or len(mse) < 2:
        raise ConfigError("rmse_per_episode_m", np.shape(mse), "needs at least 2 episodes")
    rng = np.random.default_rng(seed)
    boot = np.sqrt(mse[rng.integers(0, len(mse), size=(resamples, len(mse)))].mean(axis=1))
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def paired_difference(ppo_per_episode_m, other_per_episode_m, level: float = 0.95, resamples: int = 4000,
                      seed: int = 0) -> tuple[float, float, float]:
    """RMSE(a) - RMSE(b) on the same episodes (same world seeds) and its paired percentile-bootstrap interval
    (the episodes are resampled together); ``(E,)`` per-episode RMSEs, metres."""
    a, b = np.asarray(ppo_per_episode_m, float) ** 2, np.asarray(other_per_episode_m, float) ** 2
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ConfigError("per-episode RMSEs", (a.shape, b.shape), "need the same episodes, at least 2")
    idx = np.random.default_rng(seed).integers(0, len(a), size=(resamples, len(a)))
    boot = np.sqrt(a[idx].mean(1)) - np.sqrt(b[idx].mean(1))
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return float(np.sqrt(a.mean()) - np.sqrt(b.mean())), float(lo), float(hi)


def summarise(result: dict, **extra: Any) -> dict:
    """The ablation/table row of a harness result."""
    lo, hi = rmse_interval(result["rmse_per_episode_m"])
    return {"method": result["method"], "targets": result["targets"], "rmse_m": result["rmse_m"],
            "rmse_ci95_m": [lo, hi], "median_episode_rmse_m": float(np.median(result["rmse_per_episode_m"])),
            "lost_fraction": result["lost_fraction"], "pcrb_rmse_m": result["pcrb_rmse_m"],
            "episodes": result["episodes"], "blocks": result["blocks"], "fidelity": result["fidelity"],
            "seed": result["seed"], "violations": result["violations"], **extra}


def run_variant(name: str, targets: int, pretrained: str, out: Path, iterations: int, train_overrides: dict,
                episodes: int, blocks: int, fidelity: str, seed: int, echo=print) -> dict:
    """Train (or reuse) and evaluate one variant; returns its row."""
    from rl_isac.evaluation.harness import evaluate, write_json_atomic
    from rl_isac.training.ppo import CHECKPOINT, CURVE, TRAIN_CONFIG, train

    run_dir = out / name
    cached = run_dir / EVAL_FILE
    if cached.is_file():
        echo(f"{name}: reusing {cached}")
        return json.loads(cached.read_text())
    overrides = {**train_overrides, **VARIANTS[name]}
    t0 = time.perf_counter()
    if not (run_dir / CHECKPOINT).is_dir():
        train(targets, pretrained, str(run_dir), iterations=iterations, seed=seed, echo=echo, **overrides)
    run = json.loads((run_dir / TRAIN_CONFIG).read_text())
    curve = json.loads((run_dir / CURVE).read_text())["iterations"]
    warm_s = float((run.get("warm_start") or {}).get("wall_s", 0.0))
    train_wall_s = curve[-1]["wall_s"] + warm_s if curve else warm_s
    echo(f"{name}: trained {run['env_steps']} env steps in {train_wall_s:.0f} s; evaluating")
    result = evaluate("dgnn-ppo", targets=targets, episodes=episodes, blocks=blocks, seed=0, fidelity=fidelity,
                      checkpoint=str(run_dir), progress=False)
    row = summarise(result, variant=name, overrides=VARIANTS[name], env_steps=run["env_steps"],
                    iterations=run["iterations"], train_wall_s=train_wall_s, warm_start_s=warm_s,
                    total_s=time.perf_counter() - t0, git_revision=run.get("git_revision"),
                    train_config=run["train"])
    write_json_atomic(row, cached)
    return row


def markdown(data: dict) -> str:
    """The ablation table (Markdown)."""
    lines = [f"# PPO ablation, I = {data['targets']} ({data['fidelity']} evaluation, {data['episodes']} episodes x "
             f"{data['blocks']} blocks, evaluation seeds of run 0)", "",
             f"Small budgets: {data['iterations']} PPO iterations of ~{data['train_batch']} env steps each per "
             f"variant, on a 2-core machine shared with other jobs (wall times include that contention). Trained "
             f"on the surrogate world, training seeds only; phase-1 checkpoint `{data['pretrained']}`.", "",
             "| variant | levers | RMSE (m) [95 % CI] | median episode (m) | lost | PCRB (m) | env steps | wall (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        lev = ", ".join(f"{k}={v}" for k, v in (r.get("overrides") or {}).items()) or "-"
        lo, hi = r["rmse_ci95_m"]
        steps = r.get("env_steps", "-")
        wall = f"{r['train_wall_s']:.0f}" if "train_wall_s" in r else "-"
        lines.append(f"| {r.get('variant', r['method'])} | {lev} | {r['rmse_m']:.3f} [{lo:.3f}, {hi:.3f}] | "
                     f"{r['median_episode_rmse_m']:.3f} | {r['lost_fraction']:.4f} | {r['pcrb_rmse_m']:.3f} | "
                     f"{steps} | {wall} |")
    lines += ["", "RMSE per target over targets, blocks and episodes; 95 % percentile bootstrap over episodes; "
              "lost: target-blocks with error > 5 m; PCRB of the associations and beams each method used. "
              f"Command: `{data['command']}`."]
    return "\n".join(lines) + "\n"


def ablation(targets: int, pretrained: str, out: str, json_path: str, variants: list[str] | None = None,
             references: tuple[str, ...] = ("dgnn-milp", "ekf-convex"), iterations: int = 3,
             train_batch: int = 1000, episodes: int = 20, blocks: int = 100, fidelity: str = "surrogate",
             seed: int = 0, command: str = "", echo=print) -> dict:
    """Run the ablation (see the module docstring); returns what ``json_path`` holds."""
    from rl_isac.evaluation.harness import evaluate, git_revision, write_json_atomic

    names = list(VARIANTS) if not variants else variants
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ConfigError("--variants", unknown, f"unknown; known: {list(VARIANTS)}")
    if episodes < 2:
        raise ConfigError("--episodes", episodes, "must be >= 2 (the interval needs several episodes)")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_overrides = {"train_batch_size": train_batch, "minibatch_size": min(250, train_batch), "num_epochs": 5,
                       "envs_per_runner": 4, "bc_episodes": 8, "bc_epochs": 10, "checkpoint_every": 1000}
    rows = []
    for ref in references:
        cached = out_dir / f"ref_{ref}.json"
        if cached.is_file():
            rows.append(json.loads(cached.read_text()))
            continue
        echo(f"reference {ref}: evaluating")
        t0 = time.perf_counter()
        res = evaluate(ref, targets=targets, episodes=episodes, blocks=blocks, seed=0, fidelity=fidelity,
                       checkpoint=pretrained, progress=False)
        row = summarise(res, variant=ref, eval_s=time.perf_counter() - t0)
        write_json_atomic(row, cached)
        rows.append(row)
    for name in names:
        rows.append(run_variant(name, targets, pretrained, out_dir, iterations, train_overrides, episodes, blocks,
                                fidelity, seed, echo))
        echo(f"{name}: rmse {rows[-1]['rmse_m']:.3f} m  CI {rows[-1]['rmse_ci95_m']}")
    data = {"targets": targets, "pretrained": str(pretrained), "fidelity": fidelity, "episodes": episodes,
            "blocks": blocks, "iterations": iterations, "train_batch": train_batch, "train_overrides": train_overrides,
            "seed": seed, "git_revision": git_revision(), "command": command, "rows": rows}
    write_json_atomic(data, json_path)
    Path(json_path).with_suffix(".md").write_text(markdown(data))
    return data


TABLE_METHODS = ("dgnn-ppo", "dgnn-milp", "ekf-milp", "dgnn-l2o", "ekf-convex")


def reproduce_cells(cells_dir: str, targets: tuple[int, ...] = (4, 6, 8)) -> list[dict]:
    """The harness results of the table's methods from ``rl-isac reproduce`` cells (``<out>/cells/<method>-I<I>.json``,
    status ok); a cell that is missing is left out (the table shows "-")."""
    out = []
    for num in targets:
        for method in TABLE_METHODS:
            path = Path(cells_dir) / f"{method}-I{num}.json"
            if path.is_file():
                rec = json.loads(path.read_text())
                if rec.get("status") == "ok":
                    out.append(rec["result"])
    return out


def table(compare_jsons: list[str], ppo_jsons: list[str], json_path: str, command: str = "",
          cells_dirs: list[str] = ()) -> dict:
    """The RMSE table of issue 9 from ``rl-isac compare`` outputs and ``rl-isac evaluate --method dgnn-ppo --json``
    results (within one evaluation seed the same episodes, blocks and fidelity, checked): per method and ``I`` the
    RMSE with its 95 % bootstrap interval, the median episode, the lost fraction, the (5c)-(5f) violations and the
    PCRB of the associations used; the PCRB row is that of ``dgnn-milp``'s associations. Per ``I`` also dgnn-ppo
    against dgnn-milp block by block (Fig. 4 style: the blocks where PPO's RMSE over episodes is lower) and the
    paired per-episode difference to every other method. Inputs of several evaluation seeds (``seed`` of the
    harness: disjoint sets of world seeds) give one section per seed (``data["seeds"]``; with one seed the
    section's keys are also at the top level, as before). ``cells_dirs``: ``rl-isac reproduce`` cell folders
    whose table methods are added (:func:`reproduce_cells`), except where an explicit input has the same method,
    ``I`` and seed (it replaces the cell; listed in ``cells_replaced_by_inputs``). Writes ``json_path`` and a .md
    beside it."""
    from rl_isac.evaluation.harness import write_json_atomic

    results = []
    for path in compare_jsons:
        results += json.loads(Path(path).read_text())["results"]
    results += [json.loads(Path(p).read_text()) for p in ppo_jsons]
    given = {(r["method"], r["targets"], r["seed"]) for r in results}
    replaced = []
    for cells in cells_dirs:  # an explicit input replaces the cell of the same method, I and seed (a newer checkpoint)
        for r in reproduce_cells(cells):
            if (r["method"], r["targets"], r["seed"]) in given:
                replaced.append(f"{r['method']} I={r['targets']} seed {r['seed']}")
            else:
                results.append(r)
    seeds = sorted({r["seed"] for r in results})
    sections = {seed: _seed_table([r for r in results if r["seed"] == seed]) for seed in seeds}
    data = {"seeds": {str(seed): sec for seed, sec in sections.items()}, "command": command,
            "cells_replaced_by_inputs": replaced}
    if len(seeds) == 1:
        data.update(sections[seeds[0]])
    md = [sec["table_md"] for sec in sections.values()]
    if replaced:
        md.append(f"Cells replaced by explicit inputs (a newer checkpoint than the reproduce run's): "
                  f"{', '.join(replaced)}.\n")
    if command:
        md.append(f"Command: `{command}`.\n")
    data["table_md"] = "\n".join(md)
    write_json_atomic(data, json_path)
    Path(json_path).with_suffix(".md").write_text(data["table_md"])
    return data


def _seed_table(results: list[dict]) -> dict:
    """One evaluation seed's section of :func:`table`."""
    keys = {(r["episodes"], r["blocks"], r["fidelity"], r["seed"]) for r in results}
    if len(keys) != 1:
        raise ConfigError("table inputs", sorted(keys), "must share episodes, blocks, fidelity and seed")
    rows = [summarise(r, git_revision=r.get("git_revision"), checkpoint=r.get("checkpoint")) for r in results]
    by = {(r["method"], r["targets"]): r for r in results}
    if len(by) != len(results):
        raise ConfigError("table inputs", sorted(by), "hold a (method, I) twice for one seed")
    per_block = {}
    for (method, targets), r in by.items():
        if method == "dgnn-ppo" and ("dgnn-milp", targets) in by:
            ppo, milp = np.asarray(r["rmse_per_block_m"]), np.asarray(by["dgnn-milp", targets]["rmse_per_block_m"])
            per_block[targets] = {"ppo_rmse_per_block_m": ppo.tolist(), "milp_rmse_per_block_m": milp.tolist(),
                                  "blocks_ppo_lower": int(np.sum(ppo < milp)), "blocks": len(ppo),
                                  "ratio_to_milp": float(r["rmse_m"] / by["dgnn-milp", targets]["rmse_m"])}
        if method == "dgnn-ppo":
            paired = {}
            for (other, t2), o in by.items():
                if t2 == targets and other != method:
                    if o.get("world_seeds") != r.get("world_seeds"):
                        raise ConfigError("table inputs", other, "evaluated on other world seeds than dgnn-ppo")
                    paired[other] = dict(zip(("diff_m", "lo_m", "hi_m"),
                                             paired_difference(r["rmse_per_episode_m"], o["rmse_per_episode_m"])))
            per_block.setdefault(targets, {})["paired_vs"] = paired
    episodes, blocks, fidelity, seed = keys.pop()
    data = {"rows": rows, "per_block": per_block, "episodes": episodes, "blocks": blocks, "fidelity": fidelity,
            "seed": seed}
    targets = sorted({r["targets"] for r in rows})
    methods = list(TABLE_METHODS)
    cell = {(r["method"], r["targets"]): r for r in rows}
    lines = [f"## Evaluation seed {seed} ({episodes} episodes x {blocks} blocks, {fidelity} level)", "",
             f"| method | {' | '.join(f'I = {i}' for i in targets)} |", "|---|" + "---|" * len(targets)]
    for m in methods + ["PCRB (dgnn-milp's associations)"]:
        out = []
        for i in targets:
            r = cell.get((m if not m.startswith("PCRB") else "dgnn-milp", i))
            if r is None:
                out.append("-")
            elif m.startswith("PCRB"):
                out.append(f"{r['pcrb_rmse_m']:.3f}")
            else:
                lo, hi = r["rmse_ci95_m"]
                out.append(f"{r['rmse_m']:.3f} [{lo:.3f}, {hi:.3f}]; median {r['median_episode_rmse_m']:.3f}; "
                           f"lost {r['lost_fraction']:.4f}")
        lines.append(f"| {m} | {' | '.join(out)} |")
    violations = {f"{r['method']} I={r['targets']}": r["violations"] for r in rows if r["violations"]}
    lines += ["", f"Per-target RMSE (m), {fidelity} fidelity, {episodes} episodes x {blocks} blocks on the evaluation "
              f"seeds of run {seed}, 95 % percentile bootstrap over episodes, median episode RMSE, lost: target-blocks "
              "with error > 5 m. (5c)-(5f) violations: "
              + (", ".join(f"{k}: {v}" for k, v in violations.items()) if violations else "0 in every cell") + "."]
    for i, pb in sorted(per_block.items()):
        if "ratio_to_milp" in pb:
            lines.append(f"I = {i}: dgnn-ppo / dgnn-milp = {pb['ratio_to_milp']:.3f}; dgnn-ppo lower in "
                         f"{pb['blocks_ppo_lower']} of {pb['blocks']} blocks (RMSE per block over episodes).")
        diffs = "; ".join(f"{m} {d['diff_m']:+.3f} [{d['lo_m']:+.3f}, {d['hi_m']:+.3f}]"
                          for m, d in sorted(pb.get("paired_vs", {}).items()))
        if diffs:
            lines.append(f"I = {i}: RMSE(dgnn-ppo) - RMSE(other) on the same episodes, paired 95 % bootstrap: {diffs} "
                         "(negative: dgnn-ppo better).")
    data["table_md"] = "\n".join(lines) + "\n"
    return data


if __name__ == "__main__":  # python -m rl_isac.training.ablation table OUT.json --compare A.json ... --ppo P.json ...
    import argparse
    import shlex
    import sys

    ap = argparse.ArgumentParser(prog="python -m rl_isac.training.ablation")
    ap.add_argument("verb", choices=["table"])
    ap.add_argument("json")
    ap.add_argument("--compare", nargs="*", default=[])
    ap.add_argument("--ppo", nargs="*", default=[])
    ap.add_argument("--cells", nargs="*", default=[], help="rl-isac reproduce cell folders (e.g. results/full/cells)")
    a = ap.parse_args()
    table(a.compare, a.ppo, a.json, command="python -m rl_isac.training.ablation " +
          " ".join(shlex.quote(x) for x in sys.argv[1:]), cells_dirs=a.cells)
