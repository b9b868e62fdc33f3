"""The PPO learner of phase 2: RLlib's ``PPOTorchLearner`` with a lighter train batch.

The env runners' exploration pass caches the frozen encoder's outputs in the episodes
(``enc_z`` / ``enc_u``, :mod:`rl_isac.rllib.module`), so the learner never runs the DGNN: its
inputs (:data:`~rl_isac.rllib.module.ENCODER_ONLY_OBS_KEYS`, above all the ``(W, M, I, F)``
``features`` window, about 99 % of an observation's bytes) are dead weight in the train batch,
and RLlib shuffles, slices and converts the whole batch ``num_epochs`` times per iteration.
:class:`DropEncoderInputs`, appended after the generalised-advantage step (whose value pass
reads the cached encodings too), removes them wherever the cached columns are present; a
batch without them keeps every key (the module then re-encodes). Nothing numeric changes:
the same rows, the same shuffles (the permutation does not depend on the columns), the same
losses.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns

from rl_isac.rllib.module import ENC_U, ENC_Z, ENCODER_ONLY_OBS_KEYS


class DropEncoderInputs(ConnectorV2):
    """Learner connector piece: drop the encoder-only observation keys from module batches that carry the
    cached encodings (``enc_z``, ``enc_u``)."""

    def __call__(self, *, rl_module: Any, batch: dict[str, Any], episodes: Any, explore: bool | None = None,
                 shared_data: dict | None = None, **kwargs) -> Any:
        for module_batch in batch.values():
            if not isinstance(module_batch, dict) or ENC_Z not in module_batch or ENC_U not in module_batch:
                continue
            obs = module_batch.get(Columns.OBS)
            if isinstance(obs, dict):
                module_batch[Columns.OBS] = {k: v for k, v in obs.items() if k not in ENCODER_ONLY_OBS_KEYS}
        return batch


class ISACPPOTorchLearner(PPOTorchLearner):
    """``PPOTorchLearner`` whose learner pipeline ends with :class:`DropEncoderInputs`."""

    def build(self) -> None:
        super().build()
        if self._learner_connector is not None:
            self._learner_connector.append(DropEncoderInputs())
