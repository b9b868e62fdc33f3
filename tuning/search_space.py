"""The PPO sweep's search space: every range, and why it is that range (the one place to change them).

Each :class:`Param` is a hyperparameter of phase 2 (PPO on the frozen DGNN encoder) with its
distribution, its bounds and the reason for them. :func:`tune_space` turns them into Ray Tune
search-space objects for :class:`ray.tune.search.optuna.OptunaSearch`; :func:`validate` checks a
concrete config (a sampled trial, or a preset read back from YAML) against the same bounds, with
an error naming the key, the value and the rule.

The number of targets is not searched: it is a fixed grid dimension (``TARGETS_GRID``), one Optuna
study per I, because the best settings may differ per size and OptunaSearch cannot mix a
``grid_search`` into its space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rl_isac.errors import ConfigError

TARGETS_GRID: tuple[int, ...] = (4, 6, 8)
"""The paper's sizes I; ``sweep.py --targets`` picks a subset."""


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter.

    kind: ``"loguniform"`` / ``"uniform"`` (``low``, ``high``) or ``"choice"`` (``choices``).
    """

    name: str
    kind: str
    why: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind in ("loguniform", "uniform"):
            if self.low is None or self.high is None or not self.low < self.high:
                raise ConfigError(self.name, (self.low, self.high), "needs low < high")
            if self.kind == "loguniform" and self.low <= 0:
                raise ConfigError(self.name, self.low, "a log-uniform range needs low > 0")
        elif self.kind == "choice":
            if not self.choices:
                raise ConfigError(self.name, self.choices, "a choice needs at least one option")
        else:
            raise ConfigError(self.name, self.kind, "kind must be loguniform, uniform or choice")

    def check(self, value: Any) -> None:
        """Raise :class:`ConfigError` unless ``value`` lies in this parameter's range."""
        if self.kind == "choice":
            if value not in self.choices:
                raise ConfigError(self.name, value, f"must be one of {list(self.choices)}")
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(self.name, value, "must be a finite number")
        if not self.low <= value <= self.high:
            raise ConfigError(self.name, value, f"must lie in [{self.low:g}, {self.high:g}]")


SEARCH_SPACE: tuple[Param, ...] = (
    Param("lr", "loguniform", low=1e-5, high=1e-3,
          why="Adam step of actor and critic on top of a pre-trained, frozen DGNN encoder (PPOTrainConfig "
              "default 3e-4): the usual PPO fine-tuning decade and a half around it; steps above 1e-3 risk "
              "undoing the behaviour-cloned start, below 1e-5 a sweep of a few iterations barely moves it."),
    Param("entropy_coeff", "loguniform", low=1e-4, high=3e-2,
          why="Bonus on the entropy summed over the J = M * N_RF masked steps: about 35 nats untrained and 11 "
              "after the BC warm start in results/quick, against a reward near -0.2 per block there, so at "
              "3e-2 the bonus (0.3 per block) outweighs the tracking reward and at 1e-4 it is negligible."),
    Param("clip_param", "uniform", low=0.1, high=0.3,
          why="PPO's ratio clip; Schulman et al. (2017) compared 0.1, 0.2 and 0.3 and chose 0.2; the joint "
              "log-prob sums J steps, so the ratio moves faster than for a single categorical."),
    Param("gamma", "uniform", low=0.9, high=0.995,
          why="Discount per 0.1 s block: the effective horizon 1 / (1 - gamma) spans 10 to 200 blocks, from "
              "one second (about the myopic MILP's view plus a little) to a whole 100-block episode (a lost "
              "track costs every later block, which only a long horizon sees)."),
    Param("lambda_", "uniform", low=0.9, high=1.0,
          why="GAE lambda: the per-block tracking reward is noisy (RLLIB_NOTES 'Learning signal'), so bias "
              "(low lambda, trust the critic) trades against variance (lambda = 1, Monte Carlo)."),
    Param("minibatch_size", "choice", choices=(128, 256, 512),
          why="SGD minibatch in env steps; at most a quarter of the 2,000-step train batch so each epoch takes "
              ">= 4 SGD steps; smaller batches make the one batched teacher-forced pass over J steps less "
              "efficient and the advantage normalisation noisier."),
    Param("num_epochs", "choice", choices=(4, 8, 16),
          why="Passes over each train batch: learning dominated the iteration time at 10 epochs in the probe; "
              "16 risks over-fitting one batch (KL blow-up), 4 wastes samples."),
    Param("hidden", "choice", choices=(32, 64, 128),
          why="Actor width H of the pair embeddings and scorer (PPOTrainConfig.hidden, default 64): the AR "
              "scorer runs J times per decision, so width costs decision latency (p99 goal 5 ms at I = 8)."),
    Param("critic_hidden", "choice", choices=(64, 128, 256),
          why="Critic width (PPOTrainConfig.critic_hidden, default 128): the per-block reward is noisy, so a "
              "better value baseline is one of issue 9's levers; wider than the actor because it is run once."),
    Param("reward_scale", "loguniform", low=0.1, high=10.0,
          why="Reward = -reward_scale * sum_i ||u_i - u_hat_i||^2 in 1/m^2: per-target errors span 0.05-5 m, so "
              "the raw reward spans four decades; the scale sets the critic's target range and the size of the "
              "advantages against the entropy bonus."),
    Param("warm_start", "choice", choices=(False, True),
          why="Issue 9's lever (PPOTrainConfig.warm_start): False is the paper's recipe (PPO from the phase-1 "
              "encoder only), True first behaviour-clones dgnn-milp's associations (and fits the critic on the "
              "expert's returns), so PPO starts near the myopic optimum."),
    Param("dagger_rounds", "choice", choices=(0, 1, 2),
          why="DAgger rounds after the behaviour cloning (PPOTrainConfig.dagger_rounds; only with warm_start): "
              "each labels bc_episodes // 2 episodes driven by the cloned policy with dgnn-milp's choices, so the "
              "clone also sees the states it reaches itself; the shipped recipe (results/checkpoints/ppo.yaml) "
              "uses 1; each round costs about one behaviour-cloning pass."),
    Param("gain_prior", "choice", choices=(0.0, 4.0, 8.0),
          why="Initial weight of the actor's marginal-gain feature (PPOTrainConfig.gain_prior): 0 is the "
              "paper's uninformed start, 8 the shipped one; a middle value tests whether the prior or the "
              "cloning does the work."),
    Param("reward", "choice", choices=("mse", "fisher", "mix"),
          why="Issue 9's reward choices (PPOTrainConfig.reward): 'mse' is eq. (5a), the paper's (negative squared "
              "position error); 'fisher' the expected posterior error of the chosen pairs (the MILP's objective, "
              "far lower variance); 'mix' their weighted sum (reward_mix, default 0.5)."),
    Param("reward_normalize", "choice", choices=(False, True),
          why="Running-std normalisation of the reward (gymnasium's NormalizeReward rule): removes the scale "
              "question that reward_scale otherwise answers, at the price of a non-stationary reward early on."),
)

