"""dgnn-l2o (Benchmark II): dataset, supervised training, checkpoint files, the CU through the harness."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from rl_isac.cli import build_parser, main
from rl_isac.controllers import make_controller
from rl_isac.errors import ConfigError
from rl_isac.scenario import ScenarioConfig
from rl_isac.seeds import EVAL_SEED_BASE
from rl_isac.tracking.dgnn import DGNNConfig
from rl_isac.training.l2o import (
    L2OTrainConfig,
    evaluate_l2o,
    generate_l2o_dataset,
    load_l2o,
    scenario_for,
    train_l2o,
)
from rl_isac.training.pretrain import PretrainConfig, pretrain

CFG = ScenarioConfig.paper(4, fidelity="surrogate")
RUN = dict(episodes=3, val_episodes=1, blocks=10, epochs=4, lr=3e-3, seed=5)


@pytest.fixture(scope="module")
def dgnn_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dgnn")
    pretrain(CFG, DGNNConfig(hidden_dim=16), PretrainConfig(train_episodes=2, val_episodes=1, blocks_per_episode=10,
                                                            epochs=1), out, seed=0, progress=False)
    return out


@pytest.fixture(scope="module")
def l2o_run(dgnn_dir: Path, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("l2o")
    return out, train_l2o(dgnn_dir, out_dir=out, progress=False, **RUN)


def test_dataset_holds_milp_labels_of_training_seeds_only(dgnn_dir: Path) -> None:
    data = generate_l2o_dataset(CFG, dgnn_dir, seed=1, split=0, num_episodes=2, blocks=4)
    assert data["label"].shape == (8, CFG.num_bs, CFG.num_targets) and data["label"].dtype == bool
    assert data["target_embedding"].shape == (8, CFG.num_targets, 16)
    assert data["info"].shape == (8, CFG.num_bs, CFG.num_targets, 2, 2)
    assert (data["world_seed"] < EVAL_SEED_BASE).all() and len(set(data["world_seed"].tolist())) == 2
    assert data["detection_prob"].shape == (8, CFG.num_bs, CFG.num_targets)
    # each label is the exact optimum of its objective (the MILP dgnn-milp solves: detection, chain price)
    from rl_isac.association import DEFAULT_CHAIN_PRICE, make_solver

    milp = make_solver("milp", chain_price=DEFAULT_CHAIN_PRICE)
    for lab, f, p, det in zip(data["label"], data["info"], data["prior_info"], data["detection_prob"]):
        np.testing.assert_array_equal(milp.solve(f, p, CFG.num_rf, det), lab)


def test_tiny_training_lowers_the_loss_writes_its_files_and_is_reproducible(l2o_run, dgnn_dir: Path,
                                                                           tmp_path: Path) -> None:
    out, metrics = l2o_run
    losses = [h["loss"] for h in metrics["history"][1:]]
    assert len(losses) == RUN["epochs"] and losses[-1] < losses[0]
    for name in ("l2o.pt", "l2o_config.yaml", "l2o_metrics.json", "model.pt", "config.yaml"):
        assert (out / name).is_file()
    assert list((out / "tb_l2o").iterdir())
    assert not list(out.glob("*.tmp"))
    for key in ("val_pair_acc", "val_exact", "val_gap"):
        assert key in metrics["best"]
    assert metrics["best"]["val_gap"] >= -1e-9
    # the same run through the CLI: identical losses
    again = tmp_path / "again"
    assert main(["train-l2o", "--checkpoint", str(dgnn_dir), "--out", str(again), "--episodes", "3",
                 "--val-episodes", "1", "--blocks", "10", "--epochs", "4", "--lr", "3e-3", "--seed", "5",
                 "--fidelity", "surrogate"]) == 0
    history = json.loads((again / "l2o_metrics.json").read_text())["history"]
    assert [h["loss"] for h in history] == [h["loss"] for h in metrics["history"]]


def test_cli_defaults_match_the_training_config() -> None:
    args = build_parser().parse_args(["train-l2o", "--checkpoint", "X"])
    d = L2OTrainConfig()
    assert (args.episodes, args.val_episodes, args.blocks, args.epochs, args.lr, args.loss, args.fidelity) == (
        d.episodes, d.val_episodes, d.blocks, d.epochs, d.lr, d.loss, d.fidelity)


def test_saved_head_reproduces_its_validation_scores(l2o_run, dgnn_dir: Path) -> None:
    out, metrics = l2o_run
    head, configs = load_l2o(out)
    assert configs["seed"] == RUN["seed"] and configs["l2o"].embedding_dim == 16
    val = generate_l2o_dataset(scenario_for(dgnn_dir), dgnn_dir, seed=RUN["seed"], split=1, num_episodes=1,
                               blocks=RUN["blocks"])
    again = evaluate_l2o(head, val, CFG.num_rf)
    for key in ("val_pair_acc", "val_exact", "val_gap", "val_bce"):
        assert again[key] == metrics["best"][key]
    head2, _ = load_l2o(out)
    obs = {k: val[k][:3] for k in ("bs_positions", "scales_m", "anchor_log_std", "anchor_age")}
    dgnn_out = {k: val[k][:3] for k in ("target_embedding", "u_tilde")}
    np.testing.assert_array_equal(head.scores(dgnn_out, obs), head2.scores(dgnn_out, obs))


def test_dgnn_l2o_needs_its_head_and_the_dgnn_it_was_trained_on(l2o_run, dgnn_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train-l2o --checkpoint"):
        make_controller("dgnn-l2o", CFG, checkpoint=str(dgnn_dir))
    out, _ = l2o_run
    other = tmp_path / "other"
    shutil.copytree(out, other)
    doc = yaml.safe_load((other / "l2o_config.yaml").read_text())
    doc["dgnn_sha256"] = "0" * 64
    (other / "l2o_config.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="another model.pt"):
        make_controller("dgnn-l2o", CFG, checkpoint=str(other))


def test_evaluate_dgnn_l2o_through_the_cli(l2o_run, tmp_path: Path) -> None:
    out, _ = l2o_run
    result = tmp_path / "r.json"
    assert main(["evaluate", "--method", "dgnn-l2o", "--checkpoint", str(out), "--targets", "4", "--episodes", "1",
                 "--blocks", "5", "--fidelity", "surrogate", "--json", str(result)]) == 0
    r = json.loads(result.read_text())
    assert r["method"] == "dgnn-l2o" and r["violations"] == 0 and np.isfinite(r["rmse_m"])
    # the associator really uses the head after the first block
    cu = make_controller("dgnn-l2o", CFG, checkpoint=str(out))
    from rl_isac.network import CellFreeNetwork

    net = CellFreeNetwork(CFG)
    action = cu.reset(net.reset(7))
    assert cu.associator.last_scores is None  # before the first block: greedy fallback
    action = cu.act(net.step(action.association, action.beams, predicted_positions_m=action.prediction_m))
    assert cu.associator.last_scores.shape == (CFG.num_bs, CFG.num_targets)


def test_sequential_loss_with_stop_teaches_the_idle_chains() -> None:
    from rl_isac.training.l2o import sequential_loss

    rng = np.random.default_rng(3)
    labels = np.zeros((6, 3, 4), dtype=bool)  # M = 3 BSs, I = 4 targets, N_RF = 2: 6 chains, 4-6 used
    for b in range(6):
        labels[b, rng.permutation(3)[:3], [0, 1, 2]] = True
        labels[b, b % 3, 3] = True
        if b % 2:
            labels[b, (b + 1) % 3, 3] = True
    perfect = torch.from_numpy(np.where(labels, 20.0, -20.0)).float().requires_grad_()
    loss = sequential_loss(perfect, labels, 2, stop_score=0.0)
    assert float(loss) < 1e-6
    scores = torch.from_numpy(rng.standard_normal(labels.shape)).float().requires_grad_()
    loss = sequential_loss(scores, labels, 2, stop_score=0.0)
    loss.backward()
    assert float(loss) > 0.1 and torch.isfinite(scores.grad).all() and scores.grad.abs().sum() > 0
    # a pair scored above STOP where A* stops costs loss: the STOP step is trained
    over = torch.from_numpy(np.where(labels, 20.0, 1.0)).float()
    assert float(sequential_loss(over, labels, 2, stop_score=0.0)) > 0.1
