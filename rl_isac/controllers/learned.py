"""DGNN-based CUs: the paper's Benchmark III and our exact variant (and, when an L2O
head is present, Benchmark II). Importing this module registers them.

=================  ==============================================================
``dgnn-exhaustive`` DGNN estimate + exhaustive search (Benchmark III), beams from the head
``dgnn-milp``       DGNN estimate + exact MILP (reaches sizes exhaustive cannot), head beams
``dgnn-greedy``     DGNN estimate + greedy, head beams
``dgnn-l2o``        DGNN + learn-to-optimise association head (Benchmark II), see
                    :mod:`rl_isac.tracking.dgnn.l2o`
=================  ==============================================================

All need ``checkpoint=DIR`` (a phase-1 checkpoint, :mod:`rl_isac.training.pretrain`).

The association objective needs the uncertainty of the prediction ``u_tilde_{q+1}``.
The DGNN gives no covariance; with the EKF anchor (the default) we use the anchor's
predicted covariance (the DGNN corrects the EKF; its validation error is at most the
anchor's), otherwise an isotropic covariance with the checkpoint's validation RMSE of
``u_tilde``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from rl_isac.association import DEFAULT_CHAIN_PRICE, make_solver
from rl_isac.controllers.base import Controller, Estimator
from rl_isac.controllers.composed import ComposedCU, GeometricBeams
from rl_isac.controllers.registry import register
from rl_isac.errors import ConfigError
from rl_isac.physics.measurements import Measurements
from rl_isac.scenario import ScenarioConfig
from rl_isac.tracking.window import MeasurementWindow


def load_dgnn(checkpoint: str | Path | None, cfg: ScenarioConfig):
    """Load a phase-1 checkpoint and check it fits the scenario; returns ``(model, configs, metrics)``."""
    from rl_isac.tracking.dgnn.checkpoint import load_dgnn_checkpoint

    if checkpoint is None:
        raise ConfigError("checkpoint", None, "DGNN-based methods need --checkpoint DIR (a phase-1 checkpoint)")
    path = Path(checkpoint)
    if not (path / "model.pt").is_file():
        raise ConfigError("checkpoint", str(path), "no model.pt in this directory")
    model, configs = load_dgnn_checkpoint(path)
    dgnn_cfg = configs["dgnn"]
    if dgnn_cfg.codebook_size != cfg.codebook_size:
        raise ConfigError("checkpoint", str(path), f"trained for codebook_size={dgnn_cfg.codebook_size}, "
                                                   f"the scenario has {cfg.codebook_size}")
    if dgnn_cfg.target_mode == "concat" and dgnn_cfg.num_targets != cfg.num_targets:
        raise ConfigError("checkpoint", str(path), f"a concat-mode DGNN for I={dgnn_cfg.num_targets} cannot serve "
                                                   f"I={cfg.num_targets}")
    trained = configs["scenario"]
    if tuple(map(tuple, trained.bs_positions_m)) != cfg.bs_positions_m or trained.window != cfg.window:
        raise ConfigError("checkpoint", str(path), "trained on other BS positions or window W than the scenario")
    metrics_path = path / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    return model, configs, metrics


class DGNNEstimator(Estimator):
    """The DGNN of a phase-1 checkpoint behind the estimator interface.

    Its ``u_tilde`` (where the BSs look next) is the DGNN's, except for the targets the window's EKF anchor is
    searching for on a ring (:attr:`~rl_isac.tracking.ekf.EKFEstimator.ring_search`): those take the anchor's
    look, as an EKF CU does (the DGNN was not trained to search).

    Args:
        cfg: scenario.
        model: a loaded :class:`~rl_isac.tracking.dgnn.DGNN`.
        fallback_rmse_m: isotropic std of the prediction when the window has no EKF anchor, metres.
    """

    def __init__(self, cfg: ScenarioConfig, model, fallback_rmse_m: float = 1.0) -> None:
        # One block is a batch of one small graph: intra-op threads only contend (on a shared 2-core
        # machine a second thread made a forward 100x slower), so a CU runs torch on one thread.
        torch.set_num_threads(1)
        self.cfg = cfg
        self.model = model
        self.window = MeasurementWindow(cfg, anchor=model.cfg.window_anchor)
        self.fallback_var_m2 = float(fallback_rmse_m) ** 2
        self.last: dict[str, np.ndarray] | None = None

    def reset(self, initial_positions_m: np.ndarray) -> None:
        self.window.reset(initial_positions_m)
        self.last = None

    @torch.no_grad()
    def update(self, meas: Measurements) -> tuple[np.ndarray, np.ndarray]:
        self.window.push(meas)
        self.last = self.model.predict(self.window.as_arrays(), num_symbols=self.cfg.num_tracking_symbols)
        u_tilde = self.last["u_tilde"].astype(float)
        ring = self.window.ring_search
        if ring is not None and ring.any():  # the EKF anchor's search looks there (EKFSettings.search_reseed)
            u_tilde[ring] = self.window.search_looks_m()[ring]
        return self.last["u_hat"].astype(float), u_tilde

    def predicted_position_covariance(self) -> np.ndarray:
        cov = self.window.anchor_predicted_covariance()
        if cov is None:
            cov = np.tile(np.eye(2) * self.fallback_var_m2, (self.cfg.num_targets, 1, 1))
        return cov

    @property
    def searching(self) -> np.ndarray | None:
        """``(I,)`` bool: targets the window's EKF anchor is searching for (``None`` without an EKF anchor)."""
        return self.window.searching


