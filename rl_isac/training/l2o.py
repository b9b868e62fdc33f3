"""Benchmark II training: supervised learning of the MILP association on top of a frozen DGNN.

How to run (Python; the CLI verb ``rl-isac train-l2o --checkpoint DIR`` wraps it)::

    from rl_isac.training.l2o import train_l2o
    metrics = train_l2o("results/checkpoints/dgnn-I4", episodes=32, val_episodes=8, blocks=50, epochs=30)
    # then: rl-isac evaluate --method dgnn-l2o --checkpoint results/checkpoints/dgnn-I4

Dataset (:func:`generate_l2o_dataset`): episodes of the world
(:class:`rl_isac.network.CellFreeNetwork`, ``fidelity`` default ``"surrogate"``) driven by
the ``dgnn-milp`` CU of the same checkpoint, so the states are the ones a DGNN-based CU
creates. After each block ``q >= 1`` we store the window observation the DGNN read
(:meth:`~rl_isac.tracking.window.MeasurementWindow.as_arrays`), the DGNN outputs the head reads
(``target_embedding``, ``u_tilde``), the objective the CU solved
(``info = expected_position_information(cfg, codebook, bs_positions, u_tilde, head beams)``,
``prior_info = inv(estimator.predicted_position_covariance())``, the EKF anchor's predicted
covariance) and its exact optimum ``A*`` (the MILP, i.e. the association ``dgnn-milp``
transmits). World seeds come from ``SeedSequence([seed, split, episode])`` reduced below
:data:`rl_isac.evaluation.harness.EVAL_SEED_BASE`, so evaluation episodes are never trained on.
The states are those of the MILP-driven CU, not of the L2O-driven one (no DAgger): the
association only changes which measurements arrive, so the shift is mild.

Loss (``L2OTrainConfig.loss``):

* ``"bce"``: binary cross-entropy of every pair's logit against ``A*``;
* ``"sequential"`` (listwise): the decoding of :func:`~rl_isac.tracking.dgnn.l2o.repair` with
  teacher forcing: at each of the ``J`` steps, softmax over the mask's valid pairs and
  ``-log P(next pair is one of the remaining pairs of A*)``; the teacher takes the remaining
  ``A*`` pair the model currently ranks highest. It trains exactly what the repair consumes
  (the ranking among valid pairs), not calibrated per-pair probabilities.

Metrics per epoch (validation episodes, after the repair): ``val_pair_acc`` (fraction of
(BS, target) entries equal to ``A*``), ``val_exact`` (fraction of blocks where
``repair(scores) == A*``), ``val_gap`` (mean of ``cost(repair) / cost(A*) - 1`` with
:func:`rl_isac.association.association_cost`), ``val_bce``; references ``greedy_gap`` /
``greedy_exact`` (the greedy solver on the same objective, which L2O should beat to be worth
anything). ``l2o.pt`` holds the epoch with the lowest ``val_gap`` (epoch 0 = untrained).

Files (in the DGNN checkpoint directory, or ``out_dir``, written atomically): ``l2o.pt`` (state
dict), ``l2o_config.yaml`` (head and training configs, seed, the sha256 of the ``model.pt`` it
was trained on: loading refuses another DGNN), ``l2o_metrics.json``; TensorBoard scalars
``l2o/loss``, ``l2o/val_exact``, ``l2o/val_gap``, ``l2o/val_pair_acc`` under ``DIR/tb_l2o``.
With ``out_dir`` different from the checkpoint, the DGNN files (``model.pt``, ``config.yaml``,
``metrics.json``) are copied there, so ``out_dir`` is a complete ``dgnn-l2o`` checkpoint.

Determinism: numpy Generators / world seeds from ``(seed, split, episode)``,
``torch.manual_seed(seed)`` before the head is built, a per-epoch shuffling generator,
``torch.set_num_threads(num_threads)`` (default 1). Same inputs = identical losses.

Measured (I = 4 paper scenario, surrogate; a DGNN of ``hidden_dim`` 64 pre-trained on 16 x 50 blocks;
seed 0; the same 800 validation blocks, 16 episodes x 50, for every row; one core). ``exact``: repair
equals ``A*``; ``gap``: mean ``cost / cost(A*) - 1``; ``<1e-3``: blocks within 0.1 % of the optimum;
``p90``: 90th percentile of the gap:

===========================================================  =====  ========  =====  =====  =====
setting                                                      exact  pair_acc  gap    <1e-3  p90
===========================================================  =====  ========  =====  =====  =====
sequential loss, 128 x 50 training blocks, 30 epochs (best)  0.536  0.926     0.030  0.68   0.062
BCE loss, same data                                          0.511  0.924     0.034  0.66   0.079
sequential, ``context_layers=0`` (independent pair scores)   0.502  0.913     0.039
sequential, ``hidden_dim=32``, 20 epochs                     0.539  0.925     0.024
sequential, 384 x 50 training blocks, 20 epochs              0.570  0.931     0.031
sequential, ``objective_features=True`` (ablation)           0.589  0.934     0.016  0.75   0.037
greedy solver on the objective (reference)                   0.748  0.914     0.045  0.76   0.171
===========================================================  =====  ========  =====  =====  =====

With 32 x 50 training blocks the exact rate was 0.35 (on a 200-block validation set); beyond 128
episodes more data helps little and every variant overfits after about 10 epochs (``l2o.pt`` keeps
the best validation epoch): the inputs, not the data, limit it. The L2O is exact less often than
greedy but has a much lighter tail (greedy is either optimal or far off), hence the lower mean gap.
The listwise loss beats BCE on every metric and is the default. End to end (``rl-isac evaluate``,
surrogate, I = 4, 4 episodes x 100 blocks, seed 0): RMSE per target 0.0713 m ``dgnn-milp``,
0.0718 m ``dgnn-l2o`` (0.0722 BCE, 0.0715 with objective features), 0.0722 m ``dgnn-greedy``;
decision p50 10.1 / 6.6 / 5.2 ms. Data generation costs about 14 ms per block at I = 4 (the DGNN and
the MILP of the driving CU), training about 2 s per epoch on 6400 blocks.
"""

