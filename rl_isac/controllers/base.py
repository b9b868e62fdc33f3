"""The CU interface: every method turns the measurements of block q into one action.

An action (ARCHITECTURE.md) holds the current estimate ``u_hat_q``, the
association ``A_{q+1}`` (equivalently J = M * N_RF BS-target pairs) and the
tx/rx beams of block ``q+1``; we also carry the CU's prediction
``u_tilde_{q+1}``, which the BS front ends use to gate their range search.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from rl_isac.physics.measurements import Measurements


@dataclass(frozen=True)
class CUAction:
    """What a CU decides after block ``q``.

    Shapes (``M`` BSs, ``I`` targets, ``K`` tracking symbols):
        association: ``(M, I)`` bool ``A_{q+1}``.
        beams: ``(M, I, K, 2)`` int (tx, rx) codebook indices per pair and symbol for block ``q+1``.
        estimate_m: ``(I, 2)`` ``u_hat_q``, metres (scored by eq. (5a)).
        prediction_m: ``(I, 2)`` ``u_tilde_{q+1}``, metres.
    """

    association: np.ndarray
    beams: np.ndarray
    estimate_m: np.ndarray
    prediction_m: np.ndarray


class Estimator(ABC):
    """The CU's state estimator ``F`` of eq. (3)."""

    @abstractmethod
    def reset(self, initial_positions_m: np.ndarray) -> None:
        """Start from the initial acquisition ``(I, 2)`` metres."""

    @abstractmethod
    def update(self, meas: Measurements) -> tuple[np.ndarray, np.ndarray]:
        """Fuse block q: return ``u_hat_q (I, 2)`` and ``u_tilde_{q+1} (I, 2)``, metres."""

    @abstractmethod
    def predicted_position_covariance(self) -> np.ndarray:
        """Covariance of ``u_tilde_{q+1}``, ``(I, 2, 2)`` m^2 (feeds the association objective)."""


class Controller(ABC):
    """A CU: ``reset`` gives the action for block 1, ``act`` the action after each block."""

    name: str = "controller"

    @abstractmethod
    def reset(self, initial_positions_m: np.ndarray) -> CUAction:
        """Start an episode from the initial acquisition ``(I, 2)`` metres."""

    @abstractmethod
    def act(self, meas: Measurements) -> CUAction:
        """Decide after the measurements of block q."""
