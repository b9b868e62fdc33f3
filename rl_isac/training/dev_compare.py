"""Closed-loop comparison of PPO checkpoints and ``dgnn-milp`` on *training-side* worlds (issue 9 development).

``python -m rl_isac.training.dev_compare --targets 8 --episodes 20 --ppo OLD_DIR NEW_DIR --out OUT.json``

Every method runs the same world seeds ``training_world_seed(seed, DEV_SPLIT, e)`` (split 4: disjoint from
the PPO env (0), validation (1), the warm start (2) and the decision diagnosis (3); never an evaluation seed,
so choosing a checkpoint on these figures does not tune on the evaluation seeds), signal level by default,
through the harness's own episode loop (:func:`rl_isac.evaluation.harness.run_episode`). Reports per method the
RMSE per target with its 95 % percentile-bootstrap interval over episodes, the median and mean episode RMSE,
the lost fraction (target-blocks with error > 5 m), and each PPO checkpoint's paired RMSE difference to
``dgnn-milp`` (negative: PPO better).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

DEV_SPLIT = 4
"""``training_world_seed`` split of these development worlds."""


def _warm_controller(run_dir: str, cfg):
    """The ``dgnn-ppo`` CU of a run's behaviour-cloned module (``warm_start.pt``: before PPO)."""
    from rl_isac.rllib.callbacks import MODULE_ID
    from rl_isac.rllib.config import PPOTrainConfig, module_spec
    from rl_isac.rllib.controller import PPOController
    from rl_isac.rllib.env import env_scenario

    run = json.loads((Path(run_dir) / "train_config.json").read_text())
    spec = module_spec(run["dgnn"], None, PPOTrainConfig.from_dict(run["train"]), env_scenario(run["env_config"]),
                       init_state=str(Path(run_dir) / "warm_start.pt"))
    module = spec.rl_module_specs[MODULE_ID].build()
    module.eval()
    return PPOController(cfg, module)


def compare(targets: int, ppo_dirs: list[str], episodes: int = 20, blocks: int = 100, seed: int = 0,
            fidelity: str = "signal", dgnn: str | None = None, warm_dirs: tuple[str, ...] = (), echo=print) -> dict:
    from rl_isac.controllers import make_controller
    from rl_isac.evaluation.harness import LOST_M, git_revision, run_episode
    from rl_isac.scenario import ScenarioConfig
    from rl_isac.seeds import training_world_seed
    from rl_isac.training.ablation import paired_difference, rmse_interval

    cfg = ScenarioConfig.preset("paper", num_targets=targets, fidelity=fidelity).replace(num_blocks=blocks)
    dgnn = dgnn or f"results/checkpoints/dgnn-I{targets}"
    seeds = [training_world_seed(seed, DEV_SPLIT, e) for e in range(episodes)]
    methods = [("dgnn-milp", "dgnn-milp", dgnn)] + [(f"dgnn-ppo:{d}", "dgnn-ppo", d) for d in ppo_dirs]
    methods += [(f"warm-start-only:{d}", "warm", d) for d in warm_dirs]
    rows = {}
    for label, method, ckpt in methods:
        t0 = time.perf_counter()
        cu = _warm_controller(ckpt, cfg) if method == "warm" else make_controller(method, cfg, checkpoint=ckpt)
        sq = np.stack([run_episode(cu, cfg, s, blocks)["sq_err"] for s in seeds])  # (E, Q, I)
        per_ep = np.sqrt(sq.mean(axis=(1, 2)))
        lo, hi = rmse_interval(per_ep)
        rows[label] = {"method": method, "checkpoint": ckpt, "rmse_m": float(np.sqrt(sq.mean())), "ci95_m": [lo, hi],
                       "median_episode_m": float(np.median(per_ep)), "mean_episode_m": float(per_ep.mean()),
                       "lost_fraction": float(np.mean(sq > LOST_M**2)), "rmse_per_episode_m": per_ep.tolist(),
                       "wall_s": time.perf_counter() - t0}
        r = rows[label]
        echo(f"{label}: rmse {r['rmse_m']:.3f} [{lo:.3f}, {hi:.3f}] median {r['median_episode_m']:.3f} "
             f"lost {r['lost_fraction']:.4f} ({r['wall_s']:.0f} s)")
    base = rows["dgnn-milp"]["rmse_per_episode_m"]
    for label, row in rows.items():
        if label != "dgnn-milp":
            d, lo, hi = paired_difference(row["rmse_per_episode_m"], base)
            row["minus_dgnn_milp_m"] = [d, lo, hi]
            row["median_ratio_to_dgnn_milp"] = row["median_episode_m"] / rows["dgnn-milp"]["median_episode_m"]
    return {"targets": targets, "episodes": episodes, "blocks": blocks, "fidelity": fidelity, "seed": seed,
            "world_seeds": f"training_world_seed({seed}, {DEV_SPLIT}, e), e < {episodes}", "dgnn": dgnn,
            "git_revision": git_revision(), "methods": rows}


def markdown(res: dict) -> str:
    lines = [f"### I = {res['targets']} ({res['episodes']} x {res['blocks']} blocks, {res['fidelity']}, "
             f"{res['world_seeds']})", "",
             "| method | RMSE (m) [95 % CI] | median episode (m) | mean episode (m) | lost | - dgnn-milp (m) [95 %] |",
             "|---|---|---|---|---|---|"]
    for label, r in res["methods"].items():
        diff = r.get("minus_dgnn_milp_m")
        d = f"{diff[0]:+.3f} [{diff[1]:+.3f}, {diff[2]:+.3f}]" if diff else "-"
        lines.append(f"| {label} | {r['rmse_m']:.3f} [{r['ci95_m'][0]:.3f}, {r['ci95_m'][1]:.3f}] | "
                     f"{r['median_episode_m']:.3f} | {r['mean_episode_m']:.3f} | {r['lost_fraction']:.4f} | {d} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, required=True)
    ap.add_argument("--ppo", nargs="+", required=True, help="PPO run directories (rl-isac train --out)")
    ap.add_argument("--warm", nargs="*", default=[], help="runs whose warm start alone (warm_start.pt) is compared too")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--blocks", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fidelity", default="signal")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    res = compare(a.targets, a.ppo, a.episodes, a.blocks, a.seed, a.fidelity, warm_dirs=tuple(a.warm))
    res["command"] = "python -m rl_isac.training.dev_compare " + " ".join(argv if argv is not None else sys.argv[1:])
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    Path(a.out).with_suffix(".md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
