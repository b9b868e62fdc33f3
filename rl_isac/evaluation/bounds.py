"""The posterior CRB printed beside every RMSE.

The paper's motion has a known speed and a random-walk heading, so the bound
uses the state ``s = [x_m, y_m, heading_rad]``::

    s_{q+1} = f(s_q) + [0, 0, w_q],   f(s) = [x + v dT cos(b), y + v dT sin(b), b],
    w_q ~ N(0, h^2 / 3)  (the variance of the uniform heading step U(-h, h))

linearised along the true trajectory (``F_q = df/ds`` at the true heading), i.e.
the PCRB recursion of Tichavsky et al. (1998) in covariance form,
``P_{q+1} = (F_q P_q F_q^T + Q)^{-1} + E^T J_meas E`` inverted, with ``J_meas`` the
position Fisher information of the BSs actually associated and the beams
actually used, evaluated at the true positions (detection assumed). Two
approximations, both stated wherever the bound is printed: the uniform heading
step is replaced by a Gaussian of the same variance, and edge reflections are
ignored. The prior at ``q = 0`` is the acquisition variance on the position and
the variance of a uniform heading (pi^2 / 3).
"""

from __future__ import annotations

import numpy as np

from rl_isac.scenario import ScenarioConfig


def heading_transition(cfg: ScenarioConfig, heading_rad: np.ndarray) -> np.ndarray:
    """``F_q = df/ds`` for each target, shape ``(I, 3, 3)``."""
    step = cfg.speed_mps * cfg.block_duration_s
    f = np.tile(np.eye(3), (len(heading_rad), 1, 1))
    f[:, 0, 2] = -step * np.sin(heading_rad)
    f[:, 1, 2] = step * np.cos(heading_rad)
    return f


def position_pcrb(cfg: ScenarioConfig, headings_rad: np.ndarray, measurement_info: np.ndarray) -> np.ndarray:
    """PCRB of the position along a true trajectory.

    Args:
        headings_rad: ``(Q, I)`` the heading each target moved with into block q (q = 1..Q).
        measurement_info: ``(Q, I, 2, 2)`` position information of block q, 1/m^2.
    Returns:
        ``(Q, I)`` trace of the position bound, m^2 (mean square position error bound).
    """
    num_blocks, num_targets = headings_rad.shape
    cov = np.tile(np.diag([cfg.acquisition_std_m**2, cfg.acquisition_std_m**2, np.pi**2 / 3]), (num_targets, 1, 1))
    q_noise = np.diag([0.0, 0.0, cfg.heading_step_rad**2 / 3])
    out = np.empty((num_blocks, num_targets))
    for q in range(num_blocks):
        f = heading_transition(cfg, headings_rad[q])
        pred = f @ cov @ np.swapaxes(f, -1, -2) + q_noise  # P = F P F^T + Q
        info = np.linalg.inv(pred + 1e-12 * np.eye(3))
        info[:, :2, :2] += measurement_info[q]  # J = P^-1 + E^T J_meas E
        cov = np.linalg.inv(info)
        out[q] = cov[:, 0, 0] + cov[:, 1, 1]
    return out
