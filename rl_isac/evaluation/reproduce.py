"""``rl-isac reproduce``: the paper's Table 1, Fig. 3 and Fig. 4 from one rerunnable pipeline.

Stages (each prints one progress line when it starts and one when it ends):

1. ``setup``    resolve the profile; write ``run.json`` (profile, resolved scenario of every I,
                evaluation world seeds, package versions, git revision).
2. ``train``    PPO-train ``dgnn-ppo`` (the paper's Proposed) at each I of the profile through the
                RLlib pipeline's training API (:mod:`rl_isac.training.ppo`). When that API is not in
                the checkout, when the profile does not train (``tiny``) or when training fails,
                the stage says so and ``dgnn-ppo`` is reported "not available": no number is made up.
3. ``evaluate`` one cell per (method, I), each through the one harness
                (:func:`rl_isac.evaluation.harness.evaluate`) on the same evaluation seeds
                (:func:`rl_isac.seeds.evaluation_seeds`), so every method sees the same trajectories.
                Each cell is written atomically to ``cells/<method>-I<I>.json``; with ``resume`` (the
                default) a cell whose file exists and whose spec (method, I, episodes, blocks, seed,
                fidelity, checkpoint fingerprint) matches is not recomputed. A half-written cell cannot
                exist (temporary file + rename); a file that does not parse or whose spec differs is
                recomputed, and the line says why. ``dgnn-exhaustive`` at I = 8 is "refused" with its
                candidate count (the paper's OOM).
4. ``table``    ``table1.json`` / ``table1.md``: per-target RMSE with a 95 % bootstrap interval over
                episodes, PCRB of each method's own associations, lost fraction, and the paper's
                Table 1 beside ours, labelled as the paper's.
5. ``figures``  ``fig3.png`` (one episode at I = 6 where the profile has it: area, BSs, true and
                estimated tracks, the association of one block as BS-target links), ``fig4.png``
                (RMSE per block per method), ``training.png`` (the PPO learning curve, or a figure
                that says dgnn-ppo was not trained and why).

Profiles: ``tiny`` (seconds; the tests), ``quick`` (``make run``: I = 6, short PPO training,
every method, a few episodes), ``full`` (I = 4, 6, 8, 50 episodes x 100 blocks, long training).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rl_isac.errors import ConfigError
from rl_isac.evaluation.harness import blas_kernel, evaluate, git_revision, write_json_atomic
from rl_isac.scenario import ScenarioConfig
from rl_isac.seeds import evaluation_seeds

Echo = Callable[[str], None]

PROPOSED = "dgnn-ppo"

# The paper's Table 1 (per-target tracking RMSE, metres, I = 4 / 6 / 8); "OOM" is the paper's entry.
PAPER_TABLE1: dict[str, tuple[str, dict[int, float | str]]] = {
    "dgnn-ppo": ("Proposed", {4: 0.2639, 6: 0.2984, 8: 0.4994}),
    "ekf-convex": ("Benchmark I", {4: 0.9747, 6: 1.1764, 8: 1.5975}),
    "dgnn-l2o": ("Benchmark II", {4: 1.1138, 6: 1.1346, 8: 1.1942}),
    "dgnn-exhaustive": ("Benchmark III", {4: 0.2352, 6: 0.2502, 8: "OOM"}),
}

ALL_METHODS = ("dgnn-ppo", "ekf-convex", "dgnn-l2o", "dgnn-exhaustive", "ekf-greedy", "ekf-milp", "dgnn-milp")
"""Table order: the paper's four, then ours."""

FIRST_METHODS = ("dgnn-ppo", "dgnn-milp", "ekf-milp", "ekf-convex", "dgnn-l2o")
"""Evaluation order (not table order): these methods (the PPO issue's comparison) at every I first, then the
others at every I, the slow exhaustive search last, so that a run stopped by its time budget has the proposed
method's comparison complete."""

LAST_METHODS = ("dgnn-exhaustive",)

DEFAULT_DGNN_CHECKPOINTS = "results/checkpoints/dgnn-I{I}"
"""The committed phase-1 checkpoints (DGNN + beam head + L2O head); ``{I}`` is the target count."""

SHIPPED_PPO_CONFIG = "results/checkpoints/ppo.yaml"
"""The PPO recipe of the quick profile (I = 6, within make run's 15 minutes): BC warm start from dgnn-milp
(16 episodes, 15 epochs) + 1 DAgger round, eq. (5a) reward, 5 iterations."""

SHIPPED_PPO_CONFIGS: dict[int, str] = {4: "results/checkpoints/ppo-long-bc-milp.yaml",
                                       6: "results/checkpoints/ppo-long-bc-milp.yaml",
                                       8: "results/checkpoints/ppo-long-bc-milp.yaml"}
"""Per I, the recipe of each reference checkpoint results/checkpoints/ppo-I{I} (``train_config.json`` of each
holds it resolved; results/run_ppo.sh trains them): the full profile trains with exactly these, so its
dgnn-ppo is trained as the shipped checkpoint of the same I (same recipe, same seed). One recipe at every I:
``ppo-long-bc-milp.yaml`` (32 expert episodes, 25 epochs, 2 DAgger rounds, the actor's detection and MILP
features). I = 8 has used it since b748853 and I = 4 since results/ppo_dev/dev_I4_lbm.md (120 training-side
worlds, 0.115 vs 2.45 m: the ``ppo.yaml`` policy swapped tracks where dgnn-milp did not). I = 6 kept
``ppo-long-bc.yaml`` (no features) until 2026-12-04 on a 30-world comparison decided by one episode each
(results/ppo_dev/dev_I6.md: mean 0.197 vs 0.230 m, intervals [0.131, 0.258] / [0.126, 0.321]); what is not a
lottery there points the other way: the median episode 0.119 (no features) vs 0.112 m (features; dgnn-milp
0.112 m), and without the features the warm start reproduces dgnn-milp's association in about a third of the
validation blocks only (``exact`` 0.35 at I = 6; 0.96 with them, pair recall 0.88 -> 0.99). A run's ``run.json`` records
the configs it trained with."""

