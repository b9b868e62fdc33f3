"""The clustered warm start: behaviour cloning (+ DAgger) of the clustered ekf-milp into the one shared module."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from rl_isac.errors import ConfigError

# 6 targets on 2 clusters x 6 slots: spare slots in every block (each cluster owns only some of the 6)
TINY = dict(blocks=6, hidden=16, critic_hidden=16)
RECALL = 0.75
"""Greedy pair recall of the expert's sub-actions the warm-started module must reach on its training states
(observed 0.87 with these sizes; the untrained module: 0.42)."""


@pytest.fixture(scope="module")
def setup(tmp_path_factory, dgnn_i4):
    pytest.importorskip("ray.rllib")
    import torch

    from rl_isac.rllib.callbacks import MODULE_ID
    from rl_isac.rllib.config import PPOTrainConfig
    from rl_isac.training.ppo import _cluster_module_spec, prepare

    run = prepare(6, str(dgnn_i4), str(tmp_path_factory.mktemp("ws") / "out"), preset="large", clusters=2,
                  warm_start=True, bc_expert="ekf-milp", **TINY)
    train_cfg = PPOTrainConfig.from_dict(run["train"])
    torch.manual_seed(0)
    module = _cluster_module_spec(run, train_cfg, str(dgnn_i4 / "model.pt"), None).rl_module_specs[MODULE_ID].build()
    return run, module


def _greedy_pairs(module, data):
    from rl_isac.rllib.warm_start import _encode_all, _tensors

    z, u = _encode_all(module, data)
    obs = _tensors(data, np.arange(len(data["pairs"])))["obs"]
    n = len(data["pairs"])
    E, g = module.pair_embeddings(obs, {"z": z.reshape(n, module.num_targets, -1),
                                        "u_tilde": u.reshape(n, module.num_targets, 2)})
    return module.decode(E, g, obs, explore=False)[0].numpy()


def test_warm_started_shared_module_reproduces_the_clustered_expert(setup):
    from rl_isac.clusters import check_cluster_pairs
    from rl_isac.rllib.cluster_warm_start import behaviour_clone_clusters, collect_clusters
    from rl_isac.rllib.warm_start import _encode_all, greedy_accuracy

    run, module = setup
    env_config = run["env_config"]
    # the training states (expert-driven episodes 0..2 of the warm start's split), collected again: deterministic
    data = collect_clusters(env_config, "ekf-milp", 3, run["seed"], 0.95)
    valid = data["obs"]["target_valid"] > 0.5
    assert (~valid).any() and valid.any(axis=1).all()  # spare slots occur
    P = module.num_pairs
    named = data["pairs"][data["pairs"] < P] % module.num_targets
    assert valid[np.repeat(np.arange(len(valid)), (data["pairs"] < P).sum(1)), named].all()  # never an empty slot
    assert set(np.unique(data["cluster"])) == {0, 1}
    before = greedy_accuracy(module, data, _encode_all(module, data))["pair_recall"]

    fresh = copy.deepcopy(module)
    metrics = behaviour_clone_clusters(module, env_config, expert="ekf-milp", episodes=3, val_episodes=1, epochs=20,
                                       dagger_rounds=1, seed=run["seed"], echo=lambda s: None)
    assert metrics["expert"] == "clustered-ekf-milp" and metrics["clusters"] == 2 and metrics["dagger_rounds"] == 1
    assert metrics["samples"] > len(data["pairs"])  # the DAgger round's policy-driven samples were added
    after = greedy_accuracy(module, data, _encode_all(module, data))["pair_recall"]
    print(f"pair recall before {before:.3f} after {after:.3f}")
    assert after >= RECALL > before, (before, after)
    assert greedy_accuracy(fresh, data, _encode_all(fresh, data))["pair_recall"] == pytest.approx(before)

    # its decisions never violate (5c)-(5e) per cluster (the env's exact test, empty slots included) ...
    pairs = _greedy_pairs(module, data)
    sub_bs = module.num_bs
    for k in range(len(pairs)):
        assoc = check_cluster_pairs(pairs[k], sub_bs, module.num_targets, module.num_rf, valid[k])
        assert not assoc[:, ~valid[k]].any()
    # ... nor (5c)-(5f) in the harness: the clustered PPO CU on a few blocks of an episode
    from rl_isac.evaluation.harness import run_episode
    from rl_isac.rllib.cluster_controller import ClusteredPPOController
    from rl_isac.rllib.env import env_scenario
    from rl_isac.seeds import training_world_seed

    cfg = env_scenario(env_config)
    cu = ClusteredPPOController(cfg, module, clusters=2)
    out = run_episode(cu, cfg, training_world_seed(run["seed"], 2, 50), blocks=4)  # check_action each block
    assert np.all(np.isfinite(out["sq_err"]))


def test_clustered_warm_start_checks(setup, tmp_path, dgnn_i4):
    from rl_isac.rllib.cluster_warm_start import clustered_expert, collect_clusters
    from rl_isac.rllib.env import ClusterObserver, env_layout, env_scenario
    from rl_isac.training.ppo import prepare

    run, _ = setup
    with pytest.raises(ConfigError, match="bc_expert=.dgnn-milp.: has no clustered version"):
        prepare(24, str(dgnn_i4), str(tmp_path / "a"), preset="large", clusters=2, warm_start=True, **TINY)
    with pytest.raises(ConfigError, match="one cluster only"):
        prepare(24, str(dgnn_i4), str(tmp_path / "b"), preset="large", clusters=2, detection_features=True, **TINY)
    cfg = env_scenario(run["env_config"])
    observer = ClusterObserver(cfg, env_layout(run["env_config"], cfg))
    with pytest.raises(ConfigError, match="has no clustered version"):
        clustered_expert(run["env_config"], "dgnn-ppo", observer.tracker)
    one = {**run["env_config"], "clusters": 1}
    with pytest.raises(ConfigError, match="needs clusters >= 2"):
        collect_clusters(one, "ekf-milp", 1, 0, 0.95)


def test_clustered_expert_decides_on_the_shared_tracker_as_the_clustered_cu(setup):
    """The expert the warm start labels with (ClusteredCU on the env's tracker, decide()) is the clustered
    evaluation's CU exactly: same associations and beams block by block on the same measurements."""
    from rl_isac.controllers import make_controller
    from rl_isac.network import CellFreeNetwork
    from rl_isac.rllib.cluster_warm_start import clustered_expert
    from rl_isac.rllib.env import ClusterObserver, env_layout, env_scenario

    run, _ = setup
    cfg = env_scenario(run["env_config"])
    observer = ClusterObserver(cfg, env_layout(run["env_config"], cfg))
    shared = clustered_expert(run["env_config"], "ekf-milp", observer.tracker)
    own = make_controller("clustered-ekf-milp", cfg, clusters=2)
    net = CellFreeNetwork(cfg)
    acq = net.reset(123)
    observer.reset(acq)
    a_own = own.reset(acq)
    for _ in range(cfg.num_blocks):
        a_shared = shared.decide()
        np.testing.assert_array_equal(a_shared.association, a_own.association)
        np.testing.assert_array_equal(a_shared.beams, a_own.beams)
        meas = net.step(a_own.association, a_own.beams, predicted_positions_m=a_own.prediction_m)
        observer.push(meas)
        a_own = own.act(meas)
        np.testing.assert_array_equal(observer.tracker.slots, own.tracker.slots)
