"""Glue between ``rl-isac pretrain`` and :func:`rl_isac.training.pretrain.pretrain`.

``--config`` is a YAML file with optional sections ``scenario``, ``dgnn`` and ``train``
(each a mapping of fields of :class:`~rl_isac.scenario.ScenarioConfig`,
:class:`~rl_isac.tracking.dgnn.DGNNConfig`, :class:`~rl_isac.training.pretrain.PretrainConfig`);
fields not given keep their defaults (scenario: ``paper(--targets)`` at signal fidelity).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from rl_isac.errors import ConfigError
from rl_isac.scenario import ScenarioConfig


def configs_from_yaml(path: str | None, targets: int):
    from rl_isac.tracking.dgnn import DGNNConfig
    from rl_isac.training.pretrain import PretrainConfig

    data = {}
    if path is not None:
        if not Path(path).is_file():
            raise ConfigError("--config", path, "file not found")
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict) or set(data) - {"scenario", "dgnn", "train"}:
            raise ConfigError("--config", path, "must be a mapping with optional sections scenario, dgnn, train")
    scen = {"fidelity": "signal", **(data.get("scenario") or {})}
    cfg = ScenarioConfig.from_dict({**ScenarioConfig.paper(targets).to_dict(), **scen})
    dgnn_cfg = DGNNConfig.from_dict({**DGNNConfig(codebook_size=cfg.codebook_size).to_dict(),
                                     **(data.get("dgnn") or {})})
    train_cfg = PretrainConfig.from_dict({**PretrainConfig().to_dict(), **(data.get("train") or {})})
    return cfg, dgnn_cfg, train_cfg


def pretrain_from_args(args) -> int:
    from rl_isac.training.pretrain import pretrain

    cfg, dgnn_cfg, train_cfg = configs_from_yaml(args.config, args.targets)
    pretrain(cfg, dgnn_cfg, train_cfg, args.out, seed=args.seed, resume=args.resume, progress=True)
    return 0
