"""The CU's window of the last ``W`` blocks of measurements, as fixed-shape arrays.

This is the one featurisation of the measurements (numpy only): the learned
estimator (:mod:`rl_isac.tracking.dgnn`) reads it, and it is the RLlib
observation later, so every entry is a float32 array whose shape depends only on
the scenario (``W`` blocks, ``M`` BSs, ``I`` targets), never on what was measured.

Observation (what :meth:`MeasurementWindow.as_arrays` returns; all float32):

==================  ==================  =======================================================
key                 shape               meaning
==================  ==================  =======================================================
``features``        ``(W, M, I, F)``    per block, BS and target, see :data:`FEATURE_NAMES`
``block_valid``     ``(W,)``            1 for a block that holds measurements, 0 for padding
``bs_positions``    ``(M, 2)``          BS positions / ``position_scale_m``
``anchor``          ``(I, 2)``          per-target anchor for block ``q`` / ``position_scale_m`` (see below)
``anchor_next``     ``(I, 2)``          per-target anchor for block ``q + 1`` / ``position_scale_m``
``anchor_age``      ``(I,)``            blocks since the target was last measured (or acquired) / ``W``
``anchor_log_std``  ``(I,)``            ``log10`` of the anchor's position std ``sqrt(tr P)``, metres
``scales_m``        ``(3,)``            ``[position_scale_m, residual_scale_m, range_scale_m]``
==================  ==================  =======================================================

Blocks are ordered oldest first; index ``W - 1`` is the current block ``q``.
Before ``W`` blocks were pushed, the leading blocks are padding (all-zero
features, ``block_valid = 0``).

Feature layout (``F = 12``, index: name, value where the pair was detected; every
measurement feature is 0 where it was not):

 0. ``detected``: 1 if the pair's detector fired (the DGNN's edges), else 0.
 1. ``assigned``: 1 if the pair was in the association ``A_q`` (a miss is assigned, not detected).
 2. ``range``: ``d_hat / range_scale_m`` (area diagonal).
 3. ``angle``: ``theta_hat / pi`` in ``(-1, 1]``.
 4. ``rel_x``, 5. ``rel_y``: the Cartesian offset implied by the measurement from its BS,
    ``d_hat [cos theta_hat, sin theta_hat] / position_scale_m``.
 6. ``res_x``, 7. ``res_y``: the implied position relative to the target's *current*
    anchor, ``(p_m + d_hat [cos, sin] - anchor_i) / residual_scale_m``, clipped to
    ``+-RESIDUAL_CLIP`` (a far outlier saturates instead of blowing up the input).
 8. ``log_std_range``: ``log10`` of the range std from ``cov``, metres.
 9. ``log_std_angle``: ``log10`` of the angle std from ``cov``, radians.
10. ``log_std_cross``: ``log10(d_hat * std_angle)``, the cross-range std, metres.
11. ``snr``: ``snr_db / 30`` for *assigned* pairs (also for misses: a low SNR says the
    beam missed the target), 0 elsewhere.

The paper's edge feature ``e_{m,i,q} = z_hat_{m,i,q}`` (Sec. 3.1) is the sub-vector
:data:`PAPER_FEATURES` (range, angle); the rest are our physically informed additions.

Scales (O(1) inputs): ``position_scale_m`` is the area's longer side (one scale for
both axes keeps the geometry isotropic, so a squared error means the same along x
and y); ``range_scale_m`` is the area diagonal; ``residual_scale_m`` (default 5 m,
about five blocks of motion at 10 m/s) makes measurement-minus-anchor offsets O(1)
while keeping a 5 cm measurement visible as 0.01.

Anchors (the per-target references the DGNN predicts residuals from; the
residual features above are taken against ``anchor``). Both modes start at the
acquisition the CU receives at ``q = 0`` (:meth:`MeasurementWindow.reset`) and are
functions of the measurements alone: no feedback loop between the estimator and
its own input, identical in pre-training and in PPO, and computable by the env
without the model.

* ``anchor="ekf"`` (default): the classical CU estimator
  (:class:`rl_isac.tracking.ekf.EKFEstimator`) runs alongside the window; ``anchor``
  is its ``u_hat_q`` and ``anchor_next`` its prediction ``u_tilde_{q+1}``. The DGNN then
  learns a correction of the EKF: its zero-initialised residual heads start exactly
  at the EKF, and whatever it learns (non-Gaussian errors, bad-geometry pairs whose
  reported covariance is too optimistic, the edges) is on top.
* ``anchor="measurement"``: a model-free anchor, no motion model. Each target's
  detected measurements are gated in measurement space around the previous anchor
  (range and cross-range innovations within ``range_gate_m + step_m * (age + 1)``
  plus three stds, so a stray echo of another target cannot capture it) and fused
  with the previous anchor as a weak prior (isotropic std
  ``step_m * (age + 1) + 0.5 m``) by an iterated EKF update on the position alone
  (three Gauss-Newton steps, range and angle linearised at the iterate, so a
  range-only measurement with a huge angle variance moves the anchor only along
  the range direction). ``anchor_next = anchor``: the network extrapolates.

Speed (exact): the anchor-independent channels of every block (all but ``res_x``, ``res_y``) are computed
once, at :meth:`MeasurementWindow.push`, and cached with the implied positions; :meth:`as_arrays` only
takes the residual channels against the current anchors, for all held blocks at once, with the same
expressions (bit-identical to recomputing each block with :meth:`block_features`; test
``tests/tracking/test_exact_window_cache.py``). Time per block, I = 8, W = 8, signal, ekf-milp's
measurements of 2 x 100 blocks, one core of a loaded machine (``nice``, ``taskset``), the code before
(26fc549) and after alternating in one process, median of 10 runs (paired new/old ratio in brackets):
``as_arrays`` 0.28 -> 0.05 ms (0.18); ``push`` (EKF anchor: its update, a fresh object's validation, the
cache) 1.39 -> 1.18 ms (0.87); push + as_arrays 1.66 -> 1.23 ms.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from rl_isac.errors import ConfigError, MeasurementError
from rl_isac.physics.measurements import Measurements
from rl_isac.scenario import ScenarioConfig
from rl_isac.tracking.ekf import EKFEstimator, update_many

FEATURE_NAMES: tuple[str, ...] = (
    "detected", "assigned", "range", "angle", "rel_x", "rel_y", "res_x", "res_y",
    "log_std_range", "log_std_angle", "log_std_cross", "snr",
)
"""Names of the ``F`` feature channels, in order."""
NUM_FEATURES = len(FEATURE_NAMES)
FEATURE_INDEX = {name: k for k, name in enumerate(FEATURE_NAMES)}
PAPER_FEATURES: tuple[int, ...] = (FEATURE_INDEX["range"], FEATURE_INDEX["angle"])
"""Channels of the paper's edge feature ``e_{m,i,q} = [d_hat, theta_hat]`` (Sec. 3.1)."""

