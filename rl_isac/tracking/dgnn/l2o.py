"""Benchmark II (learn-to-optimise): an association head on the frozen DGNN + a feasibility repair.

The paper's Benchmark II trains "the DGNN using the optimal solutions as ground-truth labels to
predict target-BS associations and beam selections" (Sec. 4). Here:

* **Association**: :class:`L2OHead` scores every (BS, target) pair from the frozen DGNN's
  outputs on the window observation (``target_embedding (B, I, D)``, ``u_tilde (B, I, 2)``
  metres) plus the BS positions and the window's per-target uncertainty (``anchor_log_std``,
  ``anchor_age``). It is trained by supervision on the exact MILP optimum of the myopic
  objective ``dgnn-milp`` solves (:mod:`rl_isac.training.l2o`).
* **Beams**: the DGNN's own beam head (eq. (12)) already *is* a supervised predictor of the
  best beams (pre-training phase 1 labels every pair with the best beam toward the true next
  position, :mod:`rl_isac.training.pretrain`); the L2O shares it instead of duplicating it
  (and the MILP labels are computed with those very beams), so ``dgnn-l2o`` and ``dgnn-milp``
  transmit the same beams and differ only in how the association is found.
* **Feasibility repair** (:func:`repair`): the scores are decoded with the package's
  auto-regressive mask (:func:`rl_isac.association.mask_from_state`): ``J = M * min(N_RF, I)``
  times the highest-scoring *valid* pair is taken. The mask is exact (a pair is allowed iff a
  feasible completion exists), so the result always satisfies (5c)-(5e), covers every target
  (5d) and uses every RF chain, whatever the scores (NaN included). If the scores rank the
  pairs of a feasible, all-chains association ``A*`` above every other pair, the decoding
  returns exactly ``A*`` (the remaining pairs of ``A*`` are always valid: when the uncovered
  targets equal the remaining steps, the remaining pairs of ``A*`` must be one per uncovered
  target), so a perfect predictor loses nothing to the repair.

Head architecture (weights shared across BSs and targets, so one head serves any ``I``;
a permutation of the targets permutes the scores):

1. pair features ``x_mi = [p_m, u_i, (u_i - p_m)/|.|, |u_i - p_m| / range_scale,
   log10(|u_i - p_m| / 100 m), anchor_log_std_i, anchor_age_i, z_i]`` (positions normalised by
   the window's ``position_scale_m``; ``z_i`` the DGNN's target embedding);
2. ``h = MLP(x)`` (width ``hidden_dim``);
3. ``context_layers`` rounds of a bipartite DeepSets update
   ``h <- LayerNorm(h + MLP([h_mi, mean_i' h_mi', mean_m' h_m'i]))``: the association couples
   pairs (a BS's chains are shared by its targets, a target wants complementary BSs), which a
   per-pair score cannot see;
4. ``score = Linear(h)``, ``(B, M, I)`` logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rl_isac.association import (
    DEFAULT_CHAIN_PRICE,
    apply_action,
    apply_pair,
    chains_per_bs,
    check_association,
    check_problem_size,
    initial_action_state,
    initial_mask_state,
    make_solver,
    mask_from_state,
    stop_action,
    valid_action_mask,
)
from rl_isac.config import ConfigMixin
from rl_isac.errors import ConfigError

L2O_KEYS = ("target_embedding", "u_tilde", "bs_positions", "scales_m", "anchor_log_std", "anchor_age")
"""Inputs of :class:`L2OHead`: two DGNN outputs and four window arrays (batch axis leading)."""

OBJECTIVE_KEYS = ("info", "prior_info")
"""Extra inputs with ``objective_features``: ``(B, M, I, 2, 2)`` and ``(B, I, 2, 2)``, 1/m^2."""

_DIST_REF_M = 100.0
_GEOM_FEATURES = 2 + 2 + 2 + 1 + 1 + 1 + 1  # p_m, u_i, direction, distance, log distance, log std, age


@dataclass(frozen=True)
class L2OConfig(ConfigMixin):
    """Hyper-parameters of :class:`L2OHead`."""

    embedding_dim: int = 64
    """``D`` of the DGNN's target embedding (must equal the DGNN's ``hidden_dim``)."""
    hidden_dim: int = 64
    """Width of the pair MLPs."""
    context_layers: int = 2
    """Rounds of the bipartite DeepSets update (0 = independent per-pair scores)."""
    stop_score: float | None = None
    """Logit of the STOP token in the decoding (:func:`repair`): ``None`` decodes every RF chain (heads
    trained on full-chain labels); a number (``0.0`` for logits trained to be ``> 0`` exactly on the
    pairs of ``A*``) lets chains stay idle, as the labels of the detection-counting objective do."""
    objective_features: bool = False
    """Also feed the objective's parameters (an ablation, not the paper's Benchmark II): per target
    ``log10 tr(P_i^-1)`` (prior cost) and per pair ``log10(tr(P_i^-1) / tr((P_i + J_mi)^-1))`` (the cost
    decrease of that BS alone), from the ``info`` / ``prior_info`` the associator receives."""

    def __post_init__(self) -> None:
        for name, lo in (("embedding_dim", 1), ("hidden_dim", 1), ("context_layers", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(name, v, f"must be an integer >= {lo}")
        if self.stop_score is not None and (isinstance(self.stop_score, bool) or not isinstance(
                self.stop_score, (int, float)) or not np.isfinite(self.stop_score)):
            raise ConfigError("stop_score", self.stop_score, "must be None or a finite number (a logit)")
        if not isinstance(self.objective_features, bool):
            raise ConfigError("objective_features", self.objective_features, "must be a bool")

    @property
    def input_keys(self) -> tuple[str, ...]:
        """Keys :meth:`L2OHead.forward` reads: :data:`L2O_KEYS` (+ ``info``, ``prior_info``)."""
        return L2O_KEYS + (OBJECTIVE_KEYS if self.objective_features else ())

def _trace_inv(mat: Tensor) -> Tensor:
    """``tr(inv(X))`` of symmetric 2x2 matrices ``(..., 2, 2)``."""
    a, b, d = mat[..., 0, 0], mat[..., 0, 1], mat[..., 1, 1]
    return (a + d) / (a * d - b * b)


def _mlp(n_in: int, n_hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, n_hidden), nn.GELU(), nn.Linear(n_hidden, n_out))


class L2OHead(nn.Module):
    """Pair scores ``(B, M, I)`` for the association (logits: higher = more likely in ``A*``).

    ``forward(inputs)`` with ``inputs`` a dict of float tensors (keys :data:`L2O_KEYS`):

    Shapes:
        target_embedding ``(B, I, D)``, u_tilde ``(B, I, 2)`` metres, bs_positions ``(B, M, 2)``
        (normalised, as in the window), scales_m ``(B, 3)``, anchor_log_std ``(B, I)``,
        anchor_age ``(B, I)``; returns ``(B, M, I)``.
    """

    def __init__(self, cfg: L2OConfig) -> None:
        super().__init__()
        self.cfg = cfg
        H = cfg.hidden_dim
        n_in = _GEOM_FEATURES + cfg.embedding_dim + (2 if cfg.objective_features else 0)
        self.encode = nn.Sequential(_mlp(n_in, H, H), nn.LayerNorm(H))
        self.context = nn.ModuleList([_mlp(3 * H, H, H) for _ in range(cfg.context_layers)])
        self.norms = nn.ModuleList([nn.LayerNorm(H) for _ in range(cfg.context_layers)])
        self.out = nn.Linear(H, 1)

    def pair_features(self, inputs: dict[str, Tensor]) -> Tensor:
        """``x_mi`` of step 1, ``(B, M, I, 11 + D)``."""
        scales = inputs["scales_m"]
        pos_scale = scales[:, 0, None, None]
        p = inputs["bs_positions"]                                   # (B, M, 2) normalised
        u_m = inputs["u_tilde"]                                      # (B, I, 2) metres
        z = inputs["target_embedding"]                               # (B, I, D)
        B, M, _ = p.shape
        I = u_m.shape[1]
        rel = u_m[:, None] - p[:, :, None] * pos_scale[..., None]   # (B, M, I, 2) metres
        dist = rel.norm(dim=-1, keepdim=True).clamp_min(1e-3)
        per_target = torch.cat([u_m / pos_scale, inputs["anchor_log_std"][..., None],
                                inputs["anchor_age"][..., None]], dim=-1)  # (B, I, 4)
        parts = [p[:, :, None].expand(B, M, I, 2), rel / dist, dist / scales[:, 2, None, None, None],
                 torch.log10(dist / _DIST_REF_M), per_target[:, None].expand(B, M, I, 4),
                 z[:, None].expand(B, M, I, z.shape[-1])]
        if self.cfg.objective_features:
            prior = inputs["prior_info"][:, None].double()            # (B, 1, I, 2, 2), float64: 2x2 inverses
            c0 = _trace_inv(prior)                                    # (B, 1, I)
            c1 = _trace_inv(prior + inputs["info"].double())          # (B, M, I)
            parts += [torch.log10(c0).float()[..., None].expand(B, M, I, 1), torch.log10(c0 / c1).float()[..., None]]
        return torch.cat(parts, dim=-1)

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        h = self.encode(self.pair_features(inputs))                  # (B, M, I, H)
        for mlp, norm in zip(self.context, self.norms):
            per_bs = h.mean(dim=2, keepdim=True).expand_as(h)        # over targets
            per_target = h.mean(dim=1, keepdim=True).expand_as(h)    # over BSs
            h = norm(h + mlp(torch.cat([h, per_bs, per_target], dim=-1)))
        return self.out(h).squeeze(-1)

    @torch.no_grad()
    def scores(self, dgnn_out: dict[str, np.ndarray], obs: dict[str, np.ndarray],
               objective: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Scores on numpy inputs (one observation or a batch), eval mode.

        Args:
            dgnn_out: :meth:`~rl_isac.tracking.dgnn.DGNN.predict` outputs (``target_embedding``,
                ``u_tilde``).
            obs: the window arrays the DGNN read (``bs_positions``, ``scales_m``, ``anchor_log_std``,
                ``anchor_age``).
            objective: ``info`` and ``prior_info`` (needed with ``objective_features`` only).
        Returns:
            ``(M, I)`` or ``(B, M, I)`` float32.
        """
        batched = np.ndim(dgnn_out["u_tilde"]) == 3
        src = {**{k: obs[k] for k in L2O_KEYS[2:]}, **{k: dgnn_out[k] for k in L2O_KEYS[:2]}, **(objective or {})}
        t = {k: torch.as_tensor(np.asarray(src[k]), dtype=torch.float32) for k in self.cfg.input_keys}
        if not batched:
            t = {k: v.unsqueeze(0) for k, v in t.items()}
        was = self.training
        self.eval()
        try:
            out = self.forward(t).cpu().numpy()
        finally:
            self.train(was)
        return out if batched else out[0]


