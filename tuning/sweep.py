"""PPO hyperparameter sweep of ``dgnn-ppo``: Ray Tune ``Tuner`` + ``OptunaSearch`` + ``ASHAScheduler``.

How to run
----------
On this 2-core machine (a 4-trial sweep at I = 4, one trial at a time: reproducible, see below)::

    .venv/bin/python tuning/sweep.py --targets 4 --trials 4 --iterations 6 --eval-every 2 \\
        --env-runners 1 --cpus-per-env-runner 0.5 --learner-cpus 0.5 --main-cpus 0.5

On a cluster (cluster/README.md), the same script with other arguments only::

    ray submit cluster/config.yaml tuning/sweep.py -- --address auto --targets 4 6 8 --trials 32 \\
        --iterations 50 --env-runners 8 --cpus-per-env-runner 1 --learner-cpus 1 --learner-gpus 1 \\
        --main-cpus 1 --eval-episodes 10 --eval-blocks 100 --max-concurrent 8 --assume-autoscaling
        # 8 trials at once: faster, ASHA's stops then depend on the order of reports (Reproducibility)

An interrupted sweep continues with the same command plus ``--restore`` (``Tuner.restore``).
``--describe`` prints the search space (tuning/search_space.py) with its ranges and reasons.

Results to expect
-----------------
* ``<storage>/<name>-I<I>/``: Tune's experiment folder per target count (default storage
  ``~/ray_results``), with TensorBoard event files of every trial (RLlib's metrics, our custom
  ``tracking/*`` scalars and the sweep's ``val_rmse_m``): ``tensorboard --logdir ~/ray_results``.
* ``<out>/best-I<I>.yaml``: the best trial's configuration as a preset for
  ``rl-isac train --targets I --config <out>/best-I<I>.yaml``.
* ``<out>/summary.md`` (also printed): every trial, its iterations, its metric and its settings.

On this machine the command above took 421-606 s (results/sweep/summary.md: 4 trials, best
``val_rmse_m`` 0.1113 m; the spread is the machine's load, the table is the same every run).

Metric: ``val_rmse_m``, the per-target tracking RMSE of the trial's current policy measured with the
evaluation harness's episode runner (:func:`rl_isac.evaluation.harness.run_episode`) on *validation*
world seeds (:func:`rl_isac.seeds.training_world_seed` with split 1): the harness's own evaluation
seeds are never tuned on. Lower is better; it is reported every ``--eval-every`` iterations (the
training return at every iteration beside it), and ASHA stops trials on it.

Trials with ``warm_start`` behaviour-clone ``bc_expert`` first, exactly as ``rl-isac train`` does
(:func:`rl_isac.training.ppo.warm_start`; ``--bc-episodes`` sets ``bc_episodes`` for every trial); the cloned
weights reach the learner and every env runner through Ray. (Before 2026-12-02 the sweep sampled
``warm_start`` and ``dagger_rounds`` but never ran the warm start: earlier tables' trials all started from
the phase-1 encoder alone.)

Resources per trial are explicit (env runners, CPUs per runner, learner CPUs/GPUs, main-process
CPUs); the bundles come from RLlib's own ``PPO.default_resource_request`` for exactly that layout.
By default one trial runs at a time (reproducible, below); ``--parallel`` runs as many as first-fit onto
the nodes Ray reports, ``--max-concurrent N`` exactly N. A trial that fits on no node is an error naming
what was asked and what exists, instead of a trial left PENDING forever.

Reproducibility
---------------
The same command (same seed, same revision) gives the same table: every trial's config, the iteration
ASHA stopped it at, and every reported number (``tests/tuning/test_sweep_reproducible.py`` runs a tiny
sweep twice). Two things made that false before 2026-12-02, both measured on ``results/sweep``'s command:

* The trials' own training was not deterministic. RLlib's env pre-check (``disable_env_checking=False``,
  RLlib's default) resets every env and steps it once with an *unseeded* random action; with
  ``reward_normalize`` the env's running return std keeps that step, so from its 100th step on every
  normalised reward differs between runs (with ``reward="mse"`` the step's reward is exactly 0, block 0 being
  unscored, so those trials happened to reproduce). The third trial of ``results/sweep`` (``mix``, normalised)
  was stopped by ASHA at iteration 2 in both runs and reported 0.2884 and 0.2630 there; the same config,
  trained alone twice for 2 iterations, gave 0.446 and 0.334, and with the check off 0.2596 twice,
  bit-identical weights. ``build_ppo_config`` turns the check off (for ``rl-isac train`` too).
* ASHA is asynchronous: a trial reaching a rung is compared with whatever the *other* trials have recorded
  there so far, so with several trials at once the stop point (and, past Optuna's 10 random startup trials,
  the TPE's next suggestions) depends on wall-clock order. One trial at a time removes that dependence
  (each trial is judged against all earlier ones, in Optuna's order); on this 2-core machine it costs about
  the difference between 1 and 2 trials in parallel. ``--parallel`` / ``--max-concurrent N > 1`` trade that
  for speed on a cluster: such a sweep's stop points may differ between reruns (the summary says which mode ran).

Left as is: on a cluster, a GPU learner (CUDA kernels) need not be bit-reproducible; trials' timing figures
(wall time, ``perf/*``) are measurements, never reproducible.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# `ray submit` uploads only this file to the head's home folder; the repository itself is mounted at
# ~/rl_isac (cluster/config.yaml, file_mounts). Find the repository to import the search space.
_HERE = Path(__file__).resolve().parent
REPO = next((root for root in (_HERE.parent, Path.home() / "rl_isac")
             if (root / "tuning" / "search_space.py").is_file()), _HERE.parent)
"""The repository (defaults below are inside it, so the sweep works from any working directory)."""
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from rl_isac.errors import ConfigError, RlIsacError  # noqa: E402
from tuning import search_space  # noqa: E402

METRIC = "val_rmse_m"
MODE = "min"


class PlacementError(ConfigError):
    """A trial's resource bundles fit on none of the cluster's nodes."""


# ----------------------------------------------------------------------------------------------- resources
@dataclass(frozen=True)
class TrialResources:
    """One trial's layout: RLlib env runners, learner and main process (CPUs may be fractional)."""

    env_runners: int = 1
    cpus_per_env_runner: float = 1.0
    envs_per_env_runner: int = 8
    learner_cpus: float = 1.0
    learner_gpus: float = 0.0
    main_cpus: float = 1.0

    def __post_init__(self) -> None:
        if self.env_runners < 0:
            raise ConfigError("env_runners", self.env_runners, "must be >= 0")
        if self.envs_per_env_runner < 1:
            raise ConfigError("envs_per_env_runner", self.envs_per_env_runner, "must be >= 1")
        for name in ("cpus_per_env_runner", "learner_cpus", "main_cpus"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(name, value, "must be a finite number > 0")
        if not (math.isfinite(self.learner_gpus) and self.learner_gpus >= 0):
            raise ConfigError("learner_gpus", self.learner_gpus, "must be a finite number >= 0")

    @property
    def num_learners(self) -> int:
        """0 (the learner runs in the main process) on CPU; one remote learner actor per GPU trial."""
        return 1 if self.learner_gpus > 0 else 0

    def apply(self, config):
        """Set this layout on an RLlib ``AlgorithmConfig`` (returns it)."""
        return (config.env_runners(num_env_runners=self.env_runners, num_cpus_per_env_runner=self.cpus_per_env_runner,
                                   num_envs_per_env_runner=self.envs_per_env_runner)
                .learners(num_learners=self.num_learners, num_cpus_per_learner=self.learner_cpus,
                          num_gpus_per_learner=self.learner_gpus)
                .resources(num_cpus_for_main_process=self.main_cpus))

    def bundles(self) -> list[dict[str, float]]:
        """The placement-group bundles RLlib requests for this layout (``PPO.default_resource_request``)."""
        from ray.rllib.algorithms.ppo import PPO, PPOConfig

        pgf = PPO.default_resource_request(self.apply(PPOConfig()))
        return [{k: float(v) for k, v in b.items() if v} for b in pgf.bundles]

    def placement_group_factory(self):
        from ray.tune import PlacementGroupFactory

        return PlacementGroupFactory(self.bundles(), strategy="PACK")


def _total(bundles: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for b in bundles:
        for k, v in b.items():
            out[k] = out.get(k, 0.0) + v
    return out


def _place(bundles: list[dict[str, float]], free: list[dict[str, float]]) -> bool:
    """First-fit-decreasing of one trial's bundles onto the nodes' free resources (mutates ``free`` on success)."""
    trial = [dict(node) for node in free]
    for bundle in sorted(bundles, key=lambda b: (-b.get("GPU", 0.0), -b.get("CPU", 0.0))):
        for node in trial:
            if all(node.get(k, 0.0) + 1e-9 >= v for k, v in bundle.items()):
                for k, v in bundle.items():
                    node[k] = node.get(k, 0.0) - v
                break
        else:
            return False
    free[:] = trial
    return True


def max_concurrent_trials(bundles: list[dict[str, float]], nodes: list[dict[str, float]], cap: int | None = None
                          ) -> int:
    """How many trials with these bundles fit on these nodes at once (first fit, node by node).

    Args:
        bundles: one trial's bundles, e.g. ``[{"CPU": 0.5}, {"CPU": 0.5}]``.
        nodes: each node's total resources, e.g. ``[{"CPU": 2.0, "GPU": 0.0}]``.
        cap: upper bound (the number of trials).
    Raises:
        PlacementError: not even one trial fits; the message says what was asked and what exists.
    """
    free = [dict(n) for n in nodes]
    count = 0
    while (cap is None or count < cap) and _place(bundles, free):
        count += 1
    if count == 0:
        raise PlacementError("trial resources", bundles,
                             f"a trial asks for bundles {bundles} (total {_total(bundles)}) but the cluster's nodes "
                             f"have {nodes} (total {_total(nodes)}): no node can hold them, so the trial would wait "
                             f"forever; lower --env-runners / --cpus-per-env-runner / --learner-cpus / "
                             f"--learner-gpus / --main-cpus or add nodes")
    return count


def cluster_nodes() -> list[dict[str, float]]:
    """CPU/GPU (and other) resources of every alive node of the connected Ray cluster."""
    import ray

    return [{k: float(v) for k, v in n["Resources"].items() if not k.startswith(("node:", "memory",
                                                                                 "object_store_memory"))}
            for n in ray.nodes() if n.get("Alive")]


# ----------------------------------------------------------------------------------------------- trial
@dataclass(frozen=True)
class SweepSettings:
    """What every trial of one sweep shares (not searched)."""

    targets: int
    pretrained: str
    iterations: int
    eval_every: int
    eval_episodes: int
    eval_blocks: int
    fidelity: str
    eval_fidelity: str
    seed: int
    resources: TrialResources
    train_overrides: dict = field(default_factory=dict)
    """Fixed ``PPOTrainConfig`` fields of every trial (e.g. ``train_batch_size``, ``blocks``)."""


def validation_rmse(controller, cfg, episodes: int, blocks: int, seed: int) -> float:
    """Per-target RMSE of a CU with the harness's episode runner on validation seeds (never evaluation seeds)."""
    import numpy as np

    from rl_isac.evaluation.harness import run_episode
    from rl_isac.seeds import training_world_seed

    sq = [run_episode(controller, cfg, training_world_seed(seed, 1, e), blocks)["sq_err"]
          for e in range(episodes)]
    return float(np.sqrt(np.mean(sq)))


def train_fields() -> set[str]:
    """Field names of the RLlib pipeline's ``PPOTrainConfig`` (what ``rl-isac train --config`` accepts)."""
    import dataclasses

    try:
        from rl_isac.rllib.config import PPOTrainConfig
    except ModuleNotFoundError as exc:
        raise ConfigError("rl_isac.rllib.config", exc.name, "the RLlib pipeline (issue 8) is not installed in this "
                                                            "checkout; the sweep trains through it") from exc
    return {f.name for f in dataclasses.fields(PPOTrainConfig)}


def trial_train_config(config: dict[str, Any], settings: SweepSettings):
    """The ``PPOTrainConfig`` of one trial: the searched values it has fields for + the sweep's fixed settings."""
    from rl_isac.rllib.config import PPOTrainConfig

    fields = train_fields()
    data = {k: v for k, v in config.items() if k in search_space.PARAMS and k in fields}
    data.update(fidelity=settings.fidelity, num_env_runners=settings.resources.env_runners,
                num_envs_per_env_runner=settings.resources.envs_per_env_runner, **settings.train_overrides)
    return PPOTrainConfig.from_dict(data)


def ppo_trial(config: dict[str, Any], settings: SweepSettings) -> None:
    """Tune function trainable: PPO through the RLlib pipeline's builder, reporting ``val_rmse_m``.

    Reports every ``eval_every`` PPO iterations (and at the last): ``ppo_iteration`` (ASHA's time
    attribute), the training return and RMSE of the exploration policy, and ``val_rmse_m`` of the
    greedy policy through the harness's episode runner on validation seeds; each report carries a
    checkpoint, and a restored trial continues from it (same config, iterations continue).
    """
    import torch

    torch.set_num_threads(1)
    try:
        _run_trial(config, settings)
    except RlIsacError as exc:
        # Ray copies a trial's exception chain to report it, and our errors' constructors take the
        # (field, value, rule) triple, so the copy would fail and hide the message: pass it on as text.
        raise RuntimeError(f"{type(exc).__name__}: {exc}") from None


def behaviour_clone_state(train_cfg, env_config: dict, dgnn: dict, settings: SweepSettings) -> dict:
    """The warm-started module's state dict of a trial with ``warm_start`` (:func:`rl_isac.training.ppo.warm_start`,
    exactly what ``rl-isac train`` runs with ``warm_start: true``: behaviour cloning of ``bc_expert`` on
    ``bc_episodes`` training episodes, ``dagger_rounds`` DAgger rounds, the critic fitted on the expert's returns)."""
    import tempfile

    import torch

    from rl_isac.training.ppo import warm_start

    run = {"env_config": env_config, "seed": settings.seed, "dgnn": dgnn, "pretrained": settings.pretrained}
    with tempfile.TemporaryDirectory() as d:
        path = str(Path(d) / "warm_start.pt")
        warm_start(run, train_cfg, str(Path(settings.pretrained) / "model.pt"), path, echo=lambda *a, **k: None)
        return torch.load(path, map_location="cpu", weights_only=True)


def load_module_state(algo, state: dict) -> None:
    """Load a ``cu_policy`` state dict into every learner's module and every env runner's, and check it arrived.

    The weights travel through Ray (not a file path in ``model_config``, which env runners or a GPU learner
    on other nodes could not read); the learners' optimizers keep their parameters (loaded in place). Each
    env runner loads its own (possibly inference-only) subset synchronously and sends it back: RLlib's
    ``sync_weights`` is fire-and-forget and may drop a request while another is in flight, which left some
    trials' first iteration sampled with the untrained actor (measured: two identical runs differed)."""
    import numpy as np

    from rl_isac.rllib.callbacks import MODULE_ID

    def load(learner) -> None:
        learner.module[MODULE_ID].load_state_dict(state)

    for result in algo.learner_group.foreach_learner(load):
        if not result.ok:  # a remote learner's error comes back as a value: raise it
            raise result.get()

    def load_runner(runner) -> dict:
        module = runner.module[MODULE_ID]
        module.load_state_dict({k: state[k] for k in module.state_dict()}, strict=True)
        return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}

    group = algo.env_runner_group
    loaded = group.foreach_env_runner(load_runner, local_env_runner=True)
    expected = group.num_remote_env_runners() + (group.local_env_runner is not None)
    if len(loaded) != expected:
        raise RuntimeError(f"warm start: {len(loaded)} of {expected} env runners confirmed the cloned weights")
    for got in loaded:
        wrong = [k for k, v in got.items() if not np.array_equal(v, state[k].detach().cpu().numpy())]
        if wrong:
            raise RuntimeError(f"warm start: an env runner holds other weights than the clone for {wrong[:5]}")


def _run_trial(config: dict[str, Any], settings: SweepSettings) -> None:
    import json
    import tempfile

    from ray import tune

    from rl_isac.controllers import make_controller
    from rl_isac.rllib.config import build_ppo_config, check_pretrained, env_config_for
    from rl_isac.scenario import ScenarioConfig
    from rl_isac.training.ppo import _row

    search_space.validate(config, available_fields=train_fields())
    train_cfg = trial_train_config(config, settings)
    num = settings.targets
    configs = check_pretrained(settings.pretrained, ScenarioConfig.paper(num, fidelity=train_cfg.fidelity,
                                                                         num_blocks=train_cfg.blocks))
    env_config = env_config_for(train_cfg, num, settings.seed)
    dgnn_weights = str(Path(settings.pretrained) / "model.pt")
    restored = tune.get_checkpoint()
    # The warm start, as `rl-isac train` runs it (before the algorithm is built); a restored trial's
    # checkpoint already holds the module it led to.
    warm = (behaviour_clone_state(train_cfg, env_config, configs["dgnn"].to_dict(), settings)
            if train_cfg.warm_start and restored is None else None)
    algo_cfg = build_ppo_config(train_cfg, env_config, configs["dgnn"].to_dict(), dgnn_weights, settings.seed)
    # build_ppo_config turns RLlib's env pre-check off (module docstring, "Reproducibility"); rl-isac train
    # and the sweep's trials build the same config.
    algo = settings.resources.apply(algo_cfg).build_algo()
    if warm is not None:
        load_module_state(algo, warm)
    eval_cfg = ScenarioConfig.preset("paper", num_targets=num, fidelity=settings.eval_fidelity).replace(
        num_blocks=settings.eval_blocks)
    start = 0
    if restored is not None:
        with restored.as_directory() as d:
            algo.restore_from_path(str(Path(d) / "algo"))
            start = json.loads((Path(d) / "sweep_state.json").read_text())["ppo_iteration"]
    t0 = time.perf_counter()
    try:
        for it in range(start + 1, settings.iterations + 1):
            row = _row(algo.train(), it, time.perf_counter() - t0)
            if it % settings.eval_every and it != settings.iterations:
                continue
            with tempfile.TemporaryDirectory() as d:
                algo.save_to_path(str(Path(d) / "algo"))
                module = Path(d) / "algo" / "learner_group" / "learner" / "rl_module" / "cu_policy"
                cu = make_controller("dgnn-ppo", eval_cfg, checkpoint=str(module))
                rmse = validation_rmse(cu, eval_cfg, settings.eval_episodes, settings.eval_blocks, settings.seed)
                (Path(d) / "sweep_state.json").write_text(json.dumps({"ppo_iteration": it}))
                # RLlib's scalars (our custom tracking/*, assoc/*, phy/*, losses/*, perf/* included) go to Tune
                # too, so its TensorBoard event files hold them beside the sweep's metric.
                metrics = {k: v for k, v in row["scalars"].items() if math.isfinite(v)}
                metrics.update({"ppo_iteration": it, METRIC: rmse, "return_mean": row["return_mean"],
                                "train_rmse_m": row["rmse_m"], "env_steps": row["env_steps"],
                                "entropy": row["entropy"], "kl": row["kl"]})
                tune.report({k: float(v) for k, v in metrics.items()}, checkpoint=tune.Checkpoint.from_directory(d))
    finally:
        algo.stop()


# ----------------------------------------------------------------------------------------------- results
def best_preset(config: dict[str, Any], settings_overrides: dict[str, Any] | None = None,
                available_fields: set[str] | None = None) -> dict[str, Any]:
    """The best trial's config as a flat mapping of ``PPOTrainConfig`` fields (``rl-isac train --config``)."""
    fields = train_fields() if available_fields is None else available_fields
    searched = search_space.validate(config, available_fields=fields)
    preset = {p.name: searched[p.name] for p in search_space.searched(fields)}
    preset.update(settings_overrides or {})
    return preset


def write_preset(preset: dict[str, Any], path: Path, header: list[str]) -> None:
    """Write the preset YAML (metadata as leading comments: the config loader accepts only its fields)."""
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(f"# {line}\n" for line in header) + yaml.safe_dump(preset, sort_keys=False))
    tmp.replace(path)


