"""Summarise results/association/{before,after}_seed*.json into summary.md (RMSE, 95 % CI, missed, lost, p99)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import rl_isac  # noqa: F401 (first: it pins OpenBLAS's kernel before numpy loads, rl_isac/__init__.py)
import numpy as np


def row(r: dict) -> dict:
    per_ep = np.asarray(r["rmse_per_episode_m"])
    # 95 % interval of the RMSE by a bootstrap over episodes (RMSE = sqrt(mean of per-episode mean squares))
    ms = per_ep ** 2
    rng = np.random.default_rng(0)
    boots = np.sqrt(ms[rng.integers(0, len(ms), (2000, len(ms)))].mean(axis=1))
    return {"rmse": r["rmse_m"], "lo": float(np.percentile(boots, 2.5)), "hi": float(np.percentile(boots, 97.5)),
            "median_ep": float(np.median(per_ep)), "missed": r["missed_fraction"], "lost": r["lost_fraction"],
            "p99": r["decision_ms_p99"], "pcrb": r["pcrb_rmse_m"]}


def main(out: Path) -> None:
    lines = ["| method | I | seed | RMSE before (95 % CI) | RMSE after (95 % CI) | median episode RMSE b/a | "
             "missed b/a | lost b/a | decision p99 ms b/a |", "|---|---|---|---|---|---|---|---|---|"]
    for seed in (21, 22):
        before = json.loads((out / f"before_seed{seed}.json").read_text())["results"]
        after = json.loads((out / f"after_seed{seed}.json").read_text())["results"]
        key = {(r["method"], r["targets"]): r for r in after}
        for rb in before:
            ra = key[(rb["method"], rb["targets"])]
            b, a = row(rb), row(ra)
            lines.append(f"| {rb['method']} | {rb['targets']} | {seed} | {b['rmse']:.3f} ({b['lo']:.3f}-{b['hi']:.3f})"
                         f" | {a['rmse']:.3f} ({a['lo']:.3f}-{a['hi']:.3f}) | {b['median_ep']:.3f} / "
                         f"{a['median_ep']:.3f} | {b['missed']:.3f} / {a['missed']:.3f} | {b['lost']:.3f} / "
                         f"{a['lost']:.3f} | {b['p99']:.2f} / {a['p99']:.2f} |")
    lines.append("")
    lines.append("RMSE per target over targets, blocks and episodes (95 % bootstrap interval over episodes); "
                 "missed: assigned pairs without a detection; lost: target-blocks with error > 5 m. The decision "
                 "p99 is wall time on a shared 2-core machine (the runs of one side overlapped other jobs): "
                 "see milp_latency_I8.json for the MILP's CPU time.")
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