RESIDUAL_SCALE_M = 5.0
"""Default scale of measurement-minus-anchor offsets (and of the DGNN's residual outputs), metres."""
RESIDUAL_CLIP = 10.0
"""Clip of the residual features, in ``residual_scale_m`` units (10 x 5 m = 50 m)."""
SNR_SCALE_DB = 30.0
"""Divisor of ``snr_db``."""
_MIN_STD = 1e-9
_PRIOR_FLOOR_M = 0.5  # added to the prior std of the anchor fusion, metres
_ANCHOR_ITERATIONS = 3  # Gauss-Newton steps of the anchor's iterated EKF update


def _wrap(angle_rad: np.ndarray) -> np.ndarray:
    """Wrap to ``(-pi, pi]``."""
    return np.pi - np.mod(np.pi - angle_rad, 2 * np.pi)
_AGE_CAP_BLOCKS = 1000

ANCHORS = ("ekf", "measurement")
"""Anchor modes of :class:`MeasurementWindow`."""
OBS_KEYS = ("features", "block_valid", "bs_positions", "anchor", "anchor_next", "anchor_age", "anchor_log_std",
            "scales_m")


def observation_shapes(cfg: ScenarioConfig) -> dict[str, tuple[int, ...]]:
    """Fixed shapes of the arrays of :meth:`MeasurementWindow.as_arrays` (all float32).

    Returns:
        ``{key: shape}`` for every key in :data:`OBS_KEYS`.
    """
    W, M, I = cfg.window, cfg.num_bs, cfg.num_targets
    return {"features": (W, M, I, NUM_FEATURES), "block_valid": (W,), "bs_positions": (M, 2),
            "anchor": (I, 2), "anchor_next": (I, 2), "anchor_age": (I,), "anchor_log_std": (I,), "scales_m": (3,)}


