"""The MultiAgentEnv with several CU clusters: RLlib's multi-agent check at C = 2, per-cluster spaces and
constraints, the cluster observation equals the window observation for one cluster, handover in the
observation, seeding, refused actions."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from rl_isac.association import association_to_sub_actions
from rl_isac.errors import ConfigError, ConstraintViolation
from rl_isac.rllib.bench_clusters import nearest_cluster_actions
from rl_isac.rllib.env import ISACMultiAgentEnv, agent_spaces

LARGE2 = {"preset": "large", "targets": 24, "clusters": 2, "blocks": 6}


def test_rllib_multiagent_check_with_two_clusters():
    from ray.rllib.utils.pre_checks.env import check_multiagent_environments

    env = ISACMultiAgentEnv(LARGE2)
    check_multiagent_environments(env)
    assert env.agents == ["cu_0", "cu_1"]
    obs_space, act_space = agent_spaces(LARGE2)
    assert all(env.observation_spaces[a] == obs_space and env.action_spaces[a] == act_space for a in env.agents)
    assert obs_space["features"].shape == (8, 6, 12, 12) and act_space["pairs"].nvec.tolist() == [6 * 12 + 1] * 12
    obs, _ = env.reset(seed=2)
    for q in range(7):
        acts = {a: env.action_spaces[a].sample() for a in env.agents}  # C K == I: no empty slot, samples feasible
        truth = env.world.positions_m.copy()
        slots = env.tracker.slots.copy()
        obs, rew, term, trunc, info = env.step(acts)
        for c, a in enumerate(env.agents):
            assert env.observation_spaces[a].contains(obs[a]) and obs[a]["target_valid"].all()
            est = acts[a]["estimate"].reshape(-1, 2)
            err2 = float(np.sum((truth[slots[c]] - est) ** 2)) if q else 0.0
            assert rew[a] == pytest.approx(-err2) and info[a]["sq_err_m2"] == pytest.approx(err2)
            assert info[a]["targets"] == (12 if q else 0) and info[a]["owned"] == 12
        assert term["__all__"] == (q == 6)


def test_cluster_observation_is_the_window_observation_for_one_cluster():
    """The cluster path (per-cluster EKF anchor, window rebuilt from the stored blocks) run with one cluster
    gives the whole-network env's observation and reward, key by key."""
    a = ISACMultiAgentEnv({"targets": 4, "blocks": 5})
    b = ISACMultiAgentEnv({"targets": 4, "blocks": 5})
    b._init_clusters()
    oa, _ = a.reset(seed=3)
    b._next_world_seed(3)
    ob, _ = b._reset_clusters()
    for _q in range(6):
        assert set(ob["cu_0"]) == set(oa["cu_0"]) | {"target_valid"}
        for key in oa["cu_0"]:
            np.testing.assert_allclose(ob["cu_0"][key], oa["cu_0"][key], rtol=1e-6, atol=1e-7, err_msg=key)
        pred = a.window.anchor_next_m
        act = {"pairs": association_to_sub_actions(a.world.nearest_association(pred), 2),
               "beams": a.world.beams_toward(pred).reshape(-1), "estimate": a.window.anchor_m.reshape(-1)}
        oa, ra, *_ = a.step({"cu_0": act})
        ob, rb, *_ = b._step_clusters({"cu_0": act})
        assert rb["cu_0"] == pytest.approx(ra["cu_0"], rel=1e-12)


def test_handover_shows_in_the_receiving_clusters_observation():
    env = ISACMultiAgentEnv({"preset": "large", "targets": 24, "clusters": 4, "blocks": 60})
    env.reset(seed=4)
    scale = env.cfg.area_size_m[0]
    seen = 0
    for _ in range(61):
        obs, _r, term, _t, info = env.step(nearest_cluster_actions(env))
        for h in env.tracker.handovers:
            seen += 1
            dest = env.agents[h.dest]
            slot = int(np.flatnonzero(env.tracker.slots[h.dest] == h.target)[0])
            # the receiver's anchor for the new slot is the sender's posterior estimate of that block
            np.testing.assert_allclose(obs[dest]["anchor"][slot] * scale, h.state[:2], rtol=1e-6)
            assert obs[dest]["target_valid"][slot] == 1.0
        assert sum(info[a]["handovers"] for a in env.agents) == len(env.tracker.handovers)
        # constraints per cluster: every owned target covered by its cluster's BSs only
        if term["__all__"]:
            break
    assert seen > 0, "no handover in 60 blocks: the test would prove nothing"