PAPER_FIG3_BLOCK = 55
"""The paper draws Fig. 3's association snapshot at block q = 55."""

BOOTSTRAP_RESAMPLES = 2000

TRAINING_SEED = 0
"""Seed of the PPO training runs (their world seeds come from rl_isac.seeds.training_world_seed)."""


@dataclass(frozen=True)
class Profile:
    """What a reproduce run computes.

    Attributes:
        name: profile name (also the default output folder ``results/<name>``).
        targets: the target counts I of the table.
        methods: method names (table order).
        episodes, blocks: evaluation episodes per cell and blocks Q per episode.
        seed: evaluation seed index (world seeds from :func:`rl_isac.seeds.evaluation_seeds`).
        fidelity: world fidelity.
        train: keyword settings of the PPO training stage, or ``None``: this profile does not train.
            ``config`` may be one YAML path or ``{I: path}`` (each I its own recipe).
        fig3_targets: I of Fig. 3's episode (the paper's I = 6 where the profile evaluates it).
        summary: one plain sentence on how this profile differs from ``full``.
    """

    name: str
    targets: tuple[int, ...]
    methods: tuple[str, ...]
    episodes: int
    blocks: int
    seed: int = 0
    fidelity: str = "signal"
    train: dict | None = None
    fig3_targets: int | None = None
    summary: str = ""

    def __post_init__(self) -> None:
        if not self.targets or any(int(n) < 1 for n in self.targets):
            raise ConfigError("targets", self.targets, "need at least one target count, each >= 1")
        if not self.methods:
            raise ConfigError("methods", self.methods, "need at least one method")
        if self.episodes < 1 or self.blocks < 1:
            raise ConfigError("episodes/blocks", (self.episodes, self.blocks), "both must be >= 1")
        unknown = [m for m in self.methods if m not in ALL_METHODS and not m.startswith(("ekf-", "dgnn-", "ls-"))]
        if unknown:
            raise ConfigError("methods", unknown, f"not methods of the study; known: {list(ALL_METHODS)}")
        if self.fig3_targets is not None and self.fig3_targets not in self.targets:
            raise ConfigError("fig3_targets", self.fig3_targets, f"must be one of targets {self.targets}")

    @property
    def fig3_i(self) -> int:
        return self.fig3_targets if self.fig3_targets is not None else (6 if 6 in self.targets else self.targets[0])


PROFILES: dict[str, Profile] = {
    "tiny": Profile(
        name="tiny", targets=(4,), methods=("dgnn-ppo", "ekf-convex", "ekf-greedy", "dgnn-milp"), episodes=2,
        blocks=10, train=None,
        summary="The tiny profile is a smoke test (I = 4, 2 episodes x 10 blocks, no PPO training): its numbers "
                "say nothing about the methods."),
    "quick": Profile(
        name="quick", targets=(6,), methods=ALL_METHODS, episodes=4, blocks=100,
        train={"iterations": 5, "config": SHIPPED_PPO_CONFIG},
        summary="The quick profile trains and evaluates only I = 6, on 4 episodes x 100 blocks per method (the full "
                "run: I = 4, 6, 8 on 50 episodes each, with the reference checkpoints' longer warm start at I = 6 "
                "and 8), so its 95 % intervals are several times wider and it says nothing about I = 4 and 8."),
    "full": Profile(
        name="full", targets=(4, 6, 8), methods=ALL_METHODS, episodes=50, blocks=100,
        train={"iterations": 5, "config": SHIPPED_PPO_CONFIGS},
        summary="This is the full study; the quick profile (make run) trains and evaluates only I = 6, on 4 "
                "episodes per method."),
}


