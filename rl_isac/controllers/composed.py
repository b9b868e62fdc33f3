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
from rl_isac.physics.fisher import expected_position_information
from rl_isac.physics.measurements import Measurements
from rl_isac.scenario import ScenarioConfig


class BeamSelector(Protocol):
    def select(self, prediction_m: np.ndarray, estimator: Estimator) -> np.ndarray:
        """Beams ``(M, I, K, 2)`` for block q+1 from the predicted positions ``(I, 2)``."""


class GeometricBeams:
    """The two codebook beams that bracket the predicted angle, grouped into K symbols
    (:func:`rl_isac.physics.arrays.beams_toward`)."""

    def __init__(self, cfg: ScenarioConfig) -> None:
        self.cfg = cfg
        self.bs_positions_m = np.asarray(cfg.bs_positions_m, float)

    def select(self, prediction_m: np.ndarray, estimator: Estimator | None = None) -> np.ndarray:
        _, angle = geometry(self.bs_positions_m, prediction_m)
        return beams_toward(np.cos(angle), self.cfg.codebook_size, self.cfg.num_tracking_symbols)


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
            # the inverse of prior + sum of the associated BSs' Fisher information).
            info = expected_position_information(self.cfg, self.codebook, self.bs_positions_m, prediction_m, beams)
            prior_info = np.linalg.inv(self.estimator.predicted_position_covariance())
            assoc = self.associator.solve(info, prior_info, self.cfg.num_rf)
        assoc = check_association(assoc, self.cfg.num_rf, shape=(self.cfg.num_bs, self.cfg.num_targets))
        return CUAction(association=assoc, beams=beams, estimate_m=estimate_m, prediction_m=prediction_m)

    def reset(self, initial_positions_m: np.ndarray) -> CUAction:
        self.estimator.reset(initial_positions_m)
        acq = np.asarray(initial_positions_m, float)
        return self._decide(acq.copy(), acq.copy())

    def act(self, meas: Measurements) -> CUAction:
        estimate, prediction = self.estimator.update(meas)
        return self._decide(estimate, prediction)