def summary_header(args, rows: list[dict[str, Any]], walls: dict[int, float], concurrent: int | None = None) -> str:
    """The lines above the summary table: what ran (the command line, the git revision), how long each I took
    and how many of its trials errored, how many ran at once (1: reproducible), and what the metric is (measured,
    never typed)."""
    from rl_isac.evaluation.harness import git_revision

    command = " ".join(["tuning/sweep.py", *getattr(args, "argv", [])])
    per_i = "; ".join(f"I = {num}: {sum(r['targets'] == num for r in rows)} trials in {wall:.0f} s, "
                      f"{sum(r['targets'] == num and bool(r['error']) for r in rows)} errored"
                      for num, wall in walls.items())
    if concurrent is not None:
        per_i += (". One trial at a time (reproducible: the same command gives the same table)" if concurrent == 1
                  else f". {concurrent} concurrent trials (ASHA's stops depend on the order of their reports)")
    return (f"# PPO sweep (Ray Tune + OptunaSearch + ASHA), I = {', '.join(str(n) for n in walls)}\n\n"
            f"Command: `{command}` at revision {git_revision()}. {per_i}. Metric {METRIC} (m, lower is better) on "
            f"validation worlds (training-side seeds, never evaluation seeds); `best-I<I>.yaml` is the best trial's "
            f"preset for `rl-isac train --config`.\n\n")


