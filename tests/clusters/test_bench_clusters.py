"""``rl-isac bench --clusters`` runs end to end at tiny sizes and writes its JSON and Markdown (no timing asserted)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("ray.rllib")


def test_bench_clusters_writes_every_figure(tmp_path):
    from rl_isac.cli import main

    out = tmp_path / "clusters.json"
    rc = main(["bench", "--clusters", "--cluster-episodes", "2", "--cluster-blocks", "3", "--cluster-targets", "8",
               "--cluster-seed", "1", "--quick", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert [r["clusters"] for r in data["env"]] == [1, 2, 4]
    assert all(r["env_steps"] == 4 and r["env_steps_per_s"] > 0 for r in data["env"])  # one episode of 3 + 1 steps
    assert [(r["targets"], r["clusters"], r["repair"]) for r in data["evaluation"]] == [
        (8, 1, "-"), (8, 2, "information"), (8, 2, "distance"), (8, 4, "information"), (8, 4, "distance")]
    assert "vs_distance_repair_m" in data["evaluation"][1] and "vs_distance_repair_m" not in data["evaluation"][2]
    base = data["evaluation"][0]
    assert base["paired_rmse_diff_m"] == 0.0 and base["method"] == "ekf-milp/C1"
    for r in data["evaluation"]:
        assert np.isfinite(r["rmse_m"]) and r["slowest_cluster_ms_p50"] <= r["decision_ms_p99"] + 1e-9
        assert len(r["world_seeds"]) == 2 and r["world_seeds"] == base["world_seeds"]  # the same worlds for every C
    from rl_isac.seeds import evaluation_seeds

    # --cluster-seed picks the evaluation worlds (a second evaluation seed), and the command says so
    assert base["world_seeds"] == evaluation_seeds(1, 2) and data["protocol"]["evaluation_seed"] == 1
    assert "--cluster-seed 1" in out.with_suffix(".md").read_text()
    from rl_isac.rllib.bench_clusters import DEFAULT_PRETRAINED

    if (DEFAULT_PRETRAINED / "model.pt").is_file():
        assert [r["clusters"] for r in data["policy"]] == [1, 2, 4]
        assert all(0 < r["agent_ms_p50"] <= r["agent_ms_p99"] for r in data["policy"])
    else:
        assert data["policy"] == [] and "not measured" in data["policy_note"]
    assert "surrogate" in data["protocol"]["note"] and "| 8 | 4 | distance |" in out.with_suffix(".md").read_text()
