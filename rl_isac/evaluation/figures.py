"""Figures of ``rl-isac reproduce``: the paper's Fig. 3 and Fig. 4 and the PPO learning curve (Agg backend).

* :func:`record_episode` runs one evaluation episode through the harness's
  :func:`~rl_isac.evaluation.harness.run_episode` with its ``on_block`` hook and a recording CU
  wrapper (the CU's estimate ``u_hat_q`` and the association/beams it used in block ``q``), then
  replays the same world seed with the recorded actions to get the true positions (the world is
  deterministic given seed and actions) and checks the replay's squared errors equal the harness's.
* :func:`fig3`: area, BSs, true and estimated tracks, and the association of one block drawn as
  BS-target links (the paper's Fig. 3, snapshot at q = 55).
* :func:`fig4`: per-target RMSE per block for every method (the paper's Fig. 4).
* :func:`training_curve`: PPO learning curve, or a figure that says dgnn-ppo was not trained and why.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rl_isac.controllers import make_controller  # noqa: E402
from rl_isac.controllers.base import Controller, CUAction  # noqa: E402
from rl_isac.evaluation.harness import run_episode, write_json_atomic  # noqa: E402
from rl_isac.network import CellFreeNetwork  # noqa: E402
from rl_isac.scenario import ScenarioConfig  # noqa: E402
from rl_isac.seeds import evaluation_seeds  # noqa: E402


class RecordingCU(Controller):
    """Wraps a CU and keeps every action it returns (``actions[0]`` from ``reset``, then one per block)."""

    def __init__(self, inner: Controller) -> None:
        self.inner = inner
        self.name = inner.name
        self.actions: list[CUAction] = []

    def reset(self, initial_positions_m: np.ndarray) -> CUAction:
        self.actions = [self.inner.reset(initial_positions_m)]
        return self.actions[-1]

    def act(self, meas) -> CUAction:
        self.actions.append(self.inner.act(meas))
        return self.actions[-1]


def record_episode(profile, method: str, num_targets: int, checkpoint: str | None, out: Path, resume: bool,
                   echo=print) -> dict:
    """Episode 0 of the profile's evaluation seeds for ``method`` at ``num_targets``, per block.

    Returns (and caches in ``cells/fig3-episode.json``) a dict with ``truth_m`` ``(Q+1, I, 2)`` (q = 0 is
    the initial state), ``estimate_m`` ``(Q+1, I, 2)`` (q = 0: the acquisition), ``association``
    ``(Q, M, I)`` (the one used in block q = 1..Q), ``bs_positions_m`` ``(M, 2)``, ``area_size_m``,
    ``snapshot_block`` and the spec.
    """
    from rl_isac.evaluation.reproduce import PAPER_FIG3_BLOCK, checkpoint_fingerprint

    path = out / "cells" / "fig3-episode.json"
    world_seed = evaluation_seeds(profile.seed, 1)[0]
    spec = {"method": method, "targets": num_targets, "blocks": profile.blocks, "world_seed": world_seed,
            "fidelity": profile.fidelity, "checkpoint": checkpoint,
            "checkpoint_fingerprint": checkpoint_fingerprint(checkpoint)}
    if resume and path.is_file():
        try:
            cached = json.loads(path.read_text())
        except json.JSONDecodeError:
            cached = None
        if cached is not None and cached.get("spec") == spec:
            echo(f"[figures] Fig. 3 episode ({method} I={num_targets}) reused from {path}")
            return cached
    cfg = ScenarioConfig.preset("paper", num_targets=num_targets, fidelity=profile.fidelity).replace(
        num_blocks=profile.blocks)
    # Absolute path: RLlib's RLModule.from_checkpoint (dgnn-ppo) rejects relative ones.
    absolute = None if checkpoint is None else str(Path(checkpoint).resolve())
    cu = RecordingCU(make_controller(method, cfg, checkpoint=absolute))
    used: list[CUAction] = []
    estimates: list[np.ndarray] = []

    def on_block(*_args, **_kwargs) -> None:
        # After block q: actions[-2] was applied in block q, actions[-1] holds u_hat_q.
        used.append(cu.actions[-2])
        estimates.append(np.asarray(cu.actions[-1].estimate_m, float).copy())

    echo(f"[figures] recording one episode of {method} at I={num_targets} (world seed {world_seed})")
    episode = run_episode(cu, cfg, world_seed, profile.blocks, on_block=on_block)
    if len(used) != profile.blocks:
        raise RuntimeError(f"on_block ran {len(used)} times for {profile.blocks} blocks")
    net = CellFreeNetwork(cfg)
    acq = net.reset(world_seed)
    truth = [net.positions_m.copy()]
    for action in used:
        net.step(action.association, action.beams, predicted_positions_m=action.prediction_m)
        truth.append(net.positions_m.copy())
    truth_m = np.stack(truth)
    est_m = np.stack([acq, *estimates])
    replay_sq = np.sum((truth_m[1:] - est_m[1:]) ** 2, axis=-1)
    if not np.allclose(replay_sq, episode["sq_err"], rtol=1e-9, atol=1e-12):
        raise RuntimeError("replaying the recorded actions gave other errors than the harness: the world is not "
                           "deterministic given seed and actions")
    data = {"spec": spec, "method": method, "targets": num_targets, "world_seed": world_seed,
            "bs_positions_m": np.asarray(cfg.bs_positions_m, float).tolist(), "area_size_m": list(cfg.area_size_m),
            "truth_m": truth_m.tolist(), "estimate_m": est_m.tolist(),
            "association": np.stack([a.association for a in used]).astype(int).tolist(),
            "snapshot_block": min(PAPER_FIG3_BLOCK, profile.blocks),
            "rmse_m": float(np.sqrt(episode["sq_err"].mean()))}
    write_json_atomic(data, path)
    return data


def fig3(episode: dict, path: Path) -> Path:
    """The area, BSs, true (solid) and estimated (dashed) tracks and the association of one block."""
    truth = np.asarray(episode["truth_m"])
    est = np.asarray(episode["estimate_m"])
    assoc = np.asarray(episode["association"], bool)
    bs = np.asarray(episode["bs_positions_m"])
    width, height = episode["area_size_m"]
    q = episode["snapshot_block"]
    fig, ax = plt.subplots(figsize=(10, 4.4))
    ax.add_patch(plt.Rectangle((0, 0), width, height, fill=False, color="0.5", lw=1))
    colors = plt.get_cmap("tab10")
    for i in range(truth.shape[1]):
        c = colors(i % 10)
        ax.plot(truth[:, i, 0], truth[:, i, 1], "-", color=c, lw=1.6, label="true track" if i == 0 else None)
        ax.plot(est[:, i, 0], est[:, i, 1], "--", color=c, lw=1.0, label="estimated track" if i == 0 else None)
        ax.plot(*truth[0, i], "o", color=c, ms=4)
        ax.plot(*truth[q, i], "*", color=c, ms=11, mec="k", mew=0.5)
        ax.annotate(f"T{i + 1}", truth[q, i], textcoords="offset points", xytext=(5, 5), fontsize=8)
        for m in np.flatnonzero(assoc[q - 1, :, i]):
            ax.plot([bs[m, 0], truth[q, i, 0]], [bs[m, 1], truth[q, i, 1]], ":", color=c, lw=1.2,
                    label="BS-target link" if (i == 0 and m == np.flatnonzero(assoc[q - 1, :, 0])[0]) else None)
    ax.plot(bs[:, 0], bs[:, 1], "k^", ms=10, label="BS", clip_on=False)
    for m, (x, y) in enumerate(bs):
        ax.annotate(f"BS{m + 1}", (x, y), textcoords="offset points", xytext=(-8, -14 if y <= 0 else 8), fontsize=8)
    ax.set_xlim(-15, width + 15)
    ax.set_ylim(-20, height + 20)
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.set_title(f"{episode['method']}, I = {episode['targets']}, world seed {episode['world_seed']}: tracks over "
                 f"{truth.shape[0] - 1} blocks, association at block q = {q} (stars), episode RMSE "
                 f"{episode['rmse_m']:.3f} m", fontsize=9)
    ax.legend(loc="upper right", fontsize=7, ncol=5)
    fig.tight_layout()
    return _save(fig, path)


def fig4(profile, cells: dict, path: Path) -> Path:
    """Per-target RMSE per block for every method evaluated, one panel per I (log scale)."""
    fig, axes = plt.subplots(1, len(profile.targets), figsize=(5.5 * len(profile.targets), 4), squeeze=False)
    for ax, num in zip(axes[0], profile.targets):
        missing = []
        for method in profile.methods:
            rec = cells.get((method, num))
            if rec is None or rec["status"] != "ok":
                missing.append(f"{method}: {'refused' if rec else 'not available'}")
                continue
            r = rec["result"]
            rmse = np.asarray(r["rmse_per_block_m"])
            ax.plot(np.arange(1, len(rmse) + 1), rmse, lw=1.4 if method == "dgnn-ppo" else 1.0,
                    label=f"{method} ({r['rmse_m']:.3f} m)")
        ax.set_yscale("log")
        ax.set_xlabel("block q")
        ax.set_ylabel("per-target RMSE (m)")
        ax.set_title(f"I = {num}, {profile.episodes} episodes", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, title="\n".join(missing) or None, title_fontsize=7)
    fig.suptitle(f"RMSE per block ({profile.name} profile)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def training_curve(training: dict[int, dict], path: Path) -> Path:
    """The PPO learning curve(s): every numeric series of each run's curve against its iteration."""
    curves = {num: run["curve"] for num, run in training.items() if run.get("trained") and run.get("curve")}
    if not curves:
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.axis("off")
        reasons = sorted({run.get("reason") or "no learning curve was recorded" for run in training.values()}) or [
            "dgnn-ppo is not among the profile's methods"]
        text = "dgnn-ppo was NOT trained in this run:\n" + "\n".join(_wrap(r) for r in reasons)
        ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, wrap=True)
        ax.set_title("PPO learning curve: not trained")
        return _save(fig, path)
    panels = [("return_mean", None, "episode return (eq. (5a))"),
              ("rmse_m", "pcrb_m", "training RMSE / PCRB (m), exploration policy"),
              ("entropy", None, "policy entropy (nats, J steps)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(13, 3.6), squeeze=False)
    for ax, (key, dashed, title) in zip(axes[0], panels):
        for num, curve in curves.items():
            x = [p.get("env_steps", p.get("iteration", j + 1)) for j, p in enumerate(curve)]
            for k, style in ((key, ".-"), (dashed, "--")):
                if k is None:
                    continue
                pts = [(xi, p[k]) for xi, p in zip(x, curve) if isinstance(p.get(k), (int, float))
                       and np.isfinite(p[k])]
                if pts:
                    ax.plot(*zip(*pts), style, label=f"I = {num}" + (" PCRB" if k == dashed else ""))
        if key == "rmse_m":
            ax.set_yscale("log")
        ax.set_xlabel("env steps")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    iters = {num: len(curve) for num, curve in curves.items()}
    fig.suptitle(f"dgnn-ppo training (PPO iterations per I: {iters}; training world, not the evaluation seeds)",
                 fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _wrap(text: str, width: int = 90) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=130)
    plt.close(fig)
    tmp.replace(path)
    return path