PARAMS: dict[str, Param] = {p.name: p for p in SEARCH_SPACE}


def searched(available_fields: set[str] | None = None) -> tuple[Param, ...]:
    """The parameters the training config can take: those named in ``available_fields`` (all when None).

    ``warm_start`` and ``reward`` are issue 9's levers; a checkout whose ``PPOTrainConfig`` has no such
    field cannot apply them, so the sweep holds them out (and says so) instead of sampling a no-op.
    """
    return tuple(p for p in SEARCH_SPACE if available_fields is None or p.name in available_fields)


def tune_space(available_fields: set[str] | None = None) -> dict[str, Any]:
    """The Ray Tune search space of :func:`searched` (without the target count)."""
    from ray import tune

    space: dict[str, Any] = {}
    for p in searched(available_fields):
        if p.kind == "loguniform":
            space[p.name] = tune.loguniform(p.low, p.high)
        elif p.kind == "uniform":
            space[p.name] = tune.uniform(p.low, p.high)
        else:
            space[p.name] = tune.choice(list(p.choices))
    return space


def validate(config: dict[str, Any], targets_grid: tuple[int, ...] = TARGETS_GRID,
             available_fields: set[str] | None = None) -> dict[str, Any]:
    """Check a concrete trial config (every searched key present and in range, ``targets`` on the grid).

    Returns the config unchanged; raises :class:`ConfigError` naming the key, the value and the rule.
    """
    params = searched(available_fields)
    missing = [p.name for p in params if p.name not in config]
    if missing:
        raise ConfigError("search config", missing, "missing searched hyperparameters")
    for param in params:
        param.check(config[param.name])
    if "targets" in config and config["targets"] not in targets_grid:
        raise ConfigError("targets", config["targets"], f"must be on the fixed grid {list(targets_grid)}")
    return config


def describe() -> str:
    """A Markdown table of the space (name, range, why), for the README and ``sweep.py --describe``."""
    lines = ["| parameter | range | why |", "|---|---|---|"]
    for p in SEARCH_SPACE:
        rng = (f"{p.kind} [{p.low:g}, {p.high:g}]" if p.kind != "choice"
               else "one of " + ", ".join(map(str, p.choices)))
        lines.append(f"| `{p.name}` | {rng} | {p.why} |")
    lines.append(f"| `targets` | fixed grid {list(TARGETS_GRID)} | one Optuna study per I (not searched) |")
    return "\n".join(lines)
