"""Evaluate a training run's behaviour-cloned module (``warm_start.pt``: the warm start before PPO) in the harness.

``python -m rl_isac.training.bc_eval RUN_DIR FIDELITY OUT.json [EPISODES]``: builds the module of
``RUN_DIR/train_config.json`` with the warm start's weights and runs it as the ``dgnn-ppo`` CU on the
evaluation seeds of run 0 (100 blocks): what PPO adds after the warm start is the difference to
``rl-isac evaluate --method dgnn-ppo --checkpoint RUN_DIR``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def evaluate_warm_start(run_dir: str, fidelity: str, episodes: int = 20, blocks: int = 100) -> dict:
    from rl_isac.errors import ConfigError
    from rl_isac.evaluation.harness import evaluate
    from rl_isac.rllib.callbacks import MODULE_ID
    from rl_isac.rllib.config import PPOTrainConfig, module_spec
    from rl_isac.rllib.controller import PPOController
    from rl_isac.rllib.env import env_scenario
    from rl_isac.scenario import ScenarioConfig

    path = Path(run_dir) / "warm_start.pt"
    if not path.is_file():
        raise ConfigError("run_dir", run_dir, "has no warm_start.pt (trained without warm_start: true)")
    run = json.loads((Path(run_dir) / "train_config.json").read_text())
    cfg = env_scenario(run["env_config"])
    spec = module_spec(run["dgnn"], None, PPOTrainConfig.from_dict(run["train"]), cfg, init_state=str(path))
    module = spec.rl_module_specs[MODULE_ID].build()
    module.eval()
    ecfg = ScenarioConfig.preset("paper", num_targets=run["targets"], fidelity=fidelity).replace(num_blocks=blocks)
    res = evaluate("dgnn-ppo", cfg=ecfg, episodes=episodes, blocks=blocks, seed=0,
                   controller=PPOController(ecfg, module), progress=False)
    res.update(method="dgnn-bc (warm start only)", checkpoint=str(path))
    return res


if __name__ == "__main__":
    from rl_isac.evaluation.harness import write_json_atomic

    result = evaluate_warm_start(sys.argv[1], sys.argv[2], int(sys.argv[4]) if len(sys.argv) > 4 else 20)
    write_json_atomic(result, sys.argv[3])
    print(f"{result['method']}: rmse {result['rmse_m']:.4f} m, lost {result['lost_fraction']:.4f}")
