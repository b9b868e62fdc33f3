"""``rl-isac train``: phase-2 PPO (paper Sec. 3.2-3.3) on the RLlib new API stack.

How to run::

    rl-isac train --targets 4 --pretrained results/checkpoints/dgnn-I4 --out runs/ppo-I4 \\
        --iterations 50            # or --time-budget-s 1800
    tensorboard --logdir runs/ppo-I4/tb
    rl-isac evaluate --method dgnn-ppo --checkpoint runs/ppo-I4 --targets 4

What it does: validates everything first (``--pretrained`` exists and was trained for this
``I`` and scenario, every setting in range: :mod:`rl_isac.rllib.config`), then starts a local
Ray (``num_cpus = cores``, no dashboard), builds the PPO algorithm and trains, printing one
line per iteration::

    it   3  steps    6000  return  -31.2  rmse 0.412 m  pcrb 0.198 m  lost 0.000  H 12.31  KL 0.0042  312 steps/s

Writes into ``--out``:

* ``checkpoint/``: the RLlib algorithm checkpoint (every ``checkpoint_every`` iterations and at
  the end); the module alone is ``checkpoint/learner_group/learner/rl_module/cu_policy``
  (what ``rl-isac evaluate --method dgnn-ppo --checkpoint OUT`` loads, without Ray);
* ``train_config.json``: the resolved :class:`~rl_isac.rllib.config.PPOTrainConfig`, env_config,
  targets, seed, the phase-1 checkpoint, the git revision, iterations and env steps so far;
* ``learning_curve.json`` and ``learning_curve.png``: per iteration the env steps, wall time,
  return and the training RMSE (surrogate world, exploration policy);
* ``tb/``: TensorBoard scalars (:mod:`rl_isac.rllib.callbacks`);
* with ``warm_start: true``: ``warm_start.pt`` (the behaviour-cloned module PPO starts from) and its
  metrics under ``warm_start`` in ``train_config.json``.

Reward and warm-start levers (issue 9; :class:`~rl_isac.rllib.config.PPOTrainConfig`): ``reward``
(``mse`` = eq. (5a), ``fisher`` = the expected posterior error of the chosen pairs, the MILP's
objective, or their ``mix``), ``reward_normalize`` (running return std), ``warm_start`` with
``dagger_rounds``, ``gain_prior``. ``rl-isac ppo-ablation`` (:mod:`rl_isac.training.ablation`)
measures each; the reference checkpoints ``results/checkpoints/ppo-I*`` record theirs in
``train_config.json``.

Several CU clusters (issue 11): ``rl-isac train --preset large --clusters 2 --pretrained DIR ...`` trains
the env of :mod:`rl_isac.rllib.env` with ``C`` agents ``cu_c`` (one per cluster of ``M / C`` BSs, see
:mod:`rl_isac.clusters`), every one mapped to the one shared ``cu_policy`` module, whose spaces are a
cluster's (:func:`rl_isac.rllib.env.agent_spaces`). The phase-1 encoder is applied to each cluster's
graph of ``M_c`` BSs and ``K`` slots: only the fields its weights depend on are checked (window, codebook,
``N_RF``, tracking symbols), not the BS layout or ``I``. Spare slots (``targets < C * K``) are masked
(``target_valid``). ``warm_start: true`` behaviour-clones the *clustered* expert (``bc_expert`` one of the
``ekf-*`` methods with a clustered version, e.g. ``ekf-milp``: each cluster's sub-CU, the CU the clustered
evaluation runs) into the shared module, every agent's samples pooled (:mod:`rl_isac.rllib.cluster_warm_start`);
another expert is a ConfigError with clusters (so are ``detection_features`` / ``milp_features``: one CU only).

``--resume`` reloads ``checkpoint/`` with the stored config (a changed setting is an error)
and continues to ``--iterations`` in total (the learning curve continues too). A run killed at any
moment resumes: each save writes the algorithm and the learning curve up to it into ``checkpoint.tmp/``
and only then swaps it in for ``checkpoint/`` (two renames; a kill between them leaves
``checkpoint.old/``, which the next start puts back), so ``checkpoint/`` is always a whole save and its
own ``learning_curve.json`` the curve of exactly the iterations it holds.
Seeds: world seeds from :func:`rl_isac.seeds.training_world_seed` (never evaluation seeds).
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from rl_isac.errors import ConfigError
from rl_isac.rllib.config import PPOTrainConfig, check_pretrained, env_config_for, load_train_config
from rl_isac.scenario import ScenarioConfig

CHECKPOINT = "checkpoint"
MODULE_SUBDIR = Path("learner_group") / "learner" / "rl_module"
TRAIN_CONFIG = "train_config.json"
WARM_START = "warm_start.pt"
CURVE = "learning_curve.json"
_SAVING = "checkpoint.tmp"
_REPLACED = "checkpoint.old"
_print = functools.partial(print, flush=True)


def module_dir(out: str | os.PathLike) -> Path:
    """Directory of the trained ``cu_policy`` module inside a training ``--out`` directory."""
    from rl_isac.rllib.callbacks import MODULE_ID

    return Path(out) / CHECKPOINT / MODULE_SUBDIR / MODULE_ID


def recover_interrupted_save(out_dir: Path) -> None:
    """Undo what a kill during a save left in ``out_dir``: a half-written ``checkpoint.tmp/`` is dropped, and a
    ``checkpoint.old/`` without a ``checkpoint/`` (killed between the two renames of ``save``) is put back."""
    import shutil

    if (out_dir / _SAVING).exists():
        shutil.rmtree(out_dir / _SAVING)
    if (out_dir / _REPLACED).is_dir():
        if (out_dir / CHECKPOINT).is_dir():
            shutil.rmtree(out_dir / _REPLACED)
        else:
            (out_dir / _REPLACED).rename(out_dir / CHECKPOINT)


def _atomic_json(data: Any, path: Path) -> None:
    from rl_isac.evaluation.harness import write_json_atomic

    write_json_atomic(data, path)


def plot_curve(curve: list[dict], path: Path) -> None:
    """Learning curve PNG (return and training RMSE vs env steps), matplotlib Agg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row["env_steps"] for row in curve]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    axes[0].plot(steps, [row["return_mean"] for row in curve], marker=".")
    axes[0].set_xlabel("env steps")
    axes[0].set_ylabel("episode return (eq. (5a))")
    axes[1].plot(steps, [row["rmse_m"] for row in curve], marker=".", label="training RMSE")
    axes[1].plot(steps, [row["pcrb_m"] for row in curve], ls="--", label="PCRB")
    axes[1].set_xlabel("env steps")
    axes[1].set_ylabel("per-target RMSE (m)")
    axes[1].set_yscale("log")
    axes[1].legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def _row(result: dict, iteration: int, wall_s: float) -> dict[str, float]:
    from rl_isac.rllib.callbacks import flat_scalars

    s = flat_scalars(result)
    return {"iteration": iteration, "env_steps": int(result.get("num_env_steps_sampled_lifetime", 0)),
            "wall_s": wall_s, "return_mean": s.get("episode_return_mean", math.nan),
            "rmse_m": s.get("tracking/rmse_m", math.nan), "pcrb_m": s.get("tracking/pcrb_m", math.nan),
            "lost_fraction": s.get("tracking/lost_fraction", math.nan),
            "entropy": s.get("assoc/entropy", math.nan), "kl": s.get("losses/kl", math.nan),
            "env_steps_per_s": s.get("perf/env_steps_per_s", math.nan), "scalars": s}


