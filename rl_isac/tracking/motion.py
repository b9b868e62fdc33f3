"""Motion model of the CU's classical tracker: transition ``F``, process noise ``Q``, edge reflection.

The state of one target is ``[x_m, y_m, vx_mps, vy_mps]``; batches lead:
``x: (num_targets, 4)``, ``P: (num_targets, 4, 4)``.

The paper's motion (Sec. 4), with ``v`` the fixed speed, ``dT`` the block duration and
``h`` the half-width of the heading step::

    u_{q+1}    = u_q + v [cos b_q, sin b_q] dT
    b_{q+1}    = b_q + db,        db ~ U(-h, h)

In the state ``s_q = [u_q, v_q]`` with ``v_q = v [cos b_q, sin b_q]``, the position step is exact
(no position noise) and the velocity is rotated by ``db``::

    v_{q+1} = R(db) v_q = v [cos(db) t_q + sin(db) n_q]

with ``t_q = v_q / v`` the heading and ``n_q`` its left normal. Its moments given ``v_q``:

    E[v_{q+1} | v_q]   = kappa v_q,              kappa = E[cos db] = sin(h) / h
    Cov[v_{q+1} | v_q] = v^2 (var_cos t t^T + E[sin^2 db] n n^T)
    E[sin^2 db] = (1 - sinc2) / 2,  var_cos = (1 + sinc2) / 2 - kappa^2,  sinc2 = sin(2h) / (2h)

For the paper's ``h = 15 deg``: ``kappa = 0.98862``, ``E[sin^2 db] = 0.022535 ~ h^2 / 3 = 0.022846``
and ``var_cos = 8.9e-5``: the velocity change is (to 0.4 %) perpendicular to the heading, with
standard deviation ``v h / sqrt(3) = 1.51 m/s`` per block.

A constant-velocity Kalman filter cannot carry that direction exactly, so three process-noise
models are offered (:data:`PROCESS_NOISE_MODELS`); see :func:`process_noise` for the forms and
``rl_isac/tracking/ekf.py`` for the one the estimator uses by default and why.
"""

from __future__ import annotations

import math

import numpy as np

from rl_isac.errors import ConfigError

PROCESS_NOISE_MODELS = ("isotropic", "dwna", "heading")
"""``isotropic``: velocity-only noise ``sigma_v^2 I`` (the paper's position step is exact);
``dwna``: the textbook discrete white-noise-acceleration form with the same velocity variance;
``heading``: direction-aware, ``v^2 (var_cos t t^T + E[sin^2 db] n n^T)`` around the current
velocity estimate, blended towards isotropic while the heading is still unknown."""


def heading_step_moments(heading_step_rad: float) -> tuple[float, float, float]:
    """Moments of ``db ~ U(-h, h)`` that shape the velocity noise.

    Args:
        heading_step_rad: half-width ``h`` of the uniform heading step, radians (>= 0).
    Returns:
        ``(kappa, mean_sin2, var_cos)``: ``E[cos db]``, ``E[sin^2 db]`` and ``Var[cos db]``
        (dimensionless).
    """
    h = float(heading_step_rad)
    if h < 0 or not math.isfinite(h):
        raise ConfigError("heading_step_rad", heading_step_rad, "must be a finite number >= 0")
    if h == 0.0:
        return 1.0, 0.0, 0.0
    kappa = math.sin(h) / h
    sinc2 = math.sin(2 * h) / (2 * h)
    mean_sin2 = (1.0 - sinc2) / 2.0
    var_cos = max((1.0 + sinc2) / 2.0 - kappa**2, 0.0)
    return kappa, mean_sin2, var_cos


def velocity_noise_var(cfg) -> float:
    """Per-block velocity variance across the heading ``sigma_v^2 = v^2 h^2 / 3``, (m/s)^2.

    ``db ~ U(-h, h)`` has variance ``h^2 / 3``; at fixed speed the velocity moves by ``v db``
    across the heading (small-angle form of ``v^2 E[sin^2 db]``, 1.4 % larger at h = 15 deg, so
    it errs on the safe side).

    Args:
        cfg: a :class:`~rl_isac.scenario.ScenarioConfig` (``speed_mps``, ``heading_step_rad``).
    """
    return cfg.speed_mps**2 * cfg.heading_step_rad**2 / 3.0


