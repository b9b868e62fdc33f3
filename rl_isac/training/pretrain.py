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

Loss (Sec. 3.3): ``MSE(u_hat) + MSE(u_tilde)`` on positions in units of
``position_loss_scale_m`` plus ``beam_loss_weight * (CE_tx + CE_rx) / 2`` over every
(BS, target) pair.

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
    association_policies: tuple[str, ...] = ("random", "nearest", "greedy")
    """Association policies mixed per block: ``"random"``, ``"nearest"`` or a solver name."""
    association_weights: tuple[float, ...] = (0.4, 0.3, 0.3)
    """Probabilities of the policies above (normalised)."""
    beam_aim_std_m: float = 2.0
    """Largest std of the beam aim point around the true next position, metres."""
    num_threads: int = 1
    """``torch.set_num_threads`` during training."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "association_policies", tuple(self.association_policies))
        object.__setattr__(self, "association_weights", tuple(float(w) for w in self.association_weights))
        for name in ("train_episodes", "val_episodes", "blocks_per_episode", "epochs", "batch_size", "num_threads"):
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


# ---------------------------------------------------------------------------------------------- loss/metrics
def pretrain_loss(out: dict[str, Tensor], batch: dict[str, Tensor], train_cfg: PretrainConfig
                  ) -> tuple[Tensor, dict[str, float]]:
    """Sec. 3.3 loss: position MSE (now + next) + weighted beam cross-entropy (tx + rx) / 2.

    Shapes:
        out: :meth:`DGNN.forward` outputs; batch: ``u_now``, ``u_next`` ``(B, I, 2)`` metres,
        ``beam_next`` ``(B, M, I)`` int64.
    Returns:
        scalar loss and its parts as floats.
    """
    s = train_cfg.position_loss_scale_m
    mse_now = (((out["u_hat"] - batch["u_now"]) / s) ** 2).sum(-1).mean()
    mse_next = (((out["u_tilde"] - batch["u_next"]) / s) ** 2).sum(-1).mean()
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
        train = generate_dataset(cfg, train_cfg, seed=seed, split=0, num_episodes=train_cfg.train_episodes,
                                 anchor=anchor, progress=progress)
        val = generate_dataset(cfg, train_cfg, seed=seed, split=1, num_episodes=train_cfg.val_episodes,
                               anchor=anchor)
        if progress:
            print(f"  data: {len(train['u_now'])} train / {len(val['u_now'])} val samples "
                  f"({time.perf_counter() - t0:.1f} s)", flush=True)

        model = DGNN(dgnn_cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
        epochs = train_cfg.epochs

        def lr_factor(epoch: int) -> float:
            if not train_cfg.cosine:
                return 1.0
            return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * epoch / epochs))

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

        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"), purge_step=start)
        n = len(train["u_now"])

        def finish_epoch(epoch: int, loss: float | None, lr: float, seconds: float) -> dict[str, float]:
            metrics = {"epoch": epoch, "loss": loss, **evaluate(model, val, train_cfg=train_cfg), "lr": lr,
                       "seconds": seconds}
            history.append(metrics)
            for key, tag in (("loss", "pretrain/loss"), ("val_loss", "pretrain/val_loss"),
                             ("val_rmse_m", "pretrain/val_rmse_m"),
                             ("val_rmse_next_m", "pretrain/val_rmse_next_m"),
                             ("anchor_rmse_m", "pretrain/anchor_rmse_m"),
                             ("anchor_next_rmse_m", "pretrain/anchor_next_rmse_m"),
                             ("beam_top1", "pretrain/beam_top1"), ("lr", "pretrain/lr")):
                if metrics[key] is not None:
                    writer.add_scalar(tag, metrics[key], epoch)
            writer.flush()
            if not best or metrics["val_loss"] < best["val_loss"]:
                best.update(epoch=epoch, val_loss=metrics["val_loss"])
                _atomic_save(model.state_dict(), out / "model.pt")
            _atomic_save(model.state_dict(), out / "last_model.pt")
            best_metrics = next(h for h in history if h["epoch"] == best["epoch"])
            summary = {"best": best_metrics, "last": metrics, "history": history, "num_train_samples": n,
                       "num_val_samples": len(val["u_now"]), "window_anchor": anchor,
                       "wall_time_s": time.perf_counter() - t0,
                       "note": "RMSE per target in metres, averaged over targets and validation samples; "
                               "model.pt holds the epoch with the lowest validation loss (the training loss on "
                               "the validation set; epoch 0 = untrained: with residual heads, the anchors)"}
            save_checkpoint(None, out, cfg, dgnn_cfg, train_cfg, seed, summary)
            _atomic_save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch,
                          "history": history, "best": best, "torch_rng": torch.get_rng_state()}, state_path)
            if progress:
                loss_text = "   -  " if loss is None else f"{loss:.4f}"
                print(f"  epoch {epoch:3d}/{epochs} loss {loss_text} val {metrics['val_loss']:.4f} "
                      f"val_rmse_m {metrics['val_rmse_m']:.3f} (anchor {metrics['anchor_rmse_m']:.3f}) "
                      f"next {metrics['val_rmse_next_m']:.3f} (anchor {metrics['anchor_next_rmse_m']:.3f}) "
                      f"beam top1 {metrics['beam_top1']:.2f} top2 {metrics['beam_top2']:.2f}  "
                      f"{seconds:.1f} s", flush=True)
            return metrics

        try:
            if not resuming:
                finish_epoch(0, None, opt.param_groups[0]["lr"], 0.0)
            last_epoch = epochs if stop_after_epoch is None else min(epochs, int(stop_after_epoch))
            for epoch in range(start, last_epoch):
                te = time.perf_counter()
                model.train()
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
            b = next(h for h in history if h["epoch"] == best["epoch"])
            print(f"pretrain done in {time.perf_counter() - t0:.0f} s: best epoch {b['epoch']}: val RMSE "
                  f"{b['val_rmse_m']:.3f} m (u_hat_q) / {b['val_rmse_next_m']:.3f} m (u_tilde_q+1) per target; "
                  f"{anchor} anchor {b['anchor_rmse_m']:.3f} / {b['anchor_next_rmse_m']:.3f} m; "
                  f"beam top1 {b['beam_top1']:.2f}; checkpoint {out}", flush=True)
        return PretrainResult(model=model, history=history, out_dir=out)
    finally:
        torch.set_num_threads(threads)


__all__ = ["PretrainConfig", "PretrainResult", "evaluate", "generate_dataset", "load_checkpoint", "load_configs",
           "pretrain", "pretrain_loss", "random_association", "save_checkpoint"]
