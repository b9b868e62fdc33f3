"""Spatial Attention Module layer (paper Sec. 3.1, eqs. (6)-(8)) as a PyG ``MessagePassing``.

The graph of one block is bipartite, BS nodes -> target nodes; an edge ``(m, i)``
exists where BS ``m`` measured target ``i`` in that block. Many blocks (and many
samples) are batched as one disjoint graph: BS node ``g * M + m`` and target node
``g * I + i`` of graph ``g`` (see :func:`dense_to_edges`, vectorised offsets, no
``Batch.from_data_list``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import softmax


def mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Two-layer perceptron ``Linear -> GELU -> Linear``."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))


class SpatialAttentionLayer(MessagePassing):
    """One SAM message-passing layer, eqs. (6)-(8).

    * eq. (6): message ``b_{m,i} = MLP_x(x_m) || MLP_e(e_{m,i})`` (each half ``D / 2``).
    * eq. (8): ``alpha_{m,i} = softmax_{m in N(i)} ATTN(h_i || b_{m,i})``, with
      ``torch_geometric.utils.softmax`` over the edges entering target ``i``. With
      ``heads > 1`` ATTN returns one logit per head and head ``k`` weights the ``k``-th
      ``D / heads`` chunk of ``b`` (``heads = 1`` is the paper's layer).
    * eq. (7): ``h_i <- LayerNorm(GELU(h_i + sum_m alpha_{m,i} b_{m,i}))``.

    Target nodes without an incoming edge keep ``h_i`` unchanged (eq. (7) would
    still apply GELU + LayerNorm to them; we skip it so that a target nobody
    measured carries its previous state through, and an empty softmax never
    arises).

    The paper writes ``b`` without a layer index; here each layer has its own
    message MLPs (a superset: the paper's sharing is one particular solution).

    Args:
        bs_dim: BS node feature size (2: normalised position ``p_m``).
        edge_dim: edge feature size.
        hidden_dim: ``D``, target hidden size; even, divisible by ``heads``.
        heads: attention heads.

    Shapes:
        x_bs: ``(N_bs, bs_dim)``; h: ``(N_tgt, D)``; edge_index: ``(2, E)`` int64 with
        row 0 BS node indices and row 1 target node indices; edge_attr: ``(E, edge_dim)``.
        Returns ``(N_tgt, D)``.
    """

    def __init__(self, bs_dim: int, edge_dim: int, hidden_dim: int, heads: int = 1) -> None:
        super().__init__(aggr="add", flow="source_to_target", node_dim=0)
        if hidden_dim % 2 or hidden_dim % heads:
            raise ValueError(f"hidden_dim={hidden_dim} must be even and divisible by heads={heads}")
        self.hidden_dim = hidden_dim
        self.heads = heads
        half = hidden_dim // 2
        self.mlp_x = mlp(bs_dim, half, half)          # MLP(x_m), eq. (6)
        self.mlp_e = mlp(edge_dim, half, half)        # MLP(e_{m,i}), eq. (6)
        self.attn = mlp(2 * hidden_dim, half, heads)  # ATTN^(l), eq. (8)
        self.norm = nn.LayerNorm(hidden_dim)

    def forward(self, x_bs: Tensor, h: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        xb = self.mlp_x(x_bs)  # per BS node once, lifted to edges by propagate
        agg = self.propagate(edge_index, x=(xb, h), edge_attr=edge_attr, size=(x_bs.shape[0], h.shape[0]))
        updated = self.norm(nn.functional.gelu(h + agg))  # eq. (7)
        has_edge = torch.zeros(h.shape[0], dtype=torch.bool, device=h.device)
        has_edge[edge_index[1]] = True
        return torch.where(has_edge[:, None], updated, h)

    def message(self, x_j: Tensor, x_i: Tensor, edge_attr: Tensor, index: Tensor, ptr: Tensor | None,
                size_i: int | None) -> Tensor:
        b = torch.cat([x_j, self.mlp_e(edge_attr)], dim=-1)                  # eq. (6), (E, D)
        logits = self.attn(torch.cat([x_i, b], dim=-1))                      # (E, heads)
        alpha = softmax(logits, index, ptr, size_i)                          # eq. (8)
        e = b.shape[0]
        return (alpha[:, :, None] * b.view(e, self.heads, self.hidden_dim // self.heads)).view(e, self.hidden_dim)


def dense_to_edges(edge_mask: Tensor, num_bs: int, num_targets: int) -> tuple[Tensor, Tensor]:
    """Edge index of a batch of bipartite graphs from a dense mask (vectorised offsets).

    Graph ``g`` of the flattened leading axes holds BS nodes ``g * M .. g * M + M - 1`` and
    target nodes ``g * I .. g * I + I - 1``.

    Shapes:
        edge_mask: ``(G, M, I)`` bool.
        Returns ``edge_index (2, E)`` int64 and ``flat (E,)`` int64, the edges' positions in
        ``edge_mask.view(-1)`` (to gather edge features from a ``(G * M * I, F)`` view).
    """
    flat = edge_mask.reshape(-1).nonzero().squeeze(-1)
    g = flat // (num_bs * num_targets)
    m = (flat // num_targets) % num_bs
    i = flat % num_targets
    return torch.stack([g * num_bs + m, g * num_targets + i]), flat


__all__ = ["SpatialAttentionLayer", "dense_to_edges", "mlp"]