def prepare(targets: int, pretrained: str, out: str, fidelity: str | None = None,
            num_env_runners: int | None = None, envs_per_runner: int | None = None, config: str | None = None,
            resume: bool = False, seed: int = 0, preset: str = "paper", clusters: int = 1,
            **overrides: Any) -> dict[str, Any]:
    """Every check before Ray starts; returns the resolved run description (what ``train_config.json`` holds)."""
    out_dir = Path(out)
    train_cfg = load_train_config(config, fidelity=fidelity, num_env_runners=num_env_runners,
                                  num_envs_per_env_runner=envs_per_runner, **overrides)
    if preset == "paper" and clusters == 1:
        cfg = ScenarioConfig.paper(targets, fidelity=train_cfg.fidelity, num_blocks=train_cfg.blocks)
        configs = check_pretrained(pretrained, cfg)
        env_config = env_config_for(train_cfg, targets, seed)
    else:
        configs, env_config = _check_clustered(train_cfg, targets, seed, preset, clusters, pretrained)
    run = {"targets": targets, "seed": seed, "pretrained": str(Path(pretrained).resolve()),
           "train": train_cfg.to_dict(), "env_config": env_config,
           "dgnn": configs["dgnn"].to_dict()}
    if env_config.get("clusters", 1) > 1:  # the layout's repair rule the env trains with (the evaluation reuses it)
        from rl_isac.rllib.env import env_layout, env_scenario

        run["cluster_repair"] = env_layout(env_config, env_scenario(env_config)).repair
    stored_path = out_dir / TRAIN_CONFIG
    recover_interrupted_save(out_dir)
    if resume:
        if not (out_dir / CHECKPOINT).is_dir() or not stored_path.is_file():
            raise ConfigError("--resume", str(out_dir), f"no {CHECKPOINT}/ and {TRAIN_CONFIG} to resume from")
        stored = json.loads(stored_path.read_text())
        # a run stored before a setting existed had that setting's default (the reward levers of issue 9)
        stored["train"] = PPOTrainConfig.from_dict(stored["train"]).to_dict()
        stored["env_config"] = {**{k: run["env_config"][k] for k in ("reward", "reward_mix", "reward_normalize")
                                   if PPOTrainConfig().to_dict()[k] == run["train"][k]}, **stored["env_config"]}
        for key in ("targets", "seed", "train", "env_config", "dgnn"):
            if stored[key] != run[key]:
                raise ConfigError("--resume", key, f"differs from the stored run ({stored[key]!r} vs {run[key]!r}): "
                                                   f"resume continues the same configuration")
        run = stored
    elif (out_dir / CHECKPOINT).exists():
        raise ConfigError("--out", str(out_dir), f"already holds a {CHECKPOINT}/; pass --resume or another --out")
    return run


