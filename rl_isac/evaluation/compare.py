"""``rl-isac compare``: several methods x several target counts through the one harness.

Writes one JSON with every result and a Markdown table (per-target RMSE beside the
PCRB of the associations each method used) next to it. A method that refuses a
size (exhaustive search too large) is reported as refused with its reason, the
paper's "OOM" entry.
"""

from __future__ import annotations

from pathlib import Path

from rl_isac.association import ExhaustiveSearchTooLarge
from rl_isac.evaluation.harness import evaluate, git_revision, write_json_atomic


def compare(methods: list[str], targets: list[int], episodes: int, blocks: int, seed: int, fidelity: str,
            checkpoints: dict[str, str] | None = None, preset: str = "paper", echo=print) -> dict:
    """Evaluate every (method, I); return ``{"results": [...], "refused": [...], "table_md": str}``."""
    results, refused = [], []
    for num in targets:
        for method in methods:
            ckpt = (checkpoints or {}).get(method)
            if ckpt is not None and "{I}" in ckpt:
                ckpt = ckpt.replace("{I}", str(num))
            try:
                r = evaluate(method, targets=num, episodes=episodes, blocks=blocks, seed=seed, fidelity=fidelity,
                             checkpoint=ckpt, preset=preset)
            except ExhaustiveSearchTooLarge as exc:
                refused.append({"method": method, "targets": num, "reason": str(exc)})
                echo(f"{method:<16} I={num}: refused ({str(exc)[:90]}...)")
                continue
            results.append(r)
            echo(f"{method:<16} I={num}: rmse {r['rmse_m']:.4f} m  pcrb {r['pcrb_rmse_m']:.4f} m  "
                 f"missed {r['missed_fraction']:.3f}  lost {r['lost_fraction']:.3f}  "
                 f"decision p50 {r['decision_ms_p50']:.2f} ms")
    table = markdown_table(results, refused, methods, targets)
    return {"results": results, "refused": refused, "table_md": table, "episodes": episodes, "blocks": blocks,
            "seed": seed, "fidelity": fidelity, "git_revision": git_revision()}


def markdown_table(results: list[dict], refused: list[dict], methods: list[str], targets: list[int]) -> str:
    cell = {(r["method"], r["targets"]): f"{r['rmse_m']:.3f} ({r['pcrb_rmse_m']:.3f}; lost {r['lost_fraction']:.3f})"
            for r in results}
    for r in refused:
        cell[(r["method"], r["targets"])] = "refused (too large)"
    lines = ["| method | " + " | ".join(f"I = {n}" for n in targets) + " |",
             "|---|" + "---|" * len(targets)]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(cell.get((m, n), "-") for n in targets) + " |")
    lines.append("")
    lines.append("Per-target RMSE in metres over targets, blocks and episodes; in brackets the PCRB of the "
                 "associations and beams each method used and the fraction of target-blocks with an error above "
                 "5 m (lost tracks).")
    return "\n".join(lines)


def write_compare(data: dict, json_path: str) -> None:
    write_json_atomic(data, json_path)
    Path(json_path).with_suffix(".md").write_text(data["table_md"] + "\n")