def test_empty_slots_are_masked_and_refused_and_state_unchanged():
    env = ISACMultiAgentEnv({"preset": "large", "targets": 12, "clusters": 2, "blocks": 4})  # K = 12, 2 x 12 > 12
    obs, _ = env.reset(seed=0)
    acts = nearest_cluster_actions(env)
    valid = obs["cu_0"]["target_valid"].astype(bool)
    assert not valid.all() and valid.any()
    empty = int(np.flatnonzero(~valid)[0])
    bad = copy.deepcopy(acts)
    bad["cu_0"]["pairs"] = bad["cu_0"]["pairs"].copy()
    bad["cu_0"]["pairs"][0] = 0 * 12 + empty  # (bs 0, an empty slot)
    world_before = env.world.positions_m.copy()
    slots_before = env.tracker.slots.copy()
    with pytest.raises(ConstraintViolation, match=rf"\(5e\).*slot={empty}\) names an empty slot"):
        env.step(bad)
    with pytest.raises(ConstraintViolation, match="every cluster decides"):
        env.step({"cu_0": acts["cu_0"]})
    assert np.array_equal(env.world.positions_m, world_before) and np.array_equal(env.tracker.slots, slots_before)
    assert env._q == 0
    obs, rew, *_ = env.step(acts)  # the good action still goes through
    assert set(rew) == {"cu_0", "cu_1"}
    for a in env.agents:  # empty slots are all-zero in the observation
        v = obs[a]["target_valid"].astype(bool)
        assert not obs[a]["features"][..., ~v, :].any() and not obs[a]["anchor"][~v].any()


def test_same_seed_same_numbers_with_clusters():
    runs = []
    for _ in range(2):
        env = ISACMultiAgentEnv(LARGE2)
        for a in env.agents:
            env.action_spaces[a].seed(7)
        obs, _ = env.reset(seed=9)
        trace = []
        for _q in range(4):
            obs, rew, *_ = env.step({a: env.action_spaces[a].sample() for a in env.agents})
            trace.append((rew["cu_0"], rew["cu_1"], obs["cu_1"]["features"].sum(), obs["cu_0"]["anchor"].copy()))
        runs.append(trace)
    for x, y in zip(*runs):
        assert x[:3] == y[:3] and np.array_equal(x[3], y[3])


def test_cluster_env_config_errors():
    with pytest.raises(ConfigError, match="clusters=5: must divide the 12 BSs"):
        ISACMultiAgentEnv({"preset": "large", "targets": 24, "clusters": 5})
    with pytest.raises(ConfigError, match="cluster_hysteresis_m"):
        ISACMultiAgentEnv({"preset": "large", "clusters": 2, "cluster_hysteresis_m": -2.0})


def test_clustered_ppo_cu_runs_the_shared_module_per_cluster_in_the_harness(dgnn_i4):
    import torch

    from rl_isac.evaluation.harness import evaluate
    from rl_isac.rllib.cluster_controller import ClusteredPPOController
    from rl_isac.rllib.module import ISACPPOModule
    from rl_isac.scenario import ScenarioConfig
    from rl_isac.training.pretrain import load_configs

    obs_space, act_space = agent_spaces(LARGE2)
    torch.manual_seed(0)
    module = ISACPPOModule(observation_space=obs_space, action_space=act_space,
                           model_config={"dgnn": load_configs(dgnn_i4)["dgnn"].to_dict(),
                                         "dgnn_weights": str(dgnn_i4 / "model.pt"), "hidden": 16,
                                         "critic_hidden": 16})
    cfg = ScenarioConfig.large(fidelity="surrogate", num_blocks=4)
    cu = ClusteredPPOController(cfg, module, 2)
    r = evaluate("dgnn-ppo", cfg=cfg, episodes=1, blocks=4, progress=False, controller=cu)
    assert r["method"] == "dgnn-ppo/C2" and r["violations"] == 0 and np.isfinite(r["rmse_m"])
    # the module was built for 2 clusters of 6 BSs and 12 slots: not for 4 clusters of 3
    with pytest.raises(ConfigError, match="another cluster size"):
        ClusteredPPOController(cfg, module, 4)
