"""The fast ``surrogate`` fidelity: draws each pair's measurement from its detection
model and Fisher information instead of synthesising eq. (2).

Model, per assigned pair with true range ``d``, ``u = cos(theta)`` and beams:

* Detection: the per-symbol amplitudes at the true delay are drawn as
  ``c_k = rho g_k(u) e^{j phi_k} + CN(0, sigma^2 / L)`` (``phi_k`` the RCS phase plus
  the Doppler rotation), and the pair is detected when ``T = L sum_k |c_k|^2 / sigma^2``
  exceeds the same threshold the signal-level detector uses. Beam misalignment
  and sidelobes enter through ``|g_k(u)|``: a target outside the swept beams has a
  small ``T`` and is missed; one in a sidelobe is detected only when close enough.
  A target whose true range lies outside the range gate is missed.
* Estimates: ``d_hat ~ N(d, CRB_d)``, ``u_hat ~ N(u, CRB_u)`` with the bounds of
  :func:`rl_isac.physics.fisher.range_angle_crb` at the true amplitude and angle:
  the signal-level estimator is efficient at the integrated SNRs where pairs are
  detected (``rl-isac crb-check`` measures how close).
* Quality: ``snr_db = 10 log10(T - K)`` and the covariance from the CRB at the
  estimated SNR and angle, as the signal-level estimator reports.

Not modelled: interference from other targets and from the other RF chain
(below ``1/L`` after matched filtering unless a second target sits in the same
beam and range gate), and ML outliers at low SNR.
"""

from __future__ import annotations

import numpy as np

from rl_isac.physics.arrays import two_way_gain
from rl_isac.physics.fisher import angle_variance, range_angle_crb
from rl_isac.scenario import ScenarioConfig


def surrogate_measure(cfg: ScenarioConfig, codebook: np.ndarray, range_m: np.ndarray, u: np.ndarray,
                      side: np.ndarray, amplitude: np.ndarray, beams: np.ndarray, doppler_hz: np.ndarray,
                      gate_lo_m: np.ndarray, gate_hi_m: np.ndarray, threshold: np.ndarray, *,
                      rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw measurements for ``P`` pairs.

    Args:
        range_m, u, side, amplitude, doppler_hz, gate_lo_m, gate_hi_m, threshold: ``(P,)``.
        beams: ``(P, K, 2)`` int.
    Returns:
        dict as :meth:`rl_isac.physics.estimation.PairEstimator.estimate`.
    """
    num, num_symbols = beams.shape[:2]
    sigma2 = cfg.noise_power_w
    num_l = cfg.num_subcarriers
    g = two_way_gain(u, beams, codebook, cfg.antenna_spacing_wavelengths)  # (P, K)
    k = np.arange(num_symbols)
    phase = rng.uniform(0, 2 * np.pi, num)[:, None] + 2 * np.pi * doppler_hz[:, None] * k * cfg.symbol_duration_s
    noise = (rng.standard_normal((num, num_symbols)) + 1j * rng.standard_normal((num, num_symbols)))
    c = amplitude[:, None] * g * np.exp(1j * phase) + noise * np.sqrt(sigma2 / (2 * num_l))
    stat = num_l * np.sum(np.abs(c) ** 2, axis=1) / sigma2
    in_gate = (range_m >= gate_lo_m) & (range_m <= gate_hi_m)
    var_r, var_u = range_angle_crb(cfg, codebook, amplitude, u, beams)
    detected = (stat > threshold) & in_gate & np.isfinite(var_r) & np.isfinite(var_u)
    z = rng.standard_normal((2, num))
    r_hat = range_m + np.sqrt(np.where(detected, var_r, 0.0)) * z[0]
    u_hat = np.clip(u + np.sqrt(np.where(detected, var_u, 0.0)) * z[1], -1.0, 1.0)
    angle = side * np.arccos(u_hat)
    snr_lin = np.maximum(stat - num_symbols, 1e-3)
    g_hat = two_way_gain(u_hat, beams, codebook, cfg.antenna_spacing_wavelengths)
    energy = np.maximum(np.sum(np.abs(g_hat) ** 2, axis=-1), 1e-30)
    amp_hat = np.sqrt(snr_lin * sigma2 / (num_l * energy))
    var_r_hat, var_u_hat = range_angle_crb(cfg, codebook, amp_hat, u_hat, beams)
    var_a_hat = angle_variance(var_u_hat, angle)
    detected &= np.isfinite(var_r_hat) & np.isfinite(var_a_hat) & (r_hat > 0)
    cov = np.zeros((num, 2, 2))
    cov[:, 0, 0] = np.where(detected, var_r_hat, 0.0)
    cov[:, 1, 1] = np.where(detected, var_a_hat, 0.0)
    return {"range_m": np.where(detected, r_hat, 0.0), "angle_rad": np.where(detected, angle, 0.0),
            "snr_db": 10 * np.log10(snr_lin), "detected": detected, "cov": cov}