def stack_observations(observations: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stack per-step observations along a new leading batch axis ``B``.

    Shapes:
        each input ``{key: S_key}`` -> ``{key: (B, *S_key)}``.
    """
    return {key: np.stack([obs[key] for obs in observations]) for key in observations[0]}


def measured_positions_m(meas: Measurements, bs_positions_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cartesian position implied by each measurement and its covariance.

    ``u = p_m + d [cos t, sin t]``; ``Sigma = J cov J^T`` with
    ``J = [[cos t, -d sin t], [sin t, d cos t]]`` (first-order propagation).

    Shapes:
        bs_positions_m: ``(M, 2)`` metres.
        returns ``positions (M, I, 2)`` metres and ``cov (M, I, 2, 2)`` square metres;
        both 0 where not detected.
    """
    d, t = meas.range_m, meas.angle_rad
    c, s = np.cos(t), np.sin(t)
    pos = bs_positions_m[:, None, :] + d[..., None] * np.stack([c, s], axis=-1)
    jac = np.stack([np.stack([c, -d * s], -1), np.stack([s, d * c], -1)], axis=-2)  # (M, I, 2, 2)
    cov = jac @ meas.cov @ np.swapaxes(jac, -1, -2)
    det = meas.detected
    return np.where(det[..., None], pos, 0.0), np.where(det[..., None, None], cov, 0.0)


class MeasurementWindow:
    """The last ``W`` blocks of :class:`Measurements`, plus per-target anchors.

    Usage::

        win = MeasurementWindow(cfg)
        win.reset(acquisition_m)     # (I, 2) metres, block q = 0
        obs = win.as_arrays()        # all-padding window, anchor = acquisition
        win.push(meas)               # once per block
        obs = win.as_arrays()

    Args:
        cfg: the scenario (``window``, ``bs_positions_m``, ``area_size_m``, ``range_gate_m``,
            ``step_m`` and, for the EKF anchor, the motion parameters are used).
        anchor: ``"ekf"`` or ``"measurement"`` (see the module docstring).
        residual_scale_m: scale of the residual features, metres.
    """

    def __init__(self, cfg: ScenarioConfig, anchor: str = "ekf", residual_scale_m: float = RESIDUAL_SCALE_M) -> None:
        if anchor not in ANCHORS:
            raise ConfigError("anchor", anchor, f"must be one of {ANCHORS}")
        if not (np.isfinite(residual_scale_m) and residual_scale_m > 0):
            raise ConfigError("residual_scale_m", residual_scale_m, "must be a finite number > 0")
        self.cfg = cfg
        self.anchor = anchor
        self.window = cfg.window
        self.num_bs = cfg.num_bs
        self.num_targets = cfg.num_targets
        self.bs_positions_m = np.asarray(cfg.bs_positions_m, dtype=float)
        self.position_scale_m = float(max(cfg.area_size_m))
        self.range_scale_m = float(cfg.max_range_m)
        self.residual_scale_m = float(residual_scale_m)
        self._blocks: deque[Measurements] = deque(maxlen=self.window)
        # per held block, computed once at push: (anchor-independent features (M, I, F) float32 with the
        # residual columns 0, implied positions (M, I, 2) float64, detected (M, I) bool); see as_arrays
        self._cached: deque[tuple[np.ndarray, np.ndarray, np.ndarray]] = deque(maxlen=self.window)
        self._ekf = EKFEstimator(cfg) if anchor == "ekf" else None
        self._anchor_m: np.ndarray | None = None
        self._anchor_next_m: np.ndarray | None = None
        self._anchor_var_m2 = np.zeros(self.num_targets)
        self._anchor_age = np.zeros(self.num_targets, dtype=int)

    # ------------------------------------------------------------------ state
    @property
    def anchor_m(self) -> np.ndarray:
        """Current per-target anchor (block ``q``), ``(I, 2)`` metres (a copy)."""
        self._require_reset()
        return self._anchor_m.copy()

    @property
    def anchor_next_m(self) -> np.ndarray:
        """Per-target anchor for the next block ``q + 1``, ``(I, 2)`` metres (a copy): the EKF anchor's predicted
        mean (for a target on a re-seeded search, the centre of its ring, not its look: :meth:`search_looks_m`)."""
        self._require_reset()
        return self._anchor_next_m.copy()

    def search_looks_m(self) -> np.ndarray | None:
        """``(I, 2)`` metres: where the EKF anchor looks at block ``q + 1``
        (:meth:`rl_isac.tracking.ekf.EKFEstimator.predicted_position`; ``anchor_next`` except on a
        :attr:`ring_search`); ``None`` for other anchors."""
        self._require_reset()
        return None if self._ekf is None else self._ekf.predicted_position()

    @property
    def anchor_age(self) -> np.ndarray:
        """Blocks since each target was last measured (or acquired), ``(I,)`` int."""
        return self._anchor_age.copy()

    def anchor_predicted_covariance(self) -> np.ndarray | None:
        """Covariance of ``anchor_next`` for the EKF anchor, ``(I, 2, 2)`` m^2; ``None`` for other anchors."""
        self._require_reset()
        return None if self._ekf is None else self._ekf.predicted_covariance()[:, :2, :2]

    @property
    def searching(self) -> np.ndarray | None:
        """``(I,)`` bool: targets the EKF anchor is searching for (:attr:`rl_isac.tracking.ekf.EKFEstimator.searching`);
        ``None`` for other anchors."""
        return None if self._ekf is None else self._ekf.searching

    @property
    def ring_search(self) -> np.ndarray | None:
        """``(I,)`` bool: targets whose ``anchor_next`` is a look of the EKF anchor's re-seeded search
        (:attr:`rl_isac.tracking.ekf.EKFEstimator.ring_search`); ``None`` for other anchors."""
        return None if self._ekf is None else self._ekf.ring_search

    @property
    def num_valid(self) -> int:
        """Number of blocks held (``<= W``)."""
        return len(self._blocks)

    def _require_reset(self) -> None:
        if self._anchor_m is None:
            raise MeasurementError("MeasurementWindow used before reset(initial_positions_m)")

    def reset(self, initial_positions_m: np.ndarray) -> None:
        """Start an episode: empty window, anchors at the acquisition positions.

        Shapes:
            initial_positions_m: ``(I, 2)`` metres (the CU's acquisition at ``q = 0``).
        """
        pos = np.asarray(initial_positions_m, dtype=float)
        if pos.shape != (self.num_targets, 2) or not np.all(np.isfinite(pos)):
            raise MeasurementError(f"initial_positions_m must be a finite ({self.num_targets}, 2) array, "
                                   f"got shape {pos.shape}")
        self._blocks.clear()
        self._cached.clear()
        self._anchor_m = pos.copy()
        self._anchor_age = np.zeros(self.num_targets, dtype=int)
        self._anchor_var_m2 = np.full(self.num_targets, 2 * self.cfg.acquisition_std_m**2)
        if self._ekf is not None:
            self._ekf.reset(pos)
            self._anchor_next_m = self._ekf.predicted_position()
        else:
            self._anchor_next_m = pos.copy()

    def push(self, meas: Measurements) -> None:
        """Append the measurements of the newest block and refresh the anchors.

        Shapes:
            meas: arrays ``(M, I)`` for this scenario.
        """
        MeasurementWindow.push_many([self], [meas])

    @staticmethod
    def push_many(windows: list[MeasurementWindow], metas: list[Measurements]) -> None:
        """``[w.push(m) for w, m in zip(windows, metas)]`` with the same numbers, the EKF anchors of all windows
        updated in one batch (:func:`rl_isac.tracking.ekf.update_many`: an env runner's lockstep envs).
        Every window and block is checked before any window changes; :meth:`push` is this with one window.

        Shapes:
            each ``meas``: arrays ``(M, I)`` of its window's scenario.
        """
        if len(windows) != len(metas):
            raise ValueError(f"{len(windows)} windows but {len(metas)} measurements")
        for win, meas in zip(windows, metas):
            win._require_reset()
            if meas.assigned.shape != (win.num_bs, win.num_targets):
                raise MeasurementError(f"measurements have shape {meas.assigned.shape}, the window expects "
                                       f"({win.num_bs}, {win.num_targets})")
        ekf = [k for k, win in enumerate(windows) if win._ekf is not None]
        results = dict(zip(ekf, update_many([windows[k]._ekf for k in ekf], [metas[k] for k in ekf])))
        first = windows[0]
        if len(windows) > 1 and all(w.cfg is first.cfg and w.residual_scale_m == first.residual_scale_m
                                    for w in windows):  # one scenario: the cached features of all blocks at once
            feats, implied, det = first.anchor_free_features(metas)
            cached = list(zip(feats, implied, det))
        else:
            cached = [win.anchor_free_features(meas) for win, meas in zip(windows, metas)]
        for k, (win, meas) in enumerate(zip(windows, metas)):
            if k in results:
                win._anchor_m, win._anchor_next_m = results[k]
                ring = win._ekf.ring_search
                if ring.any():  # the DGNN sees the predicted mean, not the search's look
                    win._anchor_next_m[ring] = win._ekf.predicted_state()[ring, :2]
                win._anchor_var_m2 = np.trace(win._ekf._P[:, :2, :2], axis1=-2, axis2=-1)
                measured = meas.detected.any(axis=0)
            else:
                measured = win._update_measurement_anchor(meas)
                win._anchor_next_m = win._anchor_m.copy()
            win._anchor_age = np.where(measured, 0, np.minimum(win._anchor_age + 1, _AGE_CAP_BLOCKS))
            win._blocks.append(meas)
            win._cached.append(cached[k])

    def _update_measurement_anchor(self, meas: Measurements) -> np.ndarray:
        """Iterated EKF update of the position-only anchors; returns which targets were updated ``(I,)``."""
        u0 = self._anchor_m                                                    # (I, 2)
        bs = self.bs_positions_m[:, None, :]                                   # (M, 1, 2)
        var_r = np.maximum(meas.cov[..., 0, 0], _MIN_STD**2)
        var_t = np.maximum(meas.cov[..., 1, 1], _MIN_STD**2)
        # gate in measurement space around the prior: range and cross-range innovations
        rel0 = u0[None] - bs
        r0 = np.maximum(np.linalg.norm(rel0, axis=-1), 1e-6)                   # (M, I)
        t0 = np.arctan2(rel0[..., 1], rel0[..., 0])
        gate_m = (self.cfg.range_gate_m + self.cfg.step_m * (self._anchor_age + 1))[None]  # (1, I)
        ok = (meas.detected & (np.abs(meas.range_m - r0) <= gate_m + 3 * np.sqrt(var_r))
              & (np.abs(_wrap(meas.angle_rad - t0)) * r0 <= gate_m + 3 * r0 * np.sqrt(var_t)))
        eye = np.eye(2)
        r_inv = np.linalg.inv(np.where(ok[..., None, None], meas.cov + 1e-12 * eye, eye))
        r_inv = np.where(ok[..., None, None], r_inv, 0.0)                      # (M, I, 2, 2)
        prior_std = self.cfg.step_m * (self._anchor_age + 1) + _PRIOR_FLOOR_M  # (I,)
        prior_info = eye / prior_std[:, None, None] ** 2
        u = u0.copy()
        for _ in range(_ANCHOR_ITERATIONS):
            # u <- u0 + (P0^-1 + sum H^T R^-1 H)^-1 sum H^T R^-1 (z - h(u) + H (u - u0)),  h = [range, angle]
            rel = u[None] - bs
            r = np.maximum(np.linalg.norm(rel, axis=-1), 1e-6)
            th = np.arctan2(rel[..., 1], rel[..., 0])
            H = np.stack([np.stack([rel[..., 0] / r, rel[..., 1] / r], -1),
                          np.stack([-rel[..., 1] / r**2, rel[..., 0] / r**2], -1)], axis=-2)  # (M, I, 2, 2)
            innov = np.stack([meas.range_m - r, _wrap(meas.angle_rad - th)], -1)
            y = innov + (H @ (u - u0)[None, ..., None])[..., 0]
            Ht_rinv = np.swapaxes(H, -1, -2) @ r_inv
            info = prior_info + (Ht_rinv @ H).sum(axis=0)                      # (I, 2, 2)
            vec = (Ht_rinv @ y[..., None]).sum(axis=0)                         # (I, 2, 1)
            u = u0 + np.linalg.solve(info, vec)[..., 0]
        has = ok.any(axis=0)
        self._anchor_m = np.where(has[:, None], u, u0)
        post_var = np.trace(np.linalg.inv(info), axis1=-2, axis2=-1)
        self._anchor_var_m2 = np.where(has, post_var, 2 * prior_std**2)
        return has

    # ------------------------------------------------------------------ arrays
    def anchor_free_features(self, meas: Measurements | list[Measurements]
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The part of :meth:`block_features` that does not depend on the anchors, computed once per block
        (the window caches it at :meth:`push`; a caller featurising the same block against changing anchors can
        cache it too and use :meth:`features_against_anchors`).

        Returns:
            ``features (M, I, F)`` float32 with the residual channels ``res_x``, ``res_y`` left 0,
            ``implied (M, I, 2)`` float64 (``p_m + d_hat [cos, sin]``, metres) and ``detected (M, I)`` bool;
            for a list of ``n`` blocks of this scenario (:meth:`push_many`), the same with a leading ``n`` axis
            (every entry computed as for its block alone).
        """
        many = isinstance(meas, list)
        fields = ("detected", "assigned", "range_m", "angle_rad", "cov", "snr_db")
        det, assigned, d, t, cov, snr = ([np.asarray(getattr(m, f)) for m in meas] if many else getattr(meas, f)
                                         for f in fields)
        if many:
            det, assigned, d, t, cov, snr = (np.stack(v) for v in (det, assigned, d, t, cov, snr))
        det = np.asarray(det, dtype=bool)
        c, s = np.cos(t), np.sin(t)
        out = np.zeros((*d.shape, NUM_FEATURES))
        out[..., 0] = det
        out[..., 1] = assigned
        out[..., 2] = d / self.range_scale_m
        out[..., 3] = t / np.pi
        out[..., 4] = d * c / self.position_scale_m
        out[..., 5] = d * s / self.position_scale_m
        implied = self.bs_positions_m[:, None, :] + d[..., None] * np.stack([c, s], axis=-1)
        std_r = np.sqrt(np.maximum(cov[..., 0, 0], _MIN_STD**2))
        std_t = np.sqrt(np.maximum(cov[..., 1, 1], _MIN_STD**2))
        out[..., 8] = np.log10(std_r)
        out[..., 9] = np.log10(std_t)
        out[..., 10] = np.log10(np.maximum(d * std_t, _MIN_STD))
        out[..., 2:11] = np.where(det[..., None], out[..., 2:11], 0.0)
        out[..., 11] = np.where(assigned, snr / SNR_SCALE_DB, 0.0)
        return out.astype(np.float32), implied, det

    def _residual_features(self, implied_m: np.ndarray, detected: np.ndarray) -> np.ndarray:
        """Channels ``res_x``, ``res_y`` against the current anchors: ``implied (..., M, I, 2)`` metres,
        ``detected (..., M, I)`` -> ``(..., M, I, 2)`` float64 (0 where not detected)."""
        res = (implied_m - self._anchor_m) / self.residual_scale_m
        return np.where(detected[..., None], np.clip(res, -RESIDUAL_CLIP, RESIDUAL_CLIP), 0.0)

    def features_against_anchors(self, cached: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
        """Features of ``n`` blocks from their :meth:`anchor_free_features`, against the current anchors
        (bit-identical to :meth:`block_features` of each block).

        Shapes:
            returns ``(n, M, I, F)`` float32.
        """
        self._require_reset()
        feats = np.stack([c[0] for c in cached])
        feats[..., 6:8] = self._residual_features(np.stack([c[1] for c in cached]), np.stack([c[2] for c in cached]))
        return feats

    def block_features(self, meas: Measurements) -> np.ndarray:
        """Features of one block relative to the current anchors.

        Shapes:
            returns ``(M, I, F)`` float32, layout :data:`FEATURE_NAMES`.
        """
        self._require_reset()
        out, implied, det = self.anchor_free_features(meas)
        out[..., 6:8] = self._residual_features(implied, det)  # float64 -> float32 as astype
        return out

    def as_arrays(self) -> dict[str, np.ndarray]:
        """The observation: fixed-shape float32 arrays, see the module docstring.

        Shapes:
            ``features (W, M, I, F)``, ``block_valid (W,)``, ``bs_positions (M, 2)``,
            ``anchor (I, 2)``, ``anchor_next (I, 2)``, ``anchor_age (I,)``, ``anchor_log_std (I,)``,
            ``scales_m (3,)``.
        """
        self._require_reset()
        W = self.window
        feats = np.zeros((W, self.num_bs, self.num_targets, NUM_FEATURES), dtype=np.float32)
        valid = np.zeros(W, dtype=np.float32)
        n = len(self._blocks)
        if n:
            # anchor-independent channels cached at push (the same expressions as block_features); only the
            # residual channels are taken against the current anchors, for all held blocks at once
            feats[W - n:] = self.features_against_anchors(list(self._cached))
            valid[W - n:] = 1.0
        return self._arrays(feats, valid)

    @staticmethod
    def as_arrays_many(windows: list[MeasurementWindow]) -> list[dict[str, np.ndarray]]:
        """``[w.as_arrays() for w in windows]`` with the same entries; windows of one scenario holding the same
        number of blocks (an env runner's lockstep envs) take their residual channels in one pass."""
        first = windows[0]
        n = len(first._blocks)
        if len(windows) == 1 or n == 0 or any(w.cfg is not first.cfg or w.residual_scale_m != first.residual_scale_m
                                              or len(w._blocks) != n for w in windows):
            return [w.as_arrays() for w in windows]
        for w in windows:
            w._require_reset()
        E, W, M, I = len(windows), first.window, first.num_bs, first.num_targets
        cached = [c for w in windows for c in w._cached]
        feats = np.zeros((E, W, M, I, NUM_FEATURES), dtype=np.float32)
        held = np.stack([c[0] for c in cached]).reshape(E, n, M, I, NUM_FEATURES)
        implied = np.stack([c[1] for c in cached]).reshape(E, n, M, I, 2)
        det = np.stack([c[2] for c in cached]).reshape(E, n, M, I)
        anchors = np.stack([w._anchor_m for w in windows])[:, None, None]                      # (E, 1, 1, I, 2)
        res = (implied - anchors) / first.residual_scale_m  # as _residual_features, per window
        held[..., 6:8] = np.where(det[..., None], np.clip(res, -RESIDUAL_CLIP, RESIDUAL_CLIP), 0.0)
        feats[:, W - n:] = held
        valid = np.zeros(W, dtype=np.float32)
        valid[W - n:] = 1.0
        return [w._arrays(feats[e], valid.copy()) for e, w in enumerate(windows)]

    def _arrays(self, feats: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
        """:meth:`as_arrays` from its ``features`` and ``block_valid``."""
        W = self.window
        return {
            "features": feats,
            "block_valid": valid,
            "bs_positions": (self.bs_positions_m / self.position_scale_m).astype(np.float32),
            "anchor": (self._anchor_m / self.position_scale_m).astype(np.float32),
            "anchor_next": (self._anchor_next_m / self.position_scale_m).astype(np.float32),
            "anchor_age": (self._anchor_age / W).astype(np.float32),
            "anchor_log_std": np.log10(np.sqrt(np.maximum(self._anchor_var_m2, _MIN_STD**2))).astype(np.float32),
            "scales_m": np.array([self.position_scale_m, self.residual_scale_m, self.range_scale_m],
                                 dtype=np.float32),
        }


__all__ = [
    "FEATURE_NAMES", "FEATURE_INDEX", "NUM_FEATURES", "PAPER_FEATURES", "RESIDUAL_SCALE_M", "RESIDUAL_CLIP",
    "SNR_SCALE_DB", "OBS_KEYS", "ANCHORS", "MeasurementWindow", "measured_positions_m", "observation_shapes",
    "stack_observations",
]
