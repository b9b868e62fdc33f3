"""The MultiAgentEnv: RLlib's and gymnasium-style checks, seeding, refused actions leave the state unchanged."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from rl_isac.association import association_to_sub_actions
from rl_isac.errors import ConfigError, ConstraintViolation
from rl_isac.rllib.env import ISACMultiAgentEnv
from rl_isac.seeds import EVAL_SEED_BASE


def good_action(env) -> dict:
    """Nearest-BS association toward the window's prediction, geometric beams, the anchor as estimate."""
    pred = env.window.anchor_next_m
    assoc = env.world.nearest_association(pred)
    return {"pairs": association_to_sub_actions(assoc, env.cfg.num_rf),
            "beams": env.world.beams_toward(pred).reshape(-1),
            "estimate": env.window.anchor_m.reshape(-1).astype(np.float32)}


def test_rllib_multiagent_check_and_spaces():
    from ray.rllib.utils.pre_checks.env import check_multiagent_environments

    env = ISACMultiAgentEnv({"targets": 4, "blocks": 5})
    check_multiagent_environments(env)  # steps with a sampled action: PairsSpace samples feasible sequences
    obs, infos = env.reset(seed=1)
    assert set(obs) == {"cu_0"} and env.observation_spaces["cu_0"].contains(obs["cu_0"])
    for _ in range(20):
        a = env.action_spaces["cu_0"].sample()
        assert env.action_spaces["cu_0"].contains(a)
        env.check_action(a)  # sampled actions are feasible
    for q in range(6):  # blocks 0 .. Q: block 0 (the acquisition) is not scored
        truth = env.world.positions_m.copy()
        action = good_action(env)
        obs, rew, term, trunc, info = env.step({"cu_0": action})
        assert env.observation_space.contains(obs["cu_0"])
        assert isinstance(rew["cu_0"], float) and rew["cu_0"] <= 0
        err2 = float(np.sum((truth - action["estimate"].reshape(-1, 2)) ** 2)) if q else 0.0
        assert rew["cu_0"] == pytest.approx(-err2) and info["cu_0"]["sq_err_m2"] == pytest.approx(err2)
        assert info["cu_0"]["violations"] == 0 and info["cu_0"]["missed"] == info["cu_0"]["assigned"] - \
            info["cu_0"]["detected"]
        assert (info["cu_0"]["pcrb_m2"] > 0) == (q > 0) and info["cu_0"]["targets"] == (4 if q else 0)
        assert term["__all__"] == (q == 5) and not trunc["__all__"]


def test_seeding_is_deterministic_and_uses_training_seeds():
    a, b = ISACMultiAgentEnv({"targets": 4, "blocks": 3}), ISACMultiAgentEnv({"targets": 4, "blocks": 3})
    oa, ia = a.reset(seed=5)
    ob, ib = b.reset(seed=5)
    assert ia["cu_0"]["world_seed"] == ib["cu_0"]["world_seed"] < EVAL_SEED_BASE
    for key in oa["cu_0"]:
        np.testing.assert_array_equal(oa["cu_0"][key], ob["cu_0"][key])
    for _ in range(4):
        ra = a.step({"cu_0": good_action(a)})
        rb = b.step({"cu_0": good_action(b)})
        assert ra[1] == rb[1]
        np.testing.assert_array_equal(ra[0]["cu_0"]["features"], rb[0]["cu_0"]["features"])
    # the next unseeded reset draws the next training episode; another seed gives another world
    seeds = {a.reset()[1]["cu_0"]["world_seed"], a.reset()[1]["cu_0"]["world_seed"],
             a.reset(seed=6)[1]["cu_0"]["world_seed"]}
    assert len(seeds) == 3 and max(seeds) < EVAL_SEED_BASE


def _bad_actions(env):
    M, I = env.cfg.num_bs, env.cfg.num_targets
    base = good_action(env)
    stop = M * I
    cases = []

    def with_(key, value, constraint, text):
        a = copy.deepcopy(base)
        a[key] = value
        cases.append((a, constraint, text))

    p = base["pairs"].copy()
    p[1] = p[0]
    with_("pairs", p, "(5e)", "more than once")
    p = base["pairs"].copy()
    p[1] = 0 * I + 3  # BS 0 gets a third pair (N_RF = 2); keeps other steps
    p[:3] = [0, 1, 2]
    with_("pairs", p, "(5c)", "BS 0")
    with_("pairs", np.full(M * 2, stop), "(5d)", "no BS")
    p = base["pairs"].copy()
    p[5], p[6] = stop, p[6]
    with_("pairs", p, "(5e)", "STOP")
    with_("pairs", base["pairs"][:-1], "(5e)", "shape")
    p = base["pairs"].astype(float)
    p[2] = np.nan
    with_("pairs", p, "(5e)", "nan")
    b = base["beams"].copy()
    b[7] = 32
    with_("beams", b, "(5f)", "32")
    with_("beams", base["beams"][:5], "(5f)", "shape")
    e = base["estimate"].copy()
    e[3] = np.inf
    with_("estimate", e, "(5a)", "inf")
    with_("estimate", base["estimate"][:2], "(5a)", "shape")
    return cases


def test_refused_actions_name_the_rule_and_leave_the_state_unchanged():
    env = ISACMultiAgentEnv({"targets": 4, "blocks": 4})
    ref = ISACMultiAgentEnv({"targets": 4, "blocks": 4})
    env.reset(seed=2)
    ref.reset(seed=2)
    env.step({"cu_0": good_action(env)})
    ref.step({"cu_0": good_action(ref)})
    for action, constraint, text in _bad_actions(env):
        before = (env.world.positions_m.copy(), env.window.anchor_m, env._q, env.world.block)
        with pytest.raises(ConstraintViolation) as info:
            env.step({"cu_0": action})
        assert info.value.constraint == constraint and text in str(info.value), str(info.value)
        np.testing.assert_array_equal(env.world.positions_m, before[0])
        np.testing.assert_array_equal(env.window.anchor_m, before[1])
        assert (env._q, env.world.block) == before[2:]
    with pytest.raises(ConstraintViolation, match="cu_0"):
        env.step({"cu_1": good_action(env)})
    # after all the refusals the env continues exactly like one that never saw them
    ra, rb = env.step({"cu_0": good_action(env)}), ref.step({"cu_0": good_action(ref)})
    assert ra[1] == rb[1]
    np.testing.assert_array_equal(ra[0]["cu_0"]["features"], rb[0]["cu_0"]["features"])


def test_env_config_errors():
    with pytest.raises(ConfigError, match="fidelity"):
        ISACMultiAgentEnv({"fidelity": "exact"})
    with pytest.raises(ConfigError, match="unknown keys"):
        ISACMultiAgentEnv({"targetz": 4})
    with pytest.raises(ConfigError, match="clusters=4: must divide the 6 BSs"):
        ISACMultiAgentEnv({"clusters": 4})
    with pytest.raises(ConfigError, match="cannot be split into 6 clusters"):
        ISACMultiAgentEnv({"clusters": 6})
    with pytest.raises(ConfigError, match="cluster_capacity"):
        ISACMultiAgentEnv({"clusters": 2, "targets": 8, "cluster_capacity": 3})  # 2 x 3 slots < 8 targets
    with pytest.raises(ConfigError, match="reward_scale"):
        ISACMultiAgentEnv({"reward_scale": -1.0})
    with pytest.raises(ConfigError, match="split"):
        ISACMultiAgentEnv({"split": -1})
