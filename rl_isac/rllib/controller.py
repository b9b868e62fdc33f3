"""The ``dgnn-ppo`` CU: a trained PPO module in the evaluation harness, without Ray.

``rl-isac evaluate --method dgnn-ppo --checkpoint DIR`` where ``DIR`` is a ``rl-isac train --out``
directory (the module is ``DIR/checkpoint/learner_group/learner/rl_module/cu_policy``) or that
module directory itself. The module is loaded with ``RLModule.from_checkpoint`` (no
``ray.init``; about 25 ms) and its class is asserted to be ours: RLlib silently falls back to
a plain ``RLModule`` when the class cannot be imported.

Each block: push the measurements into the CU's window (EKF anchor, exactly as the env
does), build the observation (:class:`~rl_isac.rllib.observation.ObservationBuilder`), run the
module's greedy inference pass (one frozen-encoder forward + ``J`` argmax steps), and return
the association of the chosen pairs, the head's beams, the estimate ``u_hat_q`` and, as the
range-gate prediction, the window's ``anchor_next`` (the env's rule). Re-acquisition as every DGNN CU
(:class:`~rl_isac.controllers.learned.HeadBeams`, issue 7): the pairs whose target the window's EKF anchor is
searching for, or whose predicted angle is uncertain, sweep ``K`` adjacent beams around ``anchor_next``
instead of the head's beams (``widen=False``: the head's beams everywhere, as before; the I = 8 gap of
issue 9 was that: lost tracks found again later or never).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from rl_isac.association.constraints import check_association, sub_actions_to_association
from rl_isac.controllers.base import Controller, CUAction
from rl_isac.errors import ConfigError
from rl_isac.physics.measurements import Measurements
from rl_isac.rllib.observation import ObservationBuilder
from rl_isac.scenario import ScenarioConfig
from rl_isac.tracking.window import MeasurementWindow


def resolve_module_dir(checkpoint: str | Path | None) -> Path:
    """The module directory of a training ``--out`` directory, an algorithm checkpoint or a module directory."""
    from rl_isac.rllib.callbacks import MODULE_ID

    if checkpoint is None:
        raise ConfigError("checkpoint", None, "dgnn-ppo needs --checkpoint DIR (a `rl-isac train --out` directory)")
    path = Path(checkpoint)
    for cand in (path, path / "checkpoint" / "learner_group" / "learner" / "rl_module" / MODULE_ID,
                 path / "learner_group" / "learner" / "rl_module" / MODULE_ID):
        if (cand / "class_and_ctor_args.pkl").is_file() and any(cand.glob("module_state*")):
            return cand
    raise ConfigError("checkpoint", str(path), "no trained cu_policy module here (expected a `rl-isac train --out` "
                                               "directory or its checkpoint/learner_group/learner/rl_module/cu_policy)")


def load_module(checkpoint: str | Path | None):
    """Load the trained module without Ray; raises if RLlib fell back to another class."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    from rl_isac.rllib.module import ISACPPOModule

    path = resolve_module_dir(checkpoint).resolve()  # from_checkpoint rejects relative paths
    module = RLModule.from_checkpoint(str(path))
    if type(module) is not ISACPPOModule:
        raise ConfigError("checkpoint", str(path), f"loaded a {type(module).__module__}.{type(module).__name__}, not "
                                                   f"rl_isac.rllib.module.ISACPPOModule (class not importable?)")
    module.eval()
    return module


class PPOController(Controller):
    """The trained policy as a CU (see the module docstring)."""

    name = "dgnn-ppo"

    def __init__(self, cfg: ScenarioConfig, module, widen: bool = True) -> None:
        from rl_isac.controllers.composed import GeometricBeams

        torch.set_num_threads(1)
        M, I = module.num_bs, module.num_targets
        if (M, I) != (cfg.num_bs, cfg.num_targets) or module.num_rf != cfg.num_rf:
            raise ConfigError("checkpoint", f"M={M}, I={I}, N_RF={module.num_rf}",
                              f"the module was trained for another size than the scenario (M={cfg.num_bs}, "
                              f"I={cfg.num_targets}, N_RF={cfg.num_rf})")
        self.cfg = cfg
        self.module = module
        self.window = MeasurementWindow(cfg, anchor=module.dgnn.cfg.window_anchor)
        # the detection probabilities only for a module trained with them (detection_features)
        self.builder = ObservationBuilder(cfg, detection=getattr(module, "detection_features", False),
                                          milp=getattr(module, "milp_features", False))
        self.block = 0
        self.beam_shape = (cfg.num_bs, cfg.num_targets, cfg.num_tracking_symbols, 2)
        self.widen = bool(widen)
        self.geometric = GeometricBeams(cfg)

    def predicted_position_covariance(self) -> np.ndarray:
        """``(I, 2, 2)`` m^2: the window anchor's predicted covariance (what the sweep rule reads)."""
        cov = self.window.anchor_predicted_covariance()
        if cov is None:
            raise ConfigError("window_anchor", self.window.anchor, "dgnn-ppo's beam sweep needs an EKF anchor")
        return cov

    @property
    def searching(self) -> np.ndarray | None:
        """``(I,)`` bool: the targets the window's EKF anchor is searching for."""
        return self.window.searching

    def _widened(self, beams: np.ndarray, prediction_m: np.ndarray) -> np.ndarray:
        """The head's beams with the sweep of :class:`~rl_isac.controllers.learned.HeadBeams` on wide pairs."""
        return self.geometric.sweep_wide(beams, prediction_m, self) if self.widen else beams

    @torch.no_grad()
    def _decide(self) -> CUAction:
        obs = self.builder.build(self.window, self.block, self.cfg.num_blocks)
        # the module's one-observation greedy decision: forward_inference's ACTIONS without RLlib's wrapper
        pairs, beams_flat, estimate_flat = self.module.decide(obs)
        assoc = sub_actions_to_association(pairs, self.cfg.num_bs, self.cfg.num_targets)
        assoc = check_association(assoc, self.cfg.num_rf, shape=(self.cfg.num_bs, self.cfg.num_targets))
        prediction = self.window.anchor_next_m
        beams = self._widened(np.asarray(beams_flat).reshape(self.beam_shape).astype(np.int64), prediction)
        estimate = np.asarray(estimate_flat).astype(float).reshape(-1, 2)
        return CUAction(association=assoc, beams=beams, estimate_m=estimate, prediction_m=prediction)

    def reset(self, initial_positions_m: np.ndarray) -> CUAction:
        self.window.reset(initial_positions_m)
        self.block = 0
        return self._decide()

    def act(self, meas: Measurements) -> CUAction:
        self.window.push(meas)
        self.block += 1
        return self._decide()


def make_ppo_controller(cfg: ScenarioConfig, checkpoint: str | None = None, **kwargs) -> PPOController:
    """Registry factory of ``dgnn-ppo``."""
    if kwargs:
        raise ConfigError("dgnn-ppo", sorted(kwargs), "takes no options besides checkpoint")
    module = load_module(checkpoint)
    meta = Path(checkpoint) / "train_config.json"
    if meta.is_file():
        trained = json.loads(meta.read_text())
        if trained["targets"] != cfg.num_targets:
            raise ConfigError("checkpoint", str(checkpoint), f"trained for I={trained['targets']}, evaluated with "
                                                             f"I={cfg.num_targets}")
    return PPOController(cfg, module)
