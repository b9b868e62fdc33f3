"""TensorBoard scalars of PPO training: an ``RLlibCallback``.

Per episode (env runners; summed over the episode's steps and agents from the env's infos,
:mod:`rl_isac.rllib.env`), logged with ``reduce="mean"`` (mean over the iteration's episodes):

=========================  ==================================================================
``tracking/rmse_m``        per-target RMSE of the episode, ``sqrt(sum sq_err / (targets * blocks))``
``tracking/pcrb_m``        the same for the posterior CRB of the associations used
``tracking/lost_fraction`` target-blocks with error ``> LOST_M``
``assoc/violations``       refused actions (always 0: a refused action raises)
``phy/missed_fraction``    assigned pairs without a detection
``assoc/idle_chains``      mean idle RF chains per block (STOP tokens)
=========================  ==================================================================

Per iteration (``on_train_result``; also copied into ``result`` under these names, so Tune's
TensorBoard logger writes them): ``assoc/entropy`` (the policy's entropy, nats per
decision), ``losses/policy``, ``losses/vf``, ``losses/kl``, ``losses/total``,
``perf/env_steps_per_s`` (env steps sampled this iteration / iteration wall time).
``rl-isac train`` writes every one of them to ``OUT/tb`` (``tensorboard --logdir OUT/tb``).
"""

from __future__ import annotations

import math

from ray.rllib.callbacks.callbacks import RLlibCallback

_SUMS = ("sq_err_m2", "pcrb_m2", "targets", "lost", "assigned", "missed", "violations", "idle_chains")
MODULE_ID = "cu_policy"
"""Module id of the shared CU policy (every ``cu_*`` agent maps to it)."""


def flat_scalars(result: dict) -> dict[str, float]:
    """The TensorBoard scalars of one ``Algorithm.train()`` result (see the module docstring)."""
    env = result.get("env_runners", {})
    out = {k: float(v) for k, v in env.items() if isinstance(k, str) and "/" in k and isinstance(v, (int, float))}
    for section in ("assoc", "losses", "perf"):
        for k, v in (result.get(section) or {}).items():
            out[f"{section}/{k}"] = float(v)
    out["episode_return_mean"] = float(env.get("episode_return_mean", math.nan))
    return out


class ISACCallbacks(RLlibCallback):
    """See the module docstring."""

    def on_episode_step(self, *, episode, **kwargs) -> None:
        sums = episode.custom_data.setdefault("sums", dict.fromkeys(_SUMS, 0.0))
        sums.setdefault("blocks", 0.0)
        infos = episode.get_infos(-1)
        for info in infos.values():
            if "sq_err_m2" not in info:
                continue
            for key in _SUMS:
                sums[key] += float(info[key])
            sums["blocks"] += 1.0

    def on_episode_end(self, *, episode, metrics_logger=None, **kwargs) -> None:
        sums = episode.custom_data.get("sums")
        if not sums or not sums["blocks"] or metrics_logger is None:
            return
        target_blocks = sums["targets"]  # sum over blocks of the targets scored
        metrics_logger.log_value("tracking/rmse_m", math.sqrt(sums["sq_err_m2"] / target_blocks), reduce="mean")
        metrics_logger.log_value("tracking/pcrb_m", math.sqrt(sums["pcrb_m2"] / target_blocks), reduce="mean")
        metrics_logger.log_value("tracking/lost_fraction", sums["lost"] / target_blocks, reduce="mean")
        metrics_logger.log_value("assoc/violations", sums["violations"], reduce="sum")
        metrics_logger.log_value("assoc/idle_chains", sums["idle_chains"] / sums["blocks"], reduce="mean")
        metrics_logger.log_value("phy/missed_fraction", sums["missed"] / max(sums["assigned"], 1.0), reduce="mean")

    def on_train_result(self, *, algorithm=None, metrics_logger=None, result: dict, **kwargs) -> None:
        learner = (result.get("learners") or {}).get(MODULE_ID, {})
        result["assoc"] = {"entropy": float(learner.get("entropy", math.nan))}
        result["losses"] = {name: float(learner.get(key, math.nan)) for name, key in
                            (("policy", "policy_loss"), ("vf", "vf_loss"), ("kl", "mean_kl_loss"),
                             ("total", "total_loss"))}
        steps = float(result.get("env_runners", {}).get("num_env_steps_sampled", math.nan))
        wall = float(result.get("time_this_iter_s", math.nan))
        result["perf"] = {"env_steps_per_s": steps / wall if wall > 0 else math.nan}