def cv_transition(dt_s: float, *, velocity_decay: float = 1.0) -> np.ndarray:
    """Constant-velocity transition matrix.

    ``x_{q+1} = F x_q`` with ``F = [[I, dt I], [0, c I]]`` for the state ``[x_m, y_m, vx_mps, vy_mps]``;
    ``c = 1`` is the textbook constant-velocity model. ``c = kappa = E[cos db]`` is the exact
    conditional mean of the heading random walk (a rotated velocity is on average shorter); with
    the matching ``Q`` the velocity prior then relaxes to the uniform-heading prior through long gaps.

    Args:
        dt_s: time step, seconds (the block duration ``delta_T``).
        velocity_decay: ``c`` in ``v_{q+1} = c v_q``, dimensionless (1 = constant velocity).
    Returns:
        ``F``: ``(4, 4)`` float64.
    """
    F = np.eye(4)
    F[0, 2] = F[1, 3] = float(dt_s)
    F[2, 2] = F[3, 3] = float(velocity_decay)
    return F


def process_noise(cfg, *, model: str = "isotropic", velocity_mps: np.ndarray | None = None,
                  velocity_cov: np.ndarray | None = None, turn_scale: float = 1.0) -> np.ndarray:
    """Process noise ``Q`` of one block for the paper's heading random walk.

    Forms (``sigma_v^2`` from :func:`velocity_noise_var`, ``dt`` = block duration):

    * ``"isotropic"``: ``Q = diag(0, 0, sigma_v^2, sigma_v^2)``. The paper's position step uses
      the current velocity exactly, so only the velocity is disturbed; since the heading is
      unknown a priori the across-heading variance is put on both axes (conservative along it).
    * ``"dwna"``: discrete white-noise acceleration ``Q = sigma_v^2 G G^T`` per axis with
      ``G = [dt / 2, 1]`` (filterpy's ``Q_discrete_white_noise(dim=2, var=sigma_v^2 / dt^2)``):
      the same velocity variance, plus the position spread an acceleration inside the block
      would give.
    * ``"heading"``: direction-aware. With ``t`` the unit heading of ``velocity_mps`` and ``n``
      its normal, the exact moment ``Q_dir = v^2 (var_cos t t^T + E[sin^2 db] n n^T)`` on the
      velocity block. While the heading is uncertain it is blended with the heading-averaged
      isotropic ``Q_iso = v^2 (1 - kappa^2) / 2 I`` (the trace of ``Q_dir`` spread over both
      axes): ``Q = w Q_dir + (1 - w) Q_iso`` with ``w = |v_hat|^2 / (|v_hat|^2 + tr P_vv)``, so
      ``w -> 1`` once the speed estimate stands well above its own uncertainty.

    Args:
        cfg: a :class:`~rl_isac.scenario.ScenarioConfig`.
        model: one of :data:`PROCESS_NOISE_MODELS`.
        velocity_mps: ``(num_targets, 2)`` current velocity estimates (``"heading"`` only), m/s.
        velocity_cov: ``(num_targets, 2, 2)`` their covariance (``"heading"`` only; zero if omitted).
        turn_scale: ``"heading"`` only: factor on the directional part, ``Q = s w Q_dir + (1 - w) Q_iso``
            (turn-aware inflation while the heading is known; the heading-unknown limit, and so the
            long-run velocity prior ``v^2 / 2 I``, is unchanged).
    Returns:
        ``Q``: ``(4, 4)`` for ``"isotropic"`` / ``"dwna"``, ``(num_targets, 4, 4)`` for ``"heading"``.
    """
    sigma_v2 = velocity_noise_var(cfg)
    if model == "isotropic":
        Q = np.zeros((4, 4))
        Q[2, 2] = Q[3, 3] = sigma_v2  # velocity-only noise: u_{q+1} = u_q + v_q dT is exact
        return Q
    if model == "dwna":
        dt = cfg.block_duration_s
        g = np.array([dt / 2.0, 1.0])
        Q1 = sigma_v2 * np.outer(g, g)  # Q = sigma_v^2 G G^T per axis, G = [dt/2, 1]
        Q = np.zeros((4, 4))
        Q[np.ix_([0, 2], [0, 2])] = Q1
        Q[np.ix_([1, 3], [1, 3])] = Q1
        return Q
    if model == "heading":
        if velocity_mps is None:
            raise ConfigError("velocity_mps", None, "the 'heading' process noise needs the velocity estimate")
        vel = np.asarray(velocity_mps, dtype=float).reshape(-1, 2)
        num = vel.shape[0]
        kappa, mean_sin2, var_cos = heading_step_moments(cfg.heading_step_rad)
        v2 = cfg.speed_mps**2
        speed = np.linalg.norm(vel, axis=-1)
        safe = np.where(speed > 0, speed, 1.0)
        t = np.where(speed[:, None] > 0, vel / safe[:, None], np.array([1.0, 0.0]))
        n = np.stack([-t[:, 1], t[:, 0]], axis=-1)
        # Q_dir = v^2 (Var[cos db] t t^T + E[sin^2 db] n n^T)
        q_dir = v2 * (var_cos * t[:, :, None] * t[:, None, :] + mean_sin2 * n[:, :, None] * n[:, None, :])
        # Q_iso = v^2 (1 - kappa^2) / 2 I: the heading-averaged Q_dir (same trace)
        q_iso = v2 * (1.0 - kappa**2) / 2.0 * np.eye(2)
        tr_p = np.zeros(num) if velocity_cov is None else np.trace(np.asarray(velocity_cov).reshape(-1, 2, 2),
                                                                     axis1=-2, axis2=-1)
        denom = speed**2 + tr_p
        w = np.where(denom > 0, speed**2 / np.where(denom > 0, denom, 1.0), 0.0)
        Q = np.zeros((num, 4, 4))
        Q[:, 2:, 2:] = turn_scale * w[:, None, None] * q_dir + (1.0 - w[:, None, None]) * q_iso
        return Q
    raise ConfigError("process_noise_model", model, f"must be one of {PROCESS_NOISE_MODELS}")


