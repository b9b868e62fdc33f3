"""The PPO RLModule: frozen DGNN encoder, auto-regressive masked actor (eq. (11)), critic.

Per observation (batch ``B``; ``M`` BSs, ``I`` targets, ``P = M * I`` pairs, ``J = M * N_RF`` steps):

1. **Encoder** (frozen, phase 1 of the paper, Sec. 3.3): the DGNN of a phase-1 checkpoint
   (:class:`rl_isac.tracking.dgnn.DGNN`) gives ``u_hat_q`` (the ``estimate``), ``u_tilde_{q+1}``,
   the beam logits (decoded to the ``beams`` by :func:`~rl_isac.tracking.dgnn.model.beams_from_logits`,
   the world's grid pairing) and the target embeddings ``z (B, I, D)``. Estimate and beams
   are deterministic outputs; the distribution scores only the pairs. The encoder runs
   once per observation: on the env runner, whose exploration pass also returns the
   encodings (``enc_z``, ``enc_u``) as extra model outputs, which the learner's training
   pass and the critic then read from the batch instead of re-running the DGNN (the
   encoder is frozen, so they are the same numbers; a test checks it). Without them in
   the batch the encoder runs again.
2. **Pair embeddings** ``E (B, P, H)``, once per observation: an MLP of ``[z_i, pair_info_{m,i},
   prior_cov_i, anchor_log_std_i, anchor_age_i, p_m, (u_tilde_i - p_m) / scale, |u_tilde_i - p_m| /
   range_scale]``, and a pooled state ``g (B, H)``.
3. **Auto-regressive actor**, eq. (11): step ``j`` scores every pair from its embedding, the
   context vector ``v^(j)`` (remaining RF chains per BS, the paper's) with the coverage so far
   and ``j / J``, and the pair's own state (target covered, chains left at its BS, and the
   marginal gain of the myopic objective given the pairs already chosen, :func:`gain_feature`):
   ``logit_{j,k} = E_k . c_j + alpha_k cov + beta_k rem + gamma_k gain + b_k`` (a bilinear scorer: no
   ``(B, J, P, H)`` intermediate, so the teacher-forced pass is a few batched matmuls);
   ``gamma``'s bias starts at ``gain_prior`` (8), so the untrained actor already leans toward the
   greedy solver's choices; STOP is scored from ``[g, c_j]``. The exact mask
   (:mod:`rl_isac.rllib.mask`, the torch twin of :func:`rl_isac.association.valid_action_mask`) sets invalid entries to
   :data:`~rl_isac.rllib.mask.MASKED_LOGIT`. Exploration samples with Gumbel-max, inference
   takes the argmax; both loop over the ``J`` steps with a cheap scorer over the precomputed
   ``E``. Training recomputes all ``J`` steps' logits in one batched pass from the stored
   steps (teacher forcing, :func:`~rl_isac.rllib.mask.states_from_actions`), never re-sampling.
4. **Critic** (:class:`~ray.rllib.core.rl_module.apis.ValueFunctionAPI`): an MLP of the mean and
   max over targets of ``MLP([z_i, anchor_log_std_i, anchor_age_i, prior_cov_i])``, the block
   index ``q / Q`` and the mean/max anchor log-std.

Inference speed (the CU's decision at batch 1, the env runners' batches of 8): up to
:data:`NUMPY_ENCODE_MAX_BATCH` observations on the CPU, the frozen encoder and the pair MLP run in float32
numpy (:mod:`rl_isac.tracking.dgnn.numpy_infer`, :func:`rl_isac.rllib.ar_numpy.pair_embeddings`; per-op
dispatch, not arithmetic, bounds torch there), the decoder up to :data:`NUMPY_DECODE_MAX_BATCH` in
:mod:`rl_isac.rllib.ar_numpy`; the same functions as the torch modules (tests: 1e-5, decoder bit-identical).
:meth:`ISACPPOModule.decide` is the CU's one-observation decision without RLlib's wrapper.

``model_config`` keys: ``dgnn`` (the :class:`~rl_isac.tracking.dgnn.DGNNConfig` dict, required),
``dgnn_weights`` (path of the phase-1 ``model.pt`` loaded at construction; a module restored
from an RLlib checkpoint gets the weights from its saved state instead, so the path may be
absent there), ``hidden`` (``H``, 64), ``critic_hidden`` (128), ``pairing`` ("grid"),
``gain_prior`` (8.0; 0 = an uninformed start, the paper's), ``init_state`` (a full state dict loaded
at construction, e.g. the warm start; absent when restoring, like ``dgnn_weights``), ``detection_features``
(False; see below).

``detection_features=True`` (issue 9: the MILP's objective weights each pair by its credited detection
probability, which the plain actor never sees): the observation carries ``pair_detect (M, I)``
(:data:`rl_isac.rllib.observation.DETECTION_OBS_KEY`), appended to the pair MLP's input, and each step scores
two more per-pair features with their own coefficients (``pair_heads`` has 6 outputs instead of 4):
:func:`detection_gain_features`, the marginal gain of the *expected* objective over detection outcomes given
the pairs already chosen (log, as :func:`gain_feature`) and that gain relative to the target's expected cost
(what the chain price compares). ``gain_prior`` then initialises the expected gain's coefficient.
``milp_features=True`` (needs ``detection_features``) adds ``pair_milp (M, I)``
(:data:`rl_isac.rllib.observation.MILP_OBS_KEY`: the exact MILP's association on the observation's own
informations and detection probabilities) as one more pair input and one more scored feature (coefficient
initialised at ``milp_prior``, 4): the actor starts next to the myopic optimum and learns where to leave it.
Without these keys the module is the one of the checkpoints trained before the options, parameter for parameter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule
from torch import nn

from rl_isac.rllib import ar_numpy
from rl_isac.rllib.distribution import MaskedARDistribution, dist_input_sizes
from rl_isac.rllib.mask import MASKED_LOGIT, apply_step, initial_state, states_from_actions, valid_action_mask
from rl_isac.rllib.observation import DETECTION_OBS_KEY, MILP_OBS_KEY
from rl_isac.tracking.dgnn import numpy_infer
from rl_isac.tracking.dgnn.model import DGNN, DGNNConfig, beams_from_logits
from rl_isac.tracking.window import OBS_KEYS

NUMPY_DECODE_MAX_BATCH = 64
NUMPY_ENCODE_MAX_BATCH = 8
"""Batches up to this size run the frozen encoder and the pair MLP in numpy (:meth:`ISACPPOModule._numpy_path`):
per-op cost dominates there (batch 1: 0.8 vs 1.2 ms thread CPU), at 16 the torch pass's kernels win (6.5 vs 5.4)."""
"""Batches up to this size decode with :meth:`ISACPPOModule.decode_numpy` (CPU), larger ones in torch."""
ENC_Z = "enc_z"
"""Extra model output: the frozen encoder's target embeddings ``(B, I * D)``."""
ENC_U = "enc_u"
"""Extra model output: the encoder's ``u_tilde_{q+1}`` ``(B, I * 2)`` metres."""
TF_CTX_IN, TF_GAIN, TF_MASK = "tf_ctx_in", "tf_gain", "tf_mask"
"""Train-batch columns of :meth:`ISACPPOModule.teacher_forcing_inputs` (added by the learner's connector)."""
TF_KEYS = (TF_CTX_IN, TF_GAIN, TF_MASK)
ACTOR_CRITIC_OBS_KEYS = ("scales_m", "bs_positions", "prior_cov", "anchor_log_std", "anchor_age", "pair_info",
                         "pair_fim", "prior_fim", "block")