def _check_clustered(train_cfg: PPOTrainConfig, targets: int, seed: int, preset: str, clusters: int,
                     pretrained: str) -> tuple[dict, dict]:
    """``(phase-1 configs, env_config)`` of a run on another preset or with several CU clusters (module docstring)."""
    from rl_isac.rllib.env import cluster_scenario, env_layout, env_scenario

    env_config = env_config_for(train_cfg, targets, seed, preset)
    if clusters > 1:
        env_config["clusters"] = clusters
    cfg = env_scenario(env_config)
    env_layout(env_config, cfg)  # the layout's named errors (BS split, capacity) before Ray
    # Spare capacity (targets < clusters x capacity) is fine: the env's observation carries target_valid, the
    # env refuses a pair or a required target on an empty slot (rl_isac.clusters.check_cluster_pairs), and the
    # module starts both decoders and the teacher-forced pass from covered[pad] = chosen[:, pad] = True
    # (rl_isac.rllib.module.empty_slots). The clustered warm start (rl_isac.rllib.cluster_warm_start) clones the
    # clustered expert (each cluster's sub-CU of an ekf-* method) into the shared module, empty slots as the env.
    if clusters > 1 and train_cfg.warm_start:
        from rl_isac.controllers.clustered import CLUSTERABLE

        if train_cfg.bc_expert not in CLUSTERABLE:
            raise ConfigError("bc_expert", train_cfg.bc_expert, f"has no clustered version; with --clusters the warm "
                                                                f"start's expert is one of {list(CLUSTERABLE)} "
                                                                f"(e.g. bc_expert: ekf-milp)")
    sub = cluster_scenario(env_config)
    if pretrained is None or not Path(pretrained).is_dir():
        check_pretrained(pretrained, sub)  # the named error for a missing path
    from rl_isac.training.pretrain import load_configs

    for name in ("model.pt", "config.yaml"):
        if not (Path(pretrained) / name).is_file():
            raise ConfigError("--pretrained", str(pretrained), f"has no {name} (not a phase-1 checkpoint)")
    configs = load_configs(Path(pretrained))
    trained = configs["scenario"]
    for field in ("window", "codebook_size", "num_rf", "num_tracking_symbols"):
        if getattr(trained, field) != getattr(sub, field):
            raise ConfigError("--pretrained", str(pretrained), f"was trained with {field} = {getattr(trained, field)!r}"
                                                               f", the run's clusters have {getattr(sub, field)!r}")
    return configs, env_config


def _cluster_module_spec(run: dict, train_cfg: PPOTrainConfig, dgnn_weights: str | None, init_state: str | None):
    """The shared module's spec with a cluster's spaces (:func:`rl_isac.rllib.env.agent_spaces`)."""
    import dataclasses

    from rl_isac.rllib.callbacks import MODULE_ID
    from rl_isac.rllib.config import module_spec
    from rl_isac.rllib.env import agent_spaces, cluster_scenario

    multi = module_spec(run["dgnn"], dgnn_weights, train_cfg, cluster_scenario(run["env_config"]), init_state)
    obs, act = agent_spaces(run["env_config"])
    multi.rl_module_specs[MODULE_ID] = dataclasses.replace(multi.rl_module_specs[MODULE_ID],
                                                           observation_space=obs, action_space=act)
    return multi