def reflect_into_area(x: np.ndarray, P: np.ndarray, lower_m: np.ndarray, upper_m: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Mirror states whose position left ``[lower, upper]`` back inside, as the world reflects targets.

    Per axis ``k`` with ``pos_k > upper_k``: ``pos_k <- 2 upper_k - pos_k`` and ``vel_k <- -vel_k``
    (likewise at ``lower_k``). The map is affine with Jacobian ``J = diag(+-1)``, so
    ``P <- J P J^T`` (only signs of cross terms change).

    Args:
        x: ``(num_targets, 4)`` states ``[x_m, y_m, vx_mps, vy_mps]``.
        P: ``(num_targets, 4, 4)`` covariances.
        lower_m: ``(2,)`` lower bounds of ``(x, y)``, metres.
        upper_m: ``(2,)`` upper bounds of ``(x, y)``, metres.
    Returns:
        ``(x, P)`` with the same shapes (new arrays).
    """
    x = np.array(x, dtype=float, copy=True)
    P = np.array(P, dtype=float, copy=True)
    lower_m = np.asarray(lower_m, dtype=float)
    upper_m = np.asarray(upper_m, dtype=float)
    pos = x[:, :2]
    above = pos > upper_m
    below = pos < lower_m
    pos = np.where(above, 2 * upper_m - pos, pos)
    pos = np.where(below, 2 * lower_m - pos, pos)
    x[:, :2] = np.clip(pos, lower_m, upper_m)  # a step longer than the area cannot happen; clip for safety
    flip = above | below
    sign = np.where(flip, -1.0, 1.0)
    x[:, 2:] *= sign
    j = np.concatenate([sign, sign], axis=-1)  # J = diag(s_x, s_y, s_x, s_y)
    P = j[:, :, None] * P * j[:, None, :]  # P = J P J^T
    return x, P


__all__ = ["PROCESS_NOISE_MODELS", "heading_step_moments", "velocity_noise_var", "cv_transition",
           "process_noise", "reflect_into_area"]
