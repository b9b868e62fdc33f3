"""Geometry and the monostatic channel of eq. (1).

``H_{m,i}^{k,l} = alpha_{m,i} e^{j 2 pi nu_{m,i} k T_0} e^{-j 2 pi l delta_f tau_{m,i}} a_R(theta) a_T^H(theta)``
with the radar-equation gain ``|alpha|^2 = lambda^2 sigma / ((4 pi)^3 d^4)`` and a
random phase (RCS phase) drawn anew per BS, target and block, delay ``tau = 2 d / c``
and Doppler ``nu = 2 v_r / lambda`` (``v_r`` the closing speed: positive when the
target approaches the BS).
"""

from __future__ import annotations

import numpy as np

from rl_isac.scenario import SPEED_OF_LIGHT_MPS, ScenarioConfig


def geometry(bs_positions_m: np.ndarray, positions_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Range and angle of every target from every BS.

    Args:
        bs_positions_m: ``(M, 2)`` metres.
        positions_m: ``(..., I, 2)`` metres.
    Returns:
        range_m ``(..., M, I)`` and angle_rad ``(..., M, I)`` with ``theta = atan2(dy, dx)``.
    """
    delta = positions_m[..., None, :, :] - bs_positions_m[:, None, :]
    return np.hypot(delta[..., 0], delta[..., 1]), np.arctan2(delta[..., 1], delta[..., 0])


def path_amplitude(cfg: ScenarioConfig, range_m: np.ndarray) -> np.ndarray:
    """Radar-equation amplitude ``|alpha| = sqrt(lambda^2 sigma / ((4 pi)^3 d^4))`` (shape of ``range_m``)."""
    return np.sqrt(cfg.wavelength_m**2 * cfg.rcs_m2 / ((4 * np.pi) ** 3 * np.asarray(range_m) ** 4))


def received_amplitude(cfg: ScenarioConfig, range_m: np.ndarray) -> np.ndarray:
    """``rho = sqrt(P) |alpha|``: echo amplitude per unit two-way beam gain, sqrt(watt) (shape of ``range_m``)."""
    return np.sqrt(cfg.tx_power_per_subcarrier_w) * path_amplitude(cfg, range_m)


def delay_s(range_m: np.ndarray) -> np.ndarray:
    """Round-trip delay ``tau = 2 d / c``, seconds."""
    return 2 * np.asarray(range_m) / SPEED_OF_LIGHT_MPS


def doppler_hz(cfg: ScenarioConfig, bs_positions_m: np.ndarray, positions_m: np.ndarray,
               velocities_mps: np.ndarray) -> np.ndarray:
    """Doppler ``nu = 2 v_r / lambda`` with ``v_r`` the closing speed, shape ``(M, I)`` hertz."""
    delta = positions_m[None, :, :] - bs_positions_m[:, None, :]
    unit = delta / np.linalg.norm(delta, axis=-1, keepdims=True)
    closing = -np.einsum("mid,id->mi", unit, velocities_mps)
    return 2 * closing / cfg.wavelength_m


def channel_gains(cfg: ScenarioConfig, range_m: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
    """Complex ``sqrt(P) alpha`` with a uniform random RCS phase, shape of ``range_m`` complex128."""
    phase = rng.uniform(0, 2 * np.pi, np.shape(range_m))
    return received_amplitude(cfg, range_m) * np.exp(1j * phase)