def warm_start(run: dict, train_cfg: PPOTrainConfig, dgnn_weights: str, path: str, echo=_print) -> dict:
    """Behaviour cloning of the actor before PPO (:mod:`rl_isac.rllib.warm_start`); writes the module's
    state dict to ``path`` (every runner and the learner start from it) and returns the metrics."""
    import torch

    from rl_isac.rllib.callbacks import MODULE_ID
    from rl_isac.rllib.config import module_spec
    from rl_isac.rllib.env import env_scenario
    from rl_isac.rllib.warm_start import behaviour_clone

    cfg = env_scenario(run["env_config"])
    torch.manual_seed(run["seed"])
    clustered = run["env_config"].get("clusters", 1) > 1
    if clustered:  # the shared module with a cluster's spaces, cloned from the clustered expert
        module = _cluster_module_spec(run, train_cfg, dgnn_weights, None).rl_module_specs[MODULE_ID].build()
    else:
        module = module_spec(run["dgnn"], dgnn_weights, train_cfg, cfg).rl_module_specs[MODULE_ID].build()
    echo(f"warm start: behaviour cloning of {'clustered ' if clustered else ''}{train_cfg.bc_expert} on "
         f"{train_cfg.bc_episodes} training episodes + {train_cfg.dagger_rounds} DAgger rounds")
    # the critic's warm-start targets in the units of the env's reward (rl_isac.rllib.env)
    w = {"mse": 0.0, "fisher": 1.0, "mix": train_cfg.reward_mix}[train_cfg.reward]
    reward = (w, train_cfg.reward_scale, train_cfg.reward_normalize)
    common = dict(expert=train_cfg.bc_expert, episodes=train_cfg.bc_episodes,
                  val_episodes=max(2, train_cfg.bc_episodes // 6), epochs=train_cfg.bc_epochs, seed=run["seed"],
                  gamma=train_cfg.gamma, dagger_rounds=train_cfg.dagger_rounds, reward=reward, echo=echo)
    if clustered:
        from rl_isac.rllib.cluster_warm_start import behaviour_clone_clusters

        metrics = behaviour_clone_clusters(module, run["env_config"], **common)
    else:
        metrics = behaviour_clone(module, cfg, run["pretrained"], **common)
    tmp = path + ".tmp"
    torch.save(module.state_dict(), tmp)
    os.replace(tmp, path)
    return metrics


def train(targets: int, pretrained: str, out: str, iterations: int | None = None, time_budget_s: float | None = None,
          echo=_print, **kwargs: Any) -> dict[str, Any]:
    """Run PPO (see the module docstring); returns the final ``train_config.json`` content.

    Args:
        iterations: stop when this many iterations are done in total (a resumed run counts its
            earlier ones); ``time_budget_s``: stop after this wall time of this invocation.
            At least one of the two is required.
        kwargs: :func:`prepare`'s (``fidelity``, ``num_env_runners``, ``envs_per_runner``,
            ``config``, ``resume``, ``seed``) and :class:`PPOTrainConfig` field overrides.
    """
    if iterations is None and time_budget_s is None:
        raise ConfigError("--iterations/--time-budget-s", None, "give one of them")
    if iterations is not None and iterations < 1:
        raise ConfigError("--iterations", iterations, "must be >= 1")
    if time_budget_s is not None and not time_budget_s > 0:
        raise ConfigError("--time-budget-s", time_budget_s, "must be > 0")
    resume = bool(kwargs.get("resume", False))
    run = prepare(targets, pretrained, out, **kwargs)
    train_cfg = PPOTrainConfig.from_dict(run["train"])
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)

    import torch

    torch.set_num_threads(1)
    import ray
    from torch.utils.tensorboard import SummaryWriter

    from rl_isac.evaluation.harness import git_revision
    from rl_isac.rllib.config import build_ppo_config
    from rl_isac.rllib.env import register

    register()
    started_ray = False
    if not ray.is_initialized():
        ray.init(num_cpus=train_cfg.cores, include_dashboard=False, log_to_driver=False,
                 configure_logging=True, logging_level="ERROR")
        started_ray = True
    writer = SummaryWriter(str(out_dir / "tb"))
    curve: list[dict] = []
    try:
        ckpt = (out_dir / CHECKPOINT).resolve()
        if resume:
            from ray.rllib.algorithms.algorithm import Algorithm

            algo = Algorithm.from_checkpoint(str(ckpt))
            # the curve saved with the checkpoint: exactly its iterations (older runs: the one beside it)
            curve_path = ckpt / CURVE if (ckpt / CURVE).is_file() else out_dir / CURVE
            if curve_path.is_file():
                curve = json.loads(curve_path.read_text())["iterations"]
        else:
            dgnn_weights = str(Path(run["pretrained"]) / "model.pt")
            init_state = None
            if train_cfg.warm_start:
                init_state = str((out_dir / WARM_START).resolve())
                run["warm_start"] = warm_start(run, train_cfg, dgnn_weights, init_state, echo)
            ppo_config = build_ppo_config(train_cfg, run["env_config"], run["dgnn"], dgnn_weights, run["seed"],
                                          init_state=init_state)
            if run["env_config"].get("clusters", 1) > 1:  # one shared module with a cluster's spaces
                ppo_config = ppo_config.rl_module(
                    rl_module_spec=_cluster_module_spec(run, train_cfg, dgnn_weights, init_state))
            algo = ppo_config.build_algo()
        wall0 = curve[-1]["wall_s"] if curve else 0.0
        t0 = time.perf_counter()
        done = len(curve)
        run.update(git_revision=git_revision(), checkpoint=str(ckpt))

        def save() -> None:
            import shutil

            saving, replaced = out_dir / _SAVING, out_dir / _REPLACED
            algo.save_to_path(str(saving.resolve()))
            _atomic_json({"targets": targets, "iterations": curve}, saving / CURVE)
            if ckpt.is_dir():
                ckpt.rename(replaced)
            saving.rename(ckpt)
            if replaced.is_dir():
                shutil.rmtree(replaced)
            run.update(iterations=len(curve), env_steps=curve[-1]["env_steps"] if curve else 0)
            _atomic_json(run, out_dir / TRAIN_CONFIG)
            _atomic_json({"targets": targets, "iterations": curve}, out_dir / CURVE)
            if curve:
                plot_curve(curve, out_dir / "learning_curve.png")

        while True:
            if iterations is not None and done >= iterations:
                break
            if time_budget_s is not None and time.perf_counter() - t0 >= time_budget_s:
                break
            result = algo.train()
            done += 1
            row = _row(result, done, wall0 + time.perf_counter() - t0)
            curve.append(row)
            for key, value in row["scalars"].items():
                if math.isfinite(value):
                    writer.add_scalar(key, value, row["env_steps"])
            echo(f"it {done:>3}  steps {row['env_steps']:>7}  return {row['return_mean']:>9.3f}  "
                 f"rmse {row['rmse_m']:.3f} m  pcrb {row['pcrb_m']:.3f} m  lost {row['lost_fraction']:.3f}  "
                 f"H {row['entropy']:.3f}  KL {row['kl']:.4f}  {row['env_steps_per_s']:.0f} steps/s")
            if done % train_cfg.checkpoint_every == 0:
                save()
        save()
        algo.stop()
    finally:
        writer.close()
        if started_ray:
            ray.shutdown()
    return run


