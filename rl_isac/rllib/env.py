"""The cell-free ISAC network as an RLlib ``MultiAgentEnv``: one agent per CU cluster.

One env step is one block ``q`` of the paper (Sec. 2). The agent ``cu_c`` sees the window
observation of block ``q`` (never the truth), answers with the action

==============  ===========================================  ==============================================
key             space                                        meaning
==============  ===========================================  ==============================================
``pairs``       ``MultiDiscrete([M*I + 1] * J)``             the ``J = M * N_RF`` sub-actions of eq. (10) for
                                                             block ``q+1``: flat pair ``k = bs * I + target``
                                                             or STOP ``M * I`` (shared interface 1)
``beams``       ``MultiDiscrete([C] * (M*I*K*2))``           ``(M, I, K, 2)`` tx/rx codebook indices for
                                                             block ``q+1``, flattened C-order (5f)
``estimate``    ``Box(-inf, inf, (I*2,), float32)``          ``u_hat_q`` (flattened ``(I, 2)``), metres
==============  ===========================================  ==============================================

and gets the reward of eq. (5a), ``-reward_scale * sum_i ||u_{i,q} - u_hat_{i,q}||^2`` (m^2), on the
estimate of block ``q`` (the block of the observation it acted on). Then the targets move, the
BSs probe block ``q+1`` with the chosen pairs and beams (range gates centred on the window's
EKF prediction ``anchor_next``, computed env-side), the window is pushed and the next
observation returned. An episode is ``blocks + 1`` steps, ``q = 0 .. Q``: the first acts on the
acquisition alone and is not scored (reward 0: its estimate is the given acquisition), the others
score blocks ``1 .. Q``, the blocks the evaluation harness scores; ``terminated`` after block ``Q``.

Observation (``Dict`` of fixed-shape float32 ``Box``es): the arrays of
:meth:`rl_isac.tracking.window.MeasurementWindow.as_arrays` (EKF anchor), plus

* ``block (1,)``: ``q / blocks`` (the critic's time feature);
* ``pair_info (M, I, 4)``: the expected position Fisher information ``J_{m,i}`` (1/m^2) each pair
  would give at the window's predicted position with geometric beams (CU-side quantities only):
  ``[log10(J_xx + 1e-6) / 4, log10(J_yy + 1e-6) / 4, J_xy / sqrt(J_xx J_yy), log10(g + 1e-6) / 4]``,
  ``g = tr P - tr (P^-1 + J)^-1`` the variance (m^2) the pair alone removes from the prediction
  covariance ``P`` (the myopic objective's per-pair term);
* ``prior_cov (I, 3)``: ``[log10 P_xx / 4, log10 P_yy / 4, P_xy / sqrt(P_xx P_yy)]`` of ``P``.
* ``pair_fim (M, I, 3)`` and ``prior_fim (I, 3)``: the raw ``[xx, xy, yy]`` entries (1/m^2) of ``J_{m,i}``
  and of ``P^-1`` (the actor computes the myopic objective's marginal gains from them).
* ``pair_detect (M, I)``, only with env_config ``detection_features=True``: each pair's credited detection
  probability (:data:`rl_isac.rllib.observation.DETECTION_OBS_KEY`), what the MILP weights the pair by.
* ``pair_milp (M, I)``, only with ``milp_features=True`` (needs ``detection_features``): the exact MILP's
  association on the observation's own quantities (:data:`rl_isac.rllib.observation.MILP_OBS_KEY`).

The mask needs nothing else: it is a function of the sub-actions chosen so far.

Infos per step (per agent): ``sq_err_m2`` (sum over the agent's targets of the squared error
of the scored block), ``pcrb_m2`` (sum of the posterior CRB traces of that block for the
associations actually used, the harness's bound run incrementally), ``targets``, ``lost``
(targets with error ``> LOST_M``), ``assigned`` / ``detected`` / ``missed`` (pairs of the block
just measured), ``idle_chains``, ``violations`` (always 0: a violating action is refused).

Refused actions: a wrong shape, a non-finite value, a broken (5c)-(5f) or STOP rule raises
:class:`~rl_isac.errors.ConstraintViolation` naming the constraint, the pair and the value,
before anything changes (world, window, counters).

Several clusters (the scale-out case, ``clusters = C > 1``; :mod:`rl_isac.clusters` has the partition,
ownership and handover rules): the BSs are split into ``C`` contiguous equal groups along x, agent
``cu_c`` is the CU of group ``c``: ``M`` above is its ``M_c = M / C`` BSs and ``I`` its ``K`` target
*slots* (``cluster_capacity``, default ``min(I, M_c N_RF)``), so every agent has the same spaces
(one shared policy module). Each block, each agent sees only its BSs' measurements of the targets in
its slots (the window rebuilt per cluster from the stored blocks, with the cluster's own EKF as the
anchor), and acts on them: pairs among its ``M_c x K`` pairs, beams of its BSs, estimates of its
targets. The observation has one more key, ``target_valid (K,)`` (1 = the slot holds an owned target,
0 = empty; an empty slot's entries are all 0). The exact mask with empty slots
(:func:`rl_isac.clusters.padded_action_mask`) neither requires (5d) nor allows (5e) an empty slot,
and the env refuses any action that breaks it for that agent (:func:`rl_isac.clusters.check_cluster_pairs`):
(5c) per BS and (5d) per owned target hold per cluster, hence for the network. With ``C K == I`` (the
``large`` preset's 24 targets at C = 2 or 4) no slot is ever empty and the action space's ``sample()`` is
feasible. After the block is measured, ownership for the next block follows the CU's predicted positions
(hysteresis ``cluster_hysteresis_m``, capacity repair) and a target that changes cluster is handed over
with its EKF track (state, covariance, miss counter: :class:`rl_isac.clusters.ClusteredEKF`); it keeps its
slot while its cluster keeps it. Each agent's reward is eq. (5a) (or the Fisher reward) over its own
targets; its infos count its own targets and pairs, plus ``handovers`` (targets it received) and
``owned``. The clusters decide simultaneously: every step needs an action of every agent. The CU side
(clustered EKF, window, observations; the clusters also exchange predicted tracks to drop each other's
echoes, :mod:`rl_isac.clusters`) is :class:`ClusterObserver`, which the clustered PPO CU of the harness
(:mod:`rl_isac.rllib.cluster_controller`) runs too. The PPO module reads ``target_valid`` (an empty slot
starts covered and chosen in its mask), so ``rl-isac train --clusters`` also runs below full load; the
warm start is refused with clusters (:mod:`rl_isac.training.ppo`).

Seeding: ``reset(seed=s)`` restarts the env's episode counter at base seed ``s``; episode ``e``
then uses world seed ``rl_isac.seeds.training_world_seed(s, split, e)`` (always below the
evaluation seeds). Without a seed the base comes from ``env_config["seed"]`` and the runner's
worker/vector index.

env_config keys (all optional): ``targets`` (4), ``preset`` ("paper"), ``fidelity``
("surrogate"; "signal" for evaluation-like rollouts), ``blocks`` (100), ``seed`` (0),
``split`` (0 = training), ``reward_scale`` (1.0), ``reward`` ("mse"), ``reward_mix`` (0.5),
``reward_normalize`` (False), ``clusters`` (1), ``cluster_capacity`` (None = ``min(I, M_c N_RF)``),
``cluster_hysteresis_m`` (5.0), ``cluster_area`` ("strip"; or "voronoi", :mod:`rl_isac.clusters`), ``scenario``
(a dict overriding scenario fields), ``detection_features`` (False; one cluster only: adds ``pair_detect``),
``milp_features`` (False; adds ``pair_milp``).

Rewards (issue 9's levers; ``infos`` carry both terms whatever the choice):

* ``reward="mse"``: eq. (5a), ``-reward_scale * sum_i ||u_i - u_hat_i||^2`` on the reported estimate
  (the paper's; noisy: one block's measurement noise and any lost track land in it);
* ``reward="fisher"``: ``-reward_scale * sum_i tr (P_i^-1 + sum_m a_mi J_mi)^-1`` (m^2), the expected
  posterior error of the chosen pairs, the myopic objective the MILP minimises
  (:func:`rl_isac.association.objective.association_cost`), computed from the CU's own view: the
  window's predicted covariance ``P_i`` and each pair's Fisher information ``J_mi`` at the anchor's
  prediction with beams toward it (the observation's ``prior_fim`` / ``pair_fim``). No noise from the
  realised measurement; detection is assumed (the expected-detection form is the MILP's option);
* ``reward="mix"``: ``-reward_scale * ((1 - w) * eq. (5a) + w * fisher)``, ``w = reward_mix``;
* ``reward_normalize=True``: the reward is further divided by a running standard deviation of the
  discounted return (gamma 0.95, as gymnasium's ``NormalizeReward``; Welford, per env instance,
  kept across episodes; unscaled for the first 100 steps; :class:`RunningReturnStd`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from rl_isac.association.constraints import stop_action, sub_actions_to_association, valid_action_mask
from rl_isac.association.objective import association_cost, target_costs
from rl_isac.clusters import (
    HYSTERESIS_M,
    ClusteredEKF,
    ClusterLayout,
    check_cluster_pairs,
    split_clusters,
    subset_measurements,
)
from rl_isac.errors import ConfigError, ConstraintViolation
from rl_isac.evaluation.bounds import heading_transition
from rl_isac.evaluation.harness import LOST_M
from rl_isac.network import CellFreeNetwork
from rl_isac.rllib.config import REWARDS
from rl_isac.rllib.observation import ObservationBuilder, observation_shapes_rl
from rl_isac.scenario import FIDELITIES, PRESETS, ScenarioConfig
from rl_isac.seeds import training_world_seed
from rl_isac.tracking.window import _AGE_CAP_BLOCKS, FEATURE_NAMES, MeasurementWindow

ENV_DEFAULTS: dict[str, Any] = {"targets": 4, "preset": "paper", "fidelity": "surrogate", "blocks": 100, "seed": 0,
                                "split": 0, "reward_scale": 1.0, "reward": "mse", "reward_mix": 0.5,
                                "reward_normalize": False, "clusters": 1, "cluster_capacity": None,
                                "cluster_hysteresis_m": HYSTERESIS_M, "cluster_area": "strip", "scenario": None,
                                "detection_features": False, "milp_features": False}


class RunningReturnStd:
    """Running std of the discounted return ``G_t = gamma G_{t-1} + r_t`` (Welford), the scale of
    gymnasium's ``NormalizeReward``: :meth:`scale` returns ``r / std`` (``r`` itself until ``min_count`` steps)."""

    def __init__(self, gamma: float = 0.95, min_count: int = 100, eps: float = 1e-8) -> None:
        self.gamma, self.min_count, self.eps = gamma, min_count, eps
        self.ret = 0.0
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def scale(self, reward: float, done: bool) -> float:
        self.ret = self.gamma * self.ret + reward
        self.count += 1
        delta = self.ret - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (self.ret - self.mean)
        if done:
            self.ret = 0.0
        if self.count <= self.min_count:
            return reward
        return reward / (np.sqrt(self.m2 / (self.count - 1)) + self.eps)


