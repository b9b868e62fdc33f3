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
