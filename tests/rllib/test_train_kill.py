"""`rl-isac train` killed with SIGKILL (driver and its Ray processes) resumes from its last checkpoint, and its
learning curve continues; a save interrupted at any point never leaves a broken `checkpoint/`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY_YAML = """train_batch_size: 48
minibatch_size: 24
num_epochs: 1
blocks: 6
hidden: 16
critic_hidden: 16
checkpoint_every: 1
num_envs_per_env_runner: 2
"""


def _saved_iterations(out: Path) -> int:
    """Iterations held by the whole save in ``out/checkpoint`` (0 while none)."""
    try:
        return len(json.loads((out / "checkpoint" / "learning_curve.json").read_text())["iterations"])
    except (FileNotFoundError, json.JSONDecodeError):  # no save yet, or the directory swapped right now
        return 0


def test_an_interrupted_save_is_repaired_before_anything_reads_the_run(tmp_path):
    from rl_isac.training.ppo import recover_interrupted_save

    # killed between the two renames: the previous checkpoint is put back, under its name
    (tmp_path / "checkpoint.old").mkdir()
    (tmp_path / "checkpoint.old" / "marker").write_text("previous save")
    (tmp_path / "checkpoint.tmp").mkdir()  # and the new save was complete or not: it is dropped either way
    recover_interrupted_save(tmp_path)
    assert (tmp_path / "checkpoint" / "marker").read_text() == "previous save"
    assert not (tmp_path / "checkpoint.old").exists() and not (tmp_path / "checkpoint.tmp").exists()
    # killed after the swap, before the old one was removed: the new checkpoint stays
    (tmp_path / "checkpoint.old").mkdir()
    recover_interrupted_save(tmp_path)
    assert (tmp_path / "checkpoint" / "marker").is_file() and not (tmp_path / "checkpoint.old").exists()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_killed_training_run_resumes_and_its_curve_continues(tmp_path, dgnn_i4):
    pytest.importorskip("ray.rllib")
    config, out = tmp_path / "tiny.yaml", tmp_path / "run"
    config.write_text(TINY_YAML)
    cmd = [sys.executable, "-m", "rl_isac.cli", "train", "--targets", "4", "--pretrained", str(dgnn_i4),
           "--out", str(out), "--config", str(config), "--num-env-runners", "0", "--iterations", "40"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    log = open(tmp_path / "first.log", "w")
    # Own session: the driver and the Ray processes it starts share one process group, killed together.
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while _saved_iterations(out) < 2:  # a save every iteration: the kill lands anywhere in the next ones
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    printed = sum(line.startswith("it ") for line in (tmp_path / "first.log").read_text().splitlines())
    assert printed >= 2, (tmp_path / "first.log").read_text()[-3000:]  # the run really was under way
    total = max(3, printed + 1)  # at least one iteration more than the killed run printed
    resumed = subprocess.run(cmd[:-1] + [str(total), "--resume"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    curve = json.loads((out / "learning_curve.json").read_text())["iterations"]
    saved = json.loads((out / "checkpoint" / "learning_curve.json").read_text())["iterations"]
    assert curve == saved
    iters = [row["iteration"] for row in curve]
    assert iters == list(range(1, total + 1)), iters
    steps = [row["env_steps"] for row in curve]
    assert all(b > a for a, b in zip(steps, steps[1:])), steps  # env steps continue, never restart
    assert json.loads((out / "train_config.json").read_text())["iterations"] == total
    assert not (out / "checkpoint.tmp").exists() and not (out / "checkpoint.old").exists()