def agent_id(cluster: int) -> str:
    """Agent id of CU cluster ``c``: ``"cu_c"``."""
    return f"cu_{cluster}"


def env_scenario(env_config: dict) -> ScenarioConfig:
    """The scenario an env_config describes (validated; unknown keys are an error)."""
    cfgd = dict(ENV_DEFAULTS)
    unknown = set(env_config) - set(ENV_DEFAULTS)
    if unknown:
        raise ConfigError("env_config", sorted(unknown), f"unknown keys; known: {sorted(ENV_DEFAULTS)}")
    cfgd.update({k: v for k, v in env_config.items()})
    if cfgd["fidelity"] not in FIDELITIES:
        raise ConfigError("env_config.fidelity", cfgd["fidelity"], f"must be one of {FIDELITIES}")
    if cfgd["preset"] not in PRESETS:
        raise ConfigError("env_config.preset", cfgd["preset"], f"must be one of {PRESETS}")
    for key in ("targets", "blocks", "clusters"):
        v = cfgd[key]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ConfigError(f"env_config.{key}", v, "must be an integer >= 1")
    for key in ("seed", "split"):
        v = cfgd[key]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ConfigError(f"env_config.{key}", v, "must be an integer >= 0")
    scale = cfgd["reward_scale"]
    if not (isinstance(scale, (int, float)) and np.isfinite(scale) and scale > 0):
        raise ConfigError("env_config.reward_scale", scale, "must be a finite number > 0")
    if cfgd["reward"] not in REWARDS:
        raise ConfigError("env_config.reward", cfgd["reward"], f"must be one of {REWARDS}")
    mix = cfgd["reward_mix"]
    if isinstance(mix, bool) or not isinstance(mix, (int, float)) or not 0.0 <= mix <= 1.0:
        raise ConfigError("env_config.reward_mix", mix, "must be a number in [0, 1]")
    if not isinstance(cfgd["reward_normalize"], bool):
        raise ConfigError("env_config.reward_normalize", cfgd["reward_normalize"], "must be a bool")
    if not isinstance(cfgd["detection_features"], bool):
        raise ConfigError("env_config.detection_features", cfgd["detection_features"], "must be a bool")
    if cfgd["detection_features"] and cfgd["clusters"] > 1:
        raise ConfigError("env_config.detection_features", True, "is for one cluster only (clusters = 1)")
    if not isinstance(cfgd["milp_features"], bool):
        raise ConfigError("env_config.milp_features", cfgd["milp_features"], "must be a bool")
    if cfgd["milp_features"] and not cfgd["detection_features"]:
        raise ConfigError("env_config.milp_features", True, "needs detection_features=True")
    overrides = dict(cfgd["scenario"] or {})
    overrides.update(fidelity=cfgd["fidelity"], num_blocks=int(cfgd["blocks"]))
    cfg = ScenarioConfig.preset(cfgd["preset"], num_targets=int(cfgd["targets"]), **overrides)
    env_layout(cfgd, cfg)  # a bad cluster split is an error here already
    return cfg


def env_layout(env_config: dict, cfg: ScenarioConfig) -> ClusterLayout:
    """The CU cluster layout of an env_config (:func:`rl_isac.clusters.split_clusters`; ConfigError if it cannot
    be split)."""
    full = {**ENV_DEFAULTS, **dict(env_config)}
    return split_clusters(cfg, full["clusters"], capacity=full["cluster_capacity"],
                          hysteresis_m=full["cluster_hysteresis_m"], area=full["cluster_area"])


def cluster_scenario(env_config: dict) -> ScenarioConfig:
    """The scenario one agent's spaces are built from: the whole scenario for one cluster, else a cluster's
    ``M_c`` BSs and ``K`` target slots (cluster 0's; every cluster has the same sizes)."""
    cfg = env_scenario(env_config)
    layout = env_layout(env_config, cfg)
    return cfg if layout.num_clusters == 1 else layout.sub_scenario(cfg, 0)


def agent_spaces(env_config: dict) -> tuple[gym.spaces.Dict, gym.spaces.Dict]:
    """``(observation_space, action_space)`` of every agent of an env_config (all agents share them)."""
    full = {**ENV_DEFAULTS, **dict(env_config)}
    sub = cluster_scenario(env_config)
    obs = observation_space(sub, detection=bool(full["detection_features"]), milp=bool(full["milp_features"]))
    if full["clusters"] > 1:
        obs = gym.spaces.Dict({**obs.spaces, "target_valid": gym.spaces.Box(0.0, 1.0, shape=(sub.num_targets,),
                                                                            dtype=np.float32)})
    return obs, action_space(sub)


def observation_space(cfg: ScenarioConfig, detection: bool = False, milp: bool = False) -> gym.spaces.Dict:
    """The per-agent observation space: window arrays + :data:`EXTRA_OBS_KEYS` (+ ``pair_detect``, ``pair_milp``)
    (float32 Boxes)."""
    shapes = observation_shapes_rl(cfg, detection, milp)
    return gym.spaces.Dict({k: gym.spaces.Box(-np.inf, np.inf, shape=s, dtype=np.float32)
                            for k, s in shapes.items()})


