"""Bad inputs of `rl-isac train` are clear errors before Ray starts (no Ray in this file)."""

from __future__ import annotations

import pytest

from rl_isac.errors import ConfigError


def test_bad_inputs_fail_before_ray(dgnn_i4, tmp_path):
    import ray

    from rl_isac.training.ppo import prepare

    with pytest.raises(ConfigError, match="trained for I=4"):
        prepare(6, str(dgnn_i4), str(tmp_path / "x"))
    with pytest.raises(ConfigError, match="not a directory"):
        prepare(4, str(tmp_path / "missing"), str(tmp_path / "x"))
    with pytest.raises(ConfigError, match="minibatch_size"):
        prepare(4, str(dgnn_i4), str(tmp_path / "x"), minibatch_size=10, train_batch_size=5)
    with pytest.raises(ConfigError, match="gamma"):
        prepare(4, str(dgnn_i4), str(tmp_path / "x"), gamma=1.5)
    with pytest.raises(ConfigError, match="file not found"):
        prepare(4, str(dgnn_i4), str(tmp_path / "x"), config=str(tmp_path / "nope.yaml"))
    assert not ray.is_initialized()


def test_controllers_and_cli_do_not_import_ray_until_dgnn_ppo_is_built():
    """`dgnn-ppo` is registered without importing Ray; only building it imports the RLlib application."""
    import subprocess
    import sys

    code = ("import sys; import rl_isac.cli, rl_isac.controllers.registry as r; r._load_learned(); "
            "assert 'dgnn-ppo' in r.METHODS; print(sorted(m for m in sys.modules if m == 'ray' or "
            "m.startswith('ray.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout
