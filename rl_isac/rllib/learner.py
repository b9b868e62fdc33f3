"""The PPO learner of phase 2: RLlib's ``PPOTorchLearner`` with a lighter train batch.

The env runners' exploration pass caches the frozen encoder's outputs in the episodes
(``enc_z`` / ``enc_u``, :mod:`rl_isac.rllib.module`), so the learner never runs the DGNN: its
inputs (:data:`~rl_isac.rllib.module.ENCODER_ONLY_OBS_KEYS`, above all the ``(W, M, I, F)``
``features`` window, about 99 % of an observation's bytes) are dead weight in the train batch,
and RLlib shuffles, slices and converts the whole batch ``num_epochs`` times per iteration.
:class:`DropEncoderInputs`, appended after the generalised-advantage step (whose value pass
reads the cached encodings too), removes them wherever the cached columns are present; a
batch without them keeps every key (the module then re-encodes). It also adds the
teacher-forcing inputs of the stored steps (context inputs, marginal gains, masks:
:meth:`~rl_isac.rllib.module.ISACPPOModule.teacher_forcing_inputs`), which no parameter
changes, once per train batch: the training pass of every minibatch and epoch reads them
instead of rebuilding them (about 40 % of its forward). The same rows, the same shuffles
(the permutation does not depend on the columns), the same functions.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModule

from rl_isac.rllib.module import ENC_U, ENC_Z, ENCODER_ONLY_OBS_KEYS


class DropEncoderInputs(ConnectorV2):
    """Learner connector piece: drop the encoder-only observation keys from module batches that carry the
    cached encodings (``enc_z``, ``enc_u``), and add the teacher-forcing inputs
    (:meth:`~rl_isac.rllib.module.ISACPPOModule.teacher_forcing_inputs`: parameter-free, so computed once per
    train batch instead of once per minibatch and epoch) to the batches of our modules."""

    def __call__(self, *, rl_module: Any, batch: dict[str, Any], episodes: Any, explore: bool | None = None,
                 shared_data: dict | None = None, **kwargs) -> Any:
        for mid, module_batch in batch.items():
            if not isinstance(module_batch, dict):
                continue
            obs = module_batch.get(Columns.OBS)
            actions = module_batch.get(Columns.ACTIONS)
            module = _module(rl_module, mid)
            if (module is not None and hasattr(module, "teacher_forcing_inputs") and isinstance(obs, dict)
                    and isinstance(actions, dict) and "pairs" in actions):
                module_batch.update(module.teacher_forcing_inputs(obs, torch.as_tensor(actions["pairs"])))
            if ENC_Z in module_batch and ENC_U in module_batch and isinstance(obs, dict):
                module_batch[Columns.OBS] = {k: v for k, v in obs.items() if k not in ENCODER_ONLY_OBS_KEYS}
        return batch


def _module(rl_module: Any, module_id: str) -> Any:
    """The single-agent module ``module_id`` of a MultiRLModule (None if it has none), or ``rl_module`` itself."""
    if isinstance(rl_module, MultiRLModule):
        return rl_module[module_id] if module_id in rl_module else None
    return rl_module


class ISACPPOTorchLearner(PPOTorchLearner):
    """``PPOTorchLearner`` whose learner pipeline ends with :class:`DropEncoderInputs`."""

    def build(self) -> None:
        super().build()
        if self._learner_connector is not None:
            self._learner_connector.append(DropEncoderInputs())