class PairsSpace(gym.spaces.MultiDiscrete):
    """``MultiDiscrete([M*I + 1] * J)`` whose ``sample()`` draws a *feasible* step sequence.

    Each step is uniform over the steps the exact mask allows, so random actions (RLlib's
    env checker, random-action warm-up) satisfy (5c)-(5e); ``contains`` is MultiDiscrete's
    (membership in the box of integers, not feasibility: the env checks that).
    """

    def __init__(self, num_bs: int, num_targets: int, num_rf: int, seed=None) -> None:
        self.num_bs, self.num_targets, self.num_rf = num_bs, num_targets, num_rf
        super().__init__([num_bs * num_targets + 1] * (num_bs * num_rf), dtype=np.int64, seed=seed)

    def sample(self, mask=None, probability=None) -> np.ndarray:
        if mask is not None or probability is not None:
            raise NotImplementedError("PairsSpace.sample draws from the exact association mask; no custom mask")
        M, I, R = self.num_bs, self.num_targets, self.num_rf
        remaining = np.full(M, R, dtype=np.int64)
        covered = np.zeros(I, bool)
        chosen = np.zeros((M, I), bool)
        stopped = False
        out = np.empty(M * R, dtype=np.int64)
        for j in range(M * R):
            allowed = np.flatnonzero(valid_action_mask(remaining, covered, chosen, np.asarray(stopped)))
            k = int(self.np_random.choice(allowed))
            out[j] = k
            if k == M * I:
                stopped = True
            elif not stopped:
                remaining[k // I] -= 1
                covered[k % I] = True
                chosen[k // I, k % I] = True
        return out

    def __eq__(self, other) -> bool:
        return isinstance(other, PairsSpace) and np.array_equal(self.nvec, other.nvec) and \
            (self.num_bs, self.num_targets, self.num_rf) == (other.num_bs, other.num_targets, other.num_rf)

    def __reduce__(self):
        return (PairsSpace, (self.num_bs, self.num_targets, self.num_rf))


def action_space(cfg: ScenarioConfig) -> gym.spaces.Dict:
    """The per-agent action space ``{pairs, beams, estimate}`` (see the module docstring)."""
    M, I, K = cfg.num_bs, cfg.num_targets, cfg.num_tracking_symbols
    return gym.spaces.Dict({
        "pairs": PairsSpace(M, I, cfg.num_rf),
        "beams": gym.spaces.MultiDiscrete([cfg.codebook_size] * (M * I * K * 2), dtype=np.int64),
        "estimate": gym.spaces.Box(-np.inf, np.inf, shape=(I * 2,), dtype=np.float32),
    })


class _PreStep(NamedTuple):
    """One cluster's step before the world moves (:meth:`ISACMultiAgentEnv._begin_step`)."""

    assoc: np.ndarray
    """``(M, I)`` bool, the checked association."""
    beams: np.ndarray
    """``(M, I, K, 2)`` int64."""
    err2: np.ndarray
    """``(I,)`` squared error of the scored block, m^2 (0 on block 0)."""
    pcrb_scored: np.ndarray
    """``(I,)`` PCRB traces of that block, m^2 (0 on block 0)."""
    fisher: float
    """Expected posterior error of the chosen pairs, m^2."""
    headings: np.ndarray
    """``(I,)`` headings before the move, radians."""
    scored: bool
    """Whether the block is scored (``q >= 1``)."""


class ISACMultiAgentEnv(MultiAgentEnv):
    """The cell-free network (:class:`~rl_isac.network.CellFreeNetwork`) as a multi-agent env.

    Args:
        config: env_config (see the module docstring); RLlib passes an ``EnvContext`` (a dict
            with ``worker_index`` / ``vector_index``).
    """

    def __init__(self, config: dict | None = None) -> None:
        super().__init__()
        raw = config if config is not None else {}
        self._worker_index = int(getattr(raw, "worker_index", 0) or 0)
        self._vector_index = int(getattr(raw, "vector_index", 0) or 0)
        self.env_config = {**ENV_DEFAULTS, **dict(raw)}
        self.cfg = env_scenario(dict(raw))
        self.reward_scale = float(self.env_config["reward_scale"])
        self.reward_kind = str(self.env_config["reward"])
        # weight of the Fisher term: 0 for eq. (5a), 1 for the Fisher objective, reward_mix for the mix
        self.fisher_weight = {"mse": 0.0, "fisher": 1.0, "mix": float(self.env_config["reward_mix"])}[self.reward_kind]
        self._normalizer = RunningReturnStd() if self.env_config["reward_normalize"] else None
        self.split = int(self.env_config["split"])
        self.num_blocks = self.cfg.num_blocks
        cfg = self.cfg
        self.world = CellFreeNetwork(cfg)
        self.layout = env_layout(self.env_config, cfg)
        C = self.num_clusters = self.layout.num_clusters
        self.agents = self.possible_agents = [agent_id(c) for c in range(C)]
        self._bs = {agent_id(c): self.layout.bs_array(c) for c in range(C)}  # the BSs of each cluster
        obs_space, act_space = agent_spaces(self.env_config)
        self.observation_spaces = {a: obs_space for a in self.agents}
        self.action_spaces = {a: act_space for a in self.agents}
        if C == 1:
            self.window = MeasurementWindow(cfg, anchor="ekf")
            self._obs_builder = ObservationBuilder(cfg, detection=bool(self.env_config["detection_features"]),
                                                   milp=bool(self.env_config["milp_features"]))
        else:
            self._init_clusters()
        self.observation_space = self.observation_spaces[self.agents[0]]
        self.action_space = self.action_spaces[self.agents[0]]
        self._beam_shape = (cfg.num_bs, cfg.num_targets, cfg.num_tracking_symbols, 2)
        self._seed_base: int | None = None
        self._episode = 0
        self.world_seed: int | None = None
        self._q = 0
        self._pcrb_cov: np.ndarray | None = None
        self._pcrb_now: np.ndarray | None = None

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self._next_world_seed(seed)
        if self.num_clusters > 1:
            return self._reset_clusters()
        acq = self.world.reset(self.world_seed)
        self.window.reset(acq)
        self._q = 0
        cfg = self.cfg
        std2 = cfg.acquisition_std_m**2
        self._pcrb_cov = np.tile(np.diag([std2, std2, np.pi**2 / 3]), (cfg.num_targets, 1, 1))
        self._pcrb_now = np.full(cfg.num_targets, 2 * std2)
        aid = self.agents[0]
        return {aid: self._observation()}, {aid: {"world_seed": self.world_seed}}

    def _next_world_seed(self, seed: int | None) -> None:
        if seed is not None:
            self._seed_base, self._episode = int(seed), 0
        elif self._seed_base is None:
            base = np.random.SeedSequence([int(self.env_config["seed"]), self._worker_index, self._vector_index])
            self._seed_base, self._episode = int(base.generate_state(1)[0]), 0
        self.world_seed = training_world_seed(self._seed_base, self.split, self._episode)
        self._episode += 1

    def step(self, action_dict: dict):
        if self.num_clusters > 1:
            return self._step_clusters(action_dict)
        pre = self._begin_step(action_dict)
        meas = self.world.step(pre.assoc, pre.beams, predicted_positions_m=self.window.anchor_next_m)
        self.window.push(meas)
        self._q += 1
        self._advance_pcrb(pre.assoc, pre.beams, pre.headings)
        rewards, terms, truncs, infos = self._step_result(pre, meas)
        return {self.agents[0]: self._observation()}, rewards, terms, truncs, infos

    def _begin_step(self, action_dict: dict, fisher: bool = True) -> _PreStep:
        """What one cluster's step computes before the world moves (no side effect: a refused action changes
        nothing); ``fisher=False`` leaves the Fisher cost at NaN (:func:`step_envs` computes it for all envs)."""
        aid = self.agents[0]
        if set(action_dict) != {aid}:
            raise ConstraintViolation("(5c)", f"expected one action for agent(s) {self.agents}, got keys "
                                      f"{sorted(map(str, action_dict))}")
        assoc, beams, estimate = self.check_action(action_dict[aid])
        # eq. (5a) on the estimate of block q (the observation's block), before the targets move.
        # Block 0's "estimate" is the acquisition the CU was given: like the harness, score blocks 1..Q only.
        scored = self._q >= 1
        err2 = np.sum((self.world.positions_m - estimate) ** 2, axis=1) * scored        # (I,)
        pcrb_scored = self._pcrb_now * scored
        # expected posterior error of the chosen pairs from the CU's view of block q (the MILP's objective)
        cost = float(association_cost(assoc, self._obs_builder.last_info, self._obs_builder.last_prior_info)) \
            if fisher else float("nan")
        return _PreStep(assoc, beams, err2, pcrb_scored, cost, self.world.headings_rad.copy(), scored)

    def _step_result(self, pre: _PreStep, meas) -> tuple[dict, dict, dict, dict]:
        """Rewards, terminateds, truncateds and infos of one cluster's step, once the block is measured and pushed."""
        assoc, err2, pcrb_scored, fisher, scored = pre.assoc, pre.err2, pre.pcrb_scored, pre.fisher, pre.scored
        cfg, aid = self.cfg, self.agents[0]
        done = self._q > self.num_blocks  # the step that scored block Q
        assigned, detected = int(meas.assigned.sum()), int(meas.detected.sum())
        infos = {"sq_err_m2": float(err2.sum()), "pcrb_m2": float(pcrb_scored.sum()),
                 "targets": cfg.num_targets * int(scored),
                 "lost": int(np.sum(err2 > LOST_M**2)), "assigned": assigned, "detected": detected,
                 "missed": assigned - detected, "idle_chains": int(cfg.num_pairs - assoc.sum()), "violations": 0,
                 "block": self._q - 1, "fisher_m2": fisher}
        w = self.fisher_weight
        reward = -self.reward_scale * ((1.0 - w) * float(err2.sum()) + w * fisher)
        if self._normalizer is not None:
            reward = self._normalizer.scale(reward, done)
        return {aid: reward}, {aid: done, "__all__": done}, {aid: False, "__all__": False}, {aid: infos}

    def _advance_pcrb(self, assoc: np.ndarray, beams: np.ndarray, headings: np.ndarray) -> None:
        """Posterior CRB of block q+1 for the global association ``(M, I)`` and beams (evaluation.bounds, one step)."""
        _advance_pcrb_envs([self], [assoc], [beams], [headings])

    # ------------------------------------------------------------------ several clusters
    def _init_clusters(self) -> None:
        self.observer = ClusterObserver(self.cfg, self.layout)
        self.tracker = self.observer.tracker
        self._sub, self._pad_m = self.observer.sub, self.observer.pad_m
        self._normalizers = {a: RunningReturnStd() for a in self.agents} if self._normalizer is not None else None

    def _reset_clusters(self):
        cfg = self.cfg
        acq = self.world.reset(self.world_seed)
        self.observer.reset(acq)
        self._q = 0
        std2 = cfg.acquisition_std_m**2
        self._pcrb_cov = np.tile(np.diag([std2, std2, np.pi**2 / 3]), (cfg.num_targets, 1, 1))
        self._pcrb_now = np.full(cfg.num_targets, 2 * std2)
        return self._cluster_observations(), {a: {"world_seed": self.world_seed} for a in self.agents}

    def _cluster_observations(self) -> dict[str, dict[str, np.ndarray]]:
        obs = self.observer.observations(self._q, self.num_blocks)
        return {aid: obs[c] for c, aid in enumerate(self.agents)}

    def _step_clusters(self, action_dict: dict):
        if set(action_dict) != set(self.agents):
            raise ConstraintViolation("(5c)", f"every cluster decides each block: expected actions for agents "
                                      f"{self.agents}, got keys {sorted(map(str, action_dict))}")
        checked = {aid: self.check_action(action_dict[aid], aid) for aid in self.agents}  # all, before any change
        cfg, trk = self.cfg, self.tracker
        M, I = cfg.num_bs, cfg.num_targets
        assoc = np.zeros((M, I), bool)
        beams = np.zeros((M, I, cfg.num_tracking_symbols, 2), np.int64)
        estimate = np.zeros((I, 2))
        slots_now = trk.slots.copy()
        for c, aid in enumerate(self.agents):
            a, b, est = checked[aid]
            valid = slots_now[c] >= 0
            rows, bs = slots_now[c][valid], self._bs[aid]
            assoc[np.ix_(bs, rows)] = a[:, valid]
            beams[np.ix_(bs, rows)] = b[:, valid]
            estimate[rows] = est[valid]
        scored = self._q >= 1
        err2 = np.sum((self.world.positions_m - estimate) ** 2, axis=1) * scored        # (I,)
        pcrb_scored = self._pcrb_now * scored
        fisher = []
        for c, aid in enumerate(self.agents):
            valid = slots_now[c] >= 0
            info, prior = self.observer.cluster_info[c]
            fisher.append(float(association_cost(checked[aid][0][:, valid], info, prior)) if valid.any() else 0.0)
        headings = self.world.headings_rad.copy()
        meas = self.world.step(assoc, beams, predicted_positions_m=trk.predicted_position())
        self.observer.push(meas)
        self._q += 1
        self._advance_pcrb(assoc, beams, headings)
        done = self._q > self.num_blocks
        received = np.bincount([h.dest for h in trk.handovers], minlength=self.num_clusters)
        w = self.fisher_weight
        obs = self._cluster_observations()
        rewards, infos = {}, {}
        for c, aid in enumerate(self.agents):
            rows = slots_now[c][slots_now[c] >= 0]
            bs = self._bs[aid]
            e2 = float(err2[rows].sum())
            assigned, detected = int(meas.assigned[bs].sum()), int(meas.detected[bs].sum())
            infos[aid] = {"sq_err_m2": e2, "pcrb_m2": float(pcrb_scored[rows].sum()),
                          "targets": int(rows.size) * int(scored), "lost": int(np.sum(err2[rows] > LOST_M**2)),
                          "assigned": assigned, "detected": detected, "missed": assigned - detected,
                          "idle_chains": int(bs.size * cfg.num_rf - checked[aid][0].sum()), "violations": 0,
                          "block": self._q - 1, "fisher_m2": fisher[c], "handovers": int(received[c]),
                          "owned": int(rows.size)}
            r = -self.reward_scale * ((1.0 - w) * e2 + w * fisher[c])
            if self._normalizers is not None:
                r = self._normalizers[aid].scale(r, done)
            rewards[aid] = r
        terms = {a: done for a in self.agents}
        terms["__all__"] = done
        truncs = {a: False for a in self.agents}
        truncs["__all__"] = False
        return obs, rewards, terms, truncs, infos

    # ------------------------------------------------------------------ helpers
    def check_action(self, action: Any, agent: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Validate one agent's action; returns ``(association (M, I) bool, beams (M, I, K, 2) int64,
        estimate (I, 2) float)`` in that agent's sizes (``M_c`` BSs and ``K`` slots with several clusters;
        ``agent`` defaults to ``cu_0``).

        Raises:
            ConstraintViolation: naming the constraint, the pair/entry and the value.
        """
        clustered = self.num_clusters > 1
        cfg = self._sub[int((agent or agent_id(0)).split("_")[1])] if clustered else self.cfg
        M, I, J = cfg.num_bs, cfg.num_targets, cfg.num_pairs
        if not isinstance(action, dict) or set(action) != {"pairs", "beams", "estimate"}:
            keys = sorted(action) if isinstance(action, dict) else type(action).__name__
            raise ConstraintViolation("(5e)", f"the action must be a dict with keys beams, estimate, pairs; got {keys}")
        pairs = np.asarray(action["pairs"])
        if pairs.shape != (J,):
            raise ConstraintViolation("(5e)", f"pairs must have shape (J,) = ({J},), got {pairs.shape}")
        if pairs.dtype.kind == "f" and not np.all(np.isfinite(pairs)):
            j = int(np.flatnonzero(~np.isfinite(pairs))[0])
            raise ConstraintViolation("(5e)", f"pairs[{j}] = {pairs[j]!r} is not a finite integer step")
        if clustered:
            c = int((agent or agent_id(0)).split("_")[1])
            assoc = check_cluster_pairs(pairs, M, I, cfg.num_rf, self.tracker.slots[c] >= 0)
        else:
            assoc = sub_actions_to_association(pairs, M, I)
        beams = np.asarray(action["beams"])
        beam_shape = (M, I, cfg.num_tracking_symbols, 2)
        size = int(np.prod(beam_shape))
        if beams.shape != (size,):
            raise ConstraintViolation("(5f)", f"beams must have shape (M*I*K*2,) = ({size},), got {beams.shape}")
        if beams.dtype.kind not in "iu":
            bad = ~np.isfinite(beams) | (beams != np.round(beams)) if beams.dtype.kind == "f" else np.ones(1, bool)
            if bad.any():
                e = int(np.flatnonzero(bad)[0])
                m, i, k, s = np.unravel_index(e, beam_shape)
                raise ConstraintViolation("(5f)", f"beam of pair (bs={m}, target={i}), symbol {k}, "
                                          f"{'tx' if s == 0 else 'rx'} = {beams.reshape(-1)[e]!r} is not an integer "
                                          f"codebook index")
        beams = beams.astype(np.int64).reshape(beam_shape)
        out = (beams < 0) | (beams >= cfg.codebook_size)
        if out.any():
            m, i, k, s = np.argwhere(out)[0]
            raise ConstraintViolation("(5f)", f"beam of pair (bs={m}, target={i}), symbol {k}, "
                                      f"{'tx' if s == 0 else 'rx'} = {int(beams[m, i, k, s])} is outside the codebook "
                                      f"[0, {cfg.codebook_size - 1}]")
        est = np.asarray(action["estimate"], dtype=float)
        if est.shape != (2 * I,):
            raise ConstraintViolation("(5a)", f"estimate must have shape (I*2,) = ({2 * I},), got {est.shape}")
        if not np.all(np.isfinite(est)):
            e = int(np.flatnonzero(~np.isfinite(est))[0])
            raise ConstraintViolation("(5a)", f"estimate of target {e // 2} ({'xy'[e % 2]}) = {est[e]!r} is not finite")
        return assoc, beams, est.reshape(I, 2)

    def _observation(self) -> dict[str, np.ndarray]:
        return self._obs_builder.build(self.window, self._q, self.num_blocks)

    @property
    def stop_token(self) -> int:
        """The STOP step value ``M * I`` (``M_c * K`` with several clusters)."""
        cfg = self._sub[0] if self.num_clusters > 1 else self.cfg
        return stop_action(cfg.num_bs, cfg.num_targets)


class ClusterObserver:
    """The CU side of several clusters, without learning: the clustered EKF (:class:`rl_isac.clusters.ClusteredEKF`,
    ownership and handover), the last ``W`` blocks, and every cluster's observation (module docstring, "Several
    clusters"). The env and the clustered PPO CU (:mod:`rl_isac.rllib.cluster_controller`) both use it, so a
    policy sees the same observations in training and in the harness.

    Usage: ``reset(acquisition_m)``; per block ``observations(q, Q)`` (a list over clusters) then, once the block
    is measured, ``push(meas)`` (global ``(M, I)`` measurements).
    """

    def __init__(self, cfg: ScenarioConfig, layout: ClusterLayout) -> None:
        self.cfg, self.layout = cfg, layout
        C = layout.num_clusters
        self.sub = [layout.sub_scenario(cfg, c) for c in range(C)]
        self.bs = [layout.bs_array(c) for c in range(C)]
        self.tracker = ClusteredEKF(cfg, layout)
        self._builders = [ObservationBuilder(sub) for sub in self.sub]
        # per cluster: a window object used only for its feature computation (block_features) against the
        # cluster's anchors; its own anchor logic is not used (the cluster's EKF is the anchor)
        self._feature_windows = [MeasurementWindow(sub, anchor="measurement") for sub in self.sub]
        H = cfg.area_size_m[1]
        b = layout.boundaries_m
        self.pad_m = [np.array([(b[c] + b[c + 1]) / 2.0, H / 2.0]) for c in range(C)]
        """Where an empty slot's (unused, zeroed) geometry is computed: the strip's centre, metres."""
        self.cluster_info: list[tuple[np.ndarray, np.ndarray]] = []
        """Per cluster, of the last :meth:`observations`: ``(J (M_c, n, 2, 2), P^-1 (n, 2, 2))`` of its owned slots."""
        self._clear()

    def _clear(self) -> None:
        cfg = self.cfg
        self.blocks: list = []
        self._subset_cache: list[dict] = [{} for _ in self.sub]
        self.age = np.zeros(cfg.num_targets, dtype=int)
        self.post_var = np.full(cfg.num_targets, 2 * cfg.acquisition_std_m**2)

    def reset(self, acquisition_m: np.ndarray) -> None:
        """Start an episode from the acquisition ``(I, 2)`` metres (owners from it, empty window)."""
        self.tracker.reset(acquisition_m)
        self._clear()

    def push(self, meas) -> None:
        """The block's global measurements: into the window, then the tracker (fusion, ownership, handover)."""
        self.blocks = (self.blocks + [meas])[-self.cfg.window:]
        oldest = self.blocks[0].block
        for cache in self._subset_cache:  # forget the blocks that left the window
            for key in [k for k in cache if k[0] < oldest]:
                del cache[key]
        trk = self.tracker
        trk.update(meas)
        self.age = np.where(meas.detected.any(axis=0), 0, np.minimum(self.age + 1, _AGE_CAP_BLOCKS))
        self.post_var = np.trace(trk.covariance[:, :2, :2], axis1=-2, axis2=-1)

    def observations(self, block: int, num_blocks: int) -> list[dict[str, np.ndarray]]:
        """Every cluster's observation of block ``q = block`` (window arrays over its BSs and slots, the extra keys of
        :mod:`rl_isac.rllib.observation`, ``target_valid``; an empty slot's entries are 0)."""
        trk = self.tracker
        u_hat, u_next = trk.estimate_m, trk.predicted_position()
        cov_next = trk.predicted_position_covariance()
        out, self.cluster_info = [], []
        for c in range(self.layout.num_clusters):
            slots = trk.slots[c]
            valid = slots >= 0
            rows = np.where(valid, slots, 0)
            pad = self.pad_m[c]
            anchor = np.where(valid[:, None], u_hat[rows], pad)
            anchor_next = np.where(valid[:, None], u_next[rows], pad)
            cov = np.where(valid[:, None, None], cov_next[rows], np.eye(2))
            view = _ClusterWindow(self._feature_windows[c], self.sub[c], self.bs[c], slots, self.blocks,
                                  anchor, anchor_next, cov, np.where(valid, self.age[rows], 0),
                                  np.where(valid, self.post_var[rows], 1.0), self._subset_cache[c])
            b = self._builders[c]
            obs = b.build(view, block, num_blocks)
            self.cluster_info.append((b.last_info[:, valid], b.last_prior_info[valid]))
            for key in ("anchor", "anchor_next", "anchor_age", "anchor_log_std", "prior_cov", "prior_fim"):
                obs[key][~valid] = 0.0
            for key in ("pair_info", "pair_fim", "features"):
                obs[key][..., ~valid, :] = 0.0
            obs["target_valid"] = valid.astype(np.float32)
            out.append(obs)
        return out


class _ClusterWindow:
    """What :class:`~rl_isac.rllib.observation.ObservationBuilder` reads of a window, for one cluster: the
    stored global blocks restricted to the cluster's BSs and slots (empty slots: empty columns), features
    against the cluster's EKF anchors (``block_features`` of a window of the cluster's sizes, reset at
    those anchors), and the anchors themselves. Shapes as :meth:`MeasurementWindow.as_arrays`."""

    def __init__(self, win: MeasurementWindow, sub: ScenarioConfig, bs: np.ndarray, slots: np.ndarray, blocks: list,
                 anchor: np.ndarray, anchor_next: np.ndarray, cov_next: np.ndarray, age: np.ndarray,
                 post_var: np.ndarray, cache: dict) -> None:
        self.win, self.sub, self.bs, self.slots, self.blocks, self.cache = win, sub, bs, slots, blocks, cache
        self.anchor_m, self.anchor_next_m, self._cov, self._age, self._var = anchor, anchor_next, cov_next, age, \
            post_var

    def anchor_predicted_covariance(self) -> np.ndarray:
        return self._cov

    def as_arrays(self) -> dict[str, np.ndarray]:
        win, W = self.win, self.sub.window
        win.reset(self.anchor_m)  # the residual features are taken against the cluster's current anchors
        feats = np.zeros((W, self.sub.num_bs, self.sub.num_targets, len(FEATURE_NAMES)), dtype=np.float32)
        valid = np.zeros(W, dtype=np.float32)
        n = len(self.blocks)
        key = self.slots.tobytes()
        for k, meas in enumerate(self.blocks):
            sub = self.cache.get((meas.block, key))
            if sub is None:  # a block's restriction to these BSs and slots, computed once while the slots hold
                sub = self.cache[(meas.block, key)] = subset_measurements(meas, self.bs, self.slots)
            feats[W - n + k] = win.block_features(sub)
            valid[W - n + k] = 1.0
        scale = win.position_scale_m
        return {
            "features": feats,
            "block_valid": valid,
            "bs_positions": (win.bs_positions_m / scale).astype(np.float32),
            "anchor": (self.anchor_m / scale).astype(np.float32),
            "anchor_next": (self.anchor_next_m / scale).astype(np.float32),
            "anchor_age": (self._age / W).astype(np.float32),
            "anchor_log_std": np.log10(np.sqrt(np.maximum(self._var, 1e-18))).astype(np.float32),
            "scales_m": np.array([scale, win.residual_scale_m, win.range_scale_m], dtype=np.float32),
        }


def _advance_pcrb_envs(envs: list[ISACMultiAgentEnv], assocs: list[np.ndarray], beams: list[np.ndarray],
                       headings: list[np.ndarray]) -> None:
    """:meth:`ISACMultiAgentEnv._advance_pcrb` of several envs of one scenario at once: the expected information
    at the true positions, the transition and the two inverses run once over all their targets (each of them per
    target, so the same numbers as one env at a time, bit for bit; a test checks it)."""
    first = envs[0]
    cfg, world = first.cfg, first.world
    I = cfg.num_targets
    if len(envs) == 1:
        pos, b, a, hd, cov = world.positions_m, beams[0], assocs[0], headings[0], first._pcrb_cov
    else:
        pos = np.concatenate([e.world.positions_m for e in envs])
        b, a = np.concatenate(beams, axis=1), np.concatenate(assocs, axis=1)
        hd, cov = np.concatenate(headings), np.concatenate([e._pcrb_cov for e in envs])
    info = world.expected_information(pos, b)
    f = heading_transition(cfg, hd)
    pred = f @ cov @ np.swapaxes(f, -1, -2) + np.diag([0.0, 0.0, cfg.heading_step_rad**2 / 3])
    jinfo = np.linalg.inv(pred + 1e-12 * np.eye(3))
    jinfo[:, :2, :2] += np.einsum("mi,mixy->ixy", a, info)
    cov = np.linalg.inv(jinfo)
    now = cov[:, 0, 0] + cov[:, 1, 1]
    for k, e in enumerate(envs):
        e._pcrb_cov, e._pcrb_now = cov[k * I:(k + 1) * I], now[k * I:(k + 1) * I]


def step_envs(envs: list[ISACMultiAgentEnv], action_dicts: list[dict]) -> list[tuple]:
    """``[env.step(action) for env, action in zip(envs, action_dicts)]``, the same numbers, batched.

    For envs of one cluster and one scenario (an env runner's vector of envs): every action is checked first
    (a refused one raises before any env changes), then the worlds step together
    (:func:`rl_isac.vector_network.step_networks`), the windows are pushed together
    (:meth:`~rl_isac.tracking.window.MeasurementWindow.push_many`: each env's own EKF, batched), the PCRB
    bookkeeping (:func:`_advance_pcrb_envs`) and the observations
    (:func:`rl_isac.rllib.observation.build_observations`) run once over all the envs' targets. Anything else
    (several clusters, mixed scenarios) steps env by env. Returns each env's ``(obs, rewards, terminateds,
    truncateds, infos)``.
    """
    from rl_isac.rllib.observation import build_observations
    from rl_isac.vector_network import step_networks

    first = envs[0]
    if len(envs) == 1 or any(e.num_clusters > 1 or (e.cfg is not first.cfg and e.cfg != first.cfg) for e in envs):
        return [e.step(a) for e, a in zip(envs, action_dicts)]
    pres = [e._begin_step(a, fisher=False) for e, a in zip(envs, action_dicts)]
    assocs, beams = [p.assoc for p in pres], [p.beams for p in pres]
    # the Fisher cost of every env at once: its targets' costs are per target (targets concatenated)
    I = first.cfg.num_targets
    costs = target_costs(np.concatenate(assocs, axis=1),
                         np.concatenate([e._obs_builder.last_info for e in envs], axis=1),
                         np.concatenate([e._obs_builder.last_prior_info for e in envs])).reshape(len(envs), I)
    pres = [p._replace(fisher=float(c.sum(axis=-1))) for p, c in zip(pres, costs)]
    metas = step_networks([e.world for e in envs], assocs, beams, [e.window.anchor_next_m for e in envs])
    MeasurementWindow.push_many([e.window for e in envs], metas)  # every env's EKF anchor in one batch
    for e in envs:
        e._q += 1
    _advance_pcrb_envs(envs, assocs, beams, [p.headings for p in pres])
    results = [e._step_result(p, meas) for e, p, meas in zip(envs, pres, metas)]
    obs = build_observations([e._obs_builder for e in envs], [e.window for e in envs], [e._q for e in envs],
                             first.num_blocks)
    return [({e.agents[0]: o}, *r) for e, o, r in zip(envs, obs, results)]


def make_env(env_config: dict) -> ISACMultiAgentEnv:
    """Env creator for ``ray.tune.registry.register_env``."""
    return ISACMultiAgentEnv(env_config)


ENV_NAME = "rl_isac-cellfree-v0"
"""Name the env is registered under in Ray (:func:`register`)."""


def register() -> str:
    """Register :func:`make_env` with Ray Tune's registry under :data:`ENV_NAME`; returns the name."""
    from ray.tune.registry import register_env

    register_env(ENV_NAME, make_env)
    return ENV_NAME