from __future__ import annotations

import dataclasses
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

from rl_isac.association import (
    DEFAULT_CHAIN_PRICE,
    apply_action,
    apply_pair,
    chains_per_bs,
    expected_association_cost,
    initial_action_state,
    initial_mask_state,
    make_solver,
    mask_from_state,
    stop_action,
    valid_action_mask,
)
from rl_isac.config import ConfigMixin
from rl_isac.errors import ConfigError
from rl_isac.io import atomic_copy as _atomic_copy
from rl_isac.io import atomic_torch_save as _atomic_save
from rl_isac.io import atomic_write_text as _atomic_text
from rl_isac.io import file_sha256
from rl_isac.scenario import FIDELITIES, ScenarioConfig
from rl_isac.seeds import training_world_seed
from rl_isac.tracking.dgnn.checkpoint import load_l2o_head
from rl_isac.tracking.dgnn.l2o import L2O_KEYS, L2OConfig, L2OHead, repair
from rl_isac.tracking.window import OBS_KEYS

LOSSES = ("bce", "sequential")
L2O_FILES = ("l2o.pt", "l2o_config.yaml", "l2o_metrics.json")
DGNN_FILES = ("model.pt", "config.yaml", "metrics.json")


@dataclass(frozen=True)
class L2OTrainConfig(ConfigMixin):
    """Settings of :func:`train_l2o`."""

    episodes: int = 128
    """Training episodes of the MILP-driven CU (``blocks`` samples each)."""
    val_episodes: int = 16
    """Validation episodes (separate seeds)."""
    blocks: int = 50
    """Blocks per episode."""
    epochs: int = 20
    """Passes over the training set."""
    batch_size: int = 64
    """Samples per optimiser step."""
    lr: float = 2e-3
    """AdamW learning rate (cosine-decayed to ``lr * 0.05``)."""
    weight_decay: float = 1e-5
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Global gradient-norm clip (0 = off)."""
    loss: str = "sequential"
    """``"bce"`` or ``"sequential"`` (see the module docstring)."""
    fidelity: str = "surrogate"
    """World fidelity of the dataset."""
    num_targets: int | None = None
    """``I`` of the dataset; ``None``: the DGNN checkpoint's scenario."""
    num_threads: int = 1
    """``torch.set_num_threads`` during training."""

    def __post_init__(self) -> None:
        for name in ("episodes", "val_episodes", "blocks", "epochs", "batch_size", "num_threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(name, v, "must be an integer >= 1")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError("lr", self.lr, "must be a finite number > 0")
        for name in ("weight_decay", "grad_clip"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ConfigError(name, v, "must be a finite number >= 0")
        if self.loss not in LOSSES:
            raise ConfigError("loss", self.loss, f"must be one of {LOSSES}")
        if self.fidelity not in FIDELITIES:
            raise ConfigError("fidelity", self.fidelity, f"must be one of {FIDELITIES}")
        if self.num_targets is not None and (isinstance(self.num_targets, bool)
                                             or not isinstance(self.num_targets, int) or self.num_targets < 1):
            raise ConfigError("num_targets", self.num_targets, "must be None or an integer >= 1")

# ---------------------------------------------------------------------------------------------- dataset
def scenario_for(ckpt_dir: str | Path, fidelity: str = "surrogate", num_targets: int | None = None) -> ScenarioConfig:
    """The DGNN checkpoint's scenario at ``fidelity`` (and ``num_targets`` when given)."""
    from rl_isac.training.pretrain import load_configs

    cfg = load_configs(ckpt_dir)["scenario"]
    changes: dict[str, Any] = {"fidelity": fidelity}
    if num_targets is not None:
        changes["num_targets"] = int(num_targets)
    return cfg.replace(**changes)


def generate_l2o_dataset(cfg: ScenarioConfig, ckpt_dir: str | Path, *, seed: int, split: int, num_episodes: int,
                         blocks: int, progress: bool = False) -> dict[str, np.ndarray]:
    """Roll out the ``dgnn-milp`` CU of a checkpoint and record (observation, DGNN output, objective, ``A*``).

    Returns:
        ``N = num_episodes * blocks`` samples: the window arrays (:data:`OBS_KEYS`,
        ``features (N, W, M, I, F)``, ...), ``target_embedding (N, I, D)``, ``u_tilde (N, I, 2)`` float32,
        ``label (N, M, I)`` bool (the MILP optimum), ``info (N, M, I, 2, 2)`` and ``prior_info (N, I, 2, 2)``
        float64 (the objective, 1/m^2), ``detection_prob (N, M, I)`` float64 (the probability each pair is
        detected and credited, :func:`rl_isac.physics.detection.credited_detection_probability`, as the CU
        computed it), ``world_seed (num_episodes,)`` int64. The objective is the CU's:
        :func:`rl_isac.association.expected_association_cost` with ``DEFAULT_CHAIN_PRICE``.
    """
    from rl_isac.controllers import make_controller
    from rl_isac.network import CellFreeNetwork
    from rl_isac.physics.detection import credited_detection_probability
    from rl_isac.physics.fisher import expected_position_information

    cu = make_controller("dgnn-milp", cfg, checkpoint=str(ckpt_dir))
    net = CellFreeNetwork(cfg)
    bs = np.asarray(cfg.bs_positions_m, float)
    rec: dict[str, list[np.ndarray]] = {k: [] for k in (*OBS_KEYS, "target_embedding", "u_tilde", "label", "info",
                                                        "prior_info", "detection_prob")}
    seeds = []
    t0 = time.perf_counter()
    for ep in range(num_episodes):
        world_seed = training_world_seed(seed, split, ep)
        seeds.append(world_seed)
        action = cu.reset(net.reset(world_seed))
        for _ in range(blocks):
            meas = net.step(action.association, action.beams, predicted_positions_m=action.prediction_m)
            action = cu.act(meas)
            est = cu.estimator
            obs = est.window.as_arrays()
            for k in OBS_KEYS:
                rec[k].append(obs[k])
            rec["target_embedding"].append(est.last["target_embedding"])
            rec["u_tilde"].append(est.last["u_tilde"])
            # the objective ComposedCU solved for this action (same u_tilde, head beams, covariance)
            rec["info"].append(expected_position_information(cfg, cu.codebook, bs, action.prediction_m,
                                                             action.beams))
            cov = est.predicted_position_covariance()
            rec["prior_info"].append(np.linalg.inv(cov))
            rec["detection_prob"].append(credited_detection_probability(cfg, action.prediction_m, action.beams, cov))
            rec["label"].append(action.association)
        if progress and (ep + 1) % max(1, num_episodes // 4) == 0:
            print(f"  data split {split}: {ep + 1}/{num_episodes} episodes ({time.perf_counter() - t0:.1f} s)",
                  flush=True)
    out = {k: np.stack(v) for k, v in rec.items()}
    for k in ("target_embedding", "u_tilde"):
        out[k] = out[k].astype(np.float32)
    out["label"] = out["label"].astype(bool)
    out["world_seed"] = np.asarray(seeds, dtype=np.int64)
    return out


# ---------------------------------------------------------------------------------------------- loss/metrics
def _inputs(data: dict[str, np.ndarray], idx: np.ndarray, keys: tuple[str, ...] = L2O_KEYS) -> dict[str, Tensor]:
    return {k: torch.as_tensor(data[k][idx], dtype=torch.float32) for k in keys}


def bce_loss(scores: Tensor, labels: Tensor) -> Tensor:
    """Mean binary cross-entropy of the pair logits ``(B, M, I)`` against ``A*`` (0/1)."""
    return torch.nn.functional.binary_cross_entropy_with_logits(scores, labels.float())


def sequential_loss(scores: Tensor, labels: np.ndarray, num_rf: int, stop_score: float | None = None) -> Tensor:
    """Listwise loss of the masked decoding with teacher forcing (see the module docstring).

    With ``stop_score`` the decoding is the STOP-token one of :func:`~rl_isac.tracking.dgnn.l2o.repair`:
    the softmax runs over the allowed pairs and STOP (fixed logit ``stop_score``), and once the
    remaining ``A*`` pairs are exhausted the target is STOP (labels may leave chains idle).

    Shapes:
        scores: ``(B, M, I)`` logits; labels: ``(B, M, I)`` bool, feasible (all chains used when
        ``stop_score`` is None).
    Returns:
        scalar: mean over blocks and steps of ``-log sum_{p in A* remaining} softmax_valid(scores)_p``.
    """
    B, M, I = scores.shape
    per_bs = chains_per_bs(I, num_rf)
    flat = scores.reshape(B, M * I)
    lab = np.asarray(labels, bool).reshape(B, M * I)
    total = flat.new_zeros(())
    count = 0
    if stop_score is not None:
        stop = stop_action(M, I)
        flat = torch.cat([flat, flat.new_full((B, 1), float(stop_score))], dim=1)
        ranked = flat.detach().cpu().numpy()
        lab = np.concatenate([lab, np.zeros((B, 1), bool)], axis=1)
        act = initial_action_state(M, I, per_bs, batch_shape=(B,))
        for _ in range(M * per_bs):
            valid = valid_action_mask(*act)
            live = ~act.stopped
            if not live.any():
                break
            target = valid & lab
            done = ~target.any(axis=1)
            target[done, stop] = True  # A* complete: STOP (allowed, every target is covered)
            valid_t, target_t = torch.from_numpy(valid), torch.from_numpy(target)
            logp = torch.log_softmax(flat.masked_fill(~valid_t, -torch.inf), dim=1)
            step = -torch.logsumexp(logp.masked_fill(~target_t, -torch.inf), dim=1)
            total = total + step[torch.from_numpy(live)].sum()
            count += int(live.sum())
            k = np.argmax(np.where(target, ranked, -np.inf), axis=1)  # teacher: best-ranked remaining A* step
            act = apply_action(act, k)
        return total / max(count, 1)
    state = initial_mask_state(M, I, per_bs, batch_shape=(B,))
    ranked = flat.detach().cpu().numpy()
    for _ in range(M * per_bs):
        valid = mask_from_state(*state).reshape(B, M * I)
        target = valid & lab
        has = target.any(axis=1)
        if not has.any():
            break
        valid_t = torch.from_numpy(valid)
        target_t = torch.from_numpy(np.where(has[:, None], target, valid))  # no A* pair left: a zero term
        logp = torch.log_softmax(flat.masked_fill(~valid_t, -torch.inf), dim=1)
        step = -torch.logsumexp(logp.masked_fill(~target_t, -torch.inf), dim=1)
        total = total + step[torch.from_numpy(has)].sum()
        count += int(has.sum())
        # teacher: the remaining A* pair the model ranks highest (any valid pair where none is left)
        choice = np.where(target, ranked, -np.inf)
        choice = np.where(has[:, None], choice, np.where(valid, ranked, -np.inf))
        k = np.argmax(choice, axis=1)
        state = apply_pair(state, k // I, k % I)
    return total / max(count, 1)


@torch.no_grad()
def evaluate_l2o(head: L2OHead, data: dict[str, np.ndarray], num_rf: int, batch_size: int = 512
                 ) -> dict[str, float]:
    """Validation metrics after the repair: ``val_pair_acc``, ``val_exact``, ``val_gap``, ``val_gap_max``,
    ``val_bce`` (see the module docstring)."""
    was = head.training
    head.eval()
    n = len(data["label"])
    scores = []
    for s in range(0, n, batch_size):
        scores.append(head(_inputs(data, np.arange(s, min(n, s + batch_size)), head.cfg.input_keys)))
    head.train(was)
    scores_t = torch.cat(scores)
    labels = data["label"]
    bce = float(bce_loss(scores_t, torch.from_numpy(labels)))
    pred = np.stack([repair(s, num_rf, head.cfg.stop_score) for s in scores_t.numpy()])
    gaps = _gaps(pred, data)
    same = pred == labels
    return {"val_pair_acc": float(same.mean()), "val_exact": float(same.all(axis=(1, 2)).mean()),
            "val_gap": float(gaps.mean()), "val_gap_median": float(np.median(gaps)), "val_gap_max": float(gaps.max()),
            "val_bce": bce}


def _objective(data: dict[str, np.ndarray], n: int):
    """``(info, prior_info, detection_prob or None)`` of sample ``n``."""
    det = data.get("detection_prob")
    return data["info"][n], data["prior_info"][n], None if det is None else det[n]


def _gaps(pred: np.ndarray, data: dict[str, np.ndarray]) -> np.ndarray:
    """``cost(pred) / cost(A*) - 1`` per sample, on the CU's objective (detection, chain price)."""
    price = DEFAULT_CHAIN_PRICE if "detection_prob" in data else 0.0
    out = []
    for n, (a, lab) in enumerate(zip(pred, data["label"])):
        f, p, det = _objective(data, n)
        out.append(expected_association_cost(a, f, p, det, price) / expected_association_cost(lab, f, p, det, price)
                   - 1.0)
    return np.array(out)


def greedy_reference(data: dict[str, np.ndarray], num_rf: int) -> dict[str, float]:
    """The greedy solver on the same objective: ``greedy_exact``, ``greedy_gap`` (mean, ``_median``, ``_max``),
    ``greedy_pair_acc``."""
    greedy = make_solver("greedy", chain_price=DEFAULT_CHAIN_PRICE if "detection_prob" in data else 0.0)
    pred = np.stack([greedy.solve(*_objective(data, n)[:2], num_rf, _objective(data, n)[2])
                     for n in range(len(data["label"]))])
    same = pred == data["label"]
    gaps = _gaps(pred, data)
    return {"greedy_pair_acc": float(same.mean()), "greedy_exact": float(same.all(axis=(1, 2)).mean()),
            "greedy_gap": float(gaps.mean()), "greedy_gap_median": float(np.median(gaps)),
            "greedy_gap_max": float(gaps.max())}


# ---------------------------------------------------------------------------------------------- checkpoints
def load_l2o(ckpt_dir: str | Path, map_location: str | torch.device = "cpu") -> tuple[L2OHead, dict[str, Any]]:
    """Head (eval mode) and configs (``{"l2o": L2OConfig, "train": L2OTrainConfig, "seed": int,
    "dgnn_sha256": str, ...}``) of a checkpoint directory
    (:func:`rl_isac.tracking.dgnn.checkpoint.load_l2o_head` with the training section parsed).

    Raises:
        ConfigError: no ``l2o.pt`` (train it first) or it was trained on another ``model.pt``.
    """
    head, configs = load_l2o_head(ckpt_dir, map_location)
    return head, {**configs, "train": L2OTrainConfig.from_dict(configs["train"])}


# ---------------------------------------------------------------------------------------------- training
def train_l2o(dgnn_checkpoint_dir: str | Path, out_dir: str | Path | None = None, episodes: int = 128,
              val_episodes: int = 16, blocks: int = 50, epochs: int = 20, lr: float = 2e-3, seed: int = 0,
              fidelity: str = "surrogate", progress: bool = True, *, loss: str = "sequential",
              l2o_cfg: L2OConfig | None = None, batch_size: int = 64, weight_decay: float = 1e-5,
              num_targets: int | None = None,
              num_threads: int = 1, datasets: tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None = None
              ) -> dict[str, Any]:
    """Train the ``dgnn-l2o`` association head on MILP labels (see the module docstring).

    Args:
        dgnn_checkpoint_dir: a phase-1 checkpoint (:mod:`rl_isac.training.pretrain`); its DGNN stays frozen.
        out_dir: where the L2O files go (default: the checkpoint directory).
        episodes, val_episodes, blocks: dataset size (episodes x blocks samples each).
        epochs, lr, batch_size, weight_decay, loss: optimisation (:class:`L2OTrainConfig`).
        seed: root seed of data, initialisation and shuffling.
        fidelity: world fidelity of the dataset.
        l2o_cfg: head hyper-parameters (``embedding_dim`` is set from the DGNN).
        num_targets: ``I`` of the dataset (default: the checkpoint's scenario).
        datasets: precomputed ``(train, val)`` of :func:`generate_l2o_dataset` for this checkpoint and
            scenario (to compare settings on the same data); ``episodes`` etc. are then only recorded.
    Returns:
        the metrics dict written to ``l2o_metrics.json``: ``best``, ``last``, ``history`` (per epoch:
        ``epoch``, ``loss``, ``val_pair_acc``, ``val_exact``, ``val_gap``, ``val_gap_max``, ``val_bce``,
        ``lr``, ``seconds``), ``reference`` (greedy on the validation blocks), sizes and timings.

    Measured numbers: see the module docstring.
    """
    from rl_isac.controllers.learned import load_dgnn

    ckpt = Path(dgnn_checkpoint_dir)
    out = Path(out_dir) if out_dir is not None else ckpt
    train_cfg = L2OTrainConfig(episodes=episodes, val_episodes=val_episodes, blocks=blocks, epochs=epochs,
                               batch_size=batch_size, lr=lr, weight_decay=weight_decay, loss=loss, fidelity=fidelity,
                               num_targets=num_targets,
                               num_threads=num_threads)
    cfg = scenario_for(ckpt, fidelity, num_targets)
    model, _, _ = load_dgnn(ckpt, cfg)  # validates the checkpoint against the scenario
    l2o_cfg = dataclasses.replace(l2o_cfg or L2OConfig(), embedding_dim=model.cfg.hidden_dim)
    if l2o_cfg.stop_score is None:  # labels of the detection-counting objective may leave chains idle
        l2o_cfg = dataclasses.replace(l2o_cfg, stop_score=0.0)
    dgnn_sha = file_sha256(ckpt / "model.pt")
    num_rf = cfg.num_rf

    threads = torch.get_num_threads()
    torch.set_num_threads(train_cfg.num_threads)
    try:
        t0 = time.perf_counter()
        if progress:
            print(f"train-l2o: I={cfg.num_targets} fidelity={fidelity} loss={loss} DGNN {ckpt} -> {out}", flush=True)
        if datasets is not None:
            train, val = datasets
        else:
            train = generate_l2o_dataset(cfg, ckpt, seed=seed, split=0, num_episodes=episodes, blocks=blocks,
                                         progress=progress)
            val = generate_l2o_dataset(cfg, ckpt, seed=seed, split=1, num_episodes=val_episodes, blocks=blocks)
        data_s = time.perf_counter() - t0
        reference = greedy_reference(val, num_rf)
        n = len(train["label"])
        if progress:
            print(f"  data: {n} train / {len(val['label'])} val blocks ({data_s:.1f} s); greedy on val: exact "
                  f"{reference['greedy_exact']:.3f} gap {reference['greedy_gap']:.4f}", flush=True)

        torch.manual_seed(seed)
        head = L2OHead(l2o_cfg)
        opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=train_cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda e: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * e / epochs)))
        out.mkdir(parents=True, exist_ok=True)
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb_l2o"))
        history: list[dict[str, Any]] = []
        best_state: dict[str, Tensor] | None = None
        best: dict[str, Any] = {}

        def finish_epoch(epoch: int, loss_value: float | None, lr_value: float, seconds: float) -> None:
            nonlocal best_state
            metrics = {"epoch": epoch, "loss": loss_value, **evaluate_l2o(head, val, num_rf), "lr": lr_value,
                       "seconds": seconds}
            history.append(metrics)
            for key in ("loss", "val_exact", "val_gap", "val_pair_acc", "val_bce"):
                if metrics[key] is not None:
                    writer.add_scalar(f"l2o/{key}", metrics[key], epoch)
            writer.flush()
            if not best or metrics["val_gap"] < best["val_gap"]:
                best.clear()
                best.update(metrics)
                best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
            if progress:
                loss_text = "   -  " if loss_value is None else f"{loss_value:.4f}"
                print(f"  epoch {epoch:3d}/{epochs} loss {loss_text} val pair_acc {metrics['val_pair_acc']:.3f} "
                      f"exact {metrics['val_exact']:.3f} gap {metrics['val_gap']:.4f} "
                      f"(max {metrics['val_gap_max']:.3f}) bce {metrics['val_bce']:.4f}  {seconds:.1f} s", flush=True)

        try:
            finish_epoch(0, None, lr, 0.0)
            for epoch in range(epochs):
                te = time.perf_counter()
                head.train()
                gen = torch.Generator().manual_seed(int(seed) * 100_003 + epoch)
                perm = torch.randperm(n, generator=gen).numpy()
                total = 0.0
                for s in range(0, n, batch_size):
                    idx = perm[s:s + batch_size]
                    scores = head(_inputs(train, idx, l2o_cfg.input_keys))
                    if loss == "bce":
                        value = bce_loss(scores, torch.from_numpy(train["label"][idx]))
                    else:
                        value = sequential_loss(scores, train["label"][idx], num_rf, l2o_cfg.stop_score)
                    opt.zero_grad(set_to_none=True)
                    value.backward()
                    if train_cfg.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(head.parameters(), train_cfg.grad_clip)
                    opt.step()
                    total += float(value.detach()) * len(idx)
                lr_value = opt.param_groups[0]["lr"]
                sched.step()
                finish_epoch(epoch + 1, total / n, lr_value, time.perf_counter() - te)
        finally:
            writer.close()

        if out != ckpt:
            for name in DGNN_FILES:
                if (ckpt / name).is_file():
                    _atomic_copy(ckpt / name, out / name)
        _atomic_save(best_state, out / "l2o.pt")
        config_doc = {"l2o": l2o_cfg.to_dict(), "train": train_cfg.to_dict(), "seed": int(seed),
                      "dgnn_sha256": dgnn_sha, "dgnn_checkpoint": str(ckpt), "num_targets": cfg.num_targets,
                      "fidelity": fidelity}
        _atomic_text(yaml.safe_dump(config_doc, sort_keys=False), out / "l2o_config.yaml")
        summary = {"best": best, "last": history[-1], "history": history, "reference": reference,
                   "num_train_blocks": n, "num_val_blocks": len(val["label"]), "data_seconds": data_s,
                   "total_seconds": time.perf_counter() - t0,
                   "note": "validation metrics after the feasibility repair against the MILP optimum A* of the "
                           "dgnn-milp objective; gap = cost(repair)/cost(A*) - 1 (mean over blocks); l2o.pt holds "
                           "the epoch with the lowest val_gap (epoch 0 = untrained); reference = greedy solver"}
        _atomic_text(json.dumps(summary, indent=2), out / "l2o_metrics.json")
        head.load_state_dict(best_state)
        head.eval()
        if progress:
            print(f"train-l2o done in {summary['total_seconds']:.0f} s: best epoch {best['epoch']}: val exact "
                  f"{best['val_exact']:.3f} pair_acc {best['val_pair_acc']:.3f} gap {best['val_gap']:.4f} "
                  f"(greedy exact {reference['greedy_exact']:.3f} gap {reference['greedy_gap']:.4f}); "
                  f"{out / 'l2o.pt'}", flush=True)
        return summary
    finally:
        torch.set_num_threads(threads)


__all__ = ["L2OTrainConfig", "LOSSES", "bce_loss", "evaluate_l2o", "file_sha256", "generate_l2o_dataset",
           "greedy_reference", "load_l2o", "scenario_for", "sequential_loss", "train_l2o", "training_world_seed"]
