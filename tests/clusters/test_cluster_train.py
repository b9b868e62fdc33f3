"""``rl-isac train --preset large --clusters 2``: the checks before Ray, and a tiny PPO run with one shared module."""

from __future__ import annotations

import json

import pytest

from rl_isac.errors import ConfigError

TINY = dict(train_batch_size=48, minibatch_size=24, num_epochs=1, blocks=6, hidden=16, critic_hidden=16,
            checkpoint_every=1)


def test_clustered_run_is_checked_before_ray(dgnn_i4, tmp_path):
    from rl_isac.training.ppo import prepare

    # spare capacity (12 targets on 2 x 12 slots: empty slots) trains: env and module mask empty slots
    assert prepare(12, str(dgnn_i4), str(tmp_path / "a"), preset="large", clusters=2, **TINY)["targets"] == 12
    with pytest.raises(ConfigError, match="needs every target covered"):  # more targets than RF chains
        prepare(30, str(dgnn_i4), str(tmp_path / "a2"), preset="large", clusters=2, **TINY)
    with pytest.raises(ConfigError, match="has no clustered version"):  # the default expert dgnn-milp
        prepare(24, str(dgnn_i4), str(tmp_path / "b"), preset="large", clusters=2, warm_start=True, **TINY)
    assert prepare(24, str(dgnn_i4), str(tmp_path / "b2"), preset="large", clusters=2, warm_start=True,
                   bc_expert="ekf-milp", **TINY)["train"]["warm_start"]
    with pytest.raises(ConfigError, match="divide the 12 BSs"):
        prepare(24, str(dgnn_i4), str(tmp_path / "c"), preset="large", clusters=5, **TINY)
    with pytest.raises(ConfigError, match="--pretrained"):
        prepare(24, str(tmp_path / "missing"), str(tmp_path / "d"), preset="large", clusters=2, **TINY)
    run = prepare(24, str(dgnn_i4), str(tmp_path / "e"), preset="large", clusters=4, **TINY)
    assert run["env_config"]["clusters"] == 4 and run["env_config"]["preset"] == "large"
    # a paper run without clusters keeps its env_config as before (resume of existing runs)
    assert "clusters" not in prepare(4, str(dgnn_i4), str(tmp_path / "f"), **TINY)["env_config"]


@pytest.mark.slow
def test_train_large_with_two_clusters_one_shared_module(dgnn_i4, tmp_path):
    import ray
    from ray.rllib.core.rl_module.rl_module import RLModule

    from rl_isac.rllib.env import agent_spaces
    from rl_isac.rllib.module import ISACPPOModule
    from rl_isac.training.ppo import train

    out = tmp_path / "run"
    lines: list[str] = []
    # with the clustered warm start (clustered ekf-milp cloned into the shared module; tiny) PPO starts from
    train(24, str(dgnn_i4), str(out), iterations=1, preset="large", clusters=2, num_env_runners=0,
          envs_per_runner=1, seed=1, echo=lines.append, warm_start=True, bc_expert="ekf-milp", bc_episodes=2,
          bc_epochs=1, **TINY)
    assert not ray.is_initialized()
    meta = json.loads((out / "train_config.json").read_text())
    assert meta["iterations"] == 1 and meta["env_config"]["clusters"] == 2
    assert meta["warm_start"]["expert"] == "clustered-ekf-milp" and (out / "warm_start.pt").is_file()
    assert meta["cluster_repair"] == "information"  # the layout rule the env trained with, reused by evaluate
    row = json.loads((out / "learning_curve.json").read_text())["iterations"][0]
    assert row["env_steps"] >= TINY["train_batch_size"] and row["rmse_m"] == row["rmse_m"]  # finite RMSE
    modules = out / "checkpoint" / "learner_group" / "learner" / "rl_module"
    assert sorted(p.name for p in modules.iterdir() if p.is_dir()) == ["cu_policy"]  # one module for cu_0, cu_1
    module = RLModule.from_checkpoint(str(modules / "cu_policy"))
    assert isinstance(module, ISACPPOModule)
    obs_space, _ = agent_spaces(meta["env_config"])
    assert module.observation_space["features"].shape == obs_space["features"].shape == (8, 6, 12, 12)
    assert "target_valid" in module.observation_space.spaces
    assert any(line.startswith("it   1") for line in lines)
    # the trained policy in the harness, one shared module over both clusters (the cluster count from the run)
    from rl_isac.cli import main

    res = tmp_path / "eval.json"
    assert main(["evaluate", "--preset", "large", "--targets", "24", "--clusters", "2", "--method", "dgnn-ppo",
                 "--checkpoint", str(out), "--episodes", "1", "--blocks", "3", "--fidelity", "surrogate",
                 "--json", str(res)]) == 0
    r = json.loads(res.read_text())
    assert r["method"] == "dgnn-ppo/C2" and r["violations"] == 0 and r["clusters"] == 2
    # results/clusters_ppo's comparison on the same worlds (tiny): the three rows, paired to both ekf-milp rows
    from rl_isac.rllib.bench_clusters import ppo_comparison

    cmp = ppo_comparison(out, targets=24, episodes=2, blocks=2, fidelity="surrogate", echo=lambda s: None)
    names = [r["method"] for r in cmp["evaluation"]]
    assert names == ["dgnn-ppo/C2", "ekf-milp/C2", "ekf-milp (whole network)"]
    assert cmp["evaluation"][0]["world_seeds"] == cmp["evaluation"][2]["world_seeds"]
    assert cmp["evaluation"][1]["vs_clustered_ekf_milp_m"][0] == 0.0 and cmp["protocol"]["clusters"] == 2
    assert "--cluster-ppo" in cmp["table_md"] and "not the 30 x 100" in cmp["table_md"]
    assert cmp["training"]["warm_start"]["expert"] == "clustered-ekf-milp"
    from rl_isac.controllers import make_controller
    from rl_isac.scenario import ScenarioConfig

    assert make_controller("clustered-dgnn-ppo", ScenarioConfig.large(), checkpoint=str(out)).layout.repair == \
        "information"
    with pytest.raises(ConfigError, match="trained with 2 clusters"):
        make_controller("clustered-dgnn-ppo", ScenarioConfig.large(), checkpoint=str(out), clusters=4)


def test_cli_train_clusters_default_targets_and_errors(dgnn_i4, tmp_path, capsys):
    from rl_isac.cli import main

    rc = main(["train", "--preset", "large", "--clusters", "2", "--targets", "30", "--pretrained", str(dgnn_i4),
               "--out", str(tmp_path / "x"), "--iterations", "1"])
    assert rc == 2 and "needs every target covered" in capsys.readouterr().err
    rc = main(["train", "--preset", "large", "--clusters", "5", "--pretrained", str(dgnn_i4),
               "--out", str(tmp_path / "y"), "--iterations", "1"])
    assert rc == 2 and "clusters=5: must divide the 12 BSs" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()  # refused before anything is written
