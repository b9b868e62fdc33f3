"""`rl-isac dgnn-report --driver self`: the DGNN CU drives, and its own EKF anchor is the reference."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rl_isac.cli import main
from rl_isac.scenario import ScenarioConfig
from rl_isac.tracking.dgnn import DGNN, DGNNConfig
from rl_isac.training.pretrain import PretrainConfig, save_checkpoint

CFG = ScenarioConfig.paper(4, fidelity="surrogate")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """An untrained DGNN (zero residual heads: it returns its anchors) and one with a constant offset."""
    torch.manual_seed(0)
    dgnn_cfg = DGNNConfig(hidden_dim=16, ff_dim=32, tam_heads=2)
    out = {}
    for name, bias in (("untrained", 0.0), ("offset", 0.05)):
        model = DGNN(dgnn_cfg)
        with torch.no_grad():
            model.head_now[-1].bias.fill_(bias)
        out[name] = tmp_path_factory.mktemp("dgnn") / name
        save_checkpoint(model, out[name], CFG, dgnn_cfg, PretrainConfig(), seed=0, metrics={})
    return out


def _report(ckpt, tmp_path, name: str) -> dict:
    path = tmp_path / f"{name}.json"
    assert main(["dgnn-report", "--checkpoint", str(ckpt), "--targets", "4", "--episodes", "2", "--blocks", "6",
                 "--fidelity", "surrogate", "--driver", "self", "--json", str(path)]) == 0
    return json.loads(path.read_text())


def test_an_untrained_dgnn_equals_its_anchor_in_closed_loop(checkpoints, tmp_path):
    r = _report(checkpoints["untrained"], tmp_path, "u")
    assert r["closed_loop"] and "anchor" in r["reference"]
    assert r["dgnn"]["rmse_now_m"] == pytest.approx(r["ekf"]["rmse_now_m"], rel=1e-5)
    assert r["paired_rmse_now_difference"]["mean_m"] == pytest.approx(0.0, abs=1e-6)
    assert r["dgnn"]["lost_fraction"] == r["ekf"]["lost_fraction"]


def test_a_constant_offset_makes_the_dgnn_worse_than_its_anchor(checkpoints, tmp_path):
    r = _report(checkpoints["offset"], tmp_path, "o")
    # 0.05 x residual scale 5 m = 0.25 m per axis on top of the anchor: the report must see it
    assert r["dgnn"]["rmse_now_m"] > r["ekf"]["rmse_now_m"] + 0.1
    p = r["paired_rmse_now_difference"]
    assert p["mean_m"] > 0 and p["ekf_better_episodes"] == 2 and p["episodes"] == 2
    assert np.isfinite(r["dgnn"]["rmse_now_ci95_m"])
