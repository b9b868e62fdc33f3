"""Opt-in integration test: `ray up cluster/local.yaml` on an sshd bound to 127.0.0.1, `ray submit` of a
tiny sweep, `ray down`, and no Ray process of another user killed.

Run it with ``RL_ISAC_CLUSTER_TEST=1`` as root on a machine with Debian's ``openssh-server`` and
``rsync`` (``apt-get install -y openssh-server rsync``)::

    RL_ISAC_CLUSTER_TEST=1 .venv/bin/python -m pytest -p no:cacheprovider tests/cluster/test_local_cluster.py -s

It creates the account ``raylocal`` (cluster/README.md) when missing and removes it again if it
created it, starts its own sshd on 127.0.0.1:22 (stopped by its pid at the end), and the first
``ray up`` runs ``make install`` as ``raylocal`` (minutes). Skipped, with the reason, elsewhere.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))
USER = "raylocal"
NAME = "rl-isac-local-test"


def _skip_reason() -> str | None:
    if os.environ.get("RL_ISAC_CLUSTER_TEST") != "1":
        return "opt-in: set RL_ISAC_CLUSTER_TEST=1 (starts an sshd on 127.0.0.1:22 and a Ray cluster)"
    if os.geteuid() != 0:
        return "needs root (creates the raylocal account and starts sshd)"
    for tool in ("/usr/sbin/sshd", shutil.which("rsync"), shutil.which("useradd")):
        if not tool or not Path(tool).exists():
            return "needs openssh-server, rsync and useradd (apt-get install -y openssh-server rsync)"
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 22)) == 0:
            return "127.0.0.1:22 is already in use"
    return None


def _run(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kwargs)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is not alive
        return fh.read().split(")")[-1].split()[0] != "Z"


@pytest.fixture
def loopback_sshd(tmp_path):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    created_user = subprocess.run(["id", USER], capture_output=True).returncode != 0
    if created_user:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", USER], check=True)
        subprocess.run(["usermod", "-p", "*", USER], check=True)  # not locked: sshd refuses locked accounts
    home = Path(f"~{USER}").expanduser()
    key, host_key = tmp_path / "key", tmp_path / "host_key"
    for k in (key, host_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(k)], check=True)
    subprocess.run(["install", "-d", "-m", "700", "-o", USER, "-g", USER, str(home / ".ssh")], check=True)
    subprocess.run(["install", "-m", "600", "-o", USER, "-g", USER, f"{key}.pub", str(home / ".ssh/authorized_keys")],
                   check=True)
    Path("/run/sshd").mkdir(exist_ok=True)
    config = tmp_path / "sshd_config"
    config.write_text(f"Port 22\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {tmp_path / 'sshd.pid'}\n"
                      f"PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nAllowUsers {USER}\n")
    sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", str(config), "-E", str(tmp_path / "sshd.log")])
    try:
        for _ in range(50):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", 22)) == 0:
                    break
            time.sleep(0.1)
        yield key
    finally:
        sshd.terminate()
        sshd.wait(timeout=10)
        if created_user:  # the account this test created: end its processes by pid, then remove it
            pids = subprocess.run(["ps", "-u", USER, "-o", "pid="], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            subprocess.run(["userdel", "-r", USER], capture_output=True, check=False)


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_local_cluster_up_submit_down_leaves_other_ray_processes_alone(loopback_sshd, tmp_path):
    config = yaml.safe_load((ROOT / "cluster" / "local.yaml").read_text())
    config["cluster_name"] = NAME
    config["auth"]["ssh_private_key"] = str(loopback_sshd)
    cluster_yaml = tmp_path / "cluster.yaml"
    cluster_yaml.write_text(yaml.safe_dump(config, sort_keys=False))
    # Another user's "Ray process": `ray stop` (run by `ray down`) matches it by name but may not kill it.
    sentinel = subprocess.Popen(["bash", "-c", 'exec -a "ray::sentinel-of-another-user" sleep 1800'])
    up = False
    try:
        res = _run([RAY, "up", "-y", "--no-config-cache", "--disable-usage-stats", str(cluster_yaml)], timeout=1800)
        assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
        up = True
        res = _run([RAY, "submit", str(cluster_yaml), str(ROOT / "tuning" / "sweep.py"), "--",
                    "--address", "127.0.0.1:6390", "--targets", "4", "--trials", "1", "--iterations", "1",
                    "--eval-every", "1", "--eval-episodes", "1", "--eval-blocks", "3", "--train-batch-size", "512",
                    "--train-blocks", "8", "--envs-per-env-runner", "1", "--env-runners", "1",
                    "--cpus-per-env-runner", "0.5", "--learner-cpus", "0.5", "--main-cpus", "0.5"], timeout=600)
        assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
        assert "best val_rmse_m" in res.stdout
        res = _run([RAY, "down", "-y", str(cluster_yaml)], timeout=300)
        up = False
        assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
        assert _alive(sentinel.pid), "ray down killed a Ray process of another user"
        left = _run(["pgrep", "-u", USER, "-f", "raylet|gcs_server"], timeout=10)
        assert left.stdout.strip() == "", f"Ray processes of {USER} left after ray down: {left.stdout}"
    finally:
        if up:
            _run([RAY, "down", "-y", str(cluster_yaml)], timeout=300)
        sentinel.send_signal(signal.SIGKILL)
        sentinel.wait()
        for suffix in (".state", ".lock"):
            Path(f"/tmp/ray/cluster-{NAME}{suffix}").unlink(missing_ok=True)
        shutil.rmtree("/tmp/ray-rl-isac-local", ignore_errors=True)  # the session folder local.yaml names
