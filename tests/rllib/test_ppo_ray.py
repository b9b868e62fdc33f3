"""PPO end to end on Ray (tiny sizes, one Ray session for this module), reload without Ray, train/resume CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from rl_isac.errors import ConfigError

pytestmark = pytest.mark.slow

TINY = dict(train_batch_size=48, minibatch_size=24, num_epochs=1, blocks=6, hidden=16, critic_hidden=16,
            checkpoint_every=1)


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _observations(seed: int = 11, steps: int = 5):
    """Observations of a nearest-association rollout (the policy's inputs, independent of any policy)."""
    from rl_isac.association import association_to_sub_actions
    from rl_isac.rllib.env import ISACMultiAgentEnv
    from rl_isac.tracking.window import stack_observations

    env = ISACMultiAgentEnv({"targets": 4, "blocks": steps})
    obs, _ = env.reset(seed=seed)
    out = []
    for _ in range(steps):
        out.append(obs["cu_0"])
        pred = env.window.anchor_next_m
        a = {"pairs": association_to_sub_actions(env.world.nearest_association(pred), 2),
             "beams": env.world.beams_toward(pred).reshape(-1), "estimate": env.window.anchor_m.reshape(-1)}
        obs, *_ = env.step({"cu_0": a})
    return stack_observations(out)


RELOAD = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    import ray
    from ray.rllib.core.columns import Columns
    from rl_isac.rllib.controller import load_module
    obs = dict(np.load(sys.argv[2]))
    module = load_module(sys.argv[1])
    with torch.no_grad():
        out = module.forward_inference({Columns.OBS: {k: torch.as_tensor(v) for k, v in obs.items()}})
    acts = out[Columns.ACTIONS]
    from rl_isac.evaluation.harness import evaluate
    r = evaluate("dgnn-ppo", targets=4, episodes=1, blocks=3, fidelity="surrogate", checkpoint=sys.argv[3],
                 progress=False)
    print(json.dumps({"ray_initialized": ray.is_initialized(), "cls": type(module).__qualname__,
                      "pairs": acts["pairs"].tolist(), "beams": acts["beams"].tolist(),
                      "estimate": acts["estimate"].tolist(), "violations": r["violations"], "rmse_m": r["rmse_m"]}))
""")


def test_ppo_iteration_end_to_end_and_module_reloads_without_ray(ray_session, dgnn_i4, tmp_path):
    from ray.rllib.core.columns import Columns

    from rl_isac.rllib.callbacks import MODULE_ID
    from rl_isac.rllib.config import PPOTrainConfig, build_ppo_config, env_config_for
    from rl_isac.training.ppo import module_dir
    from rl_isac.training.pretrain import load_configs

    tcfg = PPOTrainConfig(num_env_runners=1, num_envs_per_env_runner=2, **TINY)
    algo = build_ppo_config(tcfg, env_config_for(tcfg, 4, seed=0), load_configs(dgnn_i4)["dgnn"].to_dict(),
                            str(dgnn_i4 / "model.pt"), seed=0).build_algo()
    try:
        result = algo.train()
        learner = result["learners"][MODULE_ID]
        assert np.isfinite(learner["policy_loss"]) and np.isfinite(learner["vf_loss"])
        assert np.isfinite(learner["entropy"]) and learner["entropy"] > 0
        env = result["env_runners"]
        assert env["num_env_steps_sampled"] >= tcfg.train_batch_size
        for key in ("tracking/rmse_m", "tracking/pcrb_m", "tracking/lost_fraction", "phy/missed_fraction",
                    "assoc/violations"):
            assert key in env, key
        assert env["assoc/violations"] == 0
        assert {"assoc", "losses", "perf"} <= set(result) and result["perf"]["env_steps_per_s"] > 0
        out = tmp_path / "run"
        algo.save_to_path(str((out / "checkpoint").resolve()))
        trained = algo.learner_group._learner.module[MODULE_ID]
        obs = _observations()
        with torch.no_grad():
            ref = trained.forward_inference({Columns.OBS: {k: torch.as_tensor(v) for k, v in obs.items()}})
    finally:
        algo.stop()
    np.savez(tmp_path / "obs.npz", **obs)
    (out / "train_config.json").write_text(json.dumps({"targets": 4}))
    # the harness gets the run directory as a relative path (as typed on a command line)
    proc = subprocess.run([sys.executable, "-c", RELOAD, str(module_dir(out)), str(tmp_path / "obs.npz"), "run"],
                          capture_output=True, text=True, timeout=240, cwd=tmp_path,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["ray_initialized"] is False and got["cls"] == "ISACPPOModule"
    acts = ref[Columns.ACTIONS]
    np.testing.assert_array_equal(np.array(got["pairs"]), acts["pairs"].numpy())
    np.testing.assert_array_equal(np.array(got["beams"]), acts["beams"].numpy())
    np.testing.assert_allclose(np.array(got["estimate"]), acts["estimate"].numpy(), rtol=0, atol=1e-6)
    assert got["violations"] == 0 and np.isfinite(got["rmse_m"])


def test_train_command_checkpoints_and_resumes(ray_session, dgnn_i4, tmp_path):
    from rl_isac.training.ppo import train

    out = tmp_path / "cli"
    lines: list[str] = []
    kw = dict(num_env_runners=0, envs_per_runner=2, seed=3, **TINY)
    train(4, str(dgnn_i4), str(out), iterations=1, echo=lines.append, **kw)
    meta = json.loads((out / "train_config.json").read_text())
    assert meta["iterations"] == 1 and meta["seed"] == 3 and meta["git_revision"]
    assert meta["train"]["train_batch_size"] == TINY["train_batch_size"]
    assert (out / "learning_curve.png").is_file() and list((out / "tb").glob("events.out.tfevents.*"))
    assert len(lines) == 1 and lines[0].startswith("it   1") and "steps/s" in lines[0]
    with pytest.raises(ConfigError, match="already holds"):
        train(4, str(dgnn_i4), str(out), iterations=2, **kw)
    with pytest.raises(ConfigError, match="differs"):
        train(4, str(dgnn_i4), str(out), iterations=2, resume=True, **{**kw, "lr": 1e-3})
    train(4, str(dgnn_i4), str(out), iterations=2, resume=True, echo=lines.append, **kw)
    curve = json.loads((out / "learning_curve.json").read_text())["iterations"]
    assert [row["iteration"] for row in curve] == [1, 2]
    assert curve[1]["env_steps"] > curve[0]["env_steps"] and lines[-1].startswith("it   2")
    assert json.loads((out / "train_config.json").read_text())["iterations"] == 2
    # a time budget stops the run (here before any further iteration); the run stays resumable
    train(4, str(dgnn_i4), str(out), time_budget_s=1e-9, resume=True, echo=lines.append, **kw)
    assert len(json.loads((out / "learning_curve.json").read_text())["iterations"]) == 2
    with pytest.raises(ConfigError, match="iterations/--time-budget-s"):
        train(4, str(dgnn_i4), str(out), resume=True, **kw)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for f in (out / "tb").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(f))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    for tag in ("tracking/rmse_m", "tracking/pcrb_m", "tracking/lost_fraction", "assoc/violations", "assoc/entropy",
                "phy/missed_fraction", "losses/policy", "losses/vf", "perf/env_steps_per_s"):
        assert tag in tags, (tag, sorted(tags))


def test_a_crashing_env_runner_is_restarted_and_training_continues(ray_session, dgnn_i4, tmp_path):
    from rl_isac.rllib import faults
    from rl_isac.rllib.callbacks import MODULE_ID
    from rl_isac.rllib.config import PPOTrainConfig, build_ppo_config, env_config_for
    from rl_isac.training.pretrain import load_configs

    tcfg = PPOTrainConfig(num_env_runners=1, num_envs_per_env_runner=1, **TINY)
    env_config = env_config_for(tcfg, 4, seed=0)
    config = build_ppo_config(tcfg, env_config, load_configs(dgnn_i4)["dgnn"].to_dict(),
                              str(dgnn_i4 / "model.pt"), seed=0)
    marker = tmp_path / "crashed"
    config.environment(faults.register(), env_config={**env_config, "crash_marker": str(marker),
                                                      "crash_at_step": 4})
    algo = config.build_algo()
    try:
        results = [algo.train()]
        assert marker.exists(), "the injected crash never happened"
        # the runner is out of service until RLlib's health probe sees the restarted actor (a few s on a quiet
        # machine; the restarted process re-imports torch and reloads the DGNN, much longer on a loaded one):
        # a bounded wait, not a timing claim
        deadline = time.monotonic() + 240.0
        while time.monotonic() < deadline:
            results.append(algo.train())
            healthy = algo.env_runner_group.num_healthy_remote_workers() == 1
            if healthy and results[-1]["env_runners"].get("num_env_steps_sampled", 0) >= tcfg.train_batch_size:
                break
            if not healthy:
                time.sleep(2.0)
        # the runner process died with the env's exception and was brought back (Ray restarts the actor
        # itself, so RLlib's own restart counter may stay 0): a healthy runner keeps sampling afterwards
        assert algo.env_runner_group.num_healthy_remote_workers() == 1
        last = results[-1]
        assert np.isfinite(last["learners"][MODULE_ID]["policy_loss"])
        assert last["env_runners"]["num_env_steps_sampled"] >= tcfg.train_batch_size
    finally:
        algo.stop()
