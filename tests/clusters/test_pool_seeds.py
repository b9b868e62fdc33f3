"""Pooling several evaluation seeds' cluster figures (rl_isac.rllib.bench_clusters.pool_seeds): numbers and refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("ray.rllib")

from rl_isac.errors import ConfigError  # noqa: E402


def _run(seed: int, base: list[float], clustered: list[float], distance: list[float]) -> dict:
    protocol = {"preset": "large", "targets": [24], "episodes": len(base), "blocks": 100, "fidelity": "signal",
                "repairs": ["information", "distance"], "evaluation_seed": seed}

    def row(C, repair, eps, lost):
        eps = np.asarray(eps, float)
        rmse = float(np.sqrt(np.mean(eps**2)))
        return {"targets": 24, "clusters": C, "repair": repair, "rmse_m": rmse, "rmse_ci95_m": 0.1,
                "rmse_per_episode_m": eps.tolist(), "lost_fraction": lost}

    return {"protocol": protocol, "env": [], "git_revision": "abc",
            "evaluation": [row(1, "-", base, 0.01), row(2, "information", clustered, 0.02),
                           row(2, "distance", distance, 0.04)]}


def test_pooled_rows_concatenate_the_seeds_episodes(tmp_path):
    from rl_isac.rllib.bench_clusters import main, pool_seeds

    a, b = _run(0, [1, 2, 3], [2, 2, 4], [3, 5, 6]), _run(1, [1, 1, 2], [1, 2, 2], [2, 2, 9])
    data = pool_seeds([a, b], ["a.json", "b.json"])
    rows = {tuple(r["key"]): r for r in data["rows"]}
    info = rows[(24, 2, "information")]
    assert info["episodes"] == 6 and info["seeds"] == [0, 1]
    assert info["pooled_rmse_m"] == pytest.approx(np.sqrt(np.mean(np.square([2, 2, 4, 1, 2, 2]))))
    assert info["pooled_lost_fraction"] == pytest.approx(0.02)
    d = np.array([1, 0, 1, 0, 1, 0], float)  # clustered minus C = 1, episode by episode, both seeds
    assert info["paired_m"]["C=1"]["pooled"] == pytest.approx([d.mean(), 1.96 * d.std(ddof=1) / np.sqrt(6)])
    assert info["paired_m"]["C=1"]["per_seed"][1][0] == pytest.approx(1 / 3)
    assert info["paired_m"]["distance repair"]["pooled"][0] == pytest.approx(np.mean([-1, -3, -2, -1, 0, -7]))
    assert "distance repair" not in rows[(24, 2, "distance")]["paired_m"]
    assert "| 24 | 2 | information |" in data["table_md"] and "evaluation seeds 0 / 1" in data["table_md"]
    # the command line: JSON and Markdown written
    for name, run in (("a", a), ("b", b)):
        (tmp_path / f"{name}.json").write_text(json.dumps(run))
    out = tmp_path / "pooled.json"
    assert main(["pool", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["evaluation_seeds"] == [0, 1] and out.with_suffix(".md").is_file()


def test_pooling_refuses_other_protocols_and_repeated_seeds():
    from rl_isac.rllib.bench_clusters import pool_seeds

    a = _run(0, [1, 2], [2, 2], [3, 5])
    with pytest.raises(ConfigError, match="its own evaluation seed"):
        pool_seeds([a, _run(0, [1, 1], [1, 2], [2, 2])], ["a", "b"])
    other = _run(1, [1, 1], [1, 2], [2, 2])
    other["protocol"]["fidelity"] = "surrogate"
    with pytest.raises(ConfigError, match="only the evaluation seed may differ"):
        pool_seeds([a, other], ["a", "b"])