# ----------------------------------------------------------------------------------------------- helpers
def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages the numbers depend on (``"not installed"`` where absent), and the
    BLAS kernel (:func:`~rl_isac.evaluation.harness.blas_kernel`)."""
    out = {"python": platform.python_version()}
    for name in ("rl-isac", "numpy", "scipy", "torch", "torch-geometric", "ray", "cvxpy", "highspy", "matplotlib",
                 "optuna"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["blas_kernel"] = blas_kernel()
    return out


def git_dirty() -> bool | None:
    """True when tracked files of the checkout differ from its revision (None outside a checkout)."""
    import subprocess

    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def checkpoint_fingerprint(path: str | Path | None) -> str | None:
    """SHA-256 over the relative paths and contents of a checkpoint's files (TensorBoard logs excluded).

    A file (e.g. a YAML config) is fingerprinted by its content.
    """
    if path is None:
        return None
    root = Path(path)
    if not root.exists():
        return "missing"
    if root.is_file():
        return hashlib.sha256(root.read_bytes()).hexdigest()[:16]
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root)
        if rel.parts[0].startswith("tb") or file.name.startswith("events.out.tfevents"):
            continue
        digest.update(str(rel).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def bootstrap_ci95(per_episode_rmse_m: list[float], seed: int = 0) -> list[float]:
    """95 % percentile-bootstrap interval of the RMSE over episodes, ``[low_m, high_m]``.

    The RMSE is ``sqrt(mean over episodes of the episode MSE)`` (every episode has the same blocks and
    targets), so episodes are resampled with replacement and the RMSE recomputed; fixed seed, so the
    same cell gives the same interval.
    """
    mse = np.asarray(per_episode_rmse_m, float) ** 2
    if mse.size == 1:
        value = float(np.sqrt(mse[0]))
        return [value, value]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, mse.size, size=(BOOTSTRAP_RESAMPLES, mse.size))
    stats = np.sqrt(mse[idx].mean(axis=1))
    return [float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))]


def paired_comparison(a_rmse_per_episode_m, b_rmse_per_episode_m, seed: int = 0) -> dict:
    """Method ``a`` against method ``b`` on the same episodes (the same world seeds, in the same order).

    Episodes are resampled with replacement *jointly* (the same indices for both), so what the two share --
    the world, its crossings, its start-up ambiguities -- cancels, and the interval is that of the
    difference, far narrower than two marginal intervals compared for overlap.

    Returns:
        ``diff_m``: RMSE(a) - RMSE(b), with ``diff_ci95_m`` its 95 % percentile-bootstrap interval;
        ``ratio``: RMSE(a) / RMSE(b), with ``ratio_ci95``; ``better_episodes`` / ``worse_episodes``: episodes
        whose RMSE is lower / higher for ``a``; ``median_episode_ratio``: the median over episodes of the
        per-episode RMSE ratio (what a typical world says, where the pooled ratio is decided by the tail).
    """
    a = np.asarray(a_rmse_per_episode_m, float)
    b = np.asarray(b_rmse_per_episode_m, float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ConfigError("rmse_per_episode_m", (a.shape, b.shape), "a paired comparison needs two 1-D arrays of "
                                                                      "the same episodes")
    a2, b2 = a * a, b * b
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(BOOTSTRAP_RESAMPLES, a.size))
    ra, rb = np.sqrt(a2[idx].mean(axis=1)), np.sqrt(b2[idx].mean(axis=1))
    rmse_a, rmse_b = float(np.sqrt(a2.mean())), float(np.sqrt(b2.mean()))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = ra / rb
        per_episode = a / b
    return {"diff_m": rmse_a - rmse_b,
            "diff_ci95_m": [float(np.percentile(ra - rb, 2.5)), float(np.percentile(ra - rb, 97.5))],
            "ratio": rmse_a / rmse_b if rmse_b > 0 else float("inf"),
            "ratio_ci95": [float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))],
            "better_episodes": int((a < b).sum()), "worse_episodes": int((a > b).sum()), "episodes": int(a.size),
            "median_episode_ratio": float(np.median(per_episode))}


def paired_rows(rows: list[dict], targets: tuple[int, ...], reference: str = PROPOSED) -> list[dict]:
    """:func:`paired_comparison` of ``reference`` against every other available method, per I.

    A pair is compared only where both cells hold per-episode RMSEs of the same world seeds; otherwise the
    entry says why (``reason``) and carries no number.
    """
    out = []
    for num in targets:
        ref = next((r for r in rows if r["method"] == reference and r["targets"] == num), None)
        if ref is None or ref["status"] != "ok":
            continue
        for r in rows:
            if r["targets"] != num or r["status"] != "ok" or r["method"] == reference:
                continue
            entry = {"targets": num, "method": reference, "against": r["method"]}
            if ref.get("rmse_per_episode_m") is None or r.get("rmse_per_episode_m") is None:
                entry["reason"] = "a cell predates per-episode RMSEs in table1.json"
            elif ref.get("world_seeds") != r.get("world_seeds"):
                entry["reason"] = "the two cells were evaluated on different world seeds"
            else:
                entry.update(paired_comparison(ref["rmse_per_episode_m"], r["rmse_per_episode_m"]))
                if ref.get("rmse_unlabelled_per_episode_m") and r.get("rmse_unlabelled_per_episode_m"):
                    # The same on identity-free errors (a swap of two identities does not count).
                    entry["unlabelled"] = paired_comparison(ref["rmse_unlabelled_per_episode_m"],
                                                            r["rmse_unlabelled_per_episode_m"])
            out.append(entry)
    return out


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).resolve())


def cell_path(out: Path, method: str, targets: int) -> Path:
    return out / "cells" / f"{method}-I{targets}.json"


# ----------------------------------------------------------------------------------------------- training
def _ppo_api():
    """The RLlib pipeline's training module, or ``(None, reason)`` when it is not in this checkout."""
    try:
        module = importlib.import_module("rl_isac.training.ppo")
    except ModuleNotFoundError as exc:
        if exc.name not in ("rl_isac.training.ppo", "rl_isac.rllib"):
            raise
        return None, ("rl_isac.training.ppo is not in this checkout (the RLlib pipeline, issue 8, has not "
                      "landed), so dgnn-ppo was not trained")
    return module, ""


def train_stage(profile: Profile, out: Path, dgnn_checkpoints: str, resume: bool, echo: Echo,
                ppo_checkpoint: str | None = None) -> dict[int, dict]:
    """PPO training of ``dgnn-ppo`` at every I of the profile.

    Returns ``{I: {"trained": bool, "checkpoint": str | None, "reason": str, "curve": [...], ...}}``;
    a finished training run is also recorded in ``training-I<I>.json`` (what resume reuses).
    ``ppo_checkpoint`` (``{I}`` allowed; e.g. committed reference checkpoints) skips training and
    evaluates that ``rl-isac train --out`` folder instead.
    """
    runs: dict[int, dict] = {}
    if PROPOSED not in profile.methods:
        return runs
    for num in profile.targets:
        if ppo_checkpoint is not None:
            ckpt = ppo_checkpoint.replace("{I}", str(num))
            runs[num] = {"trained": True, "checkpoint": ckpt, "reason": "given with --ppo-checkpoint",
                         "curve": _curve_from_checkpoint(Path(ckpt)), "external": True}
            echo(f"[train] I={num}: using the given PPO checkpoint {ckpt} (not trained here)")
            continue
        if profile.train is None:
            runs[num] = {"trained": False, "checkpoint": None, "curve": [],
                         "reason": f"the {profile.name} profile does not train PPO, so dgnn-ppo was not trained"}
            echo(f"[train] I={num}: dgnn-ppo NOT trained: {runs[num]['reason']}")
            continue
        api, reason = _ppo_api()
        if api is None:
            runs[num] = {"trained": False, "checkpoint": None, "curve": [], "reason": reason}
            echo(f"[train] I={num}: dgnn-ppo NOT trained: {reason}")
            continue
        runs[num] = _train_one(api, profile, num, out, dgnn_checkpoints, resume, echo)
    return runs