class HeadBeams:
    """Beams from the DGNN's beam head (eq. (12)); geometric beams before the first block.

    Re-acquisition as in :class:`~rl_isac.controllers.composed.GeometricBeams`: the pairs whose predicted
    angle is uncertain or whose target the anchor is searching for (:meth:`GeometricBeams.wide_pairs`, from
    the estimator's predicted covariance and ``searching``) sweep ``K`` adjacent beams around the prediction
    instead of the head's beams (``widen=False``: the head's beams everywhere). Without it a DGNN CU never
    finds a lost target again (its head aims at where it believes the target is).
    """

    def __init__(self, cfg: ScenarioConfig, widen: bool = True) -> None:
        self.cfg = cfg
        self.widen = widen
        self.geometric = GeometricBeams(cfg)

    def select(self, prediction_m: np.ndarray, estimator: Estimator) -> np.ndarray:
        last = getattr(estimator, "last", None)
        if last is None or "beams" not in last:
            return self.geometric.select(prediction_m, estimator if self.widen else None)
        beams = np.array(last["beams"], dtype=np.int64)
        return self.geometric.sweep_wide(beams, prediction_m, estimator) if self.widen else beams


def _dgnn_factory(solver: str):
    def factory(cfg: ScenarioConfig, checkpoint: str | None = None, **kwargs) -> Controller:
        model, _, metrics = load_dgnn(checkpoint, cfg)
        fallback = metrics.get("best", {}).get("val_rmse_next_m", 1.0)
        estimator = DGNNEstimator(cfg, model, fallback_rmse_m=fallback)
        solver_args = {"chain_price": DEFAULT_CHAIN_PRICE, **kwargs}  # as the ekf-* methods (registry)
        return ComposedCU(cfg, estimator, make_solver(solver, **solver_args), beams=HeadBeams(cfg),
                          name=f"dgnn-{solver}")

    return factory


for _solver in ("exhaustive", "milp", "greedy"):
    register(f"dgnn-{_solver}", _dgnn_factory(_solver))


def _dgnn_l2o(cfg: ScenarioConfig, checkpoint: str | None = None, **kwargs) -> Controller:
    """Benchmark II: DGNN estimate + the L2O association head of the same checkpoint + head beams.

    The associator (:class:`~rl_isac.tracking.dgnn.l2o.L2OAssociator`) solves no optimisation: it
    decodes the head's scores on the estimator's last DGNN output with the feasibility repair (the
    objective's parameters enter only as input features, with the ``objective_features`` ablation);
    before the first block (no DGNN output yet) it falls back to the greedy solver. Needs ``l2o.pt``
    in the checkpoint (``rl-isac train-l2o --checkpoint DIR``).
    """
    from rl_isac.tracking.dgnn.checkpoint import load_l2o_head
    from rl_isac.tracking.dgnn.l2o import L2OAssociator

    model, _, metrics = load_dgnn(checkpoint, cfg)
    head, _ = load_l2o_head(checkpoint)
    if head.cfg.embedding_dim != model.cfg.hidden_dim:
        raise ConfigError("checkpoint", str(checkpoint), f"l2o.pt expects embeddings of size "
                                                         f"{head.cfg.embedding_dim}, the DGNN gives "
                                                         f"{model.cfg.hidden_dim}")
    fallback = metrics.get("best", {}).get("val_rmse_next_m", 1.0)
    estimator = DGNNEstimator(cfg, model, fallback_rmse_m=fallback)
    return ComposedCU(cfg, estimator, L2OAssociator(head, estimator), beams=HeadBeams(cfg), name="dgnn-l2o")


register("dgnn-l2o", _dgnn_l2o)
