"""Tracker options on development worlds (issue 7): lost fraction of ``ekf-milp`` at the signal level.

Development worlds only: ``rl_isac.seeds.training_world_seed(7, 2, e)`` (never an evaluation seed), 100 blocks,
the ``paper`` preset. One run = one option set, one I, one episode range; it appends one JSON line to
``results/tracks/dev/<name>.jsonl``. ``--table`` merges every line there into ``results/tracks/dev_variants.md``.

    python results/tracks/dev_variants.py run  --name base     --targets 6 --episodes 0-100
    python results/tracks/dev_variants.py run  --name rou      --targets 6 --episodes 0-100 \\
        --settings '{"range_only_peaks": true, "range_only_unambiguous": true}'
    python results/tracks/dev_variants.py table

Each line: lost fraction (target-blocks with an error above 5 m), RMSE, the longest re-acquisition, and per
bad episode ``(episode, lost target-blocks, {track: (lost blocks, nearest target at the end, its distance)})``,
so a swap (a track ending on another target) shows as such. Newer lines also carry
``lost_fraction_unlabelled`` (estimates matched to targets by least squared error each block, whatever their
labels: swaps do not count) and, as the 4th field of each bad episode, its identity-free lost target-blocks.
~1 s per episode at I = 8 on a quiet core.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import rl_isac  # noqa: F401 (first: it pins OpenBLAS's kernel before numpy loads, rl_isac/__init__.py)
import numpy as np

from rl_isac.association import DEFAULT_CHAIN_PRICE, make_solver
from rl_isac.controllers.composed import ComposedCU
from rl_isac.controllers.estimators import EKFCUEstimator
from rl_isac.evaluation.harness import acquisition_label_errors, unlabelled_squared_errors
from rl_isac.network import CellFreeNetwork
from rl_isac.scenario import ScenarioConfig
from rl_isac.seeds import training_world_seed
from rl_isac.tracking import EKFSettings

HERE = Path(__file__).resolve().parent


def run(name: str, targets: int, first: int, last: int, settings: dict, solver: str = "milp") -> dict:
    cfg = ScenarioConfig.preset("paper", num_targets=targets, fidelity="signal").replace(num_blocks=100)
    lost_total, free_total, sq, n, bad, reacq, ambiguous = 0, 0, 0.0, 0, [], [], []
    t0 = time.time()
    for e in range(first, last):
        cu = ComposedCU(cfg, EKFCUEstimator(cfg, EKFSettings(**settings)),
                        make_solver(solver, chain_price=DEFAULT_CHAIN_PRICE), name=f"ekf-{solver}")
        net = CellFreeNetwork(cfg)
        acq = net.reset(training_world_seed(7, 2, e))
        if acquisition_label_errors(acq, net.positions_m).any():
            ambiguous.append(e)
        action = cu.reset(acq)
        lost = np.zeros(targets, int)
        lost_free = 0
        for _ in range(cfg.num_blocks):
            meas = net.step(action.association, action.beams, predicted_positions_m=action.prediction_m)
            action = cu.act(meas)
            err = np.linalg.norm(action.estimate_m - net.positions_m, axis=1)
            lost += err > 5.0
            lost_free += int((unlabelled_squared_errors(net.positions_m, action.estimate_m) > 25.0).sum())
            sq += float((err**2).sum())
            n += targets
        lost_total += int(lost.sum())
        free_total += lost_free
        reacq += cu.estimator.ekf.reacquired_after
        if lost.any():
            d = np.linalg.norm(action.estimate_m[:, None] - net.positions_m[None], axis=-1)
            bad.append([e, int(lost.sum()), {int(i): [int(lost[i]), int(np.argmin(d[i])), round(float(d[i].min()), 1)]
                                             for i in np.flatnonzero(lost)}, lost_free])
    return {"name": name if solver == "milp" else f"{name}@{solver}", "targets": targets, "episodes": [first, last],
            "settings": settings,
            "lost_fraction": lost_total / ((last - first) * cfg.num_blocks * targets),
            "lost_fraction_unlabelled": free_total / ((last - first) * cfg.num_blocks * targets),
            "rmse_m": float(np.sqrt(sq / n)), "reacquire_max": max(reacq, default=0), "bad": bad,
            "ambiguous_acquisition_episodes": ambiguous, "wall_s": round(time.time() - t0)}


def _per_episode(rows: list[dict], name: str, targets: int) -> dict[int, int]:
    """Lost target-blocks per episode of one option set at one I (0 for an episode not in its bad list)."""
    out: dict[int, int] = {}
    for r in rows:
        if r["name"] == name and r["targets"] == targets:
            out.update({e: 0 for e in range(*r["episodes"])})
            out.update({b[0]: b[1] for b in r["bad"]})
    return out


def _frac4(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def table() -> str:
    rows = [json.loads(line) for f in sorted((HERE / "dev").glob("*.jsonl")) for line in f.read_text().splitlines()
            if line.strip()]
    names = sorted({r["name"] for r in rows}, key=lambda s: (not s.startswith("base"), s))
    lines = ["# Tracker options on development worlds (ekf-milp, signal level, 100 blocks)", "",
             "Generated by `python results/tracks/dev_variants.py table` from `results/tracks/dev/*.jsonl`. Worlds",
             "`training_world_seed(7, 2, e)`; lost fraction = target-blocks with an error above 5 m, per episode",
             "range; `all` = the mean over the ranges run. Bad episodes: `e:lost target-blocks`.", "",
             "| option set | settings | I | episodes | lost fraction | identity-free | RMSE (m) | bad episodes |",
             "|---|---|---|---|---|---|---|---|"]
    for name in names:
        for targets in sorted({r["targets"] for r in rows if r["name"] == name}):
            sub = sorted((r for r in rows if r["name"] == name and r["targets"] == targets),
                         key=lambda r: r["episodes"])
            for r in sub:
                lines.append(f"| {name} | `{json.dumps(r['settings'])}` | {targets} | {r['episodes'][0]}-"
                             f"{r['episodes'][1] - 1} | {r['lost_fraction']:.4f} | "
                             f"{_frac4(r.get('lost_fraction_unlabelled'))} | {r['rmse_m']:.3f} | "
                             + " ".join(f"{b[0]}:{b[1]}" for b in r["bad"]) + " |")
            if len(sub) > 1:
                lines.append(f"| {name} | | {targets} | all ({sum(r['episodes'][1] - r['episodes'][0] for r in sub)}) "
                             f"| {np.mean([r['lost_fraction'] for r in sub]):.4f} | | | |")
    lines += ["", "Paired against `base` (of the same solver, `@greedy` rows: the ekf-greedy CU) on the episodes "
              "both ran (lost target-blocks per episode):", "",
              "| option set | I | episodes | better | worse | lost target-blocks (base -> option) |",
              "|---|---|---|---|---|---|"]
    for name in names:
        for targets in sorted({r["targets"] for r in rows if r["name"] == name}):
            ref = "base" + (name[name.index("@"):] if "@" in name else "")
            if name == ref:
                continue
            base, other = _per_episode(rows, ref, targets), _per_episode(rows, name, targets)
            common = sorted(set(base) & set(other))
            if common:
                lines.append(f"| {name} | {targets} | {len(common)} | {sum(other[e] < base[e] for e in common)} | "
                             f"{sum(other[e] > base[e] for e in common)} | {sum(base[e] for e in common)} -> "
                             f"{sum(other[e] for e in common)} |")
    sources = sorted({r["source"] for r in rows if r.get("source")})
    if sources:
        lines += ["", "Rows with a `source` field (" + "; ".join(sources) + ")."]
    amb = sorted({(r["targets"], e) for r in rows for e in r.get("ambiguous_acquisition_episodes", [])})
    if amb:
        lines += ["", "Episodes whose q = 0 acquisition already favours a wrong labelling "
                  "(`harness.acquisition_label_errors`; no tracker can be blamed for them): "
                  + ", ".join(f"I={t} e{e}" for t, e in amb) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--name", required=True)
    r.add_argument("--targets", type=int, required=True)
    r.add_argument("--episodes", default="0-100", help="FIRST-LAST (LAST excluded)")
    r.add_argument("--settings", default="{}", help="EKFSettings keywords as JSON")
    r.add_argument("--solver", default="milp", help="association solver of the ekf-<solver> CU (default milp)")
    sub.add_parser("table")
    a = p.parse_args()
    if a.cmd == "run":
        first, last = (int(v) for v in a.episodes.split("-"))
        out = run(a.name, a.targets, first, last, json.loads(a.settings), a.solver)
        (HERE / "dev").mkdir(exist_ok=True)
        with open(HERE / "dev" / f"{out['name']}.jsonl", "a") as f:
            f.write(json.dumps(out) + "\n")
        print(json.dumps({k: out[k] for k in ("name", "targets", "episodes", "lost_fraction", "rmse_m")}))
    else:
        (HERE / "dev_variants.md").write_text(table())
        print(table())


if __name__ == "__main__":
    main()
