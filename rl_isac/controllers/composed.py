"""A CU as a composition: estimator + associator + beam selector (Stone Soup style).

Every benchmark is a different composition of the same three roles, never a
different code path:

* estimator: :class:`~rl_isac.controllers.base.Estimator` (EKF, least squares, DGNN);
* associator: an :class:`~rl_isac.association.AssociationSolver` over the myopic
  Fisher-information objective (greedy, convex, exhaustive, MILP) or the
  nearest-BS rule;
* beam selector: beams toward the predicted position (geometric) or a learned head.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from rl_isac.association import AssociationSolver, check_association
from rl_isac.controllers.base import Controller, CUAction, Estimator
from rl_isac.network import nearest_association
from rl_isac.physics.arrays import beams_toward, dft_codebook
from rl_isac.physics.channel import geometry
from rl_isac.physics.detection import credited_detection_probability
from rl_isac.physics.fisher import expected_position_information
from rl_isac.physics.measurements import Measurements
from rl_isac.scenario import ScenarioConfig


class BeamSelector(Protocol):
    def select(self, prediction_m: np.ndarray, estimator: Estimator) -> np.ndarray:
        """Beams ``(M, I, K, 2)`` for block q+1 from the predicted positions ``(I, 2)``."""


class GeometricBeams:
    """The two codebook beams that bracket the predicted angle, grouped into K symbols
    (:func:`rl_isac.physics.arrays.beams_toward`), widened into a sweep for uncertain targets.

    Re-acquisition: where the predicted angle is uncertain (``2 sigma_u`` above one beam spacing
    ``2 / B`` in ``u = cos(theta)``, ``sigma_u = |sin theta| sqrt(n^T Sigma n) / d`` from the estimator's
    predicted position covariance ``Sigma``, ``n`` the unit normal of the line of sight) or the
    estimator reports the target as searching (``estimator.searching``, e.g.
    :attr:`rl_isac.tracking.ekf.EKFEstimator.searching`), the pair sweeps ``K`` adjacent beams
    around the prediction instead (:func:`sweep_beams`): ``K`` beam widths instead of two, so a
    target that drifted off its beams is seen again.
    """

    def __init__(self, cfg: ScenarioConfig, widen: bool = True) -> None:
        self.cfg = cfg
        self.widen = widen
        self.bs_positions_m = np.asarray(cfg.bs_positions_m, float)

    def select(self, prediction_m: np.ndarray, estimator: Estimator | None = None) -> np.ndarray:
        range_m, angle = geometry(self.bs_positions_m, prediction_m)  # (M, I)
        u = np.cos(angle)
        beams = beams_toward(u, self.cfg.codebook_size, self.cfg.num_tracking_symbols)
        if not self.widen or estimator is None:
            return beams
        return self.sweep_wide(beams, prediction_m, estimator, (range_m, angle))

    def sweep_wide(self, beams: np.ndarray, prediction_m: np.ndarray, estimator: Estimator,
                   range_angle: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """``beams`` ``(M, I, K, 2)`` with every pair of :meth:`wide_pairs` replaced by :func:`sweep_beams`
        around its predicted angle (a new array where a pair changed; ``beams`` itself is not written).

        The one re-acquisition rule of every CU that aims beams (geometric, DGNN head, PPO head, clustered).
        ``range_angle``: :func:`~rl_isac.physics.channel.geometry` of ``prediction_m`` if already computed.
        """
        range_m, angle = range_angle if range_angle is not None else geometry(self.bs_positions_m, prediction_m)
        wide = self.wide_pairs(range_m, angle, estimator)
        if not wide.any():
            return beams
        beams = np.array(beams, copy=True)
        beams[wide] = sweep_beams(np.cos(angle[wide]), self.cfg.codebook_size, self.cfg.num_tracking_symbols)
        return beams

    def wide_pairs(self, range_m: np.ndarray, angle: np.ndarray, estimator: Estimator) -> np.ndarray:
        """``(M, I)`` bool: the pairs that sweep (uncertain angle or a searching target)."""
        cov = np.asarray(estimator.predicted_position_covariance(), float)  # (I, 2, 2)
        normal = np.stack([-np.sin(angle), np.cos(angle)], axis=-1)  # (M, I, 2)
        var_cross = np.einsum("mia,iab,mib->mi", normal, cov, normal)
        sigma_u = np.abs(np.sin(angle)) * np.sqrt(np.maximum(var_cross, 0.0)) / np.maximum(range_m, 1e-6)
        wide = 2.0 * sigma_u > 2.0 / self.cfg.codebook_size
        searching = getattr(estimator, "searching", None)
        if searching is not None:
            wide |= np.asarray(searching, bool)[None, :]
        return wide


def sweep_beams(u: np.ndarray, codebook_size: int, num_symbols: int) -> np.ndarray:
    """``K`` adjacent codebook beams centred on ``u``, one per symbol, tx = rx: ``(..., K, 2)`` int.

    The beams ``c - (K - 1) // 2 .. c + K // 2`` around the beam ``c`` below ``u``, shifted inside the codebook
    at its ends; with ``K = 4`` they span four beam widths (the bracketing pair spans two).
    """
    u = np.asarray(u, float)
    pos = (u + 1.0) * codebook_size / 2.0 - 0.5  # fractional beam index
    first = np.floor(pos).astype(np.int64) - (num_symbols - 1) // 2
    first = np.clip(first, 0, max(codebook_size - num_symbols, 0))
    idx = np.clip(first[..., None] + np.arange(num_symbols), 0, codebook_size - 1)  # (..., K)
    return np.stack([idx, idx], axis=-1)


class NearestAssociation:
    """Each target to its nearest BS with a free RF chain (closest targets first), then
    every remaining chain to the nearest target not yet on that BS."""

    def __init__(self, cfg: ScenarioConfig) -> None:
        self.cfg = cfg
        self.bs_positions_m = np.asarray(cfg.bs_positions_m, float)

    def associate(self, prediction_m: np.ndarray) -> np.ndarray:
        """``(M, I)`` bool from the predicted positions ``(I, 2)`` metres."""
        return nearest_association(self.cfg, self.bs_positions_m, prediction_m)


class ComposedCU(Controller):
    """Estimator + associator + beam selector.

    Args:
        cfg: the scenario the CU serves (its BS positions, codebook and link budget are known to it).
        estimator: state estimator.
        associator: an association solver (``solve(info, prior_info, num_rf)``) or
            :class:`NearestAssociation`.
        beams: beam selector (default :class:`GeometricBeams`).
        name: method name reported by the harness.
    """

    def __init__(self, cfg: ScenarioConfig, estimator: Estimator,
                 associator: AssociationSolver | NearestAssociation, beams: BeamSelector | None = None,
                 name: str = "composed") -> None:
        self.cfg = cfg
        self.estimator = estimator
        self.associator = associator
        self.beam_selector = beams or GeometricBeams(cfg)
        self.name = name
        self.bs_positions_m = np.asarray(cfg.bs_positions_m, float)
        self.codebook = dft_codebook(cfg.num_tx_antennas, cfg.codebook_size, cfg.antenna_spacing_wavelengths)

    def _decide(self, estimate_m: np.ndarray, prediction_m: np.ndarray) -> CUAction:
        beams = self.beam_selector.select(prediction_m, self.estimator)
        if isinstance(self.associator, NearestAssociation):
            assoc = self.associator.associate(prediction_m)
        else:
            # Myopic objective: predicted posterior position error after block q+1 (trace of
            # the inverse of prior + sum of the associated BSs' Fisher information), in expectation
            # over which pairs are detected and credited to their target with these beams (issue 7).
            info = expected_position_information(self.cfg, self.codebook, self.bs_positions_m, prediction_m, beams)
            cov = self.estimator.predicted_position_covariance()
            prior_info = np.linalg.inv(cov)
            detection = credited_detection_probability(self.cfg, prediction_m, beams, cov)
            assoc = self.associator.solve(info, prior_info, self.cfg.num_rf, detection_prob=detection)
        assoc = check_association(assoc, self.cfg.num_rf, shape=(self.cfg.num_bs, self.cfg.num_targets))
        return CUAction(association=assoc, beams=beams, estimate_m=estimate_m, prediction_m=prediction_m)

    def reset(self, initial_positions_m: np.ndarray) -> CUAction:
        self.estimator.reset(initial_positions_m)
        acq = np.asarray(initial_positions_m, float)
        return self._decide(acq.copy(), acq.copy())

    def act(self, meas: Measurements) -> CUAction:
        estimate, prediction = self.estimator.update(meas)
        return self._decide(estimate, prediction)
