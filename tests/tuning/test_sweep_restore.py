"""A tiny real sweep (Ray, RLlib PPO, harness metric), killed mid-run and continued with --restore."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rl_isac.errors import ConfigError
from tuning import sweep

ROOT = Path(__file__).resolve().parents[2]


def _state_saved_after_checkpoint(experiment: Path) -> bool:
    """A checkpoint exists, Tune's experiment state was saved after it, and the searcher state was copied after
    that (Tune copies the files one by one, the searcher's last: a kill right after the experiment state's copy
    left the searcher state empty, and the restore then refused it, :func:`tuning.sweep.check_searcher_state`)."""
    checkpoints = list(experiment.glob("trial_*/checkpoint_000000"))
    states = list(experiment.glob("experiment_state-*.json"))
    searchers = list(experiment.glob("searcher-state-*.pkl"))
    if not (checkpoints and states and searchers):
        return False
    state_time = max(p.stat().st_mtime for p in states)
    return state_time > checkpoints[0].stat().st_mtime and all(
        p.stat().st_size > 0 and p.stat().st_mtime >= state_time for p in searchers)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_killed_sweep_restores_and_its_trial_continues(tmp_path):
    pytest.importorskip("rl_isac.rllib.config")
    storage, out = tmp_path / "ray_results", tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "tuning" / "sweep.py"), "--targets", "4", "--trials", "1", "--iterations", "2",
           "--grace-iterations", "2", "--eval-every", "1", "--eval-episodes", "1", "--eval-blocks", "3",
           "--train-batch-size", "512", "--train-blocks", "8", "--envs-per-env-runner", "1", "--bc-episodes", "2",
           "--storage", str(storage), "--out", str(out), "--name", "restore-test"]
    # No PYTHONPATH: the sweep puts the repository on its workers. Tune saves its experiment state at every
    # step (not every ~10 s), so the kill lands right after the first checkpoint on a fast machine too.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TUNE_GLOBAL_CHECKPOINT_S": "0"}
    log = open(tmp_path / "first.log", "w")
    # Own session: the driver and the Ray processes it starts share one process group, killed together.
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    experiment = storage / "restore-test-I4"
    deadline = time.monotonic() + 300
    try:
        # Kill once a checkpoint exists and Tune's experiment state was saved after it (what restore reads).
        while not _state_saved_after_checkpoint(experiment):
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started, nothing else
        proc.wait()
    assert not (out / "best-I4.yaml").exists(), "the sweep finished before the kill"  # it really was interrupted
    done = subprocess.run(cmd + ["--restore"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    try:
        sweep.check_searcher_state(experiment)
    except ConfigError:  # the kill still landed in a later copy of Tune's state files: refused, clearly
        assert done.returncode == 2 and ("the searcher state is" in done.stderr
                                         or "the experiment state is" in done.stderr), done.stderr[-3000:]
        return
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "restoring" in done.stdout, done.stdout[-3000:]
    results = list(experiment.glob("trial_*/result.json"))
    assert len(results) == 1, results
    result = results[0]
    reports = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
    iterations = [r["ppo_iteration"] for r in reports]
    # Our custom RLlib scalars reach Tune (and so its TensorBoard event files) beside the metric.
    assert all("tracking/rmse_m" in r and "val_rmse_m" in r for r in reports)
    assert list(experiment.glob("trial_*/events.out.tfevents.*"))
    # The restored trial continued from its checkpoint: iterations never start over. The first checkpoint
    # covers iteration 1, so 1 is reported once; a kill that lands after iteration 2's result was written but
    # before its checkpoint makes Tune rerun iteration 2 from checkpoint 1 (reported twice, legitimately).
    assert iterations[0] == 1 and iterations.count(1) == 1 and iterations[-1] == 2, iterations
    assert iterations == sorted(iterations), iterations
    assert (out / "best-I4.yaml").is_file() and "| 4 |" in (out / "summary.md").read_text()