"""Observation keys the actor and the critic read (besides the encodings)."""
ENCODER_ONLY_OBS_KEYS = tuple(k for k in OBS_KEYS if k not in ACTOR_CRITIC_OBS_KEYS)
"""Observation keys only the frozen DGNN reads: a batch with cached encodings does not need them
(:class:`rl_isac.rllib.learner.DropEncoderInputs`)."""


def ar_decode(score, batch: int, num_bs: int, num_targets: int, num_rf: int, explore: bool,
              device=None, generator: torch.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The auto-regressive decoder of eq. (11): ``J = M * N_RF`` steps, each masked exactly.

    Args:
        score: ``score(state, j) -> (B, M*I + 1)`` logits of step ``j`` for the construction state
            ``(remaining, covered, chosen, stopped)`` (:mod:`rl_isac.rllib.mask`); entries the mask
            forbids are replaced here by ``MASKED_LOGIT`` whatever ``score`` returns.
        explore: Gumbel-max sampling (an exact sample of each masked categorical) or argmax.
    Returns:
        ``pairs (B, J)`` int64, joint ``logp (B,)`` and the masked logits ``(B, J, M*I + 1)``.
    """
    state = initial_state(batch, num_bs, num_targets, num_rf, device=device)
    actions, logps, rows = [], [], []
    for j in range(num_bs * num_rf):
        logits = score(state, j)
        logits = torch.where(valid_action_mask(*state), logits, torch.full_like(logits, MASKED_LOGIT))
        if explore:
            u = torch.rand(logits.shape, generator=generator, device=logits.device).clamp_(1e-12, 1.0 - 1e-7)
            a = (logits - torch.log(-torch.log(u))).argmax(-1)
        else:
            a = logits.argmax(-1)
        logps.append(torch.log_softmax(logits, -1).gather(-1, a[:, None]).squeeze(-1))
        actions.append(a)
        rows.append(logits)
        state = apply_step(state, a, num_targets)
    return torch.stack(actions, 1), torch.stack(logps, 1).sum(1), torch.stack(rows, 1)


def empty_slots(obs: dict[str, Any]) -> torch.Tensor | None:
    """``(B, I)`` bool: the empty target slots of a clustered observation (``target_valid == 0``), or None.

    An agent of a clustered env (:mod:`rl_isac.rllib.env`, ``clusters > 1``) has ``K`` target slots of which
    ``target_valid`` says which hold an owned target. The exact mask with empty slots
    (:func:`rl_isac.clusters.padded_action_mask`) treats an empty slot as covered (not required, (5d)) and
    as already chosen at every BS (not choosable, (5e)): the decoders and the teacher-forced pass start
    from that state. Observations without the key (one cluster) have no empty slot.
    """
    valid = obs.get("target_valid") if isinstance(obs, dict) else None
    if valid is None:
        return None
    return torch.as_tensor(valid) < 0.5


def gain_feature(info_before: torch.Tensor, pair_info: torch.Tensor) -> torch.Tensor:
    """``log10(max(g, 0) + 1e-6) / 4`` of the marginal gain ``g = tr A^-1 - tr (A + J)^-1`` (m^2).

    ``A`` is the target's prediction information plus what the chosen pairs already give it, ``J``
    the pair's; the per-step increment of the myopic objective (what the greedy solver ranks by).

    Shapes:
        ``[xx, xy, yy]`` entries in the last axis (1/m^2), broadcastable; returns the leading shape.
    """
    def tr_inv(m: torch.Tensor) -> torch.Tensor:
        a, b, c = m.unbind(-1)
        return (a + c) / (a * c - b * b).clamp_min(1e-12)

    g = tr_inv(info_before) - tr_inv(info_before + pair_info)
    return torch.log10(g.clamp_min(0.0) + 1e-6) / 4.0


def detection_tables(prior_fim: torch.Tensor, pair_fim: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What :func:`detection_gain_features` needs of an observation, independent of the chosen pairs.

    Returns ``cost (B, S, I)``: ``tr (P_i^-1 + sum_{m in D} J_{m,i})^-1`` (m^2) of every detected BS set ``D``
    (bitmask, ``S = 2^M``), ``delta (B, M, S, I)``: ``cost[D] - cost[D + m]`` (what BS ``m`` removes when it is
    detected too), and ``bits (S, M)`` bool.

    Shapes: ``prior_fim (B, I, 3)``, ``pair_fim (B, M, I, 3)`` (``[xx, xy, yy]``, 1/m^2).
    """
    B, M, I, _ = pair_fim.shape
    S = 1 << M
    ids = torch.arange(S, device=pair_fim.device)
    bits = ((ids[:, None] >> torch.arange(M, device=pair_fim.device)) & 1).bool()             # (S, M)
    summed = prior_fim[:, None] + torch.einsum("sm,bmic->bsic", bits.to(pair_fim.dtype), pair_fim)  # (B, S, I, 3)
    a, b, c = summed.unbind(-1)
    cost = (a + c) / (a * c - b * b).clamp_min(1e-12)                                          # (B, S, I)
    up = ids[None] | (1 << torch.arange(M, device=pair_fim.device))[:, None]                   # (M, S): D + m
    delta = cost[:, None] - cost[:, up]                                                        # (B, M, S, I)
    return cost, delta, bits


def detection_gain_features(tables: tuple[torch.Tensor, torch.Tensor, torch.Tensor], detect: torch.Tensor,
                            chosen: torch.Tensor) -> torch.Tensor:
    """Marginal gain of the expected myopic objective (:mod:`rl_isac.association.objective`) of every pair.

    With the BS set ``S_i`` already chosen for target ``i`` and detection probabilities ``p``, the expected cost
    is ``E c_i(S_i) = sum_{D subset S_i} w(D) cost_i(D)``, ``w(D) = prod_{m in D} p_m prod_{m in S_i - D} (1 - p_m)``,
    and adding BS ``m`` removes ``G = p_{m,i} sum_D w(D) (cost_i(D) - cost_i(D + m))`` (exactly). Returns
    ``[log10(max(G, 0) + 1e-6) / 4, G / E c_i(S_i)]`` per pair ``k = m * I + i``.

    Shapes: ``tables`` of :func:`detection_tables`, ``detect (B, M, I)``, ``chosen (B, J, M, I)`` (bool or 0/1)
    -> ``(B, J, M * I, 2)``.
    """
    cost, delta, bits = tables
    B, J, M, I = chosen.shape
    cp = chosen.to(detect.dtype) * detect[:, None]                                             # (B, J, M, I)
    w = torch.ones(B, J, bits.shape[0], I, dtype=detect.dtype, device=detect.device)           # (B, J, S, I)
    for m in range(M):
        f = cp[:, :, m, None, :]
        w = w * torch.where(bits[:, m, None], f, 1.0 - f)
    expected = (w * cost[:, None]).sum(2)                                                      # (B, J, I)
    gain = detect[:, None] * torch.einsum("bjsi,bmsi->bjmi", w, delta)                          # (B, J, M, I)
    rel = gain / expected.clamp_min(1e-12)[:, :, None]
    out = torch.stack([torch.log10(gain.clamp_min(0.0) + 1e-6) / 4.0, rel], -1)
    return out.reshape(B, J, M * I, 2)


def _mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.GELU(), nn.Linear(hidden, out))


