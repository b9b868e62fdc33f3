"""Shared fixtures of the RLlib tests: a tiny env and a module built on the I = 4 reference checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ray.rllib")

# `dgnn_i4` (the committed I = 4 reference checkpoint) comes from tests/conftest.py.


def make_module(env, ckpt: Path, hidden: int = 32):
    from rl_isac.rllib.module import ISACPPOModule
    from rl_isac.training.pretrain import load_configs

    torch.manual_seed(0)
    return ISACPPOModule(observation_space=env.observation_space, action_space=env.action_space,
                         model_config={"dgnn": load_configs(ckpt)["dgnn"].to_dict(),
                                       "dgnn_weights": str(ckpt / "model.pt"), "hidden": hidden, "critic_hidden": 32})


@pytest.fixture(scope="module")
def env4():
    from rl_isac.rllib.env import ISACMultiAgentEnv

    return ISACMultiAgentEnv({"targets": 4, "blocks": 6})


@pytest.fixture(scope="module")
def module4(env4, dgnn_i4):
    return make_module(env4, dgnn_i4)