# ---------------------------------------------------------------------------------------------- repair
def repair(scores: np.ndarray, num_rf: int, stop_score: float | None = None) -> np.ndarray:
    """Feasible association from pair scores by masked greedy decoding (never breaks (5c)-(5e)).

    ``J = M * min(num_rf, I)`` times, take the highest-scoring pair allowed by the auto-regressive
    mask of :mod:`rl_isac.association.constraints` (ties: lowest flat index ``m * I + i``; NaN
    scores count as ``-inf``). With ``stop_score`` the decoding runs over the ``J = M * num_rf``
    steps of the STOP-token mask (:func:`rl_isac.association.valid_action_mask`) with STOP scored
    ``stop_score``: once every target is covered, it stops at the first step where no allowed pair
    scores above ``stop_score`` (the remaining chains stay idle); before that, a pair scoring below
    ``stop_score`` is taken only to cover a target. If the pairs of a feasible ``A*``
    score above ``stop_score`` and every other pair below, the decoding returns ``A*``.

    Shapes:
        scores: ``(M, I)`` float; returns ``(M, I)`` bool with every target covered and at most
        (without ``stop_score``: exactly) ``min(num_rf, I)`` targets per BS.

    Raises:
        ConfigError: ``I > M * num_rf`` (no feasible association exists).
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ConfigError("scores", s.shape, "must be a (num_bs, num_targets) matrix")
    num_bs, num_targets = s.shape
    check_problem_size(num_bs, num_targets, num_rf)
    per_bs = chains_per_bs(num_targets, num_rf)  # I < N_RF: each BS tracks every target (the solvers' form)
    flat_scores = np.nan_to_num(s.reshape(-1), nan=-np.inf, posinf=np.finfo(np.float64).max)
    if stop_score is not None:
        stop = stop_action(num_bs, num_targets)
        with_stop = np.append(flat_scores, float(stop_score))
        act_state = initial_action_state(num_bs, num_targets, per_bs)
        uncovered_pair = np.zeros(stop + 1, dtype=bool)
        for _ in range(num_bs * per_bs):
            allowed = np.flatnonzero(valid_action_mask(*act_state))
            k = int(allowed[np.argmax(with_stop[allowed])])
            if k == stop:
                break
            if with_stop[k] < stop_score:  # below STOP only a pair that covers a target (5d) is worth a chain
                uncovered_pair[:stop] = np.tile(~act_state.covered, num_bs)
                cover = allowed[uncovered_pair[allowed]]
                k = int(cover[np.argmax(with_stop[cover])])
            act_state = apply_action(act_state, k)
        return check_association(act_state.chosen, num_rf, shape=(num_bs, num_targets))
    state = initial_mask_state(num_bs, num_targets, per_bs)
    for _ in range(num_bs * per_bs):
        allowed = np.flatnonzero(mask_from_state(*state).reshape(-1))
        k = int(allowed[np.argmax(flat_scores[allowed])])
        state = apply_pair(state, *divmod(k, num_targets))
    return check_association(state.chosen, num_rf, shape=(num_bs, num_targets))


class L2OAssociator:
    """The ``dgnn-l2o`` associator: ``solve(info, prior_info, num_rf, detection_prob)`` optimises nothing.

    ``info`` / ``prior_info`` are only read as input features when the head was trained with
    ``objective_features`` (an ablation), and by the first-block fallback.

    It scores the pairs with :class:`L2OHead` on the estimator's last DGNN output
    (``estimator.last``) and the window it read (``estimator.window``), then :func:`repair`.
    Before the first block there is no DGNN output (the CU only has the acquisition), so the
    first association comes from the greedy solver on the objective (the cheapest solver that
    is always feasible), exactly as the other ``dgnn-*`` methods would use their solver.

    Args:
        head: a trained :class:`L2OHead`.
        estimator: the CU's :class:`~rl_isac.controllers.learned.DGNNEstimator` (duck-typed:
            ``last`` dict or ``None`` and ``window``).
    """

    def __init__(self, head: L2OHead, estimator: Any) -> None:
        self.head = head
        self.estimator = estimator
        idle = head.cfg.stop_score is not None
        self.fallback = make_solver("greedy", chain_price=DEFAULT_CHAIN_PRICE if idle else 0.0)
        self.last_scores: np.ndarray | None = None

    def solve(self, info: np.ndarray, prior_info: np.ndarray, num_rf: int,
              detection_prob: np.ndarray | None = None) -> np.ndarray:
        last = getattr(self.estimator, "last", None)
        if last is None:
            self.last_scores = None
            return self.fallback.solve(info, prior_info, num_rf, detection_prob)
        self.last_scores = self.head.scores(last, self.estimator.window.as_arrays(),
                                            {"info": info, "prior_info": prior_info})
        if self.last_scores.shape != np.shape(info)[:2]:
            raise ConfigError("l2o", self.last_scores.shape, f"scores do not match the problem {np.shape(info)[:2]}")
        return repair(self.last_scores, num_rf, self.head.cfg.stop_score)


__all__ = ["L2OAssociator", "L2OConfig", "L2OHead", "L2O_KEYS", "OBJECTIVE_KEYS", "repair"]