def _curve_from_checkpoint(path: Path) -> list[dict]:
    """The learning curve ``rl-isac train`` stored in its ``--out`` folder (``learning_curve.json``), if any."""
    curve = path / "learning_curve.json"
    rows = json.loads(curve.read_text())["iterations"] if curve.is_file() else []
    return [{k: row[k] for k in CURVE_KEYS if k in row} for row in rows]


CURVE_KEYS = ("iteration", "env_steps", "wall_s", "return_mean", "rmse_m", "pcrb_m", "lost_fraction", "entropy", "kl",
              "env_steps_per_s")


def _train_one(api, profile: Profile, num: int, out: Path, dgnn_checkpoints: str, resume: bool, echo: Echo) -> dict:
    """One PPO training run through :func:`rl_isac.training.ppo.train` (resumable: a finished run is reused).

    The run lives in ``<out>/ppo-I<I>/`` (the ``rl-isac train --out`` layout); with ``resume`` an
    unfinished run continues from its last checkpoint, without it the folder is trained afresh.
    A failure is caught here only to be reported: the stage prints it, the record keeps the
    error, the table says "not available" with it and ``rl-isac reproduce`` exits non-zero.
    """
    import shutil
    import traceback

    record_path = out / f"training-I{num}.json"
    run_dir = out / f"ppo-I{num}"
    warm = dgnn_checkpoints.replace("{I}", str(num))
    settings = dict(profile.train or {})
    iterations = int(settings.pop("iterations"))
    if isinstance(settings.get("config"), dict):
        per_i = settings["config"]
        if num not in per_i:
            raise ConfigError("train.config", sorted(per_i), f"the {profile.name} profile has no PPO recipe for "
                                                             f"I={num}")
        settings["config"] = per_i[num]
    spec = {"targets": num, "iterations": iterations, "settings": settings, "dgnn_checkpoint": warm,
            "dgnn_fingerprint": checkpoint_fingerprint(warm), "seed": TRAINING_SEED,
            "config_fingerprint": checkpoint_fingerprint(settings.get("config"))}
    if resume and record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("spec") == spec and record.get("trained") and Path(record["checkpoint"]).exists():
            echo(f"[train] I={num}: finished run found in {run_dir} ({iterations} iterations), not retrained")
            return record
    continue_run = resume and (run_dir / api.CHECKPOINT).is_dir() and (run_dir / api.TRAIN_CONFIG).is_file()
    if not continue_run and run_dir.exists():
        shutil.rmtree(run_dir)
    echo(f"[train] I={num}: PPO {iterations} iterations{f' {settings}' if settings else ''} from {warm} into {run_dir}"
         f"{' (continuing its last checkpoint)' if continue_run else ''}")
    t0 = time.perf_counter()
    try:
        run = api.train(num, warm, str(run_dir), iterations=iterations, resume=continue_run, seed=TRAINING_SEED,
                        echo=lambda msg, **_: echo(f"[train] I={num} {msg}"), **settings)
    except Exception as exc:  # reported, never hidden: see the docstring
        reason = f"PPO training failed: {type(exc).__name__}: {exc}"
        echo(f"[train] I={num}: FAILED, dgnn-ppo not available: {reason}")
        echo("".join(traceback.format_exception(exc)[-3:]).rstrip())
        return {"trained": False, "checkpoint": None, "curve": [], "reason": reason, "failed": True, "spec": spec}
    curve_path = run_dir / api.CURVE
    curve = json.loads(curve_path.read_text())["iterations"] if curve_path.is_file() else []
    record = {"trained": True, "checkpoint": str(run_dir), "reason": "", "spec": spec,
              "wall_time_s": time.perf_counter() - t0, "iterations": run.get("iterations"),
              "env_steps": run.get("env_steps"), "train_config": run.get("train"),
              "curve": [{k: row[k] for k in CURVE_KEYS if k in row} for row in curve]}
    write_json_atomic(record, record_path)
    echo(f"[train] I={num}: done in {record['wall_time_s']:.0f} s ({record['iterations']} iterations, "
         f"{record['env_steps']} env steps), checkpoint {run_dir}")
    return record


# ----------------------------------------------------------------------------------------------- cells
def _method_checkpoint(method: str, num: int, dgnn_checkpoints: str, training: dict[int, dict]) -> str | None:
    if method == PROPOSED:
        run = training.get(num)
        return run["checkpoint"] if run and run.get("trained") else None
    if method.startswith("dgnn-"):
        return dgnn_checkpoints.replace("{I}", str(num))
    return None


def evaluate_cell(profile: Profile, method: str, num: int, checkpoint: str | None, out: Path, resume: bool,
                  echo: Echo, compute: bool = True) -> tuple[dict | None, bool]:
    """One (method, I) cell: from its file when resuming and its spec matches, else through the harness.

    Returns ``(record, reused)``; ``compute=False`` (the run's time budget is spent) returns ``(None, False)``
    instead of computing a cell that cannot be reused. The stored record is ``{"status": "ok", "spec": ...,
    "result": harness result}`` or ``{"status": "refused", "spec": ..., "reason": ..., "candidate_count": int}``.
    """
    from rl_isac.association import ExhaustiveSearchTooLarge

    path = cell_path(out, method, num)
    spec = {"method": method, "targets": num, "episodes": profile.episodes, "blocks": profile.blocks,
            "seed": profile.seed, "fidelity": profile.fidelity, "checkpoint": checkpoint,
            "checkpoint_fingerprint": checkpoint_fingerprint(checkpoint)}
    if resume and path.is_file():
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            echo(f"[evaluate] {method} I={num}: {path} does not parse ({exc}); recomputing")
        else:
            if record.get("spec") == spec:
                now = git_revision()
                stale = (f"; computed at revision {record.get('git_revision')}, the checkout is at {now} "
                         f"(--no-resume recomputes)") if record.get("git_revision") != now else ""
                echo(f"[evaluate] {method} I={num}: finished cell {path} reused (not recomputed){stale}")
                return record, True
            echo(f"[evaluate] {method} I={num}: {path} was computed with another spec; recomputing")
    if not compute:
        return None, False
    t0 = time.perf_counter()
    try:
        # Absolute path: RLlib's RLModule.from_checkpoint (dgnn-ppo) rejects relative ones.
        result = evaluate(method, targets=num, episodes=profile.episodes, blocks=profile.blocks, seed=profile.seed,
                          fidelity=profile.fidelity, checkpoint=_absolute(checkpoint), progress=True)
    except ExhaustiveSearchTooLarge as exc:
        record = {"status": "refused", "spec": spec, "reason": str(exc), "candidate_count": exc.count,
                  "candidate_budget": exc.budget, "enumeration_bytes": exc.enumeration_bytes,
                  "git_revision": git_revision()}
        echo(f"[evaluate] {method} I={num}: refused: {exc.count} candidate associations "
             f"(budget {exc.budget}; {exc.enumeration_bytes / 2**30:.3g} GiB to enumerate): the paper's OOM")
    else:
        record = {"status": "ok", "spec": spec, "wall_time_s": time.perf_counter() - t0, "result": result,
                  "git_revision": result["git_revision"]}
        echo(f"[evaluate] {method} I={num}: rmse {result['rmse_m']:.4f} m, pcrb {result['pcrb_rmse_m']:.4f} m, "
             f"lost {result['lost_fraction']:.3f} ({record['wall_time_s']:.1f} s)")
    write_json_atomic(record, path)
    return record, False


