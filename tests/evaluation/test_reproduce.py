"""`rl-isac reproduce`: the tiny profile end to end, resume, refusal and the not-trained path."""

from __future__ import annotations

import contextlib
import io
import json
import math

import matplotlib.image as mpimg
import pytest

from rl_isac.cli import main
from rl_isac.errors import ConfigError
from rl_isac.evaluation import reproduce as rep
from rl_isac.seeds import evaluation_seeds

ROW_KEYS = {"method", "targets", "rmse_m", "ci95_m", "pcrb_rmse_m", "lost_fraction", "episodes", "paper_rmse_m"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro") / "tiny"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = main(["reproduce", "--profile", "tiny", "--out", str(out)])
    assert rc == 0
    return out, printed.getvalue()


def test_tiny_profile_writes_a_well_formed_table_and_three_figures(tiny_run):
    tiny_run, printed = tiny_run
    profile = rep.PROFILES["tiny"]
    table = json.loads((tiny_run / "table1.json").read_text())
    rows = table["rows"]
    assert [(r["method"], r["targets"]) for r in rows] == [(m, 4) for m in profile.methods]
    for row in rows:
        assert ROW_KEYS <= set(row)
    by = {r["method"]: r for r in rows}
    # The tiny profile does not train: the proposed method is "not available", with no number.
    assert by["dgnn-ppo"]["status"] == "not available" and by["dgnn-ppo"]["rmse_m"] is None
    assert "not trained" in by["dgnn-ppo"]["reason"]
    # The paper's numbers sit beside ours, labelled.
    assert by["dgnn-ppo"]["paper_rmse_m"] == 0.2639 and by["dgnn-ppo"]["paper_label"] == "Proposed"
    assert by["ekf-convex"]["paper_rmse_m"] == 0.9747 and by["ekf-convex"]["paper_label"] == "Benchmark I"
    assert by["ekf-greedy"]["paper_rmse_m"] is None
    for method in ("ekf-convex", "ekf-greedy", "dgnn-milp"):
        r = by[method]
        assert r["status"] == "ok" and r["episodes"] == 2 and r["blocks"] == 10
        assert math.isfinite(r["rmse_m"]) and r["rmse_m"] > 0 and 0 <= r["lost_fraction"] <= 1
        lo, hi = r["ci95_m"]
        assert lo <= r["rmse_m"] <= hi
        assert r["pcrb_rmse_m"] > 0
    # Same evaluation seeds for every cell, from rl_isac.seeds.
    assert table["evaluation_world_seeds"] == evaluation_seeds(0, 2)
    for method in ("ekf-convex", "ekf-greedy", "dgnn-milp"):
        cell = json.loads(rep.cell_path(tiny_run, method, 4).read_text())
        assert cell["result"]["world_seeds"] == evaluation_seeds(0, 2)
    md = (tiny_run / "table1.md").read_text()
    for method in profile.methods:
        assert f"| {method} |" in md
    assert "not available" in md and "paper's" in md
    assert "Where each mean comes from" in md and by["ekf-greedy"]["median_episode_rmse_m"] > 0
    assert by["ekf-greedy"]["rmse_unlabelled_m"] <= by["ekf-greedy"]["rmse_m"] + 1e-12
    manifest = json.loads((tiny_run / "run.json").read_text())
    assert manifest["git_revision"] and manifest["packages"]["numpy"] and "4" in manifest["scenarios"]
    assert manifest["packages"]["blas_kernel"].startswith("openblas:")  # the kernel the numbers were made with
    assert manifest["git_dirty"] in (True, False, None) and table["cell_revisions"]
    for name in ("fig3.png", "fig4.png", "training.png"):
        img = mpimg.imread(tiny_run / name)
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 400
    episode = json.loads((tiny_run / "cells" / "fig3-episode.json").read_text())
    assert len(episode["truth_m"]) == 11 and len(episode["association"]) == 10
    # The terminal ends with the table, the figure paths and the sentence on how the profile differs from full.
    assert "not available" in printed and f"fig3: {tiny_run / 'fig3.png'}" in printed
    assert printed.rstrip().endswith(profile.summary)


def test_resume_skips_finished_cells_and_recomputes_only_a_broken_one(tiny_run):
    tiny_run, _ = tiny_run
    cells = [rep.cell_path(tiny_run, m, 4) for m in ("ekf-convex", "ekf-greedy", "dgnn-milp")]
    before = {p: p.read_text() for p in cells}
    # A cell computed at another revision is reused, and the line says so.
    stale = json.loads(cells[0].read_text())
    stale["git_revision"] = "0000000"
    cells[0].write_text(json.dumps(stale))
    before[cells[0]] = cells[0].read_text()
    lines: list[str] = []
    res = rep.reproduce("tiny", out=tiny_run, echo=lines.append)
    assert any("computed at revision 0000000" in line for line in lines)
    assert res.cells_computed == [] and sorted(res.cells_reused) == ["dgnn-milp-I4", "ekf-convex-I4", "ekf-greedy-I4"]
    assert {p: p.read_text() for p in cells} == before
    # A cell that does not parse (e.g. written by hand) never counts: it is recomputed, to the same numbers.
    cells[1].write_text(before[cells[1]][: len(before[cells[1]]) // 2])
    res = rep.reproduce("tiny", out=tiny_run, echo=lambda s: None)
    assert res.cells_computed == ["ekf-greedy-I4"]
    assert json.loads(cells[1].read_text())["result"]["rmse_m"] == json.loads(before[cells[1]])["result"]["rmse_m"]


def test_exhaustive_at_i8_is_refused_with_its_count_and_untrained_ppo_is_not_available(tmp_path, monkeypatch):
    monkeypatch.setattr(rep, "_ppo_api", lambda: (None, "no PPO training API in this test"))
    profile = rep.Profile(name="t", targets=(8,), methods=("dgnn-ppo", "dgnn-exhaustive", "ekf-greedy"), episodes=1,
                          blocks=2, train={"iterations": 1})
    res = rep.reproduce(profile, out=tmp_path, echo=lambda s: None)
    by = {r["method"]: r for r in res.rows}
    assert by["dgnn-exhaustive"]["status"] == "refused" and by["dgnn-exhaustive"]["candidate_count"] == 37**6
    assert by["dgnn-exhaustive"]["paper_entry"] == "OOM" and by["dgnn-exhaustive"]["rmse_m"] is None
    assert by["dgnn-ppo"]["status"] == "not available"
    assert by["dgnn-ppo"]["reason"] == "no PPO training API in this test"
    assert by["ekf-greedy"]["status"] == "ok"
    assert "refused (2.57e+09 candidates)" in (tmp_path / "table1.md").read_text()
    assert res.training[8]["trained"] is False
    assert all(p.is_file() for p in res.figures.values())


def test_bad_profile_and_missing_checkpoint_are_clear_errors(tmp_path):
    from rl_isac.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown profile"):
        rep.reproduce("huge", out=tmp_path)
    with pytest.raises(ConfigError, match="fig3_targets"):
        rep.Profile(name="x", targets=(4,), methods=("ekf-greedy",), episodes=1, blocks=1, fig3_targets=6)
    with pytest.raises(ConfigError, match="model.pt"):
        rep.reproduce("tiny", out=tmp_path, dgnn_checkpoints=str(tmp_path / "none-I{I}"), echo=lambda s: None)


def test_bootstrap_interval_is_deterministic_and_brackets_the_rmse():
    per_episode = [0.1, 0.2, 0.15, 3.0]
    lo, hi = rep.bootstrap_ci95(per_episode)
    rmse = math.sqrt(sum(x * x for x in per_episode) / 4)
    assert lo < rmse < hi and rep.bootstrap_ci95(per_episode) == [lo, hi]


class _FakePPO:
    """Stands in for rl_isac.training.ppo (same names, no Ray): records calls, writes the curve file."""

    CHECKPOINT, TRAIN_CONFIG, CURVE = "checkpoint", "train_config.json", "learning_curve.json"

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[dict] = []
        self.fail = fail

    def train(self, targets, pretrained, out, iterations, resume, seed, echo, **kwargs):
        from pathlib import Path

        self.calls.append({"targets": targets, "iterations": iterations, "resume": resume, **kwargs})
        if self.fail:
            raise RuntimeError("learner exploded")
        out = Path(out)
        (out / self.CHECKPOINT).mkdir(parents=True)
        (out / self.TRAIN_CONFIG).write_text("{}")
        rows = [{"iteration": i + 1, "env_steps": 2000 * (i + 1), "return_mean": -50.0 + i, "rmse_m": 1.0 / (i + 1),
                 "pcrb_m": 0.1, "entropy": 30.0 - i, "scalars": {"x": 1.0}} for i in range(iterations)]
        (out / self.CURVE).write_text(json.dumps({"targets": targets, "iterations": rows}))
        echo("it   1 ...", flush=True)
        return {"iterations": iterations, "env_steps": 2000 * iterations, "train": {"lr": 3e-4}}


def test_train_stage_runs_once_reuses_the_finished_run_and_reports_a_failure(tmp_path, monkeypatch):
    from rl_isac.evaluation import figures

    profile = rep.Profile(name="t", targets=(4,), methods=("dgnn-ppo",), episodes=1, blocks=2,
                          train={"iterations": 3, "num_epochs": 2})
    fake = _FakePPO()
    monkeypatch.setattr(rep, "_ppo_api", lambda: (fake, ""))
    lines: list[str] = []
    runs = rep.train_stage(profile, tmp_path, rep.DEFAULT_DGNN_CHECKPOINTS, True, lines.append)
    assert fake.calls == [{"targets": 4, "iterations": 3, "resume": False, "num_epochs": 2}]
    run = runs[4]
    assert run["trained"] and run["checkpoint"] == str(tmp_path / "ppo-I4") and len(run["curve"]) == 3
    assert "scalars" not in run["curve"][0] and any("[train] I=4 it   1" in s for s in lines)
    assert json.loads((tmp_path / "training-I4.json").read_text())["iterations"] == 3
    again = rep.train_stage(profile, tmp_path, rep.DEFAULT_DGNN_CHECKPOINTS, True, lines.append)
    assert len(fake.calls) == 1 and again[4]["curve"] == run["curve"]  # finished run reused, not retrained
    img = mpimg.imread(figures.training_curve(runs, tmp_path / "training.png"))
    assert img.shape[1] > 1000
    # Without resume the run is trained afresh; a failing run is reported, not hidden.
    failing = _FakePPO(fail=True)
    monkeypatch.setattr(rep, "_ppo_api", lambda: (failing, ""))
    runs = rep.train_stage(profile, tmp_path, rep.DEFAULT_DGNN_CHECKPOINTS, False, lines.append)
    assert runs[4]["failed"] and "learner exploded" in runs[4]["reason"] and not runs[4]["trained"]
    assert any("FAILED" in s for s in lines) and not (tmp_path / "ppo-I4").exists()


def test_verdicts_say_where_the_proposed_method_loses():
    def row(method, rmse, lo, hi):
        return {"method": method, "targets": 6, "status": "ok", "rmse_m": rmse, "ci95_m": [lo, hi]}

    rows = [row("dgnn-ppo", 1.0, 0.9, 1.1), row("ekf-milp", 0.5, 0.4, 0.6), row("ekf-convex", 2.0, 1.8, 2.2),
            row("dgnn-l2o", 1.05, 0.95, 1.2)]
    (line,) = rep.verdicts(rows, (6,))
    assert "LOSES to ekf-milp (0.500 m)" in line and "beats ekf-convex" in line and "ties with dgnn-l2o" in line


def test_paired_verdict_sees_a_consistent_win_that_overlapping_marginal_intervals_hide():
    """dgnn-ppo 5 % better than dgnn-milp in every one of 40 worlds whose difficulty varies 10x: the two
    marginal intervals overlap (no claim), the paired interval of the difference excludes 0 ("beats")."""
    import numpy as np

    rng = np.random.default_rng(3)
    base = rng.uniform(0.1, 1.0, 40)
    seeds = list(range(40))

    def row(method, per_episode, world_seeds=seeds):
        per_episode = [float(x) for x in per_episode]
        rmse = math.sqrt(sum(x * x for x in per_episode) / len(per_episode))
        return {"method": method, "targets": 4, "status": "ok", "rmse_m": rmse,
                "ci95_m": rep.bootstrap_ci95(per_episode), "rmse_per_episode_m": per_episode,
                "world_seeds": world_seeds}

    ppo, milp = row("dgnn-ppo", 0.95 * base), row("dgnn-milp", base)
    assert ppo["ci95_m"][1] > milp["ci95_m"][0]  # marginal intervals overlap
    (line,) = rep.verdicts([ppo, milp], (4,))
    assert "beats dgnn-milp" in line and "unpaired" not in line
    assert "x0.95" in line and "within 5 %: yes" in line and "better in 40 / 40" in line
    (entry,) = rep.paired_rows([ppo, milp], (4,))
    assert entry["diff_ci95_m"][1] < 0 and entry["median_episode_ratio"] == pytest.approx(0.95)
    assert entry == rep.paired_rows([ppo, milp], (4,))[0]  # fixed seed: the same interval every time
    # Other worlds: no pairing, the entry says why, the verdict falls back to overlap and says so.
    other = row("dgnn-milp", base, world_seeds=[s + 1 for s in seeds])
    (entry,) = rep.paired_rows([ppo, other], (4,))
    assert "different world seeds" in entry["reason"] and "diff_m" not in entry
    (line,) = rep.verdicts([ppo, other], (4,))
    assert "ties with dgnn-milp" in line and "unpaired" in line
    with pytest.raises(ConfigError, match="same episodes"):
        rep.paired_comparison([0.1, 0.2], [0.1])
    # With identity-free per-episode RMSEs the same comparison is made on them too.
    ppo["rmse_unlabelled_per_episode_m"], milp["rmse_unlabelled_per_episode_m"] = list(0.5 * base), list(0.5 * base)
    (entry,) = rep.paired_rows([ppo, milp], (4,))
    assert entry["unlabelled"]["ratio"] == pytest.approx(1.0)
    assert "identity-free x1.00" in rep.verdicts([ppo, milp], (4,))[0]


def test_the_tail_summary_says_where_a_mean_comes_from():
    """One swapped episode decides a mean: the summary gives its median, its worst episode and the
    identity-free figures beside it, and the markdown carries them per method and I."""
    result = {"rmse_per_episode_m": [0.1, 0.2, 0.1, 30.0], "rmse_unlabelled_m": 0.15, "lost_fraction_unlabelled": 0.0,
              "track_swaps": 1}
    tail = rep.tail_summary(result)
    assert tail["median_episode_rmse_m"] == pytest.approx(0.15) and tail["worst_episode_rmse_m"] == 30.0
    assert tail["rmse_unlabelled_m"] == 0.15 and tail["track_swaps"] == 1
    # A result from before the identity-free fields: None, shown as "-", never a made-up number.
    old = rep.tail_summary({"rmse_per_episode_m": [0.1, 0.3]})
    assert old["rmse_unlabelled_m"] is None and old["median_episode_rmse_m"] == pytest.approx(0.2)
    row = {"status": "ok", **tail}
    assert tail["bad_episodes"] == 1
    assert rep._fmt_tail(row) == "0.150 / 30.00 / 0.150 (lost 0.0000) / 1 [0.6, 80.6 %]"
    assert rep._fmt_tail({"status": "ok", **old}) == "0.200 / 0.30 / - / 0 [0.0, 84.2 %]"
    assert rep._fmt_tail({"status": "refused"}) == "-"


def test_the_rate_of_bad_episodes_has_an_exact_interval():
    """0 bad of 50 does not mean a method never swaps: the interval reaches 7.1 % (the rule of three, 3/n, is
    6 %), and it narrows as episodes are added; Clopper-Pearson bounds as scipy computes them."""
    lo, hi = rep.bad_rate_interval(0, 50)
    assert lo == 0.0 and hi == pytest.approx(0.0711, abs=1e-4)
    lo, hi = rep.bad_rate_interval(2, 50)
    assert lo == pytest.approx(0.00489, abs=1e-4) and hi == pytest.approx(0.1371, abs=1e-4)
    assert rep.bad_rate_interval(0, 500)[1] < 0.008


def test_fingerprints_follow_content(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "model.pt").write_bytes(b"weights")
    (tmp_path / "ckpt" / "tb").mkdir()
    (tmp_path / "ckpt" / "tb" / "events.out.tfevents.1").write_bytes(b"log")
    (tmp_path / "ppo.yaml").write_text("lr: 0.001\n")
    before = rep.checkpoint_fingerprint(tmp_path / "ckpt"), rep.checkpoint_fingerprint(tmp_path / "ppo.yaml")
    (tmp_path / "ckpt" / "tb" / "events.out.tfevents.1").write_bytes(b"more log")  # logs do not count
    assert rep.checkpoint_fingerprint(tmp_path / "ckpt") == before[0]
    (tmp_path / "ckpt" / "model.pt").write_bytes(b"other weights")
    (tmp_path / "ppo.yaml").write_text("lr: 0.0001\n")
    after = rep.checkpoint_fingerprint(tmp_path / "ckpt"), rep.checkpoint_fingerprint(tmp_path / "ppo.yaml")
    assert after[0] != before[0] and after[1] != before[1] and None not in after
    assert rep.checkpoint_fingerprint(tmp_path / "nowhere") == "missing"


def test_per_size_recipes_each_size_trains_with_its_own_config_and_a_missing_one_is_an_error(tmp_path, monkeypatch):
    from rl_isac.errors import ConfigError

    (tmp_path / "a.yaml").write_text("bc_epochs: 2\n")
    (tmp_path / "b.yaml").write_text("bc_epochs: 3\n")
    recipes = {4: str(tmp_path / "a.yaml"), 6: str(tmp_path / "b.yaml")}
    profile = rep.Profile(name="t", targets=(4, 6), methods=("dgnn-ppo",), episodes=1, blocks=2,
                          train={"iterations": 1, "config": recipes})
    fake = _FakePPO()
    monkeypatch.setattr(rep, "_ppo_api", lambda: (fake, ""))
    runs = rep.train_stage(profile, tmp_path / "out", rep.DEFAULT_DGNN_CHECKPOINTS, True, lambda s: None)
    assert [c["config"] for c in fake.calls] == [recipes[4], recipes[6]]
    spec = json.loads((tmp_path / "out" / "training-I6.json").read_text())["spec"]
    assert spec["settings"]["config"] == recipes[6] and runs[6]["spec"] == spec  # resolved, survives JSON
    assert spec["config_fingerprint"] == rep.checkpoint_fingerprint(recipes[6])
    rep.train_stage(profile, tmp_path / "out", rep.DEFAULT_DGNN_CHECKPOINTS, True, lambda s: None)
    assert len(fake.calls) == 2  # both finished runs reused
    # the full profile trains each I with the recipe of the shipped checkpoint of that I
    assert rep.PROFILES["full"].train["config"] == rep.SHIPPED_PPO_CONFIGS
    assert set(rep.SHIPPED_PPO_CONFIGS) == set(rep.PROFILES["full"].targets)
    short = rep.Profile(name="t", targets=(8,), methods=("dgnn-ppo",), episodes=1, blocks=2,
                        train={"iterations": 1, "config": recipes})
    with pytest.raises(ConfigError, match="no PPO recipe for I=8"):
        rep.train_stage(short, tmp_path / "o2", rep.DEFAULT_DGNN_CHECKPOINTS, True, lambda s: None)


def test_time_budget_reuses_finished_cells_reports_the_rest_and_a_rerun_resumes(tiny_run, tmp_path):
    import shutil

    src, _ = tiny_run
    out = tmp_path / "tiny"
    shutil.copytree(src, out)
    rep.cell_path(out, "ekf-greedy", 4).unlink()
    lines: list[str] = []
    res = rep.reproduce("tiny", out=out, echo=lines.append, time_budget_s=1e-9)
    assert res.cells_skipped == ["ekf-greedy-I4"] and res.cells_computed == []
    assert sorted(res.cells_reused) == ["dgnn-milp-I4", "ekf-convex-I4"]
    row = next(r for r in res.rows if r["method"] == "ekf-greedy")
    assert row["status"] == "not available" and "time budget" in row["reason"] and row["rmse_m"] is None
    assert "time budget" in (out / "table1.md").read_text()
    res = rep.reproduce("tiny", out=out, echo=lambda s: None)
    assert res.cells_computed == ["ekf-greedy-I4"] and res.cells_skipped == []
    with pytest.raises(rep.ConfigError, match="time_budget_s"):
        rep.reproduce("tiny", out=out, time_budget_s=0)


def test_evaluation_order_puts_the_ppo_comparison_first_at_every_size():
    order = rep.evaluation_order(rep.PROFILES["full"])
    assert len(order) == len(set(order)) == 3 * len(rep.ALL_METHODS)
    first = [(n, m) for n, m in order[:15]]
    assert {m for _, m in first} == set(rep.FIRST_METHODS) and [n for n, _ in first] == [4] * 5 + [6] * 5 + [8] * 5
    assert order[15:] == [(4, "ekf-greedy"), (6, "ekf-greedy"), (8, "ekf-greedy"), (4, "dgnn-exhaustive"),
                          (6, "dgnn-exhaustive"), (8, "dgnn-exhaustive")]


def test_the_table_is_embedded_between_the_readme_markers_and_a_readme_without_them_is_refused(tmp_path):
    from rl_isac.evaluation.reproduce import embed_table_in_readme, readme_markers

    table = tmp_path / "table1.md"
    table.write_text("# Table 1\n\n| method | I = 4 |\n|---|---|\n| ekf-milp | 0.1 |\n")
    begin, end = readme_markers("results/full/table1.md")
    readme = tmp_path / "README.md"
    readme.write_text(f"# intro\n\n{begin}\nold table\n{end}\n\ntail\n")
    embed_table_in_readme(readme, table, "results/full/table1.md")
    text = readme.read_text()
    assert "old table" not in text and "| ekf-milp | 0.1 |" in text and "\n#### Table 1\n" in text
    assert text.startswith("# intro") and text.endswith("tail\n") and begin in text and end in text
    embed_table_in_readme(readme, table, "results/full/table1.md")  # idempotent
    assert readme.read_text() == text
    bare = tmp_path / "BARE.md"
    bare.write_text("# no markers\n")
    with pytest.raises(ConfigError, match="BEGIN results/full/table1.md"):
        embed_table_in_readme(bare, table, "results/full/table1.md")
    assert bare.read_text() == "# no markers\n"


def test_a_readme_without_markers_stops_reproduce_before_any_work(tmp_path):
    bare = tmp_path / "README.md"
    bare.write_text("# no markers\n")
    out = tmp_path / "tiny"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["reproduce", "--profile", "tiny", "--out", str(out), "--readme", str(bare)])
    assert code == 2 and "readme" in err.getvalue() and not out.exists()
