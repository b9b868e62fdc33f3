"""`rl-isac compare` (methods x sizes, refusals reported) and `rl-isac dgnn-report` on a tiny checkpoint."""

from __future__ import annotations

import json

import pytest

from rl_isac.cli import main
from rl_isac.scenario import ScenarioConfig


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from rl_isac.tracking.dgnn import DGNNConfig
    from rl_isac.training.pretrain import PretrainConfig, pretrain

    out = tmp_path_factory.mktemp("dgnn") / "ckpt"
    pretrain(ScenarioConfig.paper(4, fidelity="surrogate"), DGNNConfig(hidden_dim=16),
             PretrainConfig(train_episodes=2, val_episodes=1, blocks_per_episode=8, epochs=1), out, seed=0,
             progress=False)
    return out


def test_compare_reports_exhaustive_refusal_at_i8_as_the_papers_oom(tmp_path, capsys):
    out = tmp_path / "cmp.json"
    rc = main(["compare", "--methods", "ekf-greedy", "ekf-exhaustive", "--targets", "4", "8", "--episodes", "1",
               "--blocks", "3", "--fidelity", "surrogate", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert {(r["method"], r["targets"]) for r in data["results"]} == {("ekf-greedy", 4), ("ekf-greedy", 8),
                                                                      ("ekf-exhaustive", 4)}
    assert data["refused"][0]["method"] == "ekf-exhaustive" and "2565726409" in data["refused"][0]["reason"]
    assert "refused" in out.with_suffix(".md").read_text()


def test_dgnn_methods_evaluate_from_a_checkpoint_and_need_one(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "e.json"
    assert main(["evaluate", "--method", "dgnn-milp", "--checkpoint", str(tiny_checkpoint), "--targets", "4",
                 "--episodes", "1", "--blocks", "4", "--fidelity", "surrogate", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["violations"] == 0
    assert main(["evaluate", "--method", "dgnn-milp", "--targets", "4", "--episodes", "1", "--blocks", "4"]) == 2
    assert "checkpoint" in capsys.readouterr().err


def test_dgnn_report_compares_with_the_ekf_on_the_same_sequences(tiny_checkpoint, tmp_path):
    out = tmp_path / "r.json"
    assert main(["dgnn-report", "--checkpoint", str(tiny_checkpoint), "--targets", "4", "--episodes", "1",
                 "--blocks", "5", "--fidelity", "surrogate", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    for est in ("dgnn", "ekf"):
        assert r[est]["rmse_now_m"] > 0 and r[est]["rmse_next_m"] > 0
    assert 0 <= r["beam_top1"] <= r["beam_top2"] <= 1
    assert r["dgnn_ms_p50"] > 0
