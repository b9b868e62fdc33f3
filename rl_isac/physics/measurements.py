"""The measurement arrays one block of the world delivers to the CU.

Both fidelities (``signal`` and ``surrogate``) return this one type. Arrays are
fixed-shape and indexed ``[bs, target]`` like the paper's association matrix;
entries that carry no measurement (pair not assigned, or assigned but not
detected) hold zeros and are flagged by the masks, never NaN, so the arrays can
be fed to a network or an RLlib observation space as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rl_isac.errors import MeasurementError


@dataclass(frozen=True)
class Measurements:
    """BS-local range/angle estimates of one block.

    Shapes (``M`` BSs, ``I`` targets):
        assigned: ``(M, I)`` bool, the association ``A_q`` used in this block.
        detected: ``(M, I)`` bool, subset of ``assigned``: the pair's detector fired.
        range_m: ``(M, I)`` float64, estimated range ``d_hat``, metres (0 where not detected).
        angle_rad: ``(M, I)`` float64, estimated angle ``theta_hat = atan2(dy, dx)``, radians
            (0 where not detected).
        snr_db: ``(M, I)`` float64, estimated integrated SNR of the pair's echo (K symbols x L
            subcarriers), dB; the detector statistic for assigned pairs, 0 elsewhere.
        cov: ``(M, I, 2, 2)`` float64, covariance of ``(range_m, angle_rad)`` (CRB at the
            estimated SNR and angle); zeros where not detected.
        block: index ``q`` of the block the measurements belong to.
    """

    assigned: np.ndarray
    detected: np.ndarray
    range_m: np.ndarray
    angle_rad: np.ndarray
    snr_db: np.ndarray
    cov: np.ndarray
    block: int = 0

    @property
    def num_bs(self) -> int:
        return self.assigned.shape[0]

    @property
    def num_targets(self) -> int:
        return self.assigned.shape[1]

    def validate(self) -> Measurements:
        """Check shapes, masks and finiteness; return self or raise :class:`MeasurementError`."""
        shape = self.assigned.shape
        if len(shape) != 2:
            raise MeasurementError(f"assigned must be (M, I), got shape {shape}")
        for name in ("detected", "range_m", "angle_rad", "snr_db"):
            if getattr(self, name).shape != shape:
                raise MeasurementError(f"{name} has shape {getattr(self, name).shape}, expected {shape}")
        if self.cov.shape != (*shape, 2, 2):
            raise MeasurementError(f"cov has shape {self.cov.shape}, expected {(*shape, 2, 2)}")
        if np.any(self.detected & ~self.assigned):
            bs, tgt = np.argwhere(self.detected & ~self.assigned)[0]
            raise MeasurementError(f"pair (bs={bs}, target={tgt}) is detected but not assigned")
        for name in ("range_m", "angle_rad", "snr_db", "cov"):
            arr = getattr(self, name)
            if not np.all(np.isfinite(arr)):
                idx = tuple(int(v) for v in np.argwhere(~np.isfinite(arr))[0])
                raise MeasurementError(f"{name}{list(idx)} = {arr[idx]}: measurements must be finite "
                                       "(a miss is detected=False, not NaN)")
        det = self.detected
        if np.any(self.range_m[det] <= 0):
            raise MeasurementError("a detected range is <= 0 m")
        var = self.cov[det]
        if var.size and (np.any(var[:, 0, 0] <= 0) or np.any(var[:, 1, 1] <= 0)):
            raise MeasurementError("a detected pair has a non-positive variance in cov")
        return self

    @classmethod
    def empty(cls, num_bs: int, num_targets: int, block: int = 0) -> Measurements:
        """No pair assigned, nothing detected."""
        z = np.zeros((num_bs, num_targets))
        return cls(np.zeros_like(z, bool), np.zeros_like(z, bool), z.copy(), z.copy(), z.copy(),
                   np.zeros((num_bs, num_targets, 2, 2)), block)

    def positions_m(self, bs_positions_m: np.ndarray) -> np.ndarray:
        """Cartesian position implied by each measurement ``p_m + d [cos t, sin t]``.

        Args:
            bs_positions_m: ``(M, 2)`` BS positions, metres.
        Returns:
            ``(M, I, 2)`` metres; zeros where not detected.
        """
        pos = bs_positions_m[:, None, :] + self.range_m[..., None] * np.stack(
            [np.cos(self.angle_rad), np.sin(self.angle_rad)], axis=-1)
        return np.where(self.detected[..., None], pos, 0.0)