class ISACPPOModule(TorchRLModule, ValueFunctionAPI):
    """See the module docstring. Spaces: :func:`rl_isac.rllib.env.observation_space` / ``action_space``."""

    def setup(self) -> None:
        mc: dict[str, Any] = dict(self.model_config or {})
        if "dgnn" not in mc:
            raise ValueError("ISACPPOModule needs model_config['dgnn'] (a DGNNConfig dict of the phase-1 checkpoint)")
        obs_space, act_space = self.observation_space, self.action_space
        W, M, I, F = obs_space["features"].shape
        self.num_steps, self.num_choices, self.num_beam_entries, self.num_estimate = dist_input_sizes(act_space)
        self.num_bs, self.num_targets = M, I
        self.num_pairs = M * I
        if self.num_choices != self.num_pairs + 1 or self.num_steps % M:
            raise ValueError(f"action space pairs {act_space['pairs']} does not fit M={M}, I={I}")
        self.num_rf = self.num_steps // M
        self.num_symbols = self.num_beam_entries // (self.num_pairs * 2)
        self.pairing = mc.get("pairing", "grid")
        dgnn_cfg = DGNNConfig.from_dict(mc["dgnn"])
        self.dgnn = DGNN(dgnn_cfg)
        weights = mc.get("dgnn_weights")
        self.dgnn_loaded_from = None
        if weights is not None and Path(weights).is_file():
            self.dgnn.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            self.dgnn_loaded_from = str(weights)
        for p in self.dgnn.parameters():
            p.requires_grad_(False)
        self.dgnn.eval()
        D = dgnn_cfg.hidden_dim
        H = int(mc.get("hidden", 64))
        HC = int(mc.get("critic_hidden", 128))
        self.hidden = H
        # pair MLP [target part (D + 5), pair part (9)] -> H -> H; its first layer split in two so the target
        # part runs once per target (B I rows) instead of once per pair (B M I rows): the same function
        self.detection_features = bool(mc.get("detection_features", False))
        self.milp_features = bool(mc.get("milp_features", False))
        if self.milp_features and not self.detection_features:
            raise ValueError("milp_features needs detection_features")
        for on, key in ((self.detection_features, DETECTION_OBS_KEY), (self.milp_features, MILP_OBS_KEY)):
            if on and key not in obs_space.spaces:
                raise ValueError(f"the module's options need the observation key {key!r} (env_config "
                                 f"detection_features / milp_features)")
        # per-pair step features scored beyond the plain four (detection gains, MILP bit): _extra_features
        self.num_extra = 2 * self.detection_features + self.milp_features
        self.pair_in_target = nn.Linear(D + 5, H)
        self.pair_in_pair = nn.Linear(9 + self.detection_features + self.milp_features, H, bias=False)
        self.pair_hidden = nn.Linear(H, H)
        self.target_mlp = _mlp(D + 5, H, H)
        self.ctx_lin = nn.Linear(M + I + 1, H)          # context v^(j), coverage, j / J
        # per-pair coefficients of the step state: target covered, chains left at its BS, marginal gain; bias
        # (+ with detection_features: the expected objective's marginal gain, log and relative; + the MILP's bit)
        self.pair_heads = nn.Linear(H, 4 + self.num_extra)
        with torch.no_grad():
            self.pair_heads.weight.mul_(0.1)
            prior = float(mc.get("gain_prior", 8.0))
            bias = [0.0, 0.0, 0.0 if self.detection_features else prior, 0.0]
            bias += [prior, 0.0] if self.detection_features else []
            bias += [float(mc.get("milp_prior", 4.0))] if self.milp_features else []
            self.pair_heads.bias.copy_(torch.tensor(bias))
        self.stop_mlp = _mlp(2 * H, H, 1)
        self.critic_target = _mlp(D + 5, HC, HC)
        self.critic_head = nn.Sequential(nn.Linear(2 * HC + 3, HC), nn.GELU(), nn.Linear(HC, HC), nn.GELU(),
                                         nn.Linear(HC, 1))
        bs_index = torch.arange(self.num_pairs) // I
        self.register_buffer("pair_bs", bs_index, persistent=False)
        self.register_buffer("pair_target", torch.arange(self.num_pairs) % I, persistent=False)
        init_state = mc.get("init_state")
        if init_state is not None and Path(init_state).is_file():  # e.g. the behaviour-cloning warm start
            self.load_state_dict(torch.load(init_state, map_location="cpu", weights_only=True))
        self._dist_cls = MaskedARDistribution.get_partial_dist_cls(
            num_steps=self.num_steps, num_choices=self.num_choices, num_beams=self.num_beam_entries,
            num_estimate=self.num_estimate)

    def train(self, mode: bool = True):
        # RLlib toggles eval() and back to train() around every exploration forward pass of a runner; nn.Module's
        # recursive walk over the ~100 submodules (most of them the DGNN's) cost about as much as the actor. The
        # frozen DGNN stays in eval mode, so only the actor/critic submodules (a flat list, built once) flip.
        if getattr(self, "_mode_applied", None) is mode:
            return self
        flat = self.__dict__.get("_trainable_submodules")
        if flat is None:
            super().train(mode)
            self.dgnn.eval()  # frozen: always in eval mode
            frozen = {id(m) for m in self.dgnn.modules()}
            flat = [m for m in self.modules() if id(m) not in frozen]
            self.__dict__["_trainable_submodules"] = flat  # not an nn attribute (no state, no recursion)
        else:
            for m in flat:
                m.training = mode
        self._mode_applied = mode
        return self

    # ------------------------------------------------------------------ distributions
    def get_inference_action_dist_cls(self):
        return self._dist_cls

    def get_exploration_action_dist_cls(self):
        return self._dist_cls

    def get_train_action_dist_cls(self):
        return self._dist_cls

    # ------------------------------------------------------------------ encoder
    @torch.no_grad()
    def encode(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The frozen DGNN on a batch of observations: ``u_hat (B, I, 2)``, ``u_tilde (B, I, 2)`` metres,
        ``beams (B, M, I, K, 2)`` int64, ``z (B, I, D)``.

        The same function by the cheapest path (tests check them equal to 1e-5): batches up to
        :data:`NUMPY_ENCODE_MAX_BATCH` on the CPU (the CU, the env runners) in float32 numpy
        (:func:`~rl_isac.tracking.dgnn.numpy_infer.numpy_forward`), larger ones by the lean torch pass
        (:meth:`~rl_isac.tracking.dgnn.model.DGNN.infer`)."""
        if self._numpy_path(obs):
            return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                    for k, v in self._encode_numpy({k: obs[k].float().numpy() for k in OBS_KEYS}).items()}
        out = self.dgnn.infer({k: obs[k].float() for k in OBS_KEYS})
        beams = beams_from_logits(out["beam_logits_tx"], out["beam_logits_rx"], self.num_symbols, self.pairing)
        return {"u_hat": out["u_hat"], "u_tilde": out["u_tilde"], "beams": beams, "z": out["target_embedding"]}

    def _numpy_path(self, obs: dict[str, Any]) -> bool:
        """Whether a batch takes the numpy inference path (CPU, at most :data:`NUMPY_ENCODE_MAX_BATCH`)."""
        first = obs[OBS_KEYS[0]]
        on_cpu = not isinstance(first, torch.Tensor) or first.device.type == "cpu"
        return first.shape[0] <= NUMPY_ENCODE_MAX_BATCH and on_cpu and numpy_infer.supports(self.dgnn)

    def _encode_numpy(self, obs: dict[str, np.ndarray]) -> dict[str, Any]:
        """:meth:`encode` of float32 observation arrays: numpy ``u_hat``, ``u_tilde``, ``z``; torch int64 ``beams``."""
        out = numpy_infer.numpy_forward(self.dgnn, obs)
        beams = beams_from_logits(torch.from_numpy(out["beam_logits_tx"]), torch.from_numpy(out["beam_logits_rx"]),
                                  self.num_symbols, self.pairing)
        return {"u_hat": out["u_hat"], "u_tilde": out["u_tilde"], "beams": beams, "z": out["target_embedding"]}

    @torch.no_grad()
    def decide(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Greedy inference of ONE observation (numpy arrays without a batch axis), the CU's decision: ``pairs (J,)``
        int64, ``beams (M * I * K * 2,)`` int64, ``estimate (I * 2,)`` float32 metres, exactly the ``ACTIONS`` of
        :meth:`forward_inference` on it (a test checks it) without RLlib's wrapper, the joint log-probability
        and the distribution inputs (what a CU does not read)."""
        batch = {k: np.asarray(v, dtype=np.float32)[None] for k, v in obs.items()}
        if not self._numpy_path(batch):
            out = self.forward_inference({Columns.OBS: {k: torch.from_numpy(v) for k, v in batch.items()}})
            act = out[Columns.ACTIONS]
            return act["pairs"][0].numpy(), act["beams"][0].numpy(), act["estimate"][0].numpy()
        enc = self._encode_numpy({k: batch[k] for k in OBS_KEYS})
        E, g = ar_numpy.pair_embeddings(self, batch, enc["z"], enc["u_tilde"])
        tobs = {k: torch.from_numpy(v) for k, v in batch.items()}
        pairs, _, _ = ar_numpy.decode_numpy(self, torch.from_numpy(E), torch.from_numpy(g), tobs, explore=False)
        return pairs[0].numpy(), enc["beams"][0].reshape(-1).numpy(), enc["u_hat"][0].reshape(-1).astype(np.float32)

    def _encoding(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Encoder outputs the critic and actor need: from the batch's cached columns when present."""
        if ENC_Z in batch and ENC_U in batch:
            B = batch[ENC_Z].shape[0]
            return {"z": batch[ENC_Z].reshape(B, self.num_targets, -1),
                    "u_tilde": batch[ENC_U].reshape(B, self.num_targets, 2)}
        return self.encode(batch[Columns.OBS])

    # ------------------------------------------------------------------ actor pieces
    def pair_embeddings(self, obs: dict[str, torch.Tensor], enc: dict[str, torch.Tensor]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """``E (B, P, H)`` and the pooled state ``g (B, H)``."""
        h, g = self._pair_features(obs, enc)
        B = h.shape[0]
        return self.pair_hidden(h).reshape(B, self.num_pairs, self.hidden), g

    def _pair_features(self, obs: dict[str, torch.Tensor], enc: dict[str, torch.Tensor]
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """The pair MLP's hidden layer ``h (B, M, I, H)`` (``E = pair_hidden(h)``) and ``g (B, H)``."""
        z, u_tilde = enc["z"], enc["u_tilde"]
        B, I, D = z.shape
        M = self.num_bs
        scales = obs["scales_m"].float()
        bs = obs["bs_positions"].float()                                                   # (B, M, 2) normalised
        rel = (u_tilde[:, None] - bs[:, :, None] * scales[:, 0, None, None, None]) / scales[:, 0, None, None, None]
        dist = rel.norm(dim=-1, keepdim=True) * (scales[:, 0] / scales[:, 2])[:, None, None, None]
        tgt = torch.cat([z, obs["prior_cov"].float(), obs["anchor_log_std"].float()[..., None],
                         obs["anchor_age"].float()[..., None]], dim=-1)                    # (B, I, D + 5)
        pair = torch.cat([obs["pair_info"].float(), bs[:, :, None].expand(B, M, I, 2), rel, dist], dim=-1)  # (.., 9)
        if self.detection_features:
            pair = torch.cat([pair, obs[DETECTION_OBS_KEY].float()[..., None]], dim=-1)           # (.., 10)
        if self.milp_features:
            pair = torch.cat([pair, obs[MILP_OBS_KEY].float()[..., None]], dim=-1)                # (.., 11)
        h = torch.nn.functional.gelu(self.pair_in_target(tgt)[:, None] + self.pair_in_pair(pair))  # (B, M, I, H)
        g = self.target_mlp(tgt).mean(1)
        return h, g

    def step_logits(self, E: torch.Tensor, g: torch.Tensor, obs: dict[str, torch.Tensor], remaining: torch.Tensor,
                    covered: torch.Tensor, chosen: torch.Tensor, stopped: torch.Tensor, step: torch.Tensor
                    ) -> torch.Tensor:
        """Masked logits of eq. (11) for the states of every step at once (teacher forcing).

        ``logit_{j,k} = E_k . c_j + alpha_k cov_{j,k} + beta_k rem_{j,k} + gamma_k gain_{j,k} + b_k`` with the
        context ``c_j = W [v^(j) / N_RF, covered^(j), j / J] + w``, the pair's target covered, its BS's chains
        left, and the marginal-gain feature :func:`gain_feature` (the myopic objective's increment of
        adding the pair to what step ``j`` already chose); ``(alpha, beta, gamma, b)_k`` a linear head of
        ``E_k``. STOP: ``MLP([g, c_j])``.

        Shapes:
            E ``(B, P, H)``, g ``(B, H)``; remaining ``(B, J, M)``, covered ``(B, J, I)``, chosen
            ``(B, J, M, I)``, stopped ``(B, J)``, step ``(J,)``. Returns ``(B, J, P + 1)``, invalid
            entries ``MASKED_LOGIT``.
        """
        B, P, H = E.shape
        rem = remaining.float() / self.num_rf
        step_f = (step.float() / self.num_steps).expand(remaining.shape[:-1])[..., None]
        ctx = self.ctx_lin(torch.cat([rem, covered.float(), step_f], dim=-1))              # (B, J, H)
        heads = self.pair_heads(E)                                                         # (B, P, 4)
        fim = obs["pair_fim"].float().reshape(B, P, 3)
        acc = torch.einsum("bjmi,bmic->bjic", chosen.float(), obs["pair_fim"].float())      # (B, J, I, 3)
        gain = gain_feature(obs["prior_fim"].float()[:, None, self.pair_target] + acc[:, :, self.pair_target],
                            fim[:, None])                                                  # (B, J, P)
        h = heads[:, None]                                                                 # (B, 1, P, 4)
        pair_logits = (torch.einsum("bjh,bph->bjp", ctx, E) + h[..., 0] * covered.float()[..., self.pair_target]
                       + h[..., 1] * rem[..., self.pair_bs] + h[..., 2] * gain + h[..., 3])
        if self.num_extra:
            pair_logits = pair_logits + (h[..., 4:] * self._extra_features(obs, chosen)).sum(-1)
        stop_logit = self.stop_mlp(torch.cat([g[:, None].expand(B, ctx.shape[1], H), ctx], dim=-1))  # (B, J, 1)
        logits = torch.cat([pair_logits, stop_logit], dim=-1)
        mask = valid_action_mask(remaining, covered, chosen, stopped)
        return torch.where(mask, logits, MASKED_LOGIT)

    def teacher_forcing_inputs(self, obs: dict[str, torch.Tensor], pairs: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the teacher-forced pass needs from the stored steps that no parameter changes (no gradient).

        Returns :data:`TF_CTX_IN` ``(B, J, M + I + 1)`` (the context input ``[v^(j) / N_RF, covered^(j), j / J]``),
        :data:`TF_GAIN` ``(B, J, P)`` (:func:`gain_feature` of every pair given the steps before ``j``) and
        :data:`TF_MASK` ``(B, J, P + 1)`` bool (the exact mask of every step). The same for every epoch and
        minibatch of an iteration, so the learner computes them once per train batch
        (:class:`rl_isac.rllib.learner.DropEncoderInputs`) and :meth:`train_logits` reads them from there.
        """
        with torch.no_grad():
            remaining, covered, chosen, stopped = states_from_actions(pairs.long(), self.num_bs, self.num_targets,
                                                                      self.num_rf)
            pad = empty_slots(obs)
            if pad is not None:  # empty target slots: covered and chosen before the first step (as in decoding)
                pad = pad.to(pairs.device)
                covered, chosen = covered | pad[:, None], chosen | pad[:, None, None]
            B, J = pairs.shape
            rem = remaining.float() / self.num_rf
            step_f = (torch.arange(J, device=pairs.device).float() / self.num_steps).expand(B, J)[..., None]
            pair_fim = obs["pair_fim"].float()
            acc = torch.einsum("bjmi,bmic->bjic", chosen.float(), pair_fim)                # (B, J, I, 3)
            gain = gain_feature(obs["prior_fim"].float()[:, None, self.pair_target] + acc[:, :, self.pair_target],
                                pair_fim.reshape(B, 1, self.num_pairs, 3))                 # (B, J, P)
            if self.num_extra:  # TF_GAIN (B, J, P, 1 + num_extra): the plain gain, then _extra_features
                gain = torch.cat([gain[..., None], self._extra_features(obs, chosen)], -1)
            return {TF_CTX_IN: torch.cat([rem, covered.float(), step_f], dim=-1), TF_GAIN: gain,
                    TF_MASK: valid_action_mask(remaining, covered, chosen, stopped)}

    def _extra_features(self, obs: dict[str, torch.Tensor], chosen: torch.Tensor, tables=None) -> torch.Tensor:
        """The scored step features beyond the plain four, ``(B, J, P, num_extra)`` for ``chosen (B, J, M, I)``:
        :func:`detection_gain_features`, then (``milp_features``) the MILP's bit of each pair."""
        detect = obs[DETECTION_OBS_KEY].float()
        if tables is None:
            tables = detection_tables(obs["prior_fim"].float(), obs["pair_fim"].float())
        out = detection_gain_features(tables, detect, chosen)
        if self.milp_features:
            B, J = chosen.shape[:2]
            bit = obs[MILP_OBS_KEY].float().reshape(B, 1, self.num_pairs, 1).expand(B, J, self.num_pairs, 1)
            out = torch.cat([out, bit], -1)
        return out

    def train_logits(self, obs: dict[str, torch.Tensor], enc: dict[str, torch.Tensor], pairs: torch.Tensor,
                     tf: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The teacher-forced logits of :meth:`step_logits` for the stored ``pairs (B, J)``, computed cheaper.

        The same function, regrouped (float rounding apart; a test checks they agree): the bilinear term
        ``E_k . c_j`` with ``E_k = W_E h_k + b_E`` is ``h_k . (W_E^T c_j) + b_E . c_j``, so the ``(B, P, H) x (H, H)``
        product of ``E`` is replaced by a ``(B, J, H) x (H, H)`` one (``J = 12 < P = 48``); the pair heads
        of ``E`` fold into one ``H -> 4`` layer of ``h``; the STOP MLP's first layer on ``[g, c_j]`` runs its ``g``
        half once per sample instead of once per step; the parameter-free parts (context inputs, marginal
        gains, mask) come from ``tf`` (:meth:`teacher_forcing_inputs`; computed here when ``None``).
        Returns ``(B, J, P + 1)``, invalid entries ``MASKED_LOGIT``.
        """
        if tf is None:
            tf = self.teacher_forcing_inputs(obs, pairs)
        h, g = self._pair_features(obs, enc)
        B = h.shape[0]
        M, P, H = self.num_bs, self.num_pairs, self.hidden
        h = h.reshape(B, P, H)
        ctx_in = tf[TF_CTX_IN]
        ctx = self.ctx_lin(ctx_in)                                                         # (B, J, H)
        We, be = self.pair_hidden.weight, self.pair_hidden.bias                            # E = h W_E^T + b_E
        Wh, bh = self.pair_heads.weight, self.pair_heads.bias
        heads = torch.addmm(torch.addmv(bh, Wh, be), h.reshape(B * P, H), (Wh @ We).t()).reshape(B, P, -1)
        ctx_e = ctx @ We                                                                   # (B, J, H): W_E^T c_j
        # (B, J, P) as the transpose of bmm(h, ctx_e^T) (B, P, J): the backward then hands h its gradient
        # contiguous (baddbmm(ctx_e, h^T) gave it transposed, and GELU's backward and the gradient sum ran
        # torch's strided loops): a minibatch 61 -> 53 ms (median, 250 samples, I = 8, same process, alternating;
        # the same logits, gradients equal to float rounding)
        bilinear = torch.bmm(h, ctx_e.transpose(1, 2)).transpose(1, 2) + (ctx @ be)[..., None]
        I, J = self.num_targets, ctx_in.shape[1]
        # per pair k = bs * I + target: its BS's chains left / N_RF and its target's coverage (broadcast copies)
        rem_p = ctx_in[..., :M, None].expand(B, J, M, I).reshape(B, J, P)
        cov_p = ctx_in[..., None, M:M + I].expand(B, J, M, I).reshape(B, J, P)
        gain = tf[TF_GAIN]
        if self.num_extra:
            gain, extra = gain[..., 0], gain[..., 1:]
        pair_logits = (bilinear + heads[:, None, :, 0] * cov_p + heads[:, None, :, 1] * rem_p
                       + heads[:, None, :, 2] * gain + heads[:, None, :, 3])
        if self.num_extra:
            pair_logits = pair_logits + (heads[:, None, :, 4:] * extra).sum(-1)
        s1, s2 = self.stop_mlp[0], self.stop_mlp[2]
        stop_g = torch.addmm(s1.bias, g, s1.weight[:, :H].t())                              # (B, H)
        stop_logit = s2(torch.nn.functional.gelu(stop_g[:, None] + ctx @ s1.weight[:, H:].t()))  # (B, J, 1)
        logits = torch.cat([pair_logits, stop_logit], dim=-1)
        return torch.where(tf[TF_MASK], logits, MASKED_LOGIT)

    def decode(self, E: torch.Tensor, g: torch.Tensor, obs: dict[str, torch.Tensor], explore: bool,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Auto-regressive decoding (exploration: Gumbel-max sampling; inference: argmax), step by step with
        the logits of :meth:`step_logits` (a test checks both agree) from a state this method owns.

        Returns ``pairs (B, J)``, joint ``logp (B,)``, masked logits ``(B, J, P + 1)``.
        """
        B, P, H = E.shape
        M, I, R, J = self.num_bs, self.num_targets, self.num_rf, self.num_steps
        Wc, bc = self.ctx_lin.weight, self.ctx_lin.bias                                # (H, M + I + 1)
        W_state = Wc[:, :M + I].t()                                                    # (M + I, H)
        w_step = Wc[:, M + I]
        heads = self.pair_heads(E)                                                     # (B, P, 4 + num_extra)
        alpha, beta, gamma, bias = heads[..., :4].unbind(-1)
        s1, s2 = self.stop_mlp[0], self.stop_mlp[2]
        stop_g = torch.addmm(s1.bias, g, s1.weight[:, :H].t())                          # (B, H) the g half, once
        stop_ctx_w = s1.weight[:, H:].t()
        fim = obs["pair_fim"].float().reshape(B, P, 3)
        prior_p = obs["prior_fim"].float()[:, self.pair_target]                          # (B, P, 3)
        tables = (detection_tables(obs["prior_fim"].float(), obs["pair_fim"].float())
                  if self.detection_features else None)
        rem = torch.full((B, M), 1.0, device=E.device)                                 # remaining / N_RF
        cov = torch.zeros(B, I, device=E.device)
        cho = torch.zeros(B, P, device=E.device)
        pad = empty_slots(obs)
        if pad is not None:  # an empty target slot: covered (not required, (5d)) and chosen at every BS ((5e))
            cov = pad.float().to(E.device)
            cho = cov[:, self.pair_target].clone()
        acc = torch.zeros(B, I, 3, device=E.device)                                    # information chosen so far
        stopped = torch.zeros(B, dtype=torch.bool, device=E.device)
        rows_idx = torch.arange(B, device=E.device)
        pb, pt = self.pair_bs, self.pair_target
        if explore:  # Gumbel-max: logits + Gumbel noise, argmax = one exact sample of each masked categorical
            u = torch.rand((J, B, P + 1), generator=generator, device=E.device).clamp_(1e-12, 1.0 - 1e-7)
            gumbel = -torch.log(-torch.log(u))
        actions, rows = [], []
        for j in range(J):
            ctx = torch.addmm(bc + (j / J) * w_step, torch.cat([rem, cov], 1), W_state)   # (B, H)
            rem_p, cov_p = rem[:, pb], cov[:, pt]                                          # (B, P)
            gain = gain_feature(prior_p + acc[:, pt], fim)
            pair_logits = torch.bmm(E, ctx[:, :, None])[..., 0] + alpha * cov_p + beta * rem_p + gamma * gain + bias
            if self.num_extra:
                extra = self._extra_features(obs, cho.reshape(B, 1, M, I), tables)[:, 0]      # (B, P, num_extra)
                pair_logits = pair_logits + (heads[..., 4:] * extra).sum(-1)
            stop = s2(torch.nn.functional.gelu(torch.addmm(stop_g, ctx, stop_ctx_w)))        # (B, 1)
            logits = torch.cat([pair_logits, stop], 1)                                     # (B, P + 1)
            # the exact mask (rl_isac.rllib.mask.valid_action_mask) from this state
            n_cov = cov.sum(1)
            must_cover = (I - n_cov) >= rem.sum(1) * R - 0.5                               # (5d) lookahead
            ok = (rem_p > 0) & (cho < 0.5) & (~must_cover[:, None] | (cov_p < 0.5)) & ~stopped[:, None]
            mask = torch.cat([ok, (stopped | (n_cov >= I))[:, None]], 1)
            logits = torch.where(mask, logits, MASKED_LOGIT)
            a = (logits + gumbel[j]).argmax(-1) if explore else logits.argmax(-1)
            actions.append(a)
            rows.append(logits)
            # state update; a chosen pair is valid, so it was neither chosen before nor past a STOP
            k = a.clamp(max=P - 1)
            f = ((a < P) & ~stopped).float()
            rem[rows_idx, pb[k]] -= f / R
            cho[rows_idx, k] += f
            t = pt[k]
            cov[rows_idx, t] = torch.maximum(cov[rows_idx, t], f)
            acc[rows_idx, t] += f[:, None] * fim[rows_idx, k]
            stopped = stopped | (a == P)
        pairs, logits = torch.stack(actions, 1), torch.stack(rows, 1)
        logp = torch.log_softmax(logits, -1).gather(-1, pairs[..., None])[..., 0].sum(1)
        return pairs, logp, logits

    def _dist_inputs(self, logits: torch.Tensor, beams: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
        B = logits.shape[0]
        return torch.cat([logits.reshape(B, -1), beams.reshape(B, -1).float(), estimate.reshape(B, -1).float()], -1)

    def decode_numpy(self, E: torch.Tensor, g: torch.Tensor, obs: dict[str, torch.Tensor], explore: bool,
                     rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`decode` in float32 numpy, for the small batches of the env runners and the CU.

        The same arithmetic as :meth:`decode` / :meth:`step_logits` (a test checks the teacher-forced
        log-probabilities and the greedy choices agree); a numpy op costs a fraction of a torch op's
        dispatch, which dominates at batch sizes of 1-16. The step loop is :func:`rl_isac.rllib.ar_numpy.decode_numpy`
        (bit-identical to the loop it replaced, a test checks it).
        """
        return ar_numpy.decode_numpy(self, E, g, obs, explore, rng)

    def decode_auto(self, E: torch.Tensor, g: torch.Tensor, obs: dict[str, torch.Tensor], explore: bool):
        """:meth:`decode_numpy` up to :data:`NUMPY_DECODE_MAX_BATCH` on the CPU, else :meth:`decode`."""
        small = E.shape[0] <= NUMPY_DECODE_MAX_BATCH and E.device.type == "cpu"
        return (self.decode_numpy if small else self.decode)(E, g, obs, explore)

    def _act(self, batch: dict[str, Any], explore: bool) -> dict[str, Any]:
        obs = batch[Columns.OBS]
        if self._numpy_path(obs):  # the CU's and the env runners' small batches: encoder + pair MLP in numpy
            obs_np = {k: v.float().numpy() for k, v in obs.items()}
            enc = self._encode_numpy({k: obs_np[k] for k in OBS_KEYS})
            E, g = ar_numpy.pair_embeddings(self, obs_np, enc["z"], enc["u_tilde"])
            enc = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in enc.items()}
            E, g = torch.from_numpy(E), torch.from_numpy(g)
        else:
            enc = self.encode(obs)
            E, g = self.pair_embeddings(obs, enc)
        B = E.shape[0]
        pairs, logp, logits = self.decode_auto(E, g, obs, explore)
        beams = enc["beams"].reshape(B, -1)
        estimate = enc["u_hat"].reshape(B, -1).float()
        out = {Columns.ACTIONS: {"pairs": pairs, "beams": beams, "estimate": estimate},
               Columns.ACTION_LOGP: logp,
               Columns.ACTION_DIST_INPUTS: self._dist_inputs(logits, beams, estimate)}
        if explore:
            out[ENC_Z] = enc["z"].reshape(B, -1)
            out[ENC_U] = enc["u_tilde"].reshape(B, -1)
        return out

    def _forward_exploration(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        with torch.inference_mode():
            return self._act(batch, explore=True)

    def _forward_inference(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        with torch.inference_mode():
            return self._act(batch, explore=False)

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return self._forward_inference(batch, **kwargs)

    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        """Teacher forcing: all ``J`` steps' masked logits from the stored ``ACTIONS["pairs"]`` in one pass."""
        obs = batch[Columns.OBS]
        enc = self._encoding(batch)
        actions = batch[Columns.ACTIONS]
        device = enc["z"].device
        pairs = torch.as_tensor(actions["pairs"], device=device).long()
        tf = {k: batch[k] for k in TF_KEYS} if all(k in batch for k in TF_KEYS) else None
        logits = self.train_logits(obs, enc, pairs, tf)                                          # (B, J, P + 1)
        B = logits.shape[0]
        beams = torch.as_tensor(actions["beams"], device=device).reshape(B, -1)
        estimate = torch.as_tensor(actions["estimate"], device=device).reshape(B, -1)
        return {Columns.ACTION_DIST_INPUTS: self._dist_inputs(logits, beams, estimate), Columns.EMBEDDINGS: enc}

    # ------------------------------------------------------------------ critic
    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        obs = batch[Columns.OBS]
        enc = embeddings if isinstance(embeddings, dict) else self._encoding(batch)
        z = enc["z"]
        log_std = obs["anchor_log_std"].float()
        tgt = torch.cat([z, obs["prior_cov"].float(), log_std[..., None], obs["anchor_age"].float()[..., None]], -1)
        c = self.critic_target(tgt)
        x = torch.cat([c.mean(1), c.amax(1), obs["block"].float().reshape(-1, 1), log_std.mean(1, keepdim=True),
                       log_std.amax(1, keepdim=True)], dim=-1)
        return self.critic_head(x).squeeze(-1)


def exploration_rollout(env, module: ISACPPOModule, steps: int, seed: int = 0
                        ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``steps`` env steps of one agent (``cu_0``) driven by ``module.forward_exploration``, without Ray: the
    batch a teacher-forcing check or a learner benchmark replays.

    Returns ``(obs, actions, outputs)``: the stacked observations ``{key: (steps, ...)}``, the actions
    ``pairs`` / ``beams`` / ``estimate`` ``(steps, ...)``, and the module's ``ACTION_LOGP``, ``ACTION_DIST_INPUTS``
    and cached encoder outputs (``ENC_Z``, ``ENC_U``) concatenated over the steps. Seeds torch and ``env.reset``
    with ``seed``; an episode that ends is reset and continued."""
    from rl_isac.tracking.window import stack_observations

    torch.manual_seed(seed)
    obs, _ = env.reset(seed=seed)
    rows = []
    for _ in range(steps):
        o = {k: torch.as_tensor(v)[None] for k, v in obs["cu_0"].items()}
        out = module.forward_exploration({Columns.OBS: o}, t=0)
        act = {k: v[0].numpy() for k, v in out[Columns.ACTIONS].items()}
        rows.append((obs["cu_0"], act, out))
        obs, _, term, _, _ = env.step({"cu_0": act})
        if term["__all__"]:
            obs, _ = env.reset()
    ob = {k: torch.as_tensor(v) for k, v in stack_observations([r[0] for r in rows]).items()}
    acts = {k: torch.as_tensor(np.stack([r[1][k] for r in rows])) for k in ("pairs", "beams", "estimate")}
    keys = (Columns.ACTION_LOGP, Columns.ACTION_DIST_INPUTS, ENC_Z, ENC_U)
    return ob, acts, {k: torch.cat([r[2][k] for r in rows]) for k in keys}