# ----------------------------------------------------------------------------------------------- table
def table_rows(profile: Profile, cells: dict[tuple[str, int], dict], unavailable: dict[tuple[str, int], str]
               ) -> list[dict]:
    """The rows of ``table1.json``: one per (method, I) in table order."""
    rows = []
    for method in profile.methods:
        label, paper = PAPER_TABLE1.get(method, ("ours", {}))
        for num in profile.targets:
            paper_entry = paper.get(num)
            row = {"method": method, "paper_label": label, "targets": num, "status": None, "rmse_m": None,
                   "ci95_m": None, "pcrb_rmse_m": None, "lost_fraction": None, "episodes": None, "blocks": None,
                   "paper_rmse_m": paper_entry if isinstance(paper_entry, float) else None,
                   "paper_entry": None if paper_entry is None else str(paper_entry), "reason": None}
            if (method, num) in unavailable:
                row.update(status="not available", reason=unavailable[(method, num)])
            else:
                rec = cells[(method, num)]
                row["status"] = rec["status"]
                if rec["status"] == "refused":
                    row.update(reason=rec["reason"], candidate_count=rec["candidate_count"])
                else:
                    r = rec["result"]
                    row.update(rmse_m=r["rmse_m"], ci95_m=bootstrap_ci95(r["rmse_per_episode_m"]),
                               pcrb_rmse_m=r["pcrb_rmse_m"], lost_fraction=r["lost_fraction"],
                               episodes=r["episodes"], blocks=r["blocks"], missed_fraction=r["missed_fraction"],
                               decision_ms_p50=r["decision_ms_p50"], git_revision=rec["git_revision"],
                               rmse_per_episode_m=r["rmse_per_episode_m"], world_seeds=r.get("world_seeds"),
                               rmse_unlabelled_per_episode_m=r.get("rmse_unlabelled_per_episode_m"),
                               **tail_summary(r))
            rows.append(row)
    return rows


BAD_EPISODE_M = 1.0
"""An episode whose RMSE exceeds this (m) held a lost or swapped track for a while (a tracked episode is at
0.05-0.3 m): :func:`tail_summary` counts them."""


def bad_rate_interval(bad: int, episodes: int) -> list[float]:
    """Exact (Clopper-Pearson) 95 % interval of the probability that an episode is bad, from ``bad`` of
    ``episodes``. The rate of the rare episodes that decide a mean is what a rerun on other worlds (or another
    machine's round-off, ``rl_isac/__init__.py``) redraws: 0 of 50 still allows up to 7.1 %, which the
    bootstrap interval of the mean, resampling the 50 episodes seen, cannot show."""
    from scipy.stats import binomtest

    ci = binomtest(int(bad), int(episodes)).proportion_ci(confidence_level=0.95, method="exact")
    return [float(ci.low), float(ci.high)]


def tail_summary(result: dict) -> dict:
    """Where a cell's mean comes from (one harness result): its median and worst episode, and the RMSE and
    lost fraction with estimates matched to targets by least squared error each block whatever their labels
    (``rmse_unlabelled_m``: a swap of two identities no longer counts), and how many episodes are bad (RMSE
    above :data:`BAD_EPISODE_M`) with the exact 95 % interval of that rate. ``None`` where a result predates a
    field. A mean far above the median is decided by a few episodes; an identity-free RMSE far below it says
    those episodes are swaps, not lost targets."""
    per_episode = np.asarray(result["rmse_per_episode_m"], dtype=float)
    bad = int(np.sum(per_episode > BAD_EPISODE_M))
    return {"median_episode_rmse_m": float(np.median(per_episode)),
            "worst_episode_rmse_m": float(per_episode.max()),
            "bad_episodes": bad,
            "bad_episode_rate_ci95": bad_rate_interval(bad, per_episode.size),
            "rmse_unlabelled_m": result.get("rmse_unlabelled_m"),
            "lost_fraction_unlabelled": result.get("lost_fraction_unlabelled"),
            "track_swaps": result.get("track_swaps")}


def _fmt_tail(row: dict) -> str:
    if row["status"] != "ok":
        return "-"
    unl = row.get("rmse_unlabelled_m")
    free = "-" if unl is None else f"{unl:.3f} (lost {row['lost_fraction_unlabelled']:.4f})"
    text = f"{row['median_episode_rmse_m']:.3f} / {row['worst_episode_rmse_m']:.2f} / {free}"
    if row.get("bad_episodes") is None:
        return text
    lo, hi = row["bad_episode_rate_ci95"]
    return text + f" / {row['bad_episodes']} [{100 * lo:.1f}, {100 * hi:.1f} %]"


