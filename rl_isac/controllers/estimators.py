"""Classical CU estimators behind the :class:`~rl_isac.controllers.base.Estimator` interface."""

from __future__ import annotations

import numpy as np

from rl_isac.controllers.base import Estimator
from rl_isac.physics.fisher import position_information
from rl_isac.physics.measurements import Measurements
from rl_isac.scenario import ScenarioConfig
from rl_isac.tracking.ekf import EKFEstimator, EKFSettings


class EKFCUEstimator(Estimator):
    """The EKF of :mod:`rl_isac.tracking.ekf` (Benchmark I's Kalman filter)."""

    def __init__(self, cfg: ScenarioConfig, settings: EKFSettings | None = None) -> None:
        self.ekf = EKFEstimator(cfg, settings)

    def reset(self, initial_positions_m: np.ndarray) -> None:
        self.ekf.reset(initial_positions_m)

    def update(self, meas: Measurements) -> tuple[np.ndarray, np.ndarray]:
        return self.ekf.update(meas)

    def predicted_position_covariance(self) -> np.ndarray:
        return self.ekf.predicted_covariance()[:, :2, :2]

    @property
    def searching(self) -> np.ndarray:
        """``(I,)`` bool: targets the EKF is searching for (see :attr:`EKFEstimator.searching`)."""
        return self.ekf.searching


class LeastSquaresEstimator(Estimator):
    """Memoryless fusion: the information-weighted mean of the positions implied by each
    detected measurement of the block; a target with no detection keeps its last estimate.

    The prediction is the estimate itself (no motion model), its covariance the
    fused covariance plus one block of motion ``(v dT)^2`` per axis.
    """

    def __init__(self, cfg: ScenarioConfig) -> None:
        self.cfg = cfg
        self.bs_positions_m = np.asarray(cfg.bs_positions_m, float)
        self.estimate = np.zeros((cfg.num_targets, 2))
        self.cov = np.zeros((cfg.num_targets, 2, 2))

    def reset(self, initial_positions_m: np.ndarray) -> None:
        self.estimate = np.array(initial_positions_m, float)
        self.cov = np.tile(np.eye(2) * self.cfg.acquisition_std_m**2, (self.cfg.num_targets, 1, 1))

    def update(self, meas: Measurements) -> tuple[np.ndarray, np.ndarray]:
        meas.validate()
        pos = meas.positions_m(self.bs_positions_m)  # (M, I, 2)
        var_r = np.where(meas.detected, meas.cov[..., 0, 0], np.inf)
        var_a = np.where(meas.detected, meas.cov[..., 1, 1], np.inf)
        safe_range = np.where(meas.detected, meas.range_m, 1.0)
        info = position_information(safe_range, meas.angle_rad, var_r, var_a)  # (M, I, 2, 2)
        total = info.sum(axis=0)  # (I, 2, 2)
        weighted = np.einsum("mixy,miy->ix", info, pos)
        seen = meas.detected.any(axis=0)
        drift = np.eye(2) * self.cfg.step_m**2
        for i in range(self.cfg.num_targets):
            if seen[i]:
                self.cov[i] = np.linalg.inv(total[i])
                self.estimate[i] = self.cov[i] @ weighted[i]
            else:
                self.cov[i] = self.cov[i] + drift
        return self.estimate.copy(), self.estimate.copy()

    def predicted_position_covariance(self) -> np.ndarray:
        return self.cov + np.eye(2) * self.cfg.step_m**2
