"""The DGNN's inference pass in float32 numpy, for the small batches of a CU's decision and the env runners.

:func:`numpy_forward` computes :meth:`rl_isac.tracking.dgnn.model.DGNN.forward` (eval mode) with numpy ops on
the model's own parameters (zero-copy views, so in-place weight updates are seen): the same function, equal
to float rounding (a test checks 1e-5 against the PyG forward pass on random and real windows). At batch 1
the torch pass is bound by per-op dispatch (~230 ops of a few microseconds each, more when the caches are
cold between two blocks); a numpy op costs a fraction of that, and the arithmetic is the same:

* SAM, eqs. (6)-(8): the edge list of the detected pairs of the valid blocks (``dense_to_edges``' order), the
  message MLPs and the attention logits on the edges only, the softmax over the BSs that measured a target
  on the dense ``(W, M, I)`` grid (max-shifted, ``+ 1e-16``: PyG's), the messages summed per target;
* TAM, eq. (9): the two post-norm Transformer encoder layers (exact GELU, biased-variance LayerNorm, key
  padding), the second one at the current block only (its output is the only one read);
* the position heads and the beam head, eq. (12), as :meth:`~rl_isac.tracking.dgnn.model.DGNN.beam_logits`.

Only ``target_mode="shared"`` (the shipped checkpoints); :func:`supports` says whether a model qualifies.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import torch

from rl_isac.tracking.window import FEATURE_INDEX

_F32 = np.float32
_data_ptr = torch.Tensor.data_ptr


def _gelu(x: np.ndarray) -> np.ndarray:
    """torch's exact GELU ``x Phi(x)``: torch's own kernel on the array's memory (vectorised; scipy's ``erf`` is a
    scalar double-precision loop, ~10x slower here)."""
    return torch.nn.functional.gelu(torch.from_numpy(x)).numpy()


def _linear(x: np.ndarray, wb: tuple[np.ndarray, np.ndarray | None]) -> np.ndarray:
    w, b = wb
    y = x @ w.T
    return y if b is None else y + b


def _mlp(x: np.ndarray, layers: tuple) -> np.ndarray:
    """``Linear -> GELU -> Linear (-> GELU -> Linear ...)``."""
    for k, wb in enumerate(layers):
        x = _linear(x if k == 0 else _gelu(x), wb)
    return x


def _layer_norm(x: np.ndarray, wbe: tuple[torch.Tensor, torch.Tensor, float]) -> np.ndarray:
    """torch's LayerNorm over the last axis, its own kernel on the array's memory (one call instead of eight)."""
    w, b, eps = wbe
    return torch.nn.functional.layer_norm(torch.from_numpy(x), w.shape, w, b, eps).numpy()


def _np(t) -> np.ndarray:
    return t.detach().numpy()


def _lin(mod) -> tuple[np.ndarray, np.ndarray | None]:
    return _np(mod.weight), (None if mod.bias is None else _np(mod.bias))


def _ln(mod) -> tuple[torch.Tensor, torch.Tensor, float]:
    return mod.weight.detach(), mod.bias.detach(), float(mod.eps)


def _seq(seq) -> tuple:
    """The Linear layers of a ``Linear -> GELU -> Linear ...`` ``nn.Sequential``."""
    return tuple(_lin(m) for m in seq if hasattr(m, "weight"))


def _encoder_layer(layer) -> dict[str, Any]:
    sa = layer.self_attn
    return {"in": (_np(sa.in_proj_weight), _np(sa.in_proj_bias)), "out": _lin(sa.out_proj), "heads": sa.num_heads,
            "ff": (_lin(layer.linear1), _lin(layer.linear2)), "norm1": _ln(layer.norm1), "norm2": _ln(layer.norm2)}


def supports(model) -> bool:
    """Whether :func:`numpy_forward` serves this model: shared target mode, post-norm Transformer layers, float32
    parameters on the CPU, eval mode (dropout off)."""
    p = model.init_mlp[1].weight if model.init_mlp is not None else model.head_now[0].weight
    return (model.cfg.target_mode == "shared" and not model.tam1.norm_first and not model.tam2.norm_first
            and p.device.type == "cpu" and p.dtype == torch.float32 and not model.training)


def _weights(model) -> dict[str, Any]:
    """Numpy views of the parameters, cached on the model: views share the tensors' memory, so in-place updates
    (``load_state_dict``, an optimiser step) are seen; a parameter replaced by another tensor (``.to()``,
    ``load_state_dict(assign=True)``) or moved storage rebuilds them."""
    cached = model.__dict__.get("_numpy_inference_weights")
    if cached is not None:
        slots, tensors, ptrs, w = cached
        if all(map(operator.is_, [d[name] for d, name in slots], tensors)) and list(map(_data_ptr, tensors)) == ptrs:
            return w
    slots = [(mod._parameters, name) for mod in model.modules() for name, t in mod._parameters.items()
             if t is not None]
    tensors = [d[name] for d, name in slots]
    cfg = model.cfg
    w: dict[str, Any] = {
        "init": None if model.init_mlp is None else (_seq(model.init_mlp[0]), _ln(model.init_mlp[1])),
        "sam": [{"x": _seq(s.mlp_x), "e": _seq(s.mlp_e), "attn": _seq(s.attn), "norm": _ln(s.norm), "heads": s.heads}
                for s in model.sam],
        "tam1": _encoder_layer(model.tam1), "tam2": _encoder_layer(model.tam2),
        "head_now": _seq(model.head_now), "head_next": _seq(model.head_next), "beam": _seq(model.beam_head),
        "prior": None if model.beam_prior_scale is None else (_np(model.beam_directions),
                                                             _np(model.beam_prior_scale)),
        "channels": None if cfg.edge_features == "cartesian" else _np(model.edge_channels),
        "pe": {},
    }
    model.__dict__["_numpy_inference_weights"] = (slots, tensors, list(map(_data_ptr, tensors)), w)
    return w


def _attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, pad: np.ndarray) -> np.ndarray:
    """Scaled dot-product attention with a key padding mask. Shapes: ``q (N, h, Lq, dh)``, ``k, v (N, h, W, dh)``,
    ``pad (N, W)`` bool (True = ignored key); returns ``(N, h, Lq, dh)``."""
    s = (q @ k.transpose(0, 1, 3, 2)) * _F32(1.0 / np.sqrt(q.shape[-1]))
    s = np.where(pad[:, None, None, :], _F32(-np.inf), s)
    e = np.exp(s - s.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)) @ v


def _encoder_layer_forward(x: np.ndarray, pad: np.ndarray, lw: dict[str, Any], last_only: bool) -> np.ndarray:
    """A post-norm ``nn.TransformerEncoderLayer`` (eval) on ``x (N, W, d)``: ``(N, W, d)``, or ``(N, d)`` at the
    last position only (its keys and values still from every position)."""
    N, W, d = x.shape
    heads = lw["heads"]
    dh = d // heads
    w_in, b_in = lw["in"]
    if last_only:
        q = (x[:, -1] @ w_in[:d].T + b_in[:d]).reshape(N, heads, 1, dh)
        kv = (x @ w_in[d:].T + b_in[d:]).reshape(N, W, 2, heads, dh).transpose(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        res = x[:, -1]
    else:
        qkv = (x @ w_in.T + b_in).reshape(N, W, 3, heads, dh).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        res = x
    att = _attention(q, k, v, pad)                                           # (N, heads, Lq, dh)
    att = att.transpose(0, 2, 1, 3).reshape(res.shape)
    y = _layer_norm(res + _linear(att, lw["out"]), lw["norm1"])
    return _layer_norm(y + _mlp(y, lw["ff"]), lw["norm2"])


def _positional_encoding(model, w: dict[str, Any], length: int, dim: int) -> np.ndarray:
    from rl_isac.tracking.dgnn.model import sinusoidal_encoding

    pe = w["pe"].get((length, dim))
    if pe is None:
        pe = w["pe"][(length, dim)] = sinusoidal_encoding(length, dim).flip(0).numpy()  # row W-1 = age 0
    return pe


def _grid_tables(w: dict[str, Any], B: int, W: int, M: int, I: int) -> tuple[np.ndarray, np.ndarray]:
    """For every flat index of the ``(B, W, M, I)`` grid: its target node ``(b W + w) I + i`` and its BS row
    ``b M + m`` (cached per shape)."""
    key = ("grid", B, W, M, I)
    tables = w["pe"].get(key)
    if tables is None:
        flat = np.arange(B * W * M * I)
        tables = w["pe"][key] = ((flat // (M * I)) * I + flat % I, (flat // (W * M * I)) * M + (flat // I) % M)
    return tables


def _bs_messages(model, w: dict[str, Any], bs: np.ndarray) -> list[np.ndarray]:
    """``MLP_x(p_m)`` of every SAM layer for the BS positions ``bs (B M, 2)``, cached for the last positions and
    weights (the network's BSs do not move, so every block asks for the same ones; an in-place weight update
    bumps the parameters' version counters and recomputes them)."""
    key = (bs.tobytes(), tuple(p._version for layer in model.sam for p in layer.mlp_x.parameters()))
    last = w.get("bs_messages")
    if last is None or last[0] != key:
        last = w["bs_messages"] = (key, [_mlp(bs, lw["x"]) for lw in w["sam"]])
    return last[1]


def numpy_forward(model, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """:meth:`~rl_isac.tracking.dgnn.model.DGNN.forward` of ``model`` (eval mode) on float32 arrays with a batch axis.

    Shapes: as ``DGNN.forward`` (``features (B, W, M, I, F)``, ...); returns the same keys as float32 arrays.
    """
    if not supports(model):
        raise ValueError("numpy_forward serves shared-target-mode DGNNs with post-norm layers on the CPU in eval mode")
    w = _weights(model)
    cfg = model.cfg
    f = {k: np.asarray(v, dtype=_F32) for k, v in obs.items()}
    feats = f["features"]
    B, W, M, I, F = feats.shape
    D = cfg.hidden_dim
    scales = f["scales_m"]
    # ---- SAM, eqs. (6)-(8)
    if w["init"] is not None:
        step = (f["anchor_next"] - f["anchor"]) * (scales[:, 0] / scales[:, 1])[:, None, None]
        tgt = np.concatenate([f["anchor"], step, f["anchor_age"][..., None], f["anchor_log_std"][..., None]], -1)
        h0 = _layer_norm(_mlp(tgt, w["init"][0]), w["init"][1])              # (B, I, D)
    else:
        h0 = np.zeros((B, I, D), _F32)
    N = B * W * I
    h = np.broadcast_to(h0[:, None], (B, W, I, D)).reshape(N, D)
    edge = (feats[..., FEATURE_INDEX["detected"]] > 0.5) & (f["block_valid"] > 0.5)[:, :, None, None]
    flat = np.flatnonzero(edge)                                              # (E,) as dense_to_edges
    target_table, bs_table = _grid_tables(w, B, W, M, I)
    target_node, bs_row = target_table[flat], bs_table[flat]
    attr = feats.reshape(-1, F)[flat]
    if w["channels"] is not None:
        attr = attr[:, w["channels"]]
    has_edge = edge.any(2).reshape(N, 1)
    bs = f["bs_positions"].reshape(B * M, -1)
    E = flat.shape[0]
    grid_shape = (B * W, M, I)
    for lw, xb in zip(w["sam"], _bs_messages(model, w, bs)):
        heads = lw["heads"]
        b = np.concatenate([xb[bs_row], _mlp(attr, lw["e"])], 1)                                # (E, D) eq. (6)
        logits = _mlp(np.concatenate([h[target_node], b], 1), lw["attn"])                        # (E, heads)
        grid = np.full((B * W * M * I, heads), -np.inf, _F32)
        grid[flat] = logits
        grid = grid.reshape(*grid_shape, heads)
        top = np.maximum(grid.max(1, keepdims=True), np.finfo(_F32).min)                        # no edge: finite
        ex = np.exp(grid - top)
        alpha = (ex / (ex.sum(1, keepdims=True) + _F32(1e-16))).reshape(-1, heads)[flat]          # eq. (8)
        msg = np.zeros((B * W * M * I, D), _F32)
        msg[flat] = (alpha[:, :, None] * b.reshape(E, heads, D // heads)).reshape(E, D)
        agg = msg.reshape(B * W, M, I, D).sum(1).reshape(N, D)
        h = np.where(has_edge, _layer_norm(_gelu(h + agg), lw["norm"]), h)                       # eq. (7)
    # ---- TAM, eq. (9)
    seq = h.reshape(B, W, I, D).transpose(0, 2, 1, 3).reshape(B * I, W, D)
    pad = f["block_valid"] <= 0.5
    pad[:, -1] = False  # the current block always attends
    pad = np.broadcast_to(pad[:, None], (B, I, W)).reshape(B * I, W)
    z1 = _encoder_layer_forward(seq + _positional_encoding(model, w, W, D), pad, w["tam1"], last_only=False)
    z2 = _encoder_layer_forward(z1, pad, w["tam2"], last_only=True).reshape(B, I, D)
    z1 = z1[:, -1].reshape(B, I, D)

    def positions(out: np.ndarray, anchor_key: str) -> np.ndarray:
        if cfg.residual:
            return f[anchor_key] * scales[:, 0, None, None] + out * scales[:, 1, None, None]
        return out * scales[:, 0, None, None]

    u_hat = positions(_mlp(z1, w["head_now"]), "anchor")
    u_tilde = positions(_mlp(z2, w["head_next"]), "anchor_next")
    # ---- beam head, eq. (12)
    p = f["bs_positions"]
    u = u_tilde / scales[:, 0, None, None]
    parts = [np.broadcast_to(p[:, :, None], (B, M, I, 2)), np.broadcast_to(u[:, None], (B, M, I, 2))]
    if cfg.beam_input == "geometry":
        rel = u_tilde[:, None] - p[:, :, None] * scales[:, 0, None, None, None]                   # (B, M, I, 2) m
        dist = np.maximum(np.sqrt((rel * rel).sum(-1, keepdims=True)), _F32(1e-6))
        parts += [rel / dist, dist / scales[:, 2, None, None, None], np.broadcast_to(z2[:, None], (B, M, I, D))]
    logits = _mlp(np.concatenate(parts, -1), w["beam"])
    C = cfg.codebook_size
    if w["prior"] is not None:
        directions, prior_scale = w["prior"]
        prior = -(((rel[..., :1] / dist - directions) * _F32(C / 2.0)) ** 2)                     # (B, M, I, C)
        logits = logits + np.concatenate([prior, prior], -1) * prior_scale
    return {"u_hat": u_hat, "u_tilde": u_tilde, "beam_logits_tx": logits[..., :C], "beam_logits_rx": logits[..., C:],
            "target_embedding": z2}
