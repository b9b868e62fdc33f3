"""Phase-1 pre-training: dataset, loss going down, reproducibility, resume, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rl_isac.association import check_association
from rl_isac.errors import ConfigError
from rl_isac.network import CellFreeNetwork
from rl_isac.scenario import ScenarioConfig
from rl_isac.tracking.dgnn import DGNNConfig
from rl_isac.tracking.dgnn.model import to_tensors
from rl_isac.tracking.window import OBS_KEYS, observation_shapes
from rl_isac.training.pretrain import (
    PretrainConfig,
    generate_dataset,
    load_checkpoint,
    pretrain,
    random_association,
)

CFG = ScenarioConfig.paper(num_targets=3, fidelity="surrogate", window=4)
DGNN_CFG = DGNNConfig(hidden_dim=16, ff_dim=32, tam_heads=2)
TRAIN_CFG = PretrainConfig(train_episodes=3, val_episodes=1, blocks_per_episode=16, epochs=3, batch_size=16,
                           lr=3e-3)


def test_random_association_is_feasible_and_uses_every_chain() -> None:
    rng = np.random.default_rng(0)
    for num_targets in (1, 2, 5, 12):
        for _ in range(20):
            a = random_association(6, num_targets, 2, rng=rng)
            check_association(a, 2)
            assert (a.sum(axis=1) == min(2, num_targets)).all()


def test_dataset_labels_are_the_next_blocks_truth_and_its_nearest_beam() -> None:
    data = generate_dataset(CFG, TRAIN_CFG, seed=1, split=0, num_episodes=1)
    shapes = observation_shapes(CFG)
    Q = TRAIN_CFG.blocks_per_episode
    for key in OBS_KEYS:
        assert data[key].shape == (Q, *shapes[key])
    np.testing.assert_array_equal(data["u_next"][:-1], data["u_now"][1:])
    assert data["block_valid"][0].sum() == 0 and data["block_valid"][-1].all()
    net = CellFreeNetwork(CFG)
    np.testing.assert_array_equal(data["beam_next"][5], net.best_beam_index(data["u_next"][5].astype(float)))
    again = generate_dataset(CFG, TRAIN_CFG, seed=1, split=0, num_episodes=1)
    for key in data:
        np.testing.assert_array_equal(data[key], again[key])


def test_tiny_pretraining_lowers_the_loss_is_reproducible_and_resumes(tmp_path: Path) -> None:
    a = pretrain(CFG, DGNN_CFG, TRAIN_CFG, tmp_path / "a", seed=3, progress=False)
    losses = [h["loss"] for h in a.history[1:]]
    assert a.history[0]["epoch"] == 0 and len(losses) == TRAIN_CFG.epochs
    assert losses[-1] < losses[0]
    # a second run, split in two calls (stop, then resume), gives identical numbers
    b1 = pretrain(CFG, DGNN_CFG, TRAIN_CFG, tmp_path / "b", seed=3, progress=False, stop_after_epoch=2)
    assert len(b1.history) == 3
    b = pretrain(CFG, DGNN_CFG, TRAIN_CFG, tmp_path / "b", seed=3, progress=False, resume=True)
    assert [h["loss"] for h in b.history[1:]] == losses
    assert [h["val_rmse_m"] for h in b.history] == [h["val_rmse_m"] for h in a.history]
    for pa, pb in zip(a.model.state_dict().values(), b.model.state_dict().values()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    # resuming with other configs is refused, naming the problem
    with pytest.raises(ConfigError):
        pretrain(CFG, DGNN_CFG, TRAIN_CFG.replace(lr=1e-2), tmp_path / "b", seed=3, progress=False, resume=True)

    # checkpoint directory: model, configs, metrics, TensorBoard events
    out = tmp_path / "a"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best"]["epoch"] in range(TRAIN_CFG.epochs + 1) and len(metrics["history"]) == TRAIN_CFG.epochs + 1
    assert {"val_rmse_m", "val_rmse_next_m", "anchor_rmse_m", "beam_top1"} <= set(metrics["last"])
    assert list((out / "tb").glob("events.out.tfevents.*"))
    model, configs = load_checkpoint(out)
    assert configs["scenario"] == CFG and configs["dgnn"] == DGNN_CFG and configs["train"] == TRAIN_CFG
    assert configs["seed"] == 3
    val = generate_dataset(CFG, TRAIN_CFG, seed=3, split=1, num_episodes=1)
    obs = to_tensors({k: val[k] for k in OBS_KEYS})
    with torch.no_grad():
        x, y = a.model(obs), model(obs)
    for key in x:
        torch.testing.assert_close(x[key], y[key], rtol=0, atol=0)


def test_pretrain_config_round_trip_and_validation() -> None:
    assert PretrainConfig.from_dict(TRAIN_CFG.to_dict()) == TRAIN_CFG
    for field, kwargs in [("epochs", {"epochs": 0}), ("lr", {"lr": -1.0}),
                          ("association_policies", {"association_policies": ("oracle",), "association_weights": (1,)}),
                          ("association_weights", {"association_weights": (1.0,)})]:
        with pytest.raises(ConfigError) as err:
            PretrainConfig(**kwargs)
        assert err.value.field == field
    with pytest.raises(ConfigError) as err:
        pretrain(CFG, DGNN_CFG.replace(codebook_size=16), TRAIN_CFG, "/nonexistent/never", seed=0, progress=False)
    assert err.value.field == "dgnn.codebook_size"
