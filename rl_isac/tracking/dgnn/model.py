"""The DGNN estimator (paper Sec. 3.1) and the beam prediction head (Sec. 3.2, eq. (12)).

Input: a batch of window observations (:mod:`rl_isac.tracking.window`), as tensors
with a leading batch axis ``B``. Pipeline:

1. **SAM** (eqs. (6)-(8)): for every block of the window, ``L`` layers of
   :class:`~rl_isac.tracking.dgnn.layers.SpatialAttentionLayer` over the bipartite BS ->
   target graph whose edges are the *detected* pairs of that block (an
   assigned-but-missed pair has no measurement, so no edge; the window still
   carries its flag). All ``B * W`` graphs are one disjoint graph.
2. **TAM** (eq. (9)): sinusoidal positional encoding (index = age of the block,
   0 for the current one, so any ``W`` works) + two Transformer encoder layers
   over the window; padding blocks are masked out of the attention (the current
   block never is). The first layer's output at the current block gives
   ``u_hat_q``, the second's gives ``u_tilde_{q+1}`` and the target embedding.
3. **Beam head** (eq. (12)): ``MLP([p_m; u_tilde_i, ...])`` -> logits over the codebook,
   separately for tx and rx, for every (BS, target) pair;
   :func:`beams_from_logits` turns them into ``K`` (tx, rx) pairs per symbol (by default
   the world's monopulse-like grid of the two best tx and rx beams).

Our improvements over the paper, each a :class:`DGNNConfig` flag (``DGNNConfig.paper()``
restores the paper's choices):

* ``edge_features="cartesian"`` (paper: ``"paper"`` = ``[d_hat, theta_hat]``): every
  window feature, in particular the Cartesian position implied by the measurement,
  relative to the BS and to the target's anchor, and the measurement's quality
  (log stds from the covariance, SNR). Fusing polar measurements from BSs at
  different places is a nonlinear job the network would otherwise have to learn
  from scratch; in Cartesian form it is close to a weighted average.
* ``residual=True`` (paper: absolute coordinates): outputs are
  ``anchor + residual_scale_m * net(...)`` (``anchor_next`` for ``u_tilde``; with the
  window's default EKF anchor the DGNN learns a correction of the EKF, see
  :mod:`rl_isac.tracking.window`); the last layer of each position head is
  zero-initialised, so an untrained model already returns the anchor. Absolute
  coordinates in a 300 m area would need 1e-4 relative precision for a 3 cm error.
* ``anchor_init=True`` (paper: target nodes start at zero): ``h^(0)_i`` is an MLP of the
  target's anchor, its predicted step ``anchor_next - anchor``, its age and its std; this
  is also how the acquisition at ``q = 0`` enters.
* ``target_mode="shared"`` (paper: ``"concat"``): the TAM runs on each target's sequence
  separately with shared weights, so one model serves any number of targets and a
  permutation of the targets permutes the outputs. ``"concat"`` is the paper's
  ``h~_q = [h_1; ...; h_I]`` of size ``I * D`` (a model for one ``I`` only). In both
  modes the position heads read each target's ``D``-chunk of the last state.
  Shared mode has no target-target interaction; two close targets are resolved by
  the BS front ends (range gating), not by the CU.
* ``beam_input="geometry"`` (paper: ``"paper"`` = ``[p_m; u_tilde_i]``): adds the
  direction ``(cos, sin)`` and distance from BS ``m`` to ``u_tilde_i`` and the target
  embedding, and adds to the MLP's logits a codebook prior
  ``-a ((cos theta - u_b) / (2 / C))^2`` (``u_b = -1 + (2 b + 1) / C`` the DFT beam
  directions, ``a`` learnt, initialised to 1). The best beam is a 32-step staircase
  of ``cos theta``, which an MLP learns slowly; with the prior the head starts at
  "the beam nearest to the predicted position" and learns corrections (for the
  prediction's uncertainty, for instance). In both modes the predicted position
  enters the beam head detached: the beam cross-entropy does not move the position
  estimate.

Measured on the single-peak front end and the per-pair-gated EKF of revision a5a3f12 (superseded: with
the multi-peak front end, the CU's data association and closed-loop pre-training, the DGNN's estimate
equals its EKF anchor within a few millimetres in closed loop; see ``results/dgnn_report_I*.json`` and
``results/table_dgnn.md``) (I = 4, D = 64, L = 2, phase-1 pre-training of :mod:`rl_isac.training.pretrain`,
seed 0; RMSE per target in metres on 800 held-out samples, 16 episodes x 50 blocks,
same measurement sequences for the DGNN and the EKF; ``u_hat_q`` / ``u_tilde_{q+1}``):

======================================  ===============  ===============
setting                                 DGNN             EKF
======================================  ===============  ===============
surrogate, measurement anchor (4800)    0.309 / 0.506    0.226 / 0.368
surrogate, EKF anchor (4800)            0.226 / 0.368    0.226 / 0.368
signal, EKF anchor (2400)               0.930 / 1.076    1.073 / 1.330
signal, measurement anchor (2400)       0.949 / 1.132    1.048 / 1.290
======================================  ===============  ===============

The surrogate draws Gaussian errors with the very covariance the EKF uses, so the EKF
is close to optimal there: the EKF-anchored model found nothing to correct (its best
epoch on validation was the untrained one, i.e. the EKF itself). At signal level the
estimation errors are heavy-tailed and the learned correction cuts the RMSE by 13 %
(now) and 19 % (next), at the price of a slightly larger median error (0.094 m vs
0.073 m): pre-train on ``fidelity="signal"`` with the EKF anchor.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter as pyg_scatter
from torch_geometric.utils import softmax as pyg_softmax

from rl_isac.config import ConfigMixin
from rl_isac.errors import ConfigError
from rl_isac.tracking.dgnn.layers import SpatialAttentionLayer, dense_to_edges, mlp
from rl_isac.tracking.window import ANCHORS, FEATURE_INDEX, NUM_FEATURES, OBS_KEYS, PAPER_FEATURES

EDGE_FEATURES = ("cartesian", "paper")
TARGET_MODES = ("shared", "concat")
BEAM_INPUTS = ("geometry", "paper")
PAIRINGS = ("distinct", "grid")


@dataclass(frozen=True)
class DGNNConfig(ConfigMixin):
    """Hyper-parameters of :class:`DGNN`."""

    hidden_dim: int = 64
    """``D``, hidden size of the target nodes and of the Transformer (shared mode)."""
    num_layers: int = 2
    """``L``, SAM message-passing layers per block."""
    sam_heads: int = 1
    """Attention heads of the SAM (1 = the paper's eq. (8))."""
    tam_heads: int = 4
    """Heads of the TAM's multi-head self-attention."""
    ff_dim: int = 128
    """Feed-forward size of each Transformer encoder layer (``I * ff_dim`` in concat mode)."""
    dropout: float = 0.0
    """Dropout in the Transformer layers (0 keeps training bit-for-bit reproducible)."""
    codebook_size: int = 32
    """``C`` = ``M_T = M_R``, beams per codebook; the beam head's output size."""
    edge_features: str = "cartesian"
    """``"cartesian"``: all window features; ``"paper"``: ``[d_hat, theta_hat]`` only."""
    residual: bool = True
    """Predict positions as ``anchor + residual`` (True) or absolute (False, the paper)."""
    anchor_init: bool = True
    """Initial target state from the anchor (True) or zero (False, the paper)."""
    target_mode: str = "shared"
    """``"shared"``: per-target TAM with shared weights; ``"concat"``: the paper's ``I * D`` vector."""
    num_targets: int | None = None
    """``I``; required by ``target_mode="concat"`` only (the model then serves this ``I`` only)."""
    beam_input: str = "geometry"
    """``"geometry"``: ``[p_m, u_tilde, direction, distance, embedding]`` + codebook prior; ``"paper"``:
    ``[p_m, u_tilde]``."""
    window_anchor: str = "ekf"
    """Anchor mode of the :class:`~rl_isac.tracking.window.MeasurementWindow` that feeds the model (its
    inputs mean what they mean only for that mode): build it as ``MeasurementWindow(cfg, anchor=...)``."""

    def __post_init__(self) -> None:
        def integer(name: str, lo: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(name, v, f"must be an integer >= {lo}")

        for name, lo in (("hidden_dim", 2), ("num_layers", 1), ("sam_heads", 1), ("tam_heads", 1),
                         ("ff_dim", 1), ("codebook_size", 2)):
            integer(name, lo)
        if self.hidden_dim % 2:
            raise ConfigError("hidden_dim", self.hidden_dim, "must be even (eq. (6) concatenates two halves)")
        if self.hidden_dim % self.sam_heads:
            raise ConfigError("sam_heads", self.sam_heads, f"must divide hidden_dim={self.hidden_dim}")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ConfigError("dropout", self.dropout, "must be in [0, 1)")
        for name, allowed in (("edge_features", EDGE_FEATURES), ("target_mode", TARGET_MODES),
                              ("beam_input", BEAM_INPUTS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(name, getattr(self, name), f"must be one of {allowed}")
        if self.window_anchor not in ANCHORS:
            raise ConfigError("window_anchor", self.window_anchor, f"must be one of {ANCHORS}")
        for name in ("residual", "anchor_init"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, getattr(self, name), "must be a bool")
        if self.target_mode == "concat":
            if self.num_targets is None:
                raise ConfigError("num_targets", None, 'target_mode="concat" needs the number of targets')
            integer("num_targets", 1)
        elif self.num_targets is not None:
            integer("num_targets", 1)
        if self.model_dim % self.tam_heads:
            raise ConfigError("tam_heads", self.tam_heads, f"must divide the Transformer width {self.model_dim}")

    @property
    def model_dim(self) -> int:
        """Transformer width: ``D`` (shared) or ``I * D`` (concat)."""
        return self.hidden_dim * (self.num_targets if self.target_mode == "concat" else 1)

    @property
    def edge_dim(self) -> int:
        """Size of the SAM's edge feature."""
        return NUM_FEATURES if self.edge_features == "cartesian" else len(PAPER_FEATURES)

    @classmethod
    def paper(cls, num_targets: int, **overrides: Any) -> DGNNConfig:
        """The paper's choices: polar edge features, zero init, absolute outputs, concatenated targets."""
        kw: dict[str, Any] = dict(edge_features="paper", residual=False, anchor_init=False, target_mode="concat",
                                  num_targets=num_targets, beam_input="paper")
        kw.update(overrides)
        return cls(**kw)

def sinusoidal_encoding(length: int, dim: int, device: torch.device | None = None) -> Tensor:
    """Positional encoding ``P`` of eq. (9) (Vaswani et al.), row ``a`` for age ``a``.

    Shapes:
        returns ``(length, dim)`` float32.
    """
    pos = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    k = torch.arange(0, dim, 2, dtype=torch.float32, device=device)
    freq = torch.exp(-math.log(10000.0) * k / dim)
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return pe


def to_tensors(obs: dict[str, np.ndarray], device: torch.device | str | None = None) -> dict[str, Tensor]:
    """Window arrays (batched or not) -> float32 tensors; a missing batch axis is added.

    Shapes:
        ``features (W, M, I, F)`` or ``(B, W, M, I, F)``; the other keys alike.
    """
    batched = np.ndim(obs["features"]) == 5
    out = {}
    for key in OBS_KEYS:
        t = torch.as_tensor(np.asarray(obs[key]), dtype=torch.float32, device=device)
        out[key] = t if batched else t.unsqueeze(0)
    return out


class DGNN(nn.Module):
    """DGNN estimator + beam head.

    ``forward(obs)`` with ``obs`` a dict of float tensors (batch ``B`` leading):

    Shapes (input):
        features ``(B, W, M, I, F)``, block_valid ``(B, W)``, bs_positions ``(B, M, 2)``,
        anchor ``(B, I, 2)``, anchor_next ``(B, I, 2)``, anchor_age ``(B, I)``, anchor_log_std ``(B, I)``,
        scales_m ``(B, 3)`` (the arrays of :class:`~rl_isac.tracking.window.MeasurementWindow`, batched).
    Shapes (output dict):
        ``u_hat (B, I, 2)`` metres (current block ``q``), ``u_tilde (B, I, 2)`` metres
        (next block ``q + 1``), ``beam_logits_tx (B, M, I, C)``, ``beam_logits_rx (B, M, I, C)``,
        ``target_embedding (B, I, D)``.
    """

    def __init__(self, cfg: DGNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        D = cfg.hidden_dim
        self.register_buffer("edge_channels", torch.tensor(
            list(range(NUM_FEATURES)) if cfg.edge_features == "cartesian" else list(PAPER_FEATURES)),
            persistent=False)
        self.init_mlp = nn.Sequential(mlp(6, D, D), nn.LayerNorm(D)) if cfg.anchor_init else None
        self.sam = nn.ModuleList([SpatialAttentionLayer(2, cfg.edge_dim, D, cfg.sam_heads)
                                  for _ in range(cfg.num_layers)])
        d_model = cfg.model_dim
        ff = cfg.ff_dim * (d_model // D)

        def encoder_layer() -> nn.TransformerEncoderLayer:
            return nn.TransformerEncoderLayer(d_model, cfg.tam_heads, ff, cfg.dropout, activation="gelu",
                                              batch_first=True)

        self.tam1 = encoder_layer()  # first MHSA layer -> u_hat_q
        self.tam2 = encoder_layer()  # second MHSA layer -> u_tilde_{q+1}
        self.head_now = mlp(D, D, 2)
        self.head_next = mlp(D, D, 2)
        if cfg.residual:  # untrained model returns the anchor
            for head in (self.head_now, self.head_next):
                nn.init.zeros_(head[-1].weight)
                nn.init.zeros_(head[-1].bias)
        beam_in = 4 if cfg.beam_input == "paper" else 4 + 3 + D
        C = cfg.codebook_size
        self.register_buffer("beam_directions", -1.0 + (2.0 * torch.arange(C) + 1.0) / C, persistent=False)
        self.beam_prior_scale = nn.Parameter(torch.ones(())) if cfg.beam_input == "geometry" else None
        self.beam_head = nn.Sequential(nn.Linear(beam_in, 2 * D), nn.GELU(), nn.Linear(2 * D, 2 * D), nn.GELU(),
                                       nn.Linear(2 * D, 2 * cfg.codebook_size))

    # ------------------------------------------------------------------ pieces
    def _initial_states(self, obs: dict[str, Tensor], B: int, I: int, D: int) -> Tensor:
        """Target node states before the first SAM layer, ``(B, I, D)``: ``init_mlp`` of the EKF anchor (position,
        scaled one-block step, age, log std) when the model has one, zeros otherwise (the paper's)."""
        if self.init_mlp is None:
            return obs["features"].new_zeros(B, I, D)
        scales = obs["scales_m"]
        step = (obs["anchor_next"] - obs["anchor"]) * (scales[:, 0] / scales[:, 1])[:, None, None]
        tgt = torch.cat([obs["anchor"], step, obs["anchor_age"][..., None], obs["anchor_log_std"][..., None]],
                        dim=-1)                                                         # (B, I, 6)
        return self.init_mlp(tgt)

    def spatial(self, obs: dict[str, Tensor]) -> Tensor:
        """SAM over every block: target states after ``L`` layers, eqs. (6)-(8).

        Shapes:
            returns ``(B, W, I, D)``.
        """
        feats = obs["features"]
        B, W, M, I, F = feats.shape
        D = self.cfg.hidden_dim
        h0 = self._initial_states(obs, B, I, D)                                         # (B, I, D)
        h = h0[:, None].expand(B, W, I, D).reshape(B * W * I, D)
        det = feats[..., FEATURE_INDEX["detected"]] > 0.5
        edge_mask = det & (obs["block_valid"] > 0.5)[:, :, None, None]
        edge_index, flat = dense_to_edges(edge_mask.reshape(B * W, M, I), M, I)
        edge_attr = feats.reshape(-1, F)[flat][:, self.edge_channels]
        x_bs = obs["bs_positions"][:, None].expand(B, W, M, 2).reshape(B * W * M, 2)
        for layer in self.sam:
            h = layer(x_bs, h, edge_index, edge_attr)
        return h.view(B, W, I, D)

    def temporal(self, h: Tensor, block_valid: Tensor) -> tuple[Tensor, Tensor]:
        """TAM, eq. (9): the two encoder layers' outputs at the current block.

        Shapes:
            h: ``(B, W, I, D)``; block_valid: ``(B, W)``.
            returns ``(z1, z2)``, each ``(B, I, D)``.
        """
        B, W, I, D = h.shape
        pad = block_valid <= 0.5
        pad = torch.cat([pad[:, :-1], torch.zeros_like(pad[:, -1:])], dim=1)  # the current block always attends
        if self.cfg.target_mode == "shared":
            seq = h.permute(0, 2, 1, 3).reshape(B * I, W, D)
            pad = pad[:, None].expand(B, I, W).reshape(B * I, W)
        else:
            if I != self.cfg.num_targets:
                raise ValueError(f"concat-mode DGNN built for {self.cfg.num_targets} targets got {I}")
            seq = h.reshape(B, W, I * D)
        pe = sinusoidal_encoding(W, seq.shape[-1], seq.device).flip(0)  # row W-1 (current) = age 0
        z = seq + pe  # eq. (9)
        z1 = self.tam1(z, src_key_padding_mask=pad)
        z2 = self.tam2(z1, src_key_padding_mask=pad)
        return z1[:, -1].reshape(B, I, D), z2[:, -1].reshape(B, I, D)

    def _positions(self, head_out: Tensor, obs: dict[str, Tensor], anchor_key: str) -> Tensor:
        scales = obs["scales_m"]
        pos_scale = scales[:, 0, None, None]
        if self.cfg.residual:
            return obs[anchor_key] * pos_scale + head_out * scales[:, 1, None, None]
        return head_out * pos_scale

    def beam_logits(self, u_tilde_m: Tensor, embedding: Tensor, obs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Beam head, eq. (12), for every (BS, target) pair.

        Shapes:
            u_tilde_m: ``(B, I, 2)`` metres; embedding: ``(B, I, D)``.
            returns tx and rx logits, each ``(B, M, I, C)``.
        """
        scales = obs["scales_m"]
        p = obs["bs_positions"]                                      # (B, M, 2) normalised
        B, M, _ = p.shape
        I = u_tilde_m.shape[1]
        u = u_tilde_m.detach() / scales[:, 0, None, None]            # (B, I, 2) normalised
        parts = [p[:, :, None].expand(B, M, I, 2), u[:, None].expand(B, M, I, 2)]
        if self.cfg.beam_input == "geometry":
            rel = u_tilde_m.detach()[:, None] - p[:, :, None] * scales[:, 0, None, None, None]  # (B, M, I, 2) m
            dist = rel.norm(dim=-1, keepdim=True).clamp_min(1e-6)
            parts += [rel / dist, dist / scales[:, 2, None, None, None],
                      embedding[:, None].expand(B, M, I, embedding.shape[-1])]
        logits = self.beam_head(torch.cat(parts, dim=-1))
        C = self.cfg.codebook_size
        if self.beam_prior_scale is not None:
            cos = rel[..., :1] / dist                                             # (B, M, I, 1)
            prior = -(((cos - self.beam_directions) * (C / 2.0)) ** 2)            # (B, M, I, C)
            logits = logits + torch.cat([prior, prior], dim=-1) * self.beam_prior_scale
        return logits[..., :C], logits[..., C:]

    # ------------------------------------------------------------------ forward
    def forward(self, obs: dict[str, Tensor]) -> dict[str, Tensor]:
        h = self.spatial(obs)
        z1, z2 = self.temporal(h, obs["block_valid"])
        u_hat = self._positions(self.head_now(z1), obs, "anchor")
        u_tilde = self._positions(self.head_next(z2), obs, "anchor_next")
        tx, rx = self.beam_logits(u_tilde, z2, obs)
        return {"u_hat": u_hat, "u_tilde": u_tilde, "beam_logits_tx": tx, "beam_logits_rx": rx,
                "target_embedding": z2}

    # ------------------------------------------------------------------ lean inference
    @torch.no_grad()
    def infer(self, obs: dict[str, Tensor]) -> dict[str, Tensor]:
        """:meth:`forward` in eval mode without gradients, with fewer and cheaper torch ops (inference only).

        The same function as :meth:`forward` (a test checks them equal to 1e-5 on random and real windows; they
        differ by float rounding only): the SAM without PyG's ``propagate`` machinery (:meth:`_spatial_lean`,
        equal to float32 rounding), the positional encoding cached, the TAM's second layer evaluated at the current
        block only (:meth:`_last_query_layer`: its keys and values need every block, its query, feed-forward and
        norms only the one whose output is read). At batch 1 (a CU's decision) the encoder is bound by per-op overhead.
        A model in training mode (dropout) takes :meth:`forward`.
        """
        if self.training:
            return self.forward(obs)
        h = self._spatial_lean(obs)
        z1, z2 = self._temporal_cached(h, obs["block_valid"])
        u_hat = self._positions(self.head_now(z1), obs, "anchor")
        u_tilde = self._positions(self.head_next(z2), obs, "anchor_next")
        tx, rx = self.beam_logits(u_tilde, z2, obs)
        return {"u_hat": u_hat, "u_tilde": u_tilde, "beam_logits_tx": tx, "beam_logits_rx": rx,
                "target_embedding": z2}

    def _spatial_lean(self, obs: dict[str, Tensor]) -> Tensor:
        """:meth:`spatial` without PyG's ``propagate`` machinery, eqs. (6)-(8). Shapes: returns ``(B, W, I, D)``.

        The same edge list (the detected pairs of the valid blocks, in ``dense_to_edges``' order), the same
        per-edge ops in the same order, PyG's own ``softmax`` and ``scatter``: the same numbers as
        :class:`~rl_isac.tracking.dgnn.layers.SpatialAttentionLayer` (a test checks it), bit for bit on AVX2
        CPUs; the BS messages ``MLP_x(p_m)`` run once per sample instead of once per block (the same rows, a
        product of another shape), which AVX-512 matmul kernels round differently by ~1 ulp.
        """
        feats = obs["features"]
        B, W, M, I, F = feats.shape
        D = self.cfg.hidden_dim
        h0 = self._initial_states(obs, B, I, D)                                         # (B, I, D)
        N = B * W * I
        h = h0[:, None].expand(B, W, I, D).reshape(N, D)
        edge = (feats[..., FEATURE_INDEX["detected"]] > 0.5) & (obs["block_valid"] > 0.5)[:, :, None, None]
        flat = edge.reshape(-1).nonzero().squeeze(-1)                                   # (E,) as dense_to_edges
        target_node = (flat // (M * I)) * I + flat % I                                  # graph (b, w), target i
        bs_row = (flat // (W * M * I)) * M + (flat // I) % M                            # sample b, BS m
        attr = feats.reshape(-1, F)[flat]
        if self.cfg.edge_features != "cartesian":
            attr = attr[:, self.edge_channels]
        has_edge = edge.any(2).reshape(N, 1)
        bs = obs["bs_positions"].reshape(B * M, -1)
        E = flat.shape[0]
        for layer in self.sam:
            heads = layer.heads
            b = torch.cat([layer.mlp_x(bs)[bs_row], layer.mlp_e(attr)], dim=-1)        # eq. (6), (E, D)
            alpha = pyg_softmax(layer.attn(torch.cat([h[target_node], b], dim=-1)), target_node, None, N)  # eq. (8)
            msg = (alpha[:, :, None] * b.view(E, heads, D // heads)).view(E, D)
            agg = pyg_scatter(msg, target_node, 0, N, reduce="sum")
            h = torch.where(has_edge, layer.norm(nn.functional.gelu(h + agg)), h)      # eq. (7); no edge: kept
        return h.view(B, W, I, D)

    def _temporal_cached(self, h: Tensor, block_valid: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`temporal` with the positional encoding cached. Shapes: as there."""
        B, W, I, D = h.shape
        pad = block_valid <= 0.5
        pad[:, -1] = False  # the current block always attends (a fresh tensor: the input is not modified)
        if self.cfg.target_mode == "shared":
            seq = h.permute(0, 2, 1, 3).reshape(B * I, W, D)
            pad = pad[:, None].expand(B, I, W).reshape(B * I, W)
        else:
            if I != self.cfg.num_targets:
                raise ValueError(f"concat-mode DGNN built for {self.cfg.num_targets} targets got {I}")
            seq = h.reshape(B, W, I * D)
        key = (W, seq.shape[-1], seq.device)
        cache = self.__dict__.setdefault("_pe_cache", {})
        pe = cache.get(key)
        if pe is None:
            pe = cache[key] = sinusoidal_encoding(W, seq.shape[-1], seq.device).flip(0)  # row W-1 = age 0
        z1 = self.tam1(seq + pe, src_key_padding_mask=pad)  # eq. (9)
        z2 = _last_query_layer(self.tam2, z1, pad)
        return z1[:, -1].reshape(B, I, D), z2.reshape(B, I, D)

    @torch.no_grad()
    def predict(self, obs: dict[str, np.ndarray], num_symbols: int | None = None,
                pairing: str = "grid") -> dict[str, np.ndarray]:
        """Inference on numpy window arrays (one observation or a batch), eval mode.

        Returns the :meth:`forward` outputs as numpy arrays (batch axis dropped when the
        input had none) and, when ``num_symbols = K`` is given, ``beams (..., M, I, K, 2)``
        int64 from :func:`beams_from_logits` (``pairing`` as there).
        """
        batched = np.ndim(obs["features"]) == 5
        was_training = self.training
        self.eval()
        try:
            out = self.forward(to_tensors(obs, next(self.parameters()).device))
        finally:
            self.train(was_training)
        if num_symbols is not None:
            out["beams"] = beams_from_logits(out["beam_logits_tx"], out["beam_logits_rx"], num_symbols, pairing)
        return {k: (v if batched else v[0]).cpu().numpy() for k, v in out.items()}


def _last_query_layer(layer: nn.TransformerEncoderLayer, x: Tensor, pad: Tensor) -> Tensor:
    """Output of a post-norm ``TransformerEncoderLayer`` (eval mode) at the last position only.

    Its self-attention's keys and values come from every position, the query, the output projection, the
    feed-forward block and both norms from the last one: the same function as ``layer(x)[:, -1]``
    (float rounding apart) at a fraction of the cost. A pre-norm layer takes the full layer.

    Shapes:
        x: ``(N, W, d)``; pad: ``(N, W)`` bool (True = ignored key, as ``src_key_padding_mask``); returns ``(N, d)``.
    """
    if layer.norm_first:
        return layer(x, src_key_padding_mask=pad)[:, -1]
    N, W, d = x.shape
    sa = layer.self_attn
    heads = sa.num_heads
    w, b = sa.in_proj_weight, sa.in_proj_bias
    q = nn.functional.linear(x[:, -1], w[:d], b[:d]).view(N, heads, 1, d // heads)
    k, v = nn.functional.linear(x, w[d:], b[d:]).view(N, W, 2, heads, d // heads).permute(2, 0, 3, 1, 4)
    att = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=~pad[:, None, None, :])  # (N, heads, 1, dh)
    y = layer.norm1(x[:, -1] + sa.out_proj(att.reshape(N, d)))
    return layer.norm2(y + layer.linear2(layer.activation(layer.linear1(y))))


def _pair_order(num_symbols: int, pairing: str) -> list[tuple[int, int]]:
    """Rank pairs ``(tx_rank, rx_rank)`` per symbol for :func:`beams_from_logits`."""
    if pairing == "distinct":
        return [(k, k ^ 1) for k in range(num_symbols)]
    ranks = int(math.ceil(math.sqrt(num_symbols))) + 1
    order = [(0, 0), (0, 1), (1, 0), (1, 1)]
    for s in range(2, ranks + 1):
        order += [(s, s)] + [(s, t) for t in range(s)] + [(t, s) for t in range(s)]
    return order[:num_symbols]


@functools.lru_cache(maxsize=32)
def _grid_rank_index(num_symbols: int, depth: int, device: str) -> Tensor:
    """``(2 K,)`` int64: positions ``[tx rank of symbol 0, depth + its rx rank, ...]`` in a flattened
    ``(2, depth)`` ranking of ``(tx, rx)`` (the grid pairing of :func:`beams_from_logits`), cached."""
    order = _pair_order(num_symbols, "grid")
    return torch.tensor([r for a, b in order for r in (a % depth, depth + b % depth)], device=device)


def beams_from_logits(tx_logits: Tensor, rx_logits: Tensor, num_symbols: int, pairing: str = "grid") -> Tensor:
    """Top-K tx and rx beams of eq. (12), grouped into ``K`` (tx, rx) pairs, one per symbol.

    ``pairing="grid"`` (default): ``(t0, r0), (t0, r1), (t1, r0), (t1, r1), (t2, r2), (t2, r0), ...``
    (``t_k``/``r_k`` the rank-``k`` tx/rx beams; the world's ``beams_toward`` convention,
    :func:`rl_isac.physics.arrays.beam_pairs_from_ranked`). With the two beams that bracket the
    target, the symbols see three different two-way patterns (``lo*lo``, ``lo*hi``, ``hi*hi``)
    whose ratios measure the angle anywhere between the beam centres; two of the four symbols
    also have tx != rx, so a target on a beam centre still gives first-order angle information.
    ``pairing="distinct"``: symbol ``k`` uses tx rank ``k`` and rx rank ``k XOR 1``
    (``(t0, r1), (t1, r0), (t2, r3), (t3, r2)``); tx != rx in every symbol (should the chosen
    rx beam still equal the tx beam because the rankings differ, the best-ranked rx beam that
    differs is used). It is kept for comparison but is physically worse: the monostatic
    two-way pattern is symmetric in (tx, rx), so ``(t0, r1)`` and ``(t1, r0)`` are the same
    pattern and the angle (whose information comes from gain ratios across symbols, the
    amplitude being unknown) rests on the weak far beams ``t2, t3``. With the world's
    Fisher information (``CellFreeNetwork.expected_information``, paper scenario, beams from
    ideal logits toward 400 random target positions, every BS) the median single-pair
    position CRB std was 1.47 m with ``"grid"`` and 81 m with ``"distinct"``.
    Ranks beyond the codebook wrap around.

    Shapes:
        tx_logits, rx_logits: ``(..., C)``.
        returns ``(..., K, 2)`` int64 ``(tx, rx)`` codebook indices.
    """
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing={pairing!r} must be one of {PAIRINGS}")
    C = tx_logits.shape[-1]
    order = _pair_order(num_symbols, pairing)
    depth = min(C, max(max(a, b) for a, b in order) + 2)
    if pairing == "grid":  # one top-k over tx and rx together, one gather of the (tx, rx) ranks of every symbol
        ranked = torch.stack([tx_logits, rx_logits], dim=-2).topk(depth, dim=-1).indices  # (..., 2, depth)
        index = _grid_rank_index(num_symbols, depth, str(tx_logits.device))
        return ranked.flatten(-2)[..., index].unflatten(-1, (num_symbols, 2))
    tx_ranked = tx_logits.topk(depth, dim=-1).indices
    rx_ranked = rx_logits.topk(depth, dim=-1).indices
    tx_r = torch.tensor([a % depth for a, _ in order], device=tx_logits.device)
    rx_r = torch.tensor([b % depth for _, b in order], device=tx_logits.device)
    tx = tx_ranked[..., tx_r]                                                  # (..., K)
    # candidates per symbol: the preferred rank first, then all ranks best first
    cand = torch.cat([rx_r[:, None], torch.arange(depth, device=tx.device).expand(len(order), depth)], dim=1)
    rx_cand = rx_ranked[..., cand]                                             # (..., K, depth + 1)
    ok = rx_cand != tx[..., None]
    first = torch.where(ok.any(-1), ok.float().argmax(-1), torch.zeros_like(tx))
    rx = rx_cand.gather(-1, first[..., None]).squeeze(-1)
    return torch.stack([tx, rx], dim=-1)


__all__ = ["DGNN", "DGNNConfig", "beams_from_logits", "sinusoidal_encoding", "to_tensors",
           "EDGE_FEATURES", "TARGET_MODES", "BEAM_INPUTS", "PAIRINGS"]
