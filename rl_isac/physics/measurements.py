"""The measurement arrays one block of the world delivers to the CU.

Both fidelities (``signal`` and ``surrogate``) return this one type. Arrays are
fixed-shape and indexed ``[bs, target]`` like the paper's association matrix;
entries that carry no measurement (pair not assigned, or assigned but not
detected) hold zeros and are flagged by the masks, never NaN, so the arrays can
be fed to a network or an RLlib observation space as they are.

Several peaks per gate (interface 2 of the shared design): the BS front end reports the
``P`` strongest resolved range peaks of each assigned pair's gate (``ScenarioConfig.num_peaks``),
each with its own angle, SNR and covariance, on a fixed extra axis. The ``(M, I)`` fields are
peak 0, the strongest (which may be another target's echo: a measurement belongs to whichever
track the CU's data association, :mod:`rl_isac.tracking.data_association`, gives it to, not
to the pair's label). Peaks are sorted by SNR, descending; invalid peaks hold zeros.
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
        peak_valid: ``(M, I, P)`` bool, peak ``p`` of the pair's gate was detected; ``peak_valid[..., 0]
            == detected``, and a valid peak ``p > 0`` implies peak ``p - 1`` is valid.
        peak_range_m, peak_angle_rad, peak_snr_db: ``(M, I, P)`` float64, as the ``(M, I)`` fields.
        peak_cov: ``(M, I, P, 2, 2)`` float64, as ``cov``.

    The peak arrays are optional when constructing: left out (None), they are built from the
    ``(M, I)`` fields with ``P = 1``.
    """

    assigned: np.ndarray
    detected: np.ndarray
    range_m: np.ndarray
    angle_rad: np.ndarray
    snr_db: np.ndarray
    cov: np.ndarray
    block: int = 0
    peak_valid: np.ndarray | None = None
    peak_range_m: np.ndarray | None = None
    peak_angle_rad: np.ndarray | None = None
    peak_snr_db: np.ndarray | None = None
    peak_cov: np.ndarray | None = None

    def __post_init__(self) -> None:
        given = [getattr(self, n) is not None for n in PEAK_FIELDS]
        if any(given) and not all(given):
            missing = [n for n, g in zip(PEAK_FIELDS, given) if not g]
            raise MeasurementError(f"peak arrays must be given all together or not at all; missing {missing}")
        if not any(given):
            # Views of the (M, I) fields (P = 1), so code that edits those in place stays consistent.
            object.__setattr__(self, "peak_valid", np.asarray(self.detected, bool)[..., None])
            for name, src in (("peak_range_m", "range_m"), ("peak_angle_rad", "angle_rad"),
                              ("peak_snr_db", "snr_db")):
                object.__setattr__(self, name, np.asarray(getattr(self, src), float)[..., None])
            object.__setattr__(self, "peak_cov", np.asarray(self.cov, float)[..., None, :, :])

    @property
    def num_peaks(self) -> int:
        """``P``: peaks reported per pair."""
        return self.peak_valid.shape[-1]

    @property
    def num_bs(self) -> int:
        return self.assigned.shape[0]

    @property
    def num_targets(self) -> int:
        return self.assigned.shape[1]

    def validate(self) -> Measurements:
        """Check shapes, masks and finiteness; return self or raise :class:`MeasurementError`.

        Always checks every array (also on an object checked before). On success it marks the object
        as validated for :meth:`validate_once`.
        """
        self._check_arrays()
        object.__setattr__(self, "_validated", True)
        return self

    def validate_once(self) -> Measurements:
        """:meth:`validate`, skipped for an object that already passed it (fast path of the CU's estimators,
        which receive the same object from several callers in one block: e.g. an EKF-based CU validates and
        then its EKF would validate again).

        The mark lives on this object only: a new object (from the world, ``dataclasses.replace``, a foreign
        caller) is checked in full on its first call. The arrays are treated as read-only once validated:
        editing them in place afterwards is not re-checked here (call :meth:`validate` for that).
        """
        if self.__dict__.get("_validated", False):
            return self
        return self.validate()

    @property
    def is_validated(self) -> bool:
        """Whether this object passed :meth:`validate` (or was built by the world, :meth:`trusted`)."""
        return bool(self.__dict__.get("_validated", False))

    @classmethod
    def trusted(cls, **fields) -> Measurements:
        """Construct the world's own output (:mod:`rl_isac.network`), marked as validated: :meth:`validate_once`
        then skips the checks (speed: they cost ~0.07 ms a block, and the world builds its arrays valid by
        construction; ``tests/tracking/test_batched_ekf.py`` validates world output in full at both
        fidelities). Only the world calls this; any other object (a foreign caller's, ``dataclasses.replace``)
        is checked in full on its first :meth:`validate_once`, and :meth:`validate` always checks in full."""
        meas = cls(**fields)
        object.__setattr__(meas, "_validated", True)
        return meas

    def _check_arrays(self) -> None:
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
        num_peaks = self.peak_valid.shape[-1] if self.peak_valid.ndim == 3 else -1
        for name in ("peak_valid", "peak_range_m", "peak_angle_rad", "peak_snr_db"):
            if getattr(self, name).shape != (*shape, num_peaks) or num_peaks < 1:
                raise MeasurementError(f"{name} has shape {getattr(self, name).shape}, expected (M, I, P) = "
                                       f"{(*shape, max(num_peaks, 1))}")
        if self.peak_cov.shape != (*shape, num_peaks, 2, 2):
            raise MeasurementError(f"peak_cov has shape {self.peak_cov.shape}, expected {(*shape, num_peaks, 2, 2)}")
        if not np.array_equal(self.peak_valid[..., 0], self.detected):
            bs, tgt = np.argwhere(self.peak_valid[..., 0] != self.detected)[0]
            raise MeasurementError(f"pair (bs={bs}, target={tgt}): peak_valid[..., 0] must equal detected")
        if num_peaks > 1 and np.any(self.peak_valid[..., 1:] & ~self.peak_valid[..., :-1]):
            bs, tgt, p = np.argwhere(self.peak_valid[..., 1:] & ~self.peak_valid[..., :-1])[0]
            raise MeasurementError(f"pair (bs={bs}, target={tgt}): peak {p + 1} is valid but peak {p} is not "
                                   "(peaks are sorted by SNR)")
        for name in ("peak_range_m", "peak_angle_rad", "peak_snr_db", "peak_cov"):
            arr = getattr(self, name)
            if not np.all(np.isfinite(arr)):
                idx = tuple(int(v) for v in np.argwhere(~np.isfinite(arr))[0])
                raise MeasurementError(f"{name}{list(idx)} = {arr[idx]}: measurements must be finite")
        pv = self.peak_valid
        if np.any(self.peak_range_m[pv] <= 0):
            raise MeasurementError("a valid peak has a range <= 0 m")
        pvar = self.peak_cov[pv]
        if pvar.size and (np.any(pvar[:, 0, 0] <= 0) or np.any(pvar[:, 1, 1] <= 0)):
            raise MeasurementError("a valid peak has a non-positive variance in peak_cov")
        det = self.detected
        if np.any(self.range_m[det] <= 0):
            raise MeasurementError("a detected range is <= 0 m")
        var = self.cov[det]
        if var.size and (np.any(var[:, 0, 0] <= 0) or np.any(var[:, 1, 1] <= 0)):
            raise MeasurementError("a detected pair has a non-positive variance in cov")

    @classmethod
    def empty(cls, num_bs: int, num_targets: int, block: int = 0, num_peaks: int = 1) -> Measurements:
        """No pair assigned, nothing detected (``num_peaks`` = ``P`` of the peak arrays)."""
        z = np.zeros((num_bs, num_targets))
        zp = np.zeros((num_bs, num_targets, num_peaks))
        return cls(np.zeros_like(z, bool), np.zeros_like(z, bool), z.copy(), z.copy(), z.copy(),
                   np.zeros((num_bs, num_targets, 2, 2)), block, zp.astype(bool), zp.copy(), zp.copy(), zp.copy(),
                   np.zeros((num_bs, num_targets, num_peaks, 2, 2)))

    def peak_positions_m(self, bs_positions_m: np.ndarray) -> np.ndarray:
        """Cartesian position of every peak, ``(M, I, P, 2)`` metres; zeros where not valid."""
        pos = bs_positions_m[:, None, None, :] + self.peak_range_m[..., None] * np.stack(
            [np.cos(self.peak_angle_rad), np.sin(self.peak_angle_rad)], axis=-1)
        return np.where(self.peak_valid[..., None], pos, 0.0)

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


PEAK_FIELDS = ("peak_valid", "peak_range_m", "peak_angle_rad", "peak_snr_db", "peak_cov")
"""The optional per-peak arrays of :class:`Measurements`."""
