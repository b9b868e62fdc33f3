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
from rl_isac.tracking.dgnn.model import DGNN, to_tensors
from rl_isac.tracking.window import FEATURE_INDEX, OBS_KEYS, observation_shapes
from rl_isac.training.pretrain import (
    PretrainConfig,
    generate_closed_loop_dataset,
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


# ---------------------------------------------------------------------------------------------- closed loop (DAgger)
CL_CFG = TRAIN_CFG.replace(data="closed_loop", train_episodes=2, blocks_per_episode=12, epochs=3, dagger_rounds=1,
                           dagger_epochs=2)


def test_closed_loop_round0_records_the_expert_cus_own_states() -> None:
    from rl_isac.seeds import is_evaluation_seed

    data = generate_closed_loop_dataset(CFG, CL_CFG, seed=1, split=0, num_episodes=2)
    Q = CL_CFG.blocks_per_episode
    assert len(data["u_now"]) == 2 * Q and (data["round"] == 0).all()
    assert not any(is_evaluation_seed(int(s)) for s in data["world_seed"])
    scale = data["scales_m"][:, 0, None, None]
    for ep in range(2):
        sl = slice(ep * Q, (ep + 1) * Q)
        np.testing.assert_array_equal(data["u_next"][sl][:-1], data["u_now"][sl][1:])
        # the window's EKF anchor saw exactly the ekf-milp CU's measurements: it is the CU's estimate
        np.testing.assert_allclose(data["anchor"][sl][1:] * scale[sl][1:], data["cu_estimate_m"][sl][1:],
                                   atol=1e-3)
        # the newest block of the next sample holds the association this CU chose (the 'assigned' channel)
        assigned = data["features"][sl][1:, -1, :, :, FEATURE_INDEX["assigned"]] > 0.5
        np.testing.assert_array_equal(assigned, data["cu_association"][sl][:-1])
    again = generate_closed_loop_dataset(CFG, CL_CFG, seed=1, split=0, num_episodes=2)
    for key in data:
        np.testing.assert_array_equal(data[key], again[key])
    # a later round needs the model that drives it, and gets new worlds
    with pytest.raises(ConfigError):
        generate_closed_loop_dataset(CFG, CL_CFG, seed=1, split=0, num_episodes=1, round_index=1)


def test_closed_loop_later_round_is_driven_by_the_dgnn_cu_of_the_model() -> None:
    torch.manual_seed(0)
    model = DGNN(DGNN_CFG)
    with torch.no_grad():  # a non-trivial correction, so the DGNN's estimate differs from its anchor
        model.head_now[-1].bias.fill_(0.02)
        model.head_next[-1].bias.fill_(-0.02)
    data = generate_closed_loop_dataset(CFG, CL_CFG, seed=1, split=0, num_episodes=1, round_index=1, model=model)
    r0 = generate_closed_loop_dataset(CFG, CL_CFG, seed=1, split=0, num_episodes=1)
    assert (data["round"] == 1).all() and data["world_seed"][0] != r0["world_seed"][0]
    out = model.predict({k: data[k][1:] for k in OBS_KEYS})
    # the CU's estimate is the model's output on the recorded window: the samples are the CU's own inputs
    np.testing.assert_allclose(out["u_hat"], data["cu_estimate_m"][1:], atol=1e-4)
    scale = data["scales_m"][1:, 0, None, None]
    assert np.abs(data["cu_estimate_m"][1:] - data["anchor"][1:] * scale).min() > 0.09  # 0.02 x 5 m offset
    # its beams come from the head: the next block was measured with them (every assigned pair's beams)
    assigned = data["features"][1:, -1, :, :, FEATURE_INDEX["assigned"]] > 0.5
    np.testing.assert_array_equal(assigned, data["cu_association"][:-1])


def test_closed_loop_pretraining_lowers_the_loss_is_reproducible_and_resumes(tmp_path: Path) -> None:
    a = pretrain(CFG, DGNN_CFG, CL_CFG, tmp_path / "a", seed=3, progress=False)
    total = CL_CFG.epochs + CL_CFG.dagger_epochs
    trained = [h for h in a.history if h["loss"] is not None]
    assert [h["epoch"] for h in trained] == list(range(1, total + 1))
    assert [h["round"] for h in trained] == [0] * CL_CFG.epochs + [1] * CL_CFG.dagger_epochs
    round0 = [h["loss"] for h in trained if h["round"] == 0]
    assert round0[-1] < round0[0]
    starts = [h for h in a.history if h["loss"] is None]
    assert [h["round"] for h in starts] == [0, 1]
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["data"] == "closed_loop" and metrics["rounds"] == 2 and metrics["best"]["round"] == 1
    assert metrics["num_train_samples"] == 2 * CL_CFG.train_episodes * CL_CFG.blocks_per_episode
    assert (tmp_path / "a" / "rounds" / "policy1.pt").is_file()
    # stop inside round 1 (after its rollouts), resume: identical numbers
    b1 = pretrain(CFG, DGNN_CFG, CL_CFG, tmp_path / "b", seed=3, progress=False, stop_after_epoch=total - 1)
    assert b1.history[-1]["round"] == 1
    b = pretrain(CFG, DGNN_CFG, CL_CFG, tmp_path / "b", seed=3, progress=False, resume=True)
    assert [h["loss"] for h in b.history] == [h["loss"] for h in a.history]
    assert [h["val_loss"] for h in b.history] == [h["val_loss"] for h in a.history]
    for pa, pb in zip(a.model.state_dict().values(), b.model.state_dict().values()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_closed_loop_falls_back_to_the_anchor_when_training_does_not_help(tmp_path: Path) -> None:
    bad = CL_CFG.replace(lr=5.0, grad_clip=0.0, cosine=False, epochs=1, dagger_epochs=1)  # diverges
    res = pretrain(CFG, DGNN_CFG, bad, tmp_path / "c", seed=3, progress=False)
    model, _ = load_checkpoint(tmp_path / "c")
    val = generate_closed_loop_dataset(CFG, bad, seed=3, split=1, num_episodes=1)
    out = model.predict({k: val[k] for k in OBS_KEYS})
    np.testing.assert_allclose(out["u_hat"], val["anchor"] * val["scales_m"][:, 0, None, None], atol=1e-4)
    best = json.loads((tmp_path / "c" / "metrics.json").read_text())["best"]
    assert best["val_loss"] <= min(h["val_loss"] for h in res.history if h["round"] == 1)


def test_closed_loop_config_validation() -> None:
    assert PretrainConfig.from_dict(CL_CFG.to_dict()) == CL_CFG
    assert CL_CFG.num_rounds == 2 and TRAIN_CFG.num_rounds == 1
    for field, kwargs in [("data", {"data": "offline"}), ("dagger_rounds", {"dagger_rounds": -1}),
                          ("dagger_solver", {"dagger_solver": "oracle"}), ("expert", {"expert": "dgnn-milp"}),
                          ("dagger_epochs", {"dagger_epochs": 0})]:
        with pytest.raises(ConfigError) as err:
            PretrainConfig(**kwargs)
        assert err.value.field == field


def test_huber_position_loss_is_the_squared_error_near_and_linear_far() -> None:
    from rl_isac.training.pretrain import pretrain_loss

    B, M, I, C = 2, CFG.num_bs, 3, CFG.codebook_size
    truth = torch.zeros(B, I, 2)
    logits = torch.zeros(B, M, I, C)
    batch = {"u_now": truth, "u_next": truth, "beam_next": torch.zeros(B, M, I, dtype=torch.int64)}
    huber = TRAIN_CFG.replace(huber_delta_m=1.0, beam_loss_weight=0.0)
    mse = TRAIN_CFG.replace(beam_loss_weight=0.0)
    for err_m, expected_huber in ((0.5, 0.25), (10.0, 2 * 10.0 - 1.0)):
        est = torch.full((B, I, 2), 0.0)
        est[..., 0] = err_m
        est.requires_grad_(True)
        out = {"u_hat": est, "u_tilde": est.detach(), "beam_logits_tx": logits, "beam_logits_rx": logits}
        _, parts = pretrain_loss(out, batch, huber)
        assert parts["mse_now"] == pytest.approx(expected_huber)
        assert pretrain_loss(out, batch, mse)[1]["mse_now"] == pytest.approx(err_m**2)
        loss, _ = pretrain_loss(out, batch, huber)
        loss.backward()
        assert float(est.grad.abs().max()) <= 2.0 / (B * I) + 1e-6  # bounded pull: 2 delta per target
    with pytest.raises(ConfigError) as err:
        PretrainConfig(huber_delta_m=0.0)
    assert err.value.field == "huber_delta_m"


def test_targets_whose_anchor_is_lost_can_be_left_out_of_the_position_loss() -> None:
    from rl_isac.training.pretrain import pretrain_loss

    B, M, I, C = 1, CFG.num_bs, 2, CFG.codebook_size
    scale = 300.0
    truth = torch.zeros(B, I, 2)
    anchor = torch.tensor([[[0.1, 0.0], [30.0, 0.0]]]) / scale  # target 0 held (0.1 m), target 1 lost (30 m)
    batch = {"u_now": truth, "u_next": truth, "beam_next": torch.zeros(B, M, I, dtype=torch.int64),
             "anchor": anchor, "anchor_next": anchor, "scales_m": torch.tensor([[scale, 5.0, 316.0]])}
    est = torch.tensor([[[0.2, 0.0], [20.0, 0.0]]])
    logits = torch.zeros(B, M, I, C)
    out = {"u_hat": est, "u_tilde": est, "beam_logits_tx": logits, "beam_logits_rx": logits}
    cfg = TRAIN_CFG.replace(beam_loss_weight=0.0)
    assert pretrain_loss(out, batch, cfg)[1]["mse_now"] == pytest.approx((0.04 + 400.0) / 2)
    masked = pretrain_loss(out, batch, cfg.replace(max_anchor_error_m=5.0))[1]
    assert masked["mse_now"] == pytest.approx(0.04) and masked["mse_next"] == pytest.approx(0.04)
    with pytest.raises(ConfigError) as err:
        PretrainConfig(max_anchor_error_m=-1.0)
    assert err.value.field == "max_anchor_error_m"
