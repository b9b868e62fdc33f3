"""The clustered classical CU (rl_isac.controllers.clustered): C = 1 is the whole-network CU, constraints
hold per cluster, same seed same numbers, the registry and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rl_isac.cli import main
from rl_isac.controllers import make_controller
from rl_isac.controllers.clustered import ClusteredCU, make_clustered_controller
from rl_isac.errors import ConfigError
from rl_isac.evaluation.harness import evaluate
from rl_isac.network import CellFreeNetwork
from rl_isac.scenario import ScenarioConfig


def test_one_cluster_is_the_whole_network_cu_exactly():
    cfg = ScenarioConfig.paper(6, fidelity="surrogate", num_blocks=25)
    whole = evaluate("ekf-milp", cfg=cfg, episodes=2, blocks=25, progress=False)
    one = evaluate("ekf-milp", cfg=cfg, episodes=2, blocks=25, progress=False,
                   controller=make_clustered_controller("ekf-milp", cfg, 1))
    assert one["rmse_per_episode_m"] == whole["rmse_per_episode_m"]
    assert one["pcrb_rmse_m"] == whole["pcrb_rmse_m"] and one["missed_fraction"] == whole["missed_fraction"]


@pytest.mark.parametrize("clusters, targets", [(2, 24), (4, 24), (4, 10)])
def test_constraints_hold_per_cluster(clusters, targets):
    cfg = ScenarioConfig.large(num_targets=targets, fidelity="surrogate", num_blocks=30)
    cu = make_clustered_controller("ekf-milp", cfg, clusters)
    net = CellFreeNetwork(cfg)
    action = cu.reset(net.reset(5))
    L = cu.layout
    for _ in range(30):
        owner = cu.tracker.owner.copy()
        for c in range(clusters):
            bs = L.bs_array(c)
            mine = owner == c
            a = action.association[bs]
            assert not a[:, ~mine].any()                      # a cluster's BSs look only at its own targets
            assert (a.sum(axis=1) <= cfg.num_rf).all()        # (5c) per BS
            assert a[:, mine].any(axis=0).all()               # (5d): every owned target covered by the cluster
            assert mine.sum() <= L.capacity
        other = np.ones(cfg.num_bs, bool)
        assert action.association[other].any(axis=0).all()   # hence (5d) for the network
        action = cu.act(net.step(action.association, action.beams, predicted_positions_m=action.prediction_m))


def test_same_seed_same_numbers_and_registered_name():
    cfg = ScenarioConfig.large(num_targets=12, fidelity="surrogate", num_blocks=15)
    runs = [evaluate("clustered-ekf-milp", cfg=cfg, episodes=1, blocks=15, progress=False,
                     controller=make_controller("clustered-ekf-milp", cfg, clusters=2)) for _ in range(2)]
    assert runs[0]["rmse_per_block_m"] == runs[1]["rmse_per_block_m"]
    assert runs[0]["method"] == "ekf-milp/C2"
    assert isinstance(make_controller("clustered-ekf-greedy", cfg, clusters=4), ClusteredCU)
    with pytest.raises(ConfigError, match="no clustered version"):
        make_clustered_controller("dgnn-ppo", cfg, 2)
    with pytest.raises(ConfigError, match="divide the 12 BSs"):
        make_controller("clustered-ekf-milp", cfg, clusters=5)


def test_cli_evaluate_clusters(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(["evaluate", "--preset", "large", "--targets", "8", "--clusters", "4", "--method", "ekf-milp",
               "--episodes", "1", "--blocks", "4", "--fidelity", "surrogate", "--json", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["method"] == "ekf-milp/C4" and r["clusters"] == 4 and r["targets"] == 8 and r["preset"] == "large"
    assert "ekf-milp/C4" in capsys.readouterr().out