def verdicts(rows: list[dict], targets: tuple[int, ...]) -> list[str]:
    """One sentence per I: where the proposed method wins, loses or ties, by 95 % intervals.

    "beats" / "loses to": the paired 95 % interval of the RMSE difference on the same worlds
    (:func:`paired_comparison`) excludes 0; "ties with": it contains 0 (no claim either way). Where a cell
    holds no per-episode RMSEs (a table made before they were kept), the two marginal intervals are compared
    for overlap instead, and the sentence says "(unpaired)". Against ``dgnn-milp`` the sentence also gives the
    RMSE ratio with its paired interval: the issue's "within 5 %" holds where the interval's top is <= 1.05.
    """
    lines = []
    for num in targets:
        prop = next((r for r in rows if r["method"] == PROPOSED and r["targets"] == num), None)
        if prop is None:
            continue
        if prop["status"] != "ok":
            lines.append(f"I = {num}: the proposed dgnn-ppo is not available ({prop['reason']}); no comparison.")
            continue
        paired = {e["against"]: e for e in paired_rows(rows, (num,)) if "diff_m" in e}
        groups: dict[str, list[str]] = {"beats": [], "LOSES to": [], "ties with": []}
        unpaired = False
        for r in rows:
            if r["targets"] != num or r["status"] != "ok" or r["method"] == PROPOSED:
                continue
            if r["method"] in paired:
                lo, hi = paired[r["method"]]["diff_ci95_m"]
                text = f"{r['method']} ({r['rmse_m']:.3f} m; difference [{lo:+.3f}, {hi:+.3f}])"
            else:
                unpaired = True
                lo, hi = prop["ci95_m"][0] - r["ci95_m"][1], prop["ci95_m"][1] - r["ci95_m"][0]
                text = f"{r['method']} ({r['rmse_m']:.3f} m)"
            key = "beats" if hi < 0 else "LOSES to" if lo > 0 else "ties with"
            groups[key].append(text)
        parts = [f"{k} {', '.join(v)}" for k, v in groups.items() if v]
        line = f"I = {num}: dgnn-ppo ({prop['rmse_m']:.3f} m) " + "; ".join(parts) + "."
        if unpaired:
            line += " (unpaired: marginal intervals compared for overlap)"
        milp = paired.get("dgnn-milp")
        if milp is not None:
            lo, hi = milp["ratio_ci95"]
            line += (f" Against dgnn-milp: x{milp['ratio']:.2f} [{lo:.2f}, {hi:.2f}], within 5 %: "
                     f"{'yes' if hi <= 1.05 else 'not shown'}; median episode x{milp['median_episode_ratio']:.3f}, "
                     f"better in {milp['better_episodes']} / {milp['episodes']} episodes")
            free = milp.get("unlabelled")
            if free is not None:
                flo, fhi = free["ratio_ci95"]
                line += (f"; identity-free x{free['ratio']:.2f} [{flo:.2f}, {fhi:.2f}], within 5 %: "
                         f"{'yes' if fhi <= 1.05 else 'not shown'}")
            line += "."
        lines.append(line)
    return lines


