"""`rl-isac bench --only-ppo`: the PPO pipeline's figures, with a recipe's settings when asked."""

from __future__ import annotations

import math

import pytest


def test_ppo_config_outside_the_ppo_figures_is_refused(capsys):
    from rl_isac.cli import main

    assert main(["bench", "--ppo-config", "results/checkpoints/ppo.yaml"]) != 0
    assert "--only-ppo" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quick_ppo_bench_measures_the_given_recipe(tmp_path):
    pytest.importorskip("ray.rllib")
    from rl_isac.rllib.bench import ppo_bench

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("num_envs_per_env_runner: 2\nlr: 0.0001\ndetection_features: true\n")
    out = ppo_bench(quick=True, config=str(recipe), echo=lambda s: None)
    settings = out["settings"]
    assert settings["config"] == str(recipe)
    # the recipe's layout and settings reach both pipelines (quick mode shrinks only the batch sizes)
    assert settings["train"]["num_envs_per_env_runner"] == 2 and settings["train"]["lr"] == 0.0001
    assert settings["train"]["detection_features"] is True  # the actor option reaches the env and the module
    for key in ("ppo_env_steps_per_s", "rllib_floor_env_steps_per_s", "ppo_over_floor", "ppo_decision_ms_p99"):
        assert math.isfinite(out[key]) and out[key] > 0, key