def reproduce_training(targets: int, out_dir: str | os.PathLike, dgnn_checkpoint: str, fidelity: str = "signal",
                       echo=_print, iterations: int = 8, warm_start: bool = False, seed: int = 0,
                       **overrides: Any) -> dict[str, Any]:
    """The training stage of ``rl-isac reproduce`` (:mod:`rl_isac.evaluation.reproduce`).

    Trains on the surrogate world whatever ``fidelity`` is (the evaluation's fidelity; issue 9's
    recipe: train fast on the surrogate, evaluate at signal level, and report the gap), resuming
    a run already in ``out_dir``. Returns ``{"checkpoint": out_dir (what dgnn-ppo's --checkpoint
    takes), "curve": learning-curve rows, "config": train_config.json}``.
    """
    out = Path(out_dir)
    recover_interrupted_save(out)
    resume = (out / CHECKPOINT).is_dir() and (out / TRAIN_CONFIG).is_file()
    run = train(targets, dgnn_checkpoint, str(out), iterations=iterations, echo=echo, resume=resume, seed=seed,
                fidelity="surrogate", warm_start=warm_start, **overrides)
    curve = json.loads((out / CURVE).read_text())["iterations"]
    return {"checkpoint": str(out), "curve": curve, "config": run, "evaluation_fidelity": fidelity}
