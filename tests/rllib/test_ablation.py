"""The ablation/table helpers of issue 9 (no training here: the rows come from synthetic harness results)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rl_isac.errors import ConfigError
from rl_isac.training.ablation import SHIPPED, VARIANTS, markdown, paired_difference, rmse_interval, summarise, table


def fake_result(method: str, targets: int, per_episode, per_block=None, fidelity="signal") -> dict:
    per_episode = list(map(float, per_episode))
    return {"method": method, "targets": targets, "episodes": len(per_episode), "blocks": 3, "seed": 0,
            "fidelity": fidelity, "rmse_m": float(np.sqrt(np.mean(np.square(per_episode)))),
            "rmse_per_episode_m": per_episode, "rmse_per_block_m": per_block or [1.0, 1.0, 1.0],
            "lost_fraction": 0.0, "pcrb_rmse_m": 0.05, "violations": 0}


def test_rmse_interval_brackets_the_rmse_and_shrinks_with_episodes():
    rng = np.random.default_rng(1)
    few, many = rng.uniform(0.1, 0.3, 10), rng.uniform(0.1, 0.3, 400)
    for x in (few, many):
        lo, hi = rmse_interval(x)
        assert lo < np.sqrt(np.mean(x**2)) < hi
    assert np.subtract(*rmse_interval(many)[::-1]) < np.subtract(*rmse_interval(few)[::-1])
    assert rmse_interval([0.2, 0.2, 0.2]) == pytest.approx((0.2, 0.2))
    with pytest.raises(ConfigError, match="rmse_per_episode_m"):
        rmse_interval([0.1])


def test_variants_are_single_levers_on_the_paper_recipe():
    paper = VARIANTS["paper"]
    assert paper["reward"] == "mse" and paper["warm_start"] is False and paper["gain_prior"] == 0.0
    on_shipped = {"detection": {"detection_features"}, "milp_features": {"detection_features", "milp_features"}}
    for name, over in VARIANTS.items():
        if name in ("paper", "shipped"):
            continue
        if name in on_shipped:  # the actor's features: levers on top of the shipped recipe
            assert {k for k in over if over[k] != SHIPPED.get(k)} == on_shipped[name], name
            continue
        changed = {k for k in over if over[k] != paper.get(k)}
        assert len(changed - {"reward_mix", "dagger_rounds"}) == 1, name
    assert VARIANTS["shipped"] == SHIPPED


def test_table_merges_compare_and_ppo_results(tmp_path):
    cmp = {"results": [fake_result("dgnn-milp", 4, [0.2, 0.1, 0.3], [0.3, 0.2, 0.1]),
                       fake_result("ekf-convex", 4, [0.4, 0.3, 0.5])]}
    (tmp_path / "c.json").write_text(json.dumps(cmp))
    (tmp_path / "p.json").write_text(json.dumps(fake_result("dgnn-ppo", 4, [0.1, 0.1, 0.2], [0.2, 0.25, 0.05])))
    data = table([str(tmp_path / "c.json")], [str(tmp_path / "p.json")], str(tmp_path / "t.json"))
    pb = data["per_block"][4]
    assert pb["blocks_ppo_lower"] == 2 and pb["ratio_to_milp"] == pytest.approx(
        np.sqrt(np.mean(np.square([0.1, 0.1, 0.2]))) / np.sqrt(np.mean(np.square([0.2, 0.1, 0.3]))))
    d = pb["paired_vs"]["ekf-convex"]
    assert d["diff_m"] < 0 and d["lo_m"] <= d["diff_m"] <= d["hi_m"]
    md = (tmp_path / "t.md").read_text()
    assert "| dgnn-ppo |" in md and "| ekf-milp | - |" in md and "0.050" in md  # PCRB row from dgnn-milp
    (tmp_path / "s.json").write_text(json.dumps(fake_result("dgnn-ppo", 4, [0.1, 0.2, 0.1], fidelity="surrogate")))
    with pytest.raises(ConfigError, match="share"):
        table([str(tmp_path / "c.json")], [str(tmp_path / "s.json")], str(tmp_path / "t2.json"))


def test_table_of_two_evaluation_seeds_has_one_section_each_and_reports_violations(tmp_path):
    def seeded(res, seed):
        return {**res, "seed": seed, "world_seeds": [1000 * seed + e for e in range(res["episodes"])]}

    for seed in (0, 1):
        milp = seeded(fake_result("dgnn-milp", 8, [0.2, 0.1, 0.3 + seed]), seed)
        (tmp_path / f"c{seed}.json").write_text(json.dumps({"results": [milp]}))
        ppo = seeded(fake_result("dgnn-ppo", 8, [0.1, 0.1, 0.2 + seed]), seed)
        ppo["violations"] = seed  # a violation must be named, never summed away
        (tmp_path / f"p{seed}.json").write_text(json.dumps(ppo))
    data = table([str(tmp_path / "c0.json"), str(tmp_path / "c1.json")],
                 [str(tmp_path / "p0.json"), str(tmp_path / "p1.json")], str(tmp_path / "t.json"))
    assert sorted(data["seeds"]) == ["0", "1"] and "rows" not in data
    for seed in ("0", "1"):
        sec = data["seeds"][seed]
        assert sec["seed"] == int(seed) and len(sec["rows"]) == 2 and sec["per_block"][8]["paired_vs"]["dgnn-milp"]
    md = (tmp_path / "t.md").read_text()
    assert "## Evaluation seed 0" in md and "## Evaluation seed 1" in md
    assert "violations: 0 in every cell" in md and "violations: dgnn-ppo I=8: 1" in md
    # one seed: the section's keys stay at the top level (the layout of the committed tables)
    one = table([str(tmp_path / "c0.json")], [str(tmp_path / "p0.json")], str(tmp_path / "t1.json"))
    assert one["rows"] == one["seeds"]["0"]["rows"]


def test_table_reads_reproduce_cells_ok_ones_only(tmp_path):
    cells = tmp_path / "cells"
    cells.mkdir()
    for method in ("dgnn-ppo", "dgnn-milp"):
        rec = {"status": "ok", "result": fake_result(method, 4, [0.1, 0.2, 0.1])}
        (cells / f"{method}-I4.json").write_text(json.dumps(rec))
    (cells / "ekf-milp-I4.json").write_text(json.dumps({"status": "refused", "reason": "x"}))
    (cells / "ekf-greedy-I4.json").write_text(json.dumps(rec))  # not a table method
    data = table([], [], str(tmp_path / "t.json"), cells_dirs=[str(cells)])
    assert sorted(r["method"] for r in data["rows"]) == ["dgnn-milp", "dgnn-ppo"]
    assert data["per_block"][4]["paired_vs"]["dgnn-milp"]["diff_m"] == 0.0
    # an explicit dgnn-ppo input (a newer checkpoint) replaces the cell of the same I and seed
    (tmp_path / "new.json").write_text(json.dumps(fake_result("dgnn-ppo", 4, [0.3, 0.2, 0.1])))
    data = table([], [str(tmp_path / "new.json")], str(tmp_path / "t2.json"), cells_dirs=[str(cells)])
    assert [r["median_episode_rmse_m"] for r in data["rows"] if r["method"] == "dgnn-ppo"] == [0.2]
    assert data["cells_replaced_by_inputs"] == ["dgnn-ppo I=4 seed 0"]


def test_ablation_markdown_lists_every_row():
    rows = [summarise(fake_result("dgnn-ppo", 4, [0.1, 0.2]), variant="paper", overrides=VARIANTS["paper"],
                      env_steps=3636, train_wall_s=60.0),
            summarise(fake_result("dgnn-milp", 4, [0.1, 0.1]), variant="dgnn-milp")]
    md = markdown({"targets": 4, "fidelity": "surrogate", "episodes": 2, "blocks": 3, "iterations": 3,
                   "train_batch": 1000, "pretrained": "x", "rows": rows, "command": "rl-isac ppo-ablation"})
    assert "| paper | reward=mse" in md and "| 3636 | 60 |" in md and "| dgnn-milp | - |" in md


def test_paired_difference_sees_a_consistent_gap_the_marginal_intervals_hide():
    rng = np.random.default_rng(2)
    base = rng.uniform(0.05, 1.0, 30)            # wide spread over episodes
    diff, lo, hi = paired_difference(base * 0.9, base)
    assert diff < 0 and hi < 0                   # every episode 10 % better: the paired interval excludes 0
    a, b = rmse_interval(base * 0.9), rmse_interval(base)
    assert a[1] > b[0]                           # while the marginal intervals overlap
    with pytest.raises(ConfigError):
        paired_difference(base, base[:-1])
