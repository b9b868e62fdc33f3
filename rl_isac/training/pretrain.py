"""Phase 1 of the paper's training (Sec. 3.3): supervised pre-training of the DGNN and its beam head.

How to run (Python; the CLI verb ``rl-isac pretrain`` wraps it)::

    from rl_isac.scenario import ScenarioConfig
    from rl_isac.tracking.dgnn import DGNNConfig
    from rl_isac.training.pretrain import PretrainConfig, pretrain, load_checkpoint
    cfg = ScenarioConfig.paper(num_targets=4, fidelity="surrogate")
    pretrain(cfg, DGNNConfig(), PretrainConfig(), "results/checkpoints/dgnn-I4", seed=0)
    model, configs = load_checkpoint("results/checkpoints/dgnn-I4")

Results to expect: one line per epoch (loss, validation RMSE of ``u_hat_q`` and
``u_tilde_{q+1}`` in metres per target, the window anchors' RMSE as a reference,
beam top-1/top-2 accuracy; epoch 0 is the untrained model, which with residual
heads returns the anchors), TensorBoard scalars under ``DIR/tb`` (``pretrain/loss``,
``pretrain/val_rmse_m``, ...), and a checkpoint directory ``DIR`` holding
``model.pt`` (state dict of the epoch with the lowest validation loss, early
stopping style; what :func:`load_checkpoint` loads), ``config.yaml`` (scenario, dgnn, train configs and
the seed), ``metrics.json`` (best, last and per-epoch metrics), and for
``resume=True`` ``last_model.pt`` and ``train_state.pt`` (optimiser, scheduler and
RNG state).

Dataset (:func:`generate_dataset`): episodes of the world
(:class:`rl_isac.network.CellFreeNetwork`; use ``fidelity="surrogate"`` for speed),
one sample per block ``q = 0 .. blocks_per_episode - 1``: the window observation
after block ``q``'s measurements (:class:`~rl_isac.tracking.window.MeasurementWindow`;
at ``q = 0`` only the acquisition), labels ``u_q`` and ``u_{q+1}`` (true positions,
metres) and the nearest codebook beam from every BS toward ``u_{q+1}`` (the tx and
the rx label alike). The association of each block is drawn from a mix of
policies so that the estimator sees the situations a controller creates:
``"random"`` (each BS tracks ``min(num_rf, I)`` distinct random targets, every
target covered), ``"nearest"`` (the world's nearest-BS association) and any solver of
:data:`rl_isac.association.SOLVERS` (e.g. ``"greedy"``, ``"milp"``) on the expected
Fisher information; ``nearest`` and the solvers see the CU's view (the window's
anchors), never the truth. Beams are aimed, and the range gate centred, at the
true next position plus ``N(0, s^2)`` per axis, with ``s`` drawn per episode in
``[0, beam_aim_std_m]`` (a stand-in for predictors of varied quality; the labels
never depend on it).

Closed-loop data (``data="closed_loop"``, :func:`generate_closed_loop_dataset`; what the reference
checkpoints use): the pre-training data of the open-loop mix above aim the beams near the truth and mix
association policies, so the DGNN never sees the states its own CU visits (in closed loop its
correction then added error). DAgger style instead: round 0 is driven by the expert CU
``expert`` (``ekf-milp``: EKF, exact MILP on the detection-counting objective, geometric beams with
the re-acquisition sweep); round ``r >= 1`` by the DGNN CU (``dgnn-<dagger_solver>``: its estimate,
its association, its head's beams) of the best model after round ``r - 1``; every round adds
``train_episodes`` / ``val_episodes`` new episodes (training seeds only) to the aggregated sets, and
training continues from that model for ``dagger_epochs`` (round 0: ``epochs``) with its own cosine
decay. The window with the anchor runs on the very measurements the CU receives. At the start of
each round the carried model and the untrained one (zero residual heads: exactly the anchors) are
scored on the grown validation set, so ``model.pt`` is the anchor itself when no trained epoch
beats it (``metrics.json``: ``best_is_untrained``). ``rounds/policy<r>.pt`` keeps the model that
drove round ``r`` (for a resume).

Loss (Sec. 3.3): ``MSE(u_hat) + MSE(u_tilde)`` on positions in units of
``position_loss_scale_m`` (with ``huber_delta_m``: Huber on each target's error norm, so that the
few lost tracks of closed-loop data, tens of metres off, do not dominate the correction of the many
held ones) plus ``beam_loss_weight * (CE_tx + CE_rx) / 2`` over every (BS, target) pair.

Determinism: the data come from numpy Generators seeded from ``(seed, split,
episode)``; torch from ``torch.manual_seed(seed)`` and a per-epoch shuffling
generator; ``torch.set_num_threads(num_threads)``. Same configs + seed = identical
losses, also across a resume.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor

from rl_isac.config import ConfigMixin
from rl_isac.errors import ConfigError
from rl_isac.io import atomic_torch_save as _atomic_save
from rl_isac.io import atomic_write_text as _atomic_text
from rl_isac.scenario import ScenarioConfig
from rl_isac.seeds import training_world_seed
from rl_isac.tracking.dgnn.model import DGNN, DGNNConfig, to_tensors
from rl_isac.tracking.window import OBS_KEYS, MeasurementWindow

BASE_POLICIES = ("random", "nearest")
DATA_MODES = ("open_loop", "closed_loop")


@dataclass(frozen=True)
class PretrainConfig(ConfigMixin):
    """Phase-1 pre-training settings."""

    train_episodes: int = 48
    """Training episodes (each gives ``blocks_per_episode`` samples)."""
    val_episodes: int = 8
    """Validation episodes (separate seeds)."""
    blocks_per_episode: int = 50
    """Blocks simulated per episode (samples at ``q = 0 .. blocks_per_episode - 1``)."""
    epochs: int = 20
    """Passes over the training set."""
    batch_size: int = 64
    """Samples per optimiser step."""
    lr: float = 1e-3
    """AdamW learning rate (cosine-decayed to ``lr * 0.05`` over the epochs when ``cosine``)."""
    cosine: bool = True
    """Cosine learning-rate decay over the epochs (else constant)."""
    weight_decay: float = 1e-5
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Global gradient-norm clip (0 = off)."""
    beam_loss_weight: float = 0.05
    """Weight of the beams' cross-entropy against the position MSE."""
    position_loss_scale_m: float = 1.0
    """Position errors are divided by this before squaring, metres."""
    huber_delta_m: float | None = None
    """``None``: squared error; a number: Huber on each target's error norm, quadratic below this many metres
    and linear above (a lost track, tens of metres off, then pulls no harder than a 2-delta error does)."""
    max_anchor_error_m: float | None = None
    """``None``: every target-sample counts; a number: target-samples whose anchor (``anchor`` for ``u_hat``,
    ``anchor_next`` for ``u_tilde``) is farther than this from the truth are left out of the position loss
    (a lost track is the EKF's re-acquisition job; learning it from a few lost episodes overfits them)."""
    association_policies: tuple[str, ...] = ("random", "nearest", "greedy")
    """Association policies mixed per block: ``"random"``, ``"nearest"`` or a solver name."""
    association_weights: tuple[float, ...] = (0.4, 0.3, 0.3)
    """Probabilities of the policies above (normalised)."""
    beam_aim_std_m: float = 2.0
    """Largest std of the beam aim point around the true next position, metres."""
    num_threads: int = 1
    """``torch.set_num_threads`` during training."""
    data: str = "open_loop"
    """``"open_loop"``: the policy mix above with beams aimed near the truth; ``"closed_loop"``: rollouts
    of the CUs themselves (DAgger style, see :func:`generate_closed_loop_dataset`)."""
    expert: str = "ekf-milp"
    """Closed loop: the registered CU that drives round 0 (no model yet)."""
    dagger_rounds: int = 1
    """Closed loop: rounds after round 0, each driven by the DGNN CU of the previous round's best model."""
    dagger_epochs: int = 10
    """Closed loop: epochs of each round after round 0 (round 0 trains ``epochs``)."""
    dagger_solver: str = "milp"
    """Closed loop: the association solver of the DGNN CU in rounds >= 1 (``dgnn-<solver>``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "association_policies", tuple(self.association_policies))
        object.__setattr__(self, "association_weights", tuple(float(w) for w in self.association_weights))
        for name in ("train_episodes", "val_episodes", "blocks_per_episode", "epochs", "batch_size", "num_threads",
                     "dagger_epochs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(name, v, "must be an integer >= 1")
        for name in ("lr", "position_loss_scale_m"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ConfigError(name, v, "must be a finite number > 0")
        for name in ("weight_decay", "grad_clip", "beam_loss_weight", "beam_aim_std_m"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ConfigError(name, v, "must be a finite number >= 0")
        if self.huber_delta_m is not None and not (isinstance(self.huber_delta_m, (int, float))
                                                   and math.isfinite(self.huber_delta_m) and self.huber_delta_m > 0):
            raise ConfigError("huber_delta_m", self.huber_delta_m, "must be None or a finite number > 0")
        if self.max_anchor_error_m is not None and not (
                isinstance(self.max_anchor_error_m, (int, float)) and math.isfinite(self.max_anchor_error_m)
                and self.max_anchor_error_m > 0):
            raise ConfigError("max_anchor_error_m", self.max_anchor_error_m, "must be None or a finite number > 0")
        if not isinstance(self.cosine, bool):
            raise ConfigError("cosine", self.cosine, "must be a bool")
        if not self.association_policies or len(self.association_policies) != len(self.association_weights):
            raise ConfigError("association_weights", self.association_weights,
                              f"needs one weight per policy of {self.association_policies}")
        if any(w < 0 for w in self.association_weights) or sum(self.association_weights) <= 0:
            raise ConfigError("association_weights", self.association_weights, "must be >= 0 with a positive sum")
        from rl_isac.association import SOLVERS

        for name in self.association_policies:
            if name not in BASE_POLICIES and name not in SOLVERS:
                raise ConfigError("association_policies", name,
                                  f"must be one of {BASE_POLICIES + tuple(sorted(SOLVERS))}")
        if self.data not in DATA_MODES:
            raise ConfigError("data", self.data, f"must be one of {DATA_MODES}")
        if isinstance(self.dagger_rounds, bool) or not isinstance(self.dagger_rounds, int) or self.dagger_rounds < 0:
            raise ConfigError("dagger_rounds", self.dagger_rounds, "must be an integer >= 0")
        if self.dagger_solver not in SOLVERS:
            raise ConfigError("dagger_solver", self.dagger_solver, f"must be one of {tuple(sorted(SOLVERS))}")
        from rl_isac.controllers.registry import METHODS

        if not self.expert.startswith("ekf-") or self.expert not in METHODS:
            raise ConfigError("expert", self.expert, "must be a registered ekf-* method (no checkpoint needed), e.g. "
                                                     "ekf-milp")

    @property
    def num_rounds(self) -> int:
        """Data rounds: 1 for ``open_loop``, ``1 + dagger_rounds`` for ``closed_loop``."""
        return 1 + (self.dagger_rounds if self.data == "closed_loop" else 0)

    def round_epochs(self, round_index: int) -> int:
        """Epochs trained after the data of round ``round_index`` arrive."""
        return self.epochs if round_index == 0 else self.dagger_epochs

# ---------------------------------------------------------------------------------------------- dataset
def random_association(num_bs: int, num_targets: int, num_rf: int, *, rng: np.random.Generator) -> np.ndarray:
    """A random feasible association using every chain.

    Each target first gets a random BS with a free chain (so (5d) holds), then every
    BS fills its ``min(num_rf, I)`` chains with random targets it does not track yet
    ((5c), (5e)).

    Shapes:
        returns ``(M, I)`` bool.
    """
    per_bs = min(num_rf, num_targets)
    assoc = np.zeros((num_bs, num_targets), bool)
    free = np.full(num_bs, per_bs)
    for i in rng.permutation(num_targets):
        m = rng.choice(np.flatnonzero(free > 0))
        assoc[m, i] = True
        free[m] -= 1
    for m in range(num_bs):
        if free[m]:
            extra = rng.choice(np.flatnonzero(~assoc[m]), size=free[m], replace=False)
            assoc[m, extra] = True
    return assoc


def _episode_rngs(seed: int, split: int, episode: int) -> tuple[int, np.random.Generator]:
    policy_ss = np.random.SeedSequence([int(seed), split, episode]).spawn(2)[1]
    return training_world_seed(seed, split, episode), np.random.default_rng(policy_ss)


def generate_dataset(cfg: ScenarioConfig, train_cfg: PretrainConfig, *, seed: int, split: int, num_episodes: int,
                     anchor: str = "ekf", progress: bool = False) -> dict[str, np.ndarray]:
    """Roll out episodes of the world and collect window observations with labels.

    Args:
        cfg: scenario (``fidelity="surrogate"`` recommended for speed).
        train_cfg: policy mix, episode length, beam aim noise.
        seed: root seed; ``split`` (0 train, 1 validation) and the episode index make the streams.
        anchor: the window's anchor mode (``DGNNConfig.window_anchor``).
    Returns:
        the window arrays stacked over samples ``N = num_episodes * blocks_per_episode``
        (``features (N, W, M, I, F)``, ...) plus ``u_now (N, I, 2)`` and ``u_next (N, I, 2)``
        float32 metres, ``beam_next (N, M, I)`` int64.
    """
    from rl_isac.association import SOLVERS
    from rl_isac.network import CellFreeNetwork

    net = CellFreeNetwork(cfg)
    win = MeasurementWindow(cfg, anchor=anchor)
    solvers = {name: SOLVERS[name]() for name in train_cfg.association_policies if name in SOLVERS}
    weights = np.asarray(train_cfg.association_weights) / sum(train_cfg.association_weights)
    Q = train_cfg.blocks_per_episode
    dt = cfg.block_duration_s
    obs_lists: dict[str, list[np.ndarray]] = {k: [] for k in OBS_KEYS}
    u_now, u_next, beam_next = [], [], []
    t0 = time.perf_counter()
    for ep in range(num_episodes):
        world_seed, rng = _episode_rngs(seed, split, ep)
        win.reset(net.reset(seed=world_seed))
        aim_std = rng.uniform(0.0, train_cfg.beam_aim_std_m)
        for _ in range(Q):
            obs = win.as_arrays()
            for k in OBS_KEYS:
                obs_lists[k].append(obs[k])
            u_now.append(net.positions_m.copy())
            # association for block q + 1 from the CU's view (anchors), beams aimed near the truth
            policy = train_cfg.association_policies[rng.choice(len(weights), p=weights)]
            anchor = win.anchor_m
            aim = net.positions_m + net.velocities_mps * dt + aim_std * rng.standard_normal(anchor.shape)
            aim = np.clip(aim, cfg.edge_margin_m, np.asarray(cfg.area_size_m) - cfg.edge_margin_m)
            beams = net.beams_toward(aim)
            if policy == "random":
                assoc = random_association(cfg.num_bs, cfg.num_targets, cfg.num_rf, rng=rng)
            elif policy == "nearest":
                assoc = net.nearest_association(anchor)
            else:
                prior_std = cfg.step_m * (win.anchor_age + 1) + 0.5
                prior_info = np.eye(2)[None] / prior_std[:, None, None] ** 2
                info = net.expected_information(anchor, net.beams_toward(anchor))
                assoc = solvers[policy].solve(info, prior_info, cfg.num_rf)
            meas = net.step(assoc, beams, predicted_positions_m=aim)
            u_next.append(net.positions_m.copy())
            beam_next.append(net.best_beam_index(net.positions_m))
            win.push(meas)
        if progress and (ep + 1) % max(1, num_episodes // 4) == 0:
            print(f"  data split {split}: {ep + 1}/{num_episodes} episodes ({time.perf_counter() - t0:.1f} s)",
                  flush=True)
    out = {k: np.stack(v) for k, v in obs_lists.items()}
    out["u_now"] = np.asarray(u_now, dtype=np.float32)
    out["u_next"] = np.asarray(u_next, dtype=np.float32)
    out["beam_next"] = np.asarray(beam_next, dtype=np.int64)
    return out


def dgnn_controller(cfg: ScenarioConfig, model: DGNN, solver: str = "milp"):
    """The ``dgnn-<solver>`` CU (:mod:`rl_isac.controllers.learned`) around an in-memory model.

    The same composition as the registered method (DGNN estimate, the solver on the detection-counting
    objective with ``DEFAULT_CHAIN_PRICE``, beams from the head), without a checkpoint directory.
    """
    from rl_isac.association import DEFAULT_CHAIN_PRICE, make_solver
    from rl_isac.controllers.composed import ComposedCU
    from rl_isac.controllers.learned import DGNNEstimator, HeadBeams

    return ComposedCU(cfg, DGNNEstimator(cfg, model), make_solver(solver, chain_price=DEFAULT_CHAIN_PRICE),
                      beams=HeadBeams(cfg), name=f"dgnn-{solver}")


def generate_closed_loop_dataset(cfg: ScenarioConfig, train_cfg: PretrainConfig, *, seed: int, split: int,
                                 num_episodes: int, round_index: int = 0, model: DGNN | None = None,
                                 anchor: str = "ekf", progress: bool = False) -> dict[str, np.ndarray]:
    """Closed-loop (DAgger-style) samples: the states a CU visits when it drives the world itself.

    Round 0 (``model=None``) is driven by the expert CU ``train_cfg.expert`` (default ``ekf-milp``: EKF,
    exact MILP on the detection-counting objective, geometric beams with the re-acquisition sweep); a
    later round by the DGNN CU of ``model`` (:func:`dgnn_controller` with ``train_cfg.dagger_solver``:
    its estimate, its association, beams from its own head). A window of anchor mode ``anchor``
    runs beside the CU on the very measurements the CU receives, so the samples are the inputs the
    deployed DGNN would read in that CU (for the DGNN CU with the EKF anchor the window equals the
    CU's own window). One sample per block ``q = 0 .. blocks_per_episode - 1``: the observation after
    block ``q``'s measurements (``q = 0``: the acquisition only), labels ``u_q``, ``u_{q+1}`` and the
    nearest beams toward ``u_{q+1}`` as in :func:`generate_dataset`.

    World seeds: :func:`rl_isac.seeds.training_world_seed` of ``(seed, split, round_index *
    num_episodes + episode)``: new worlds every round, never an evaluation seed.

    Returns:
        the arrays of :func:`generate_dataset` plus ``cu_estimate_m (N, I, 2)`` (the driving CU's
        ``u_hat_q``), ``cu_association (N, M, I)`` bool (the association it chose for block ``q + 1``),
        ``round (N,)`` int64 and ``world_seed (num_episodes,)`` int64.
    """
    from rl_isac.controllers import make_controller
    from rl_isac.network import CellFreeNetwork

    if model is None and round_index > 0:
        raise ConfigError("model", None, f"round {round_index} of the closed-loop data needs the DGNN of round "
                                         f"{round_index - 1}")
    if model is None:
        cu = make_controller(train_cfg.expert, cfg)
    else:
        model.eval()
        cu = dgnn_controller(cfg, model, train_cfg.dagger_solver)
    net = CellFreeNetwork(cfg)
    win = MeasurementWindow(cfg, anchor=anchor)
    Q = train_cfg.blocks_per_episode
    keys = (*OBS_KEYS, "u_now", "u_next", "beam_next", "cu_estimate_m", "cu_association")
    rec: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    seeds = []
    t0 = time.perf_counter()
    for ep in range(num_episodes):
        world_seed = training_world_seed(seed, split, round_index * num_episodes + ep)
        seeds.append(world_seed)
        acq = net.reset(seed=world_seed)
        win.reset(acq)
        action = cu.reset(acq)
        for _ in range(Q):
            obs = win.as_arrays()
            for k in OBS_KEYS:
                rec[k].append(obs[k])
            rec["u_now"].append(net.positions_m.copy())
            rec["cu_estimate_m"].append(np.asarray(action.estimate_m, float))
            rec["cu_association"].append(action.association.copy())
            meas = net.step(action.association, action.beams, predicted_positions_m=action.prediction_m)
            rec["u_next"].append(net.positions_m.copy())
            rec["beam_next"].append(net.best_beam_index(net.positions_m))
            win.push(meas)
            action = cu.act(meas)
        if progress and (ep + 1) % max(1, num_episodes // 4) == 0:
            print(f"  round {round_index} data split {split} ({cu.name}): {ep + 1}/{num_episodes} episodes "
                  f"({time.perf_counter() - t0:.1f} s)", flush=True)
    out = {k: np.stack(rec[k]) for k in OBS_KEYS}
    for k in ("u_now", "u_next", "cu_estimate_m"):
        out[k] = np.asarray(rec[k], dtype=np.float32)
    out["beam_next"] = np.asarray(rec["beam_next"], dtype=np.int64)
    out["cu_association"] = np.asarray(rec["cu_association"], dtype=bool)
    out["round"] = np.full(len(out["u_now"]), round_index, dtype=np.int64)
    out["world_seed"] = np.asarray(seeds, dtype=np.int64)
    return out


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Aggregate datasets (DAgger: every round's samples are kept)."""
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


# ---------------------------------------------------------------------------------------------- loss/metrics
def pretrain_loss(out: dict[str, Tensor], batch: dict[str, Tensor], train_cfg: PretrainConfig
                  ) -> tuple[Tensor, dict[str, float]]:
    """Sec. 3.3 loss: position MSE (now + next; Huber with ``huber_delta_m``) + weighted beam cross-entropy
    (tx + rx) / 2.

    Shapes:
        out: :meth:`DGNN.forward` outputs; batch: ``u_now``, ``u_next`` ``(B, I, 2)`` metres,
        ``beam_next`` ``(B, M, I)`` int64.
    Returns:
        scalar loss and its parts as floats.
    """
    s = train_cfg.position_loss_scale_m

    def position_loss(est: Tensor, truth: Tensor, anchor_key: str) -> Tensor:
        sq = (((est - truth) / s) ** 2).sum(-1)                       # (B, I) squared error / s^2
        if train_cfg.huber_delta_m is not None:
            d = train_cfg.huber_delta_m / s
            norm = torch.sqrt(sq + 1e-12)
            sq = torch.where(norm <= d, sq, 2 * d * norm - d * d)      # Huber, 2x the usual (= sq below d)
        if train_cfg.max_anchor_error_m is None or anchor_key not in batch:
            return sq.mean()
        anchor_m = batch[anchor_key] * batch["scales_m"][:, 0, None, None]
        keep = ((anchor_m - truth).norm(dim=-1) <= train_cfg.max_anchor_error_m).to(sq.dtype)  # (B, I)
        return (sq * keep).sum() / keep.sum().clamp_min(1.0)

    mse_now = position_loss(out["u_hat"], batch["u_now"], "anchor")
    mse_next = position_loss(out["u_tilde"], batch["u_next"], "anchor_next")
    C = out["beam_logits_tx"].shape[-1]
    labels = batch["beam_next"].reshape(-1)
    ce_tx = torch.nn.functional.cross_entropy(out["beam_logits_tx"].reshape(-1, C), labels)
    ce_rx = torch.nn.functional.cross_entropy(out["beam_logits_rx"].reshape(-1, C), labels)
    loss = mse_now + mse_next + train_cfg.beam_loss_weight * 0.5 * (ce_tx + ce_rx)
    parts = {k: float(v.detach()) for k, v in
             (("mse_now", mse_now), ("mse_next", mse_next), ("ce_tx", ce_tx), ("ce_rx", ce_rx))}
    return loss, parts


def _batch(data: dict[str, np.ndarray], idx: np.ndarray | Tensor) -> dict[str, Tensor]:
    idx = np.asarray(idx)
    out = to_tensors({k: data[k][idx] for k in OBS_KEYS})
    out["u_now"] = torch.from_numpy(data["u_now"][idx])
    out["u_next"] = torch.from_numpy(data["u_next"][idx])
    out["beam_next"] = torch.from_numpy(data["beam_next"][idx])
    return out


@torch.no_grad()
def evaluate(model: DGNN, data: dict[str, np.ndarray], batch_size: int = 256,
             train_cfg: PretrainConfig | None = None) -> dict[str, float]:
    """Validation metrics (eval mode).

    Returns:
        ``val_rmse_m`` (``u_hat_q``) and ``val_rmse_next_m`` (``u_tilde_{q+1}``): RMSE per target
        in metres, averaged over targets and samples; ``anchor_rmse_m`` / ``anchor_next_rmse_m``: the
        window anchors' RMSE against ``u_q`` / ``u_{q+1}`` (the reference the residuals start from: the
        EKF with the default anchor); ``beam_top1``: tx top-1 accuracy; ``beam_top2``: label
        within the tx top-2; with ``train_cfg``, also ``val_loss``: the training loss
        (:func:`pretrain_loss`) on these data.
    """
    was = model.training
    model.eval()
    n = len(data["u_now"])
    se_now = se_next = se_anchor = se_anchor_next = 0.0
    top1 = top2 = 0
    loss_sum = 0.0
    for start in range(0, n, batch_size):
        b = _batch(data, np.arange(start, min(n, start + batch_size)))
        out = model(b)
        if train_cfg is not None:
            loss_sum += float(pretrain_loss(out, b, train_cfg)[0]) * len(b["u_now"])
        se_now += float(((out["u_hat"] - b["u_now"]) ** 2).sum())
        se_next += float(((out["u_tilde"] - b["u_next"]) ** 2).sum())
        pos_scale = b["scales_m"][:, 0, None, None]
        se_anchor += float(((b["anchor"] * pos_scale - b["u_now"]) ** 2).sum())
        se_anchor_next += float(((b["anchor_next"] * pos_scale - b["u_next"]) ** 2).sum())
        top = out["beam_logits_tx"].topk(2, dim=-1).indices
        top1 += int((top[..., 0] == b["beam_next"]).sum())
        top2 += int((top == b["beam_next"][..., None]).any(-1).sum())
    model.train(was)
    num_targets = data["u_now"].shape[1]
    pairs = data["beam_next"].size
    extra = {} if train_cfg is None else {"val_loss": loss_sum / n}
    return {**extra, "val_rmse_m": math.sqrt(se_now / (n * num_targets)),
            "val_rmse_next_m": math.sqrt(se_next / (n * num_targets)),
            "anchor_rmse_m": math.sqrt(se_anchor / (n * num_targets)),
            "anchor_next_rmse_m": math.sqrt(se_anchor_next / (n * num_targets)),
            "beam_top1": top1 / pairs, "beam_top2": top2 / pairs}


# ---------------------------------------------------------------------------------------------- checkpoints
def _configs_dict(cfg: ScenarioConfig, dgnn_cfg: DGNNConfig, train_cfg: PretrainConfig, seed: int) -> dict[str, Any]:
    return {"scenario": cfg.to_dict(), "dgnn": dgnn_cfg.to_dict(), "train": train_cfg.to_dict(), "seed": int(seed)}


def load_configs(ckpt_dir: str | Path) -> dict[str, Any]:
    """Configs of a checkpoint: ``{"scenario": ScenarioConfig, "dgnn": DGNNConfig, "train": PretrainConfig,
    "seed": int}``."""
    data = yaml.safe_load((Path(ckpt_dir) / "config.yaml").read_text())
    return {"scenario": ScenarioConfig.from_dict(data["scenario"]), "dgnn": DGNNConfig.from_dict(data["dgnn"]),
            "train": PretrainConfig.from_dict(data["train"]), "seed": int(data["seed"])}


def load_checkpoint(ckpt_dir: str | Path, map_location: str | torch.device = "cpu") -> tuple[DGNN, dict[str, Any]]:
    """Model (eval mode) and configs (:func:`load_configs`) of a checkpoint directory."""
    configs = load_configs(ckpt_dir)
    model = DGNN(configs["dgnn"])
    state = torch.load(Path(ckpt_dir) / "model.pt", map_location=map_location, weights_only=True)
    model.load_state_dict(state)
    model.eval()
    return model, configs


def save_checkpoint(model: DGNN | None, ckpt_dir: str | Path, cfg: ScenarioConfig, dgnn_cfg: DGNNConfig,
                    train_cfg: PretrainConfig, seed: int, metrics: dict[str, Any] | None = None) -> None:
    """Write ``model.pt`` (when a model is given), ``config.yaml`` and (when given) ``metrics.json``."""
    d = Path(ckpt_dir)
    d.mkdir(parents=True, exist_ok=True)
    if model is not None:
        _atomic_save(model.state_dict(), d / "model.pt")
    _atomic_text(yaml.safe_dump(_configs_dict(cfg, dgnn_cfg, train_cfg, seed), sort_keys=False), d / "config.yaml")
    if metrics is not None:
        _atomic_text(json.dumps(metrics, indent=2), d / "metrics.json")


# ---------------------------------------------------------------------------------------------- training
@dataclass
class PretrainResult:
    """What :func:`pretrain` returns."""

    model: DGNN
    """The trained model of the best epoch (what ``model.pt`` holds), eval mode."""
    history: list[dict[str, float]]
    """Per-epoch metrics (``epoch``, ``loss``, the :func:`evaluate` keys, ``lr``, ``seconds``)."""
    out_dir: Path
    """The checkpoint directory."""


def pretrain(cfg: ScenarioConfig, dgnn_cfg: DGNNConfig, train_cfg: PretrainConfig, out_dir: str | Path,
             seed: int = 0, resume: bool = False, progress: bool = True,
             stop_after_epoch: int | None = None) -> PretrainResult:
    """Phase-1 supervised pre-training (Sec. 3.3); see the module docstring.

    Args:
        cfg: scenario; the world runs at ``cfg.fidelity``.
        dgnn_cfg: model; its ``codebook_size`` must equal the scenario's.
        train_cfg: data and optimisation settings.
        out_dir: checkpoint directory (created).
        seed: root seed of data, initialisation and shuffling.
        resume: continue from ``out_dir/train_state.pt`` when it exists (configs must match).
        progress: print a line per epoch and a summary.
        stop_after_epoch: stop (with a resumable checkpoint) once this many epochs are done, e.g. to
            split a run over time-limited jobs; the learning-rate schedule still spans ``train_cfg.epochs``.
    """
    if dgnn_cfg.codebook_size != cfg.codebook_size:
        raise ConfigError("dgnn.codebook_size", dgnn_cfg.codebook_size,
                          f"must equal the scenario's codebook_size={cfg.codebook_size}")
    if dgnn_cfg.target_mode == "concat" and dgnn_cfg.num_targets != cfg.num_targets:
        raise ConfigError("dgnn.num_targets", dgnn_cfg.num_targets,
                          f"a concat-mode DGNN must match the scenario's num_targets={cfg.num_targets}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "train_state.pt"
    configs = _configs_dict(cfg, dgnn_cfg, train_cfg, seed)
    resuming = resume and state_path.exists()
    if resuming:
        saved = yaml.safe_load((out / "config.yaml").read_text())
        if saved != configs:
            raise ConfigError("resume", str(out), "config.yaml in the checkpoint differs from the configs given")

    threads = torch.get_num_threads()
    torch.set_num_threads(train_cfg.num_threads)
    try:
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        if progress:
            print(f"pretrain: I={cfg.num_targets} fidelity={cfg.fidelity} -> {out}", flush=True)
        anchor = dgnn_cfg.window_anchor
        rounds = train_cfg.num_rounds
        round_start = [sum(train_cfg.round_epochs(k) for k in range(r)) for r in range(rounds + 1)]
        epochs = round_start[-1]  # all rounds together

        def round_of(epoch: int) -> int:
            """Round whose training covers epoch ``epoch + 1`` (epochs counted from 0)."""
            return max(r for r in range(rounds) if round_start[r] <= epoch)

        def make_round_data(r: int, policy: DGNN | None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
            if train_cfg.data == "open_loop":
                tr = generate_dataset(cfg, train_cfg, seed=seed, split=0, num_episodes=train_cfg.train_episodes,
                                      anchor=anchor, progress=progress)
                va = generate_dataset(cfg, train_cfg, seed=seed, split=1, num_episodes=train_cfg.val_episodes,
                                      anchor=anchor)
                return tr, va
            kw = dict(round_index=r, model=policy, anchor=anchor)
            tr = generate_closed_loop_dataset(cfg, train_cfg, seed=seed, split=0,
                                              num_episodes=train_cfg.train_episodes, progress=progress, **kw)
            va = generate_closed_loop_dataset(cfg, train_cfg, seed=seed, split=1,
                                              num_episodes=train_cfg.val_episodes, **kw)
            return tr, va

        rounds_dir = out / "rounds"

        def policy_of_round(r: int) -> DGNN | None:
            """The model that drives round ``r``'s rollouts (None for round 0: the expert CU)."""
            if r == 0 or train_cfg.data == "open_loop":
                return None
            with torch.random.fork_rng():  # the global torch stream stays as in an uninterrupted run
                policy = DGNN(dgnn_cfg)
            policy.load_state_dict(torch.load(rounds_dir / f"policy{r}.pt", weights_only=True))
            return policy.eval()

        model = DGNN(dgnn_cfg)
        untrained = {k: v.clone() for k, v in model.state_dict().items()}  # residual heads at 0: the anchors
        opt = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)

        def lr_factor(epoch: int) -> float:
            if not train_cfg.cosine:
                return 1.0
            r = round_of(epoch)
            frac = (epoch - round_start[r]) / train_cfg.round_epochs(r)
            return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
        history: list[dict[str, float]] = []
        start = 0
        best: dict[str, Any] = {}
        if resuming:
            st = torch.load(state_path, weights_only=False)
            model.load_state_dict(torch.load(out / "last_model.pt", weights_only=True))
            opt.load_state_dict(st["optimizer"])
            sched.load_state_dict(st["scheduler"])
            torch.set_rng_state(st["torch_rng"])
            history, start, best = st["history"], st["epoch"], st["best"]
            if progress:
                print(f"  resumed after epoch {start}", flush=True)

        # data of the rounds already begun (a round begins at its first epoch, see begin_round)
        loaded = [r for r in range(rounds) if r == 0 or round_start[r] < start]
        parts = [make_round_data(r, policy_of_round(r)) for r in loaded]
        train = _concat([p[0] for p in parts])
        val = _concat([p[1] for p in parts])
        if progress:
            print(f"  data: {len(train['u_now'])} train / {len(val['u_now'])} val samples "
                  f"({time.perf_counter() - t0:.1f} s)", flush=True)

        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"), purge_step=start)

        def write_summary(metrics: dict[str, Any]) -> None:
            best_metrics = next(h for h in history if h["epoch"] == best["epoch"] and h["round"] == best["round"])
            summary = {"best": best_metrics, "last": metrics, "history": history,
                       "num_train_samples": len(train["u_now"]), "num_val_samples": len(val["u_now"]),
                       "window_anchor": anchor, "data": train_cfg.data, "rounds": rounds,
                       "best_is_untrained": bool(best.get("untrained", False)),
                       "wall_time_s": time.perf_counter() - t0,
                       "note": "RMSE per target in metres, averaged over targets and validation samples; "
                               "model.pt holds the model with the lowest validation loss (the training loss on "
                               "the validation set) of the last data round, the untrained model (= the anchors, "
                               "best_is_untrained) included; epoch 0 = untrained; closed_loop: each round adds "
                               "rollouts of the previous round's best DGNN CU, and its first entry re-scores "
                               "the carried model on the grown validation set"}
            save_checkpoint(None, out, cfg, dgnn_cfg, train_cfg, seed, summary)

        def log(metrics: dict[str, Any]) -> None:
            step = metrics["epoch"]
            for key, tag in (("loss", "pretrain/loss"), ("val_loss", "pretrain/val_loss"),
                             ("val_rmse_m", "pretrain/val_rmse_m"),
                             ("val_rmse_next_m", "pretrain/val_rmse_next_m"),
                             ("anchor_rmse_m", "pretrain/anchor_rmse_m"),
                             ("anchor_next_rmse_m", "pretrain/anchor_next_rmse_m"),
                             ("beam_top1", "pretrain/beam_top1"), ("lr", "pretrain/lr")):
                if metrics.get(key) is not None:
                    writer.add_scalar(tag, metrics[key], step)
            writer.flush()

        def save_state(epoch: int) -> None:
            _atomic_save(model.state_dict(), out / "last_model.pt")
            _atomic_save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch,
                          "history": history, "best": best, "torch_rng": torch.get_rng_state()}, state_path)

        def begin_round(r: int, epoch: int, lr: float) -> None:
            """Score the carried model and the untrained one on round ``r``'s validation set; keep the better."""
            carried = {k: v.clone() for k, v in model.state_dict().items()}
            model.load_state_dict(untrained)
            ref = evaluate(model, val, train_cfg=train_cfg)
            model.load_state_dict(carried)
            metrics = {"epoch": epoch, "round": r, "loss": None, **evaluate(model, val, train_cfg=train_cfg),
                       "untrained_val_loss": ref["val_loss"], "untrained_val_rmse_m": ref["val_rmse_m"],
                       "lr": lr, "seconds": 0.0}
            history.append(metrics)
            log(metrics)
            best.clear()
            if r > 0 and ref["val_loss"] < metrics["val_loss"]:
                best.update(epoch=epoch, round=r, val_loss=ref["val_loss"], untrained=True)
                _atomic_save(untrained, out / "model.pt")
            else:
                best.update(epoch=epoch, round=r, val_loss=metrics["val_loss"])
                _atomic_save(model.state_dict(), out / "model.pt")
            write_summary(metrics)
            save_state(epoch)
            if progress:
                print(f"  round {r} start: val {metrics['val_loss']:.4f} (untrained {ref['val_loss']:.4f}) "
                      f"val_rmse_m {metrics['val_rmse_m']:.3f} (anchor {metrics['anchor_rmse_m']:.3f})", flush=True)

        def finish_epoch(epoch: int, loss: float, lr: float, seconds: float) -> dict[str, float]:
            metrics = {"epoch": epoch, "round": round_of(epoch - 1), "loss": loss,
                       **evaluate(model, val, train_cfg=train_cfg), "lr": lr, "seconds": seconds}
            history.append(metrics)
            log(metrics)
            if metrics["val_loss"] < best["val_loss"]:
                best.clear()
                best.update(epoch=epoch, round=metrics["round"], val_loss=metrics["val_loss"])
                _atomic_save(model.state_dict(), out / "model.pt")
            write_summary(metrics)
            save_state(epoch)
            if progress:
                print(f"  epoch {epoch:3d}/{epochs} (round {metrics['round']}) loss {loss:.4f} "
                      f"val {metrics['val_loss']:.4f} "
                      f"val_rmse_m {metrics['val_rmse_m']:.3f} (anchor {metrics['anchor_rmse_m']:.3f}) "
                      f"next {metrics['val_rmse_next_m']:.3f} (anchor {metrics['anchor_next_rmse_m']:.3f}) "
                      f"beam top1 {metrics['beam_top1']:.2f} top2 {metrics['beam_top2']:.2f}  "
                      f"{seconds:.1f} s", flush=True)
            return metrics

        try:
            if not resuming:
                begin_round(0, 0, opt.param_groups[0]["lr"])
            last_epoch = epochs if stop_after_epoch is None else min(epochs, int(stop_after_epoch))
            for epoch in range(start, last_epoch):
                r = round_of(epoch)
                if r > 0 and epoch == round_start[r]:  # a new DAgger round: rollouts of the best model so far
                    if progress:
                        print(f"  round {r}: rollouts of the DGNN CU (best model of round {r - 1})", flush=True)
                    rounds_dir.mkdir(exist_ok=True)
                    best_state = torch.load(out / "model.pt", weights_only=True)
                    _atomic_save(best_state, rounds_dir / f"policy{r}.pt")
                    tr, va = make_round_data(r, policy_of_round(r))
                    train, val = _concat([train, tr]), _concat([val, va])
                    model.load_state_dict(best_state)  # continue from the policy that made the data
                    begin_round(r, epoch, opt.param_groups[0]["lr"])
                te = time.perf_counter()
                model.train()
                n = len(train["u_now"])
                gen = torch.Generator().manual_seed(int(seed) * 100_003 + epoch)
                perm = torch.randperm(n, generator=gen).numpy()
                total, count = 0.0, 0
                for s in range(0, n, train_cfg.batch_size):
                    idx = perm[s:s + train_cfg.batch_size]
                    b = _batch(train, idx)
                    loss, _ = pretrain_loss(model(b), b, train_cfg)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if train_cfg.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                    count += len(idx)
                lr = opt.param_groups[0]["lr"]
                sched.step()
                finish_epoch(epoch + 1, total / count, lr, time.perf_counter() - te)
        finally:
            writer.close()
        model.load_state_dict(torch.load(out / "model.pt", weights_only=True))
        model.eval()
        if progress and history:
            b = next(h for h in history if h["epoch"] == best["epoch"] and h["round"] == best["round"])
            which = "the untrained model (= the anchors)" if best.get("untrained") else f"epoch {b['epoch']}"
            print(f"pretrain done in {time.perf_counter() - t0:.0f} s: best of round {best['round']}: {which}: "
                  f"val RMSE {b['val_rmse_m']:.3f} m (u_hat_q) / {b['val_rmse_next_m']:.3f} m (u_tilde_q+1) per "
                  f"target; {anchor} anchor {b['anchor_rmse_m']:.3f} / {b['anchor_next_rmse_m']:.3f} m; "
                  f"beam top1 {b['beam_top1']:.2f}; checkpoint {out}", flush=True)
        return PretrainResult(model=model, history=history, out_dir=out)
    finally:
        torch.set_num_threads(threads)


__all__ = ["DATA_MODES", "PretrainConfig", "PretrainResult", "dgnn_controller", "evaluate",
           "generate_closed_loop_dataset", "generate_dataset", "load_checkpoint", "load_configs",
           "pretrain", "pretrain_loss", "random_association", "save_checkpoint"]