def summary_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table: one row per trial, best first per I."""
    keys = [k for k in search_space.PARAMS if any(k in r["config"] for r in rows)]
    lines = ["| I | trial | PPO iterations | " + METRIC + " | " + " | ".join(keys) + " |",
             "|---|---|---|---|" + "---|" * len(keys)]
    for r in sorted(rows, key=lambda r: (r["targets"], math.inf if r["metric"] is None else r["metric"])):
        metric = "-" if r["metric"] is None else f"{r['metric']:.4f}"
        vals = [f"{r['config'][k]:.3g}" if isinstance(r["config"].get(k), float) else str(r["config"].get(k))
                for k in keys]
        lines.append(f"| {r['targets']} | {r['trial_id']} | {r['iterations']} | {metric} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- driver
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Tune + Optuna + ASHA sweep of dgnn-ppo (see the module docstring)")
    p.add_argument("--targets", type=int, nargs="+", default=[4], help="target counts, a fixed grid (default 4)")
    p.add_argument("--trials", type=int, default=4, help="Optuna trials per target count (default 4)")
    p.add_argument("--iterations", type=int, default=6, help="PPO iterations per trial at most (ASHA max_t)")
    p.add_argument("--grace-iterations", type=int, default=2, help="ASHA grace period in iterations (default 2)")
    p.add_argument("--eval-every", type=int, default=2, help="report val_rmse_m every N iterations (default 2)")
    p.add_argument("--eval-episodes", type=int, default=2, help="validation episodes per report (default 2)")
    p.add_argument("--eval-blocks", type=int, default=50, help="blocks per validation episode (default 50)")
    p.add_argument("--pretrained", default=str(REPO / "results" / "checkpoints" / "dgnn-I{I}"),
                   help="phase-1 checkpoints ('{I}'; default the repository's results/checkpoints/dgnn-I{I})")
    p.add_argument("--fidelity", default="surrogate", help="training world fidelity (default surrogate)")
    p.add_argument("--eval-fidelity", default="signal", help="validation world fidelity (default signal)")
    p.add_argument("--train-batch-size", type=int, help="PPO train batch in env steps (default PPOTrainConfig's)")
    p.add_argument("--train-blocks", type=int, help="blocks per training episode (default PPOTrainConfig's)")
    p.add_argument("--bc-episodes", type=int,
                   help="warm-start expert episodes of trials with warm_start (default PPOTrainConfig's)")
    p.add_argument("--env-runners", type=int, default=1)
    p.add_argument("--cpus-per-env-runner", type=float, default=0.5)
    p.add_argument("--envs-per-env-runner", type=int, default=8)
    p.add_argument("--learner-cpus", type=float, default=0.5)
    p.add_argument("--learner-gpus", type=float, default=0.0)
    p.add_argument("--main-cpus", type=float, default=0.5)
    p.add_argument("--max-concurrent", type=int,
                   help="concurrent trials (default 1, reproducible; with --parallel: derived from the cluster)")
    p.add_argument("--parallel", action="store_true",
                   help="run as many trials at once as fit on the cluster's nodes: faster, but ASHA's stop decisions "
                        "then depend on the order in which concurrent trials report (see the module docstring)")
    p.add_argument("--assume-autoscaling", action="store_true",
                   help="with --max-concurrent: do not check placement on the nodes running now (an autoscaler "
                        "adds nodes on demand)")
    p.add_argument("--address", help="Ray address ('auto' on a cluster head; default: start a local Ray)")
    p.add_argument("--storage", default=str(Path.home() / "ray_results"), help="Tune storage (default ~/ray_results)")
    p.add_argument("--name", default="rl-isac-ppo-sweep", help="experiment name prefix")
    p.add_argument("--out", default=str(REPO / "tuning" / "out"),
                   help="where best-I<I>.yaml and summary.md go (default the repository's tuning/out)")
    p.add_argument("--seed", type=int, default=0, help="Optuna and training seed (default 0)")
    p.add_argument("--restore", action="store_true", help="continue the interrupted sweep of the same name")
    p.add_argument("--describe", action="store_true", help="print the search space and exit")
    return p


def resolve_concurrency(args, resources: TrialResources, nodes: list[dict[str, float]]) -> int:
    """``max_concurrent_trials``: ``--max-concurrent``; else 1 (the reproducible default: one trial at a time);
    with ``--parallel`` what first-fits on ``nodes``. Placement is checked in every case (one trial must fit)."""
    bundles = resources.bundles()
    if args.max_concurrent is not None:
        if args.max_concurrent < 1:
            raise ConfigError("--max-concurrent", args.max_concurrent, "must be >= 1")
        if not args.assume_autoscaling:
            max_concurrent_trials(bundles, nodes, cap=1)  # at least one must fit now
        return args.max_concurrent
    if args.assume_autoscaling:
        raise ConfigError("--assume-autoscaling", True, "needs --max-concurrent (nodes running now say nothing "
                                                        "about the nodes the autoscaler will add)")
    return max_concurrent_trials(bundles, nodes, cap=args.trials if getattr(args, "parallel", False) else 1)


def check_args(args) -> None:
    for name in ("trials", "iterations", "grace_iterations", "eval_every", "eval_episodes", "eval_blocks"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}", getattr(args, name), "must be >= 1")
    if args.bc_episodes is not None and args.bc_episodes < 2:
        raise ConfigError("--bc-episodes", args.bc_episodes, "must be >= 2 (the warm start holds some out)")
    for num in args.targets:
        if num not in search_space.TARGETS_GRID:
            raise ConfigError("--targets", num, f"must be on the fixed grid {list(search_space.TARGETS_GRID)}")


def run_sweep(args) -> list[dict[str, Any]]:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    check_args(args)
    fields = train_fields()
    held_out = [p.name for p in search_space.SEARCH_SPACE if p.name not in fields]
    if held_out:
        print(f"[sweep] not searched: {held_out} (PPOTrainConfig has no such field in this checkout)", flush=True)
    overrides = {k: v for k, v in (("train_batch_size", args.train_batch_size), ("blocks", args.train_blocks),
                                   ("bc_episodes", args.bc_episodes)) if v is not None}
    resources = TrialResources(args.env_runners, args.cpus_per_env_runner, args.envs_per_env_runner,
                               args.learner_cpus, args.learner_gpus, args.main_cpus)
    # Trials unpickle this script's functions, which import `tuning`: every worker gets the repository
    # on its path (the same path on every node: cluster/config.yaml mounts it at ~/rl_isac).
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    runtime_env = {"env_vars": {"PYTHONPATH": pythonpath}}
    if ray.is_initialized():  # a second sweep in the same driver (its first ray.init gave the runtime env)
        pass
    elif args.address:
        ray.init(address=args.address, runtime_env=runtime_env)
    else:
        ray.init(include_dashboard=False, runtime_env=runtime_env)
    nodes = cluster_nodes()
    concurrent = resolve_concurrency(args, resources, nodes)
    print(f"[sweep] trial bundles {resources.bundles()} on nodes {nodes}: {concurrent} concurrent trial(s)",
          flush=True)
    rows: list[dict[str, Any]] = []
    walls: dict[int, float] = {}
    out = Path(args.out)
    storage = Path(args.storage).expanduser().resolve()
    for num in args.targets:
        settings = SweepSettings(targets=num, pretrained=str(Path(args.pretrained.replace("{I}", str(num))).resolve()),
                                 iterations=args.iterations, eval_every=args.eval_every,
                                 eval_episodes=args.eval_episodes, eval_blocks=args.eval_blocks,
                                 fidelity=args.fidelity, eval_fidelity=args.eval_fidelity, seed=args.seed,
                                 resources=resources, train_overrides=overrides)
        trainable = tune.with_resources(tune.with_parameters(ppo_trial, settings=settings),
                                        resources.placement_group_factory())
        name = f"{args.name}-I{num}"
        path = storage / name
        t0 = time.perf_counter()
        if args.restore and tune.Tuner.can_restore(str(path)):
            check_searcher_state(path)
            print(f"[sweep] I={num}: restoring {path}", flush=True)
            tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_errored=True)
        else:
            # The limiter is what caps concurrency (Tune ignores max_concurrent_trials beside it).
            searcher = ConcurrencyLimiter(OptunaSearch(seed=args.seed + num), max_concurrent=concurrent)
            scheduler = ASHAScheduler(time_attr="ppo_iteration", max_t=args.iterations,
                                      grace_period=min(args.grace_iterations, args.iterations), reduction_factor=2)
            tuner = tune.Tuner(
                trainable, param_space=search_space.tune_space(fields),
                tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, search_alg=searcher, scheduler=scheduler,
                                            num_samples=args.trials,
                                            trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}"),
                run_config=tune.RunConfig(name=name, storage_path=str(storage),
                                          checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))
        grid = tuner.fit()
        wall = time.perf_counter() - t0
        walls[num] = wall
        for res in grid:
            m = res.metrics or {}
            config = {k: v for k, v in (res.config or {}).items() if k in search_space.PARAMS}
            rows.append({"targets": num, "trial_id": m.get("trial_id", "?"),
                         "iterations": int(m.get("ppo_iteration", 0)), "metric": m.get(METRIC), "config": config,
                         "error": None if res.error is None else str(res.error)})
        errors = [r for r in rows if r["targets"] == num and r["error"]]
        for r in errors:
            last = [line for line in r["error"].strip().splitlines() if line.strip()][-1]  # the exception itself
            print(f"[sweep] I={num}: trial {r['trial_id']} failed: {last[:300]}", flush=True)
        if len(errors) == len(grid):
            raise RuntimeError(f"every trial of {name} failed (first error above)")
        best = grid.get_best_result(metric=METRIC, mode=MODE, scope="last")
        preset = best_preset(best.config, overrides, fields)
        preset_path = out / f"best-I{num}.yaml"
        write_preset(preset, preset_path, [
            f"Best of {len(grid)} trials of {name} ({storage / name}): {METRIC} = {best.metrics[METRIC]:.4f} m",
            f"(validation seeds, {args.eval_episodes} episodes x {args.eval_blocks} blocks, {args.eval_fidelity}), "
            f"trial {best.metrics.get('trial_id')}.",
            f"Use: rl-isac train --targets {num} --pretrained {settings.pretrained} --config {preset_path} ..."])
        print(f"[sweep] I={num}: {len(grid)} trials in {wall:.0f} s; best {METRIC} {best.metrics[METRIC]:.4f} m; "
              f"preset {preset_path}", flush=True)
    table = summary_table(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(summary_header(args, rows, walls, concurrent) + table + "\n")
    print(table)
    return rows


def check_searcher_state(experiment: Path) -> None:
    """Refuse to restore an experiment whose searcher state is empty or cut short, with an error saying why and what
    to do.

    Tune copies its experiment files from the driver's staging directory into ``--storage`` one after the other
    and not atomically; a sweep killed during that copy leaves ``searcher-state-*.pkl`` with 0 bytes (the trials'
    checkpoints and ``experiment_state-*.json`` are fine). ``Tuner.restore`` then loads a searcher without its
    state, which never suggests nor resumes a trial, and the driver idles forever (seen here: a sweep killed
    right after its first checkpoint, restored, 0 of 2 CPUs in use after minutes). An ``experiment_state-*.json``
    cut the same way (empty: seen in a clean-clone run of the restore test) makes ``Tuner.restore`` log a
    ``JSONDecodeError``, "restart" the experiment with a searcher that has no search space, and fail; it is
    refused the same way.
    """
    import json
    import pickle

    for state in sorted(experiment.glob("experiment_state-*.json")):
        try:
            json.loads(state.read_text())
        except json.JSONDecodeError as exc:
            what = "empty" if state.stat().st_size == 0 else f"cut short ({type(exc).__name__})"
            raise ConfigError("--restore", str(state), f"the experiment state is {what} (the sweep was killed while "
                              "Tune copied it into the storage); Tune would restart the experiment without its "
                              "search space and fail. Start the sweep again without --restore (or under another "
                              "--name); the trial checkpoints under this directory stay as they are") from None
    for state in sorted(experiment.glob("searcher-state-*.pkl")):
        try:
            with open(state, "rb") as f:  # the sweep's own file, which Tune would unpickle next
                pickle.load(f)
        except (EOFError, pickle.UnpicklingError) as exc:
            what = "empty" if state.stat().st_size == 0 else f"cut short ({type(exc).__name__})"
            raise ConfigError("--restore", str(state), f"the searcher state is {what} (the sweep was killed while "
                              "Tune copied it into the storage); Tune would restore a searcher that never starts a "
                              "trial. Start the sweep again without --restore (or under another --name); the "
                              "trial checkpoints under this directory stay as they are") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the summary's command line
    if args.describe:
        print(search_space.describe())
        return 0
    try:
        run_sweep(args)
    except ConfigError as exc:
        print(f"sweep: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

