"""dev_compare: PPO checkpoints against dgnn-milp on training-side worlds, never evaluation seeds."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("ray.rllib")

REPO = Path(__file__).resolve().parents[2]
PPO_I4 = REPO / "results" / "checkpoints" / "ppo-I4"


def test_dev_compare_runs_training_side_worlds_and_pairs_against_the_milp():
    if not (PPO_I4 / "train_config.json").is_file():
        pytest.skip("reference checkpoint ppo-I4 not in this checkout")
    from rl_isac.seeds import is_evaluation_seed, training_world_seed
    from rl_isac.training.dev_compare import DEV_SPLIT, compare, markdown

    assert not any(is_evaluation_seed(training_world_seed(0, DEV_SPLIT, e)) for e in range(50))
    res = compare(4, [str(PPO_I4)], episodes=2, blocks=3, fidelity="surrogate",
                  dgnn=str(REPO / "results" / "checkpoints" / "dgnn-I4"), warm_dirs=(str(PPO_I4),), echo=lambda s: None)
    rows = res["methods"]
    assert list(rows) == ["dgnn-milp", f"dgnn-ppo:{PPO_I4}", f"warm-start-only:{PPO_I4}"]
    for label, r in rows.items():
        assert len(r["rmse_per_episode_m"]) == 2 and r["ci95_m"][0] <= r["rmse_m"] <= r["ci95_m"][1]
        assert ("minus_dgnn_milp_m" in r) == (label != "dgnn-milp")
    assert "| dgnn-milp |" in markdown(res)
