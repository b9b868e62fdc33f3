"""Reading DGNN / L2O checkpoint directories (the layer the CUs load from; no training code).

A phase-1 checkpoint directory holds ``model.pt`` (DGNN state dict), ``config.yaml``
(``scenario``, ``dgnn``, ``train``, ``seed``) and optionally ``metrics.json``; a
``dgnn-l2o`` checkpoint adds ``l2o.pt`` and ``l2o_config.yaml`` (``l2o``, ``train``, ``seed``,
``dgnn_sha256``). The writers are :mod:`rl_isac.training.pretrain` and
:mod:`rl_isac.training.l2o`; the training sections are returned as plain dicts here
(the controllers that load a checkpoint never import the training layer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from rl_isac.errors import ConfigError
from rl_isac.io import file_sha256
from rl_isac.scenario import ScenarioConfig
from rl_isac.tracking.dgnn.l2o import L2OConfig, L2OHead
from rl_isac.tracking.dgnn.model import DGNN, DGNNConfig

__all__ = ["load_dgnn_checkpoint", "load_l2o_head"]


def load_dgnn_checkpoint(ckpt_dir: str | Path, map_location: str | torch.device = "cpu"
                         ) -> tuple[DGNN, dict[str, Any]]:
    """Model (eval mode) and ``{"scenario": ScenarioConfig, "dgnn": DGNNConfig, "train": dict, "seed": int}``.

    Raises:
        ConfigError: no ``model.pt`` or ``config.yaml`` in the directory.
    """
    d = Path(ckpt_dir)
    for name in ("model.pt", "config.yaml"):
        if not (d / name).is_file():
            raise ConfigError("checkpoint", str(d), f"no {name} in this directory (a phase-1 DGNN checkpoint)")
    data = yaml.safe_load((d / "config.yaml").read_text())
    configs = {"scenario": ScenarioConfig.from_dict(data["scenario"]), "dgnn": DGNNConfig.from_dict(data["dgnn"]),
               "train": dict(data.get("train", {})), "seed": int(data["seed"])}
    model = DGNN(configs["dgnn"])
    model.load_state_dict(torch.load(d / "model.pt", map_location=map_location, weights_only=True))
    model.eval()
    return model, configs


def load_l2o_head(ckpt_dir: str | Path, map_location: str | torch.device = "cpu") -> tuple[L2OHead, dict[str, Any]]:
    """Head (eval mode) and the ``l2o_config.yaml`` document with ``"l2o"`` parsed to :class:`L2OConfig`.

    Raises:
        ConfigError: no ``l2o.pt`` (train it first) or it was trained on another ``model.pt``.
    """
    d = Path(ckpt_dir)
    if not (d / "l2o.pt").is_file() or not (d / "l2o_config.yaml").is_file():
        raise ConfigError("checkpoint", str(d), "no l2o.pt (the dgnn-l2o association head) in this directory; "
                                                f"train it with rl-isac train-l2o --checkpoint {d}")
    data = yaml.safe_load((d / "l2o_config.yaml").read_text())
    if (d / "model.pt").is_file() and data.get("dgnn_sha256") != file_sha256(d / "model.pt"):
        raise ConfigError("checkpoint", str(d), "l2o.pt was trained on another model.pt (the DGNN changed); "
                                                f"retrain it with rl-isac train-l2o --checkpoint {d}")
    configs = {**data, "l2o": L2OConfig.from_dict(data["l2o"])}
    head = L2OHead(configs["l2o"])
    head.load_state_dict(torch.load(d / "l2o.pt", map_location=map_location, weights_only=True))
    head.eval()
    return head, configs