def paired_markdown(rows: list[dict], targets: tuple[int, ...]) -> list[str]:
    """The paired-comparison section of ``table1.md`` (lines), empty if no pair could be compared."""
    entries = [e for e in paired_rows(rows, targets) if "diff_m" in e]
    if not entries:
        return []
    by = {(e["against"], e["targets"]): e for e in entries}
    methods = list(dict.fromkeys(e["against"] for e in entries))
    lines = ["", f"Paired with {PROPOSED} on the same worlds: RMSE difference ({PROPOSED} minus the method, m) "
             "with its paired 95 % bootstrap interval / RMSE ratio with its interval / median per-episode ratio / "
             f"episodes where {PROPOSED} is better. A negative difference whose interval excludes 0 is a win.", "",
             "| against | " + " | ".join(f"I = {n}" for n in targets) + " |", "|---|" + "---|" * len(targets)]
    for method in methods:
        cells = []
        for num in targets:
            e = by.get((method, num))
            if e is None:
                cells.append("-")
                continue
            lo, hi = e["diff_ci95_m"]
            rlo, rhi = e["ratio_ci95"]
            cells.append(f"{e['diff_m']:+.3f} [{lo:+.3f}, {hi:+.3f}] / x{e['ratio']:.2f} [{rlo:.2f}, {rhi:.2f}] / "
                         f"x{e['median_episode_ratio']:.3f} / {e['better_episodes']} of {e['episodes']}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def _fmt_cell(row: dict) -> str:
    if row["status"] == "ok":
        lo, hi = row["ci95_m"]
        return (f"{row['rmse_m']:.3f} [{lo:.3f}, {hi:.3f}] (PCRB {row['pcrb_rmse_m']:.3f}; "
                f"lost {row['lost_fraction']:.3f})")
    if row["status"] == "refused":
        return f"refused ({row['candidate_count']:.3g} candidates)"
    return "not available"


def markdown_table(profile: Profile, rows: list[dict]) -> str:
    """``table1.md``: ours beside the paper's, then the verdicts and the notes."""
    by = {(r["method"], r["targets"]): r for r in rows}
    cols = [f"I = {n}" for n in profile.targets]
    lines = [f"# Table 1 ({profile.name} profile: {profile.episodes} episodes x {profile.blocks} blocks per cell, "
             f"{profile.fidelity}-level world, evaluation seed {profile.seed})", "",
             "| method | paper's name | " + " | ".join(f"ours {c}" for c in cols) + " | "
             + " | ".join(f"paper's {c}" for c in cols) + " |",
             "|---|---|" + "---|" * (2 * len(cols))]
    for method in profile.methods:
        label = PAPER_TABLE1.get(method, ("(ours)", {}))[0]
        ours = [_fmt_cell(by[(method, n)]) for n in profile.targets]
        paper = [by[(method, n)]["paper_entry"] or "-" for n in profile.targets]
        lines.append(f"| {method} | {label} | " + " | ".join(ours) + " | " + " | ".join(paper) + " |")
    lines += ["", *verdicts(rows, profile.targets), "",
              "Ours: per-target RMSE in metres over targets, blocks and episodes, with its 95 % bootstrap interval "
              "over episodes; PCRB: the posterior CRB of the associations and beams the method itself used; lost: "
              "fraction of target-blocks with an error above 5 m. \"paper's\": the numbers printed in the paper's "
              "Table 1 (not recomputed; its world, parameters and training differ from ours). \"refused\": "
              "exhaustive search over more candidate associations than its budget, the paper's OOM. \"not "
              "available\": the method was not trained in this run (see table1.json's reason)."]
    lines += ["", "Where each mean comes from: median episode / worst episode RMSE (m) / identity-free RMSE (m) and "
              "its lost fraction (estimates matched to targets by least squared error each block, whatever their "
              "labels, as OSPA does: a swap of two identities no longer counts) / bad episodes (RMSE above "
              f"{BAD_EPISODE_M:g} m: a track lost or swapped for a while) with the exact 95 % interval of their rate "
              "(what decides a mean; 0 of 50 still allows up to 7.1 %).", "",
              "| method | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for method in profile.methods:
        lines.append(f"| {method} | " + " | ".join(_fmt_tail(by[(method, n)]) for n in profile.targets) + " |")
    lines += paired_markdown(rows, profile.targets)
    notes = {r["reason"] for r in rows if r["status"] == "not available"}
    lines += [f"- not available: {n}" for n in sorted(notes)]
    return "\n".join(lines) + "\n"


def terminal_table(profile: Profile, rows: list[dict]) -> str:
    head = f"{'method':<17}{'paper':<15}{'I':>3}{'rmse_m':>9}{'ci95_m':>18}{'pcrb_m':>9}{'lost':>7}{'paper_m':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        paper = r["paper_entry"] or "-"
        if r["status"] == "ok":
            ci = f"[{r['ci95_m'][0]:.3f}, {r['ci95_m'][1]:.3f}]"
            lines.append(f"{r['method']:<17}{r['paper_label']:<15}{r['targets']:>3}{r['rmse_m']:>9.4f}{ci:>18}"
                         f"{r['pcrb_rmse_m']:>9.4f}{r['lost_fraction']:>7.3f}{paper:>9}")
        else:
            text = "refused" if r["status"] == "refused" else "not available"
            lines.append(f"{r['method']:<17}{r['paper_label']:<15}{r['targets']:>3}{text:>27}{'':>16}{paper:>9}")
    return "\n".join(lines + ["", *verdicts(rows, profile.targets)])


# ----------------------------------------------------------------------------------------------- pipeline
@dataclass
class ReproduceResult:
    out: Path
    rows: list[dict]
    figures: dict[str, Path]
    training: dict[int, dict]
    cells_computed: list[str] = field(default_factory=list)
    cells_reused: list[str] = field(default_factory=list)
    cells_skipped: list[str] = field(default_factory=list)


def evaluation_order(profile: Profile) -> list[tuple[int, str]]:
    """``(I, method)`` in the order cells are evaluated: :data:`FIRST_METHODS` at every I, then the rest,
    :data:`LAST_METHODS` last."""
    first = [m for m in profile.methods if m in FIRST_METHODS]
    last = [m for m in profile.methods if m in LAST_METHODS and m not in FIRST_METHODS]
    rest = [m for m in profile.methods if m not in first and m not in last]
    return [(n, m) for group in (first, rest, last) for n in profile.targets for m in group]


def reproduce(profile: Profile | str, out: str | Path | None = None, resume: bool = True,
              dgnn_checkpoints: str = DEFAULT_DGNN_CHECKPOINTS, ppo_checkpoint: str | None = None,
              echo: Echo = print, time_budget_s: float | None = None) -> ReproduceResult:
    """Run the whole pipeline (see the module docstring); returns the rows and figure paths.

    ``time_budget_s``: once this much wall time has passed since the start, no further cell is computed
    (finished cells are still reused); the cells left are reported "not computed" in the table, with the
    reason, and ``ReproduceResult.cells_skipped`` lists them; rerunning resumes there.
    """
    if time_budget_s is not None and not time_budget_s > 0:
        raise ConfigError("time_budget_s", time_budget_s, "must be > 0 seconds (or None: no budget)")
    if isinstance(profile, str):
        if profile not in PROFILES:
            raise ConfigError("profile", profile, f"unknown profile; known: {sorted(PROFILES)}")
        profile = PROFILES[profile]
    out = Path(out) if out is not None else Path("results") / profile.name
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    echo(f"[setup] profile {profile.name}: I = {list(profile.targets)}, {len(profile.methods)} methods, "
         f"{profile.episodes} episodes x {profile.blocks} blocks per cell, output {out}, "
         f"resume {'on' if resume else 'off'}")
    for method in profile.methods:
        if method.startswith("dgnn-") and method != PROPOSED:
            for num in profile.targets:
                ckpt = Path(dgnn_checkpoints.replace("{I}", str(num)))
                if not (ckpt / "model.pt").is_file():
                    raise ConfigError("dgnn_checkpoints", str(ckpt), f"{method} at I={num} needs a phase-1 "
                                      "checkpoint with model.pt (rl-isac pretrain / train-l2o)")
    manifest = {
        "profile": asdict(profile), "out": str(out), "git_revision": git_revision(), "git_dirty": git_dirty(),
        "packages": package_versions(), "argv": sys.argv, "dgnn_checkpoints": dgnn_checkpoints,
        "evaluation_world_seeds": evaluation_seeds(profile.seed, profile.episodes),
        "scenarios": {str(n): ScenarioConfig.preset("paper", num_targets=n, fidelity=profile.fidelity)
                      .replace(num_blocks=profile.blocks).to_dict() for n in profile.targets},
    }
    write_json_atomic(manifest, out / "run.json")

    echo("[train] stage start")
    training = train_stage(profile, out, dgnn_checkpoints, resume, echo, ppo_checkpoint=ppo_checkpoint)

    echo(f"[evaluate] stage start: {len(profile.methods) * len(profile.targets)} cells")
    cells: dict[tuple[str, int], dict] = {}
    unavailable: dict[tuple[str, int], str] = {}
    result = ReproduceResult(out=out, rows=[], figures={}, training=training)
    for num, method in evaluation_order(profile):
        ckpt = _method_checkpoint(method, num, dgnn_checkpoints, training)
        if method == PROPOSED and ckpt is None:
            unavailable[(method, num)] = training[num]["reason"]
            echo(f"[evaluate] {method} I={num}: not available ({training[num]['reason']})")
            continue
        spent = time.perf_counter() - t_start
        compute = time_budget_s is None or spent < time_budget_s
        record, reused = evaluate_cell(profile, method, num, ckpt, out, resume, echo, compute=compute)
        if record is None:
            unavailable[(method, num)] = (f"not computed: this run's time budget ({time_budget_s:.0f} s) was spent "
                                          f"({spent:.0f} s); rerunning resumes at this cell")
            echo(f"[evaluate] {method} I={num}: {unavailable[(method, num)]}")
            result.cells_skipped.append(f"{method}-I{num}")
            continue
        cells[(method, num)] = record
        (result.cells_reused if reused else result.cells_computed).append(f"{method}-I{num}")

    echo("[table] stage start")
    rows = table_rows(profile, cells, unavailable)
    result.rows = rows
    table = {"profile": profile.name, "episodes": profile.episodes, "blocks": profile.blocks,
             "seed": profile.seed, "fidelity": profile.fidelity, "git_revision": git_revision(),
             "evaluation_world_seeds": manifest["evaluation_world_seeds"], "rows": rows,
             "verdicts": verdicts(rows, profile.targets), "paired": paired_rows(rows, profile.targets),
             "paper_table1_source": "the paper's Table 1 (printed values)",
             "cell_revisions": sorted({r["git_revision"] for r in rows if r.get("git_revision")})}
    write_json_atomic(table, out / "table1.json")
    (out / "table1.md").write_text(markdown_table(profile, rows))
    echo(f"[table] wrote {out / 'table1.json'} and {out / 'table1.md'}")

    echo("[figures] stage start")
    from rl_isac.evaluation import figures

    result.figures = {}
    if any(num == profile.fig3_i for _, num in cells) or not result.cells_skipped:
        fig3_method, fig3_ckpt = _fig3_method(profile, cells, training, dgnn_checkpoints)
        episode = figures.record_episode(profile, fig3_method, profile.fig3_i, fig3_ckpt, out, resume, echo)
        result.figures["fig3"] = figures.fig3(episode, out / "fig3.png")
    else:
        echo(f"[figures] fig3 not drawn: no cell at I={profile.fig3_i} was computed within the time budget")
    result.figures.update(fig4=figures.fig4(profile, cells, out / "fig4.png"),
                          training=figures.training_curve(training, out / "training.png"))
    echo(f"[figures] wrote {', '.join(str(p) for p in result.figures.values())}")
    echo(f"[done] {time.perf_counter() - t_start:.0f} s")
    return result


def readme_markers(table_path: str) -> tuple[str, str]:
    """The two HTML comments between which :func:`embed_table_in_readme` writes ``table_path``'s table."""
    return f"<!-- BEGIN {table_path} (written by rl-isac reproduce --readme) -->", f"<!-- END {table_path} -->"


def embed_table_in_readme(readme: str | Path, table_md: str | Path, table_key: str | None = None) -> None:
    """Copy the generated ``table1.md`` into ``readme`` between its markers (:func:`readme_markers`).

    The README shows the table itself without a number typed by hand: what lies between the two markers is
    replaced by the file's text (its headings three levels lower), everything else is kept, and the file is
    replaced atomically.
    ``table_key`` names the table in the markers (default: ``table_md`` as given, e.g.
    ``results/full/table1.md``). Raises :class:`~rl_isac.errors.ConfigError` when the README lacks either
    marker, or has them out of order (then nothing is written).
    """
    from rl_isac.io import atomic_write_text

    readme, table_md = Path(readme), Path(table_md)
    text, (i, j) = readme.read_text(), check_readme(readme, table_key or str(table_md))
    # the table's own headings go three levels down, under the README section that holds it
    body = "\n".join("###" + line if line.startswith("#") else line
                     for line in table_md.read_text().strip().splitlines())
    atomic_write_text(text[:i] + "\n" + body + "\n" + text[j:], readme)


def check_readme(readme: str | Path, table_key: str) -> tuple[int, int]:
    """Where the table goes in ``readme``: the character span between its two markers.

    Raises :class:`~rl_isac.errors.ConfigError` naming the missing marker (a run checks this first, so a
    wrong ``--readme`` fails before any training).
    """
    readme = Path(readme)
    if not readme.is_file():
        raise ConfigError("readme", str(readme), "no such file")
    begin, end = readme_markers(table_key)
    text = readme.read_text()
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < 0 or j < i:
        raise ConfigError("readme", str(readme), f"needs the line {begin!r} and after it {end!r} "
                          "to embed the table between them")
    return i + len(begin), j


def _fig3_method(profile: Profile, cells: dict, training: dict, dgnn_checkpoints: str) -> tuple[str, str | None]:
    """Fig. 3 shows the proposed method when it was trained, else the first other method evaluated OK."""
    num = profile.fig3_i
    for method in profile.methods:
        rec = cells.get((method, num))
        if rec is not None and rec["status"] == "ok":
            return method, _method_checkpoint(method, num, dgnn_checkpoints, training)
    raise ConfigError("methods", profile.methods, f"no method was evaluated at I={num}, nothing to draw in Fig. 3")
