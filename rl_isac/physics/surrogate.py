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

from rl_isac.physics.arrays import beam_patterns
from rl_isac.physics.fisher import PairBound
from rl_isac.scenario import ScenarioConfig


class SurrogateFrontEnd:
    """The surrogate draws of one scenario, with its constants computed once.

    Args:
        cfg: the scenario.
        codebook: ``(N, B)`` DFT beams (only the shape is used).
    """

    def __init__(self, cfg: ScenarioConfig, codebook: np.ndarray) -> None:
        self.patterns = beam_patterns(codebook.shape[0], codebook.shape[1], cfg.antenna_spacing_wavelengths)
        self.bound = PairBound(cfg)
        self.num_symbols = cfg.num_tracking_symbols
        self.num_subcarriers = cfg.num_subcarriers
        self.sigma2 = cfg.noise_power_w
        self.noise_std = np.sqrt(self.sigma2 / (2 * self.num_subcarriers))  # per real part of c_k
        self.doppler_phase = 2 * np.pi * cfg.symbol_duration_s * np.arange(self.num_symbols)  # (K,) rad per Hz

    def draw(self, range_m: np.ndarray, u: np.ndarray, side: np.ndarray, amplitude: np.ndarray,
             beams: np.ndarray, doppler_hz: np.ndarray, gate_lo_m, gate_hi_m, threshold, *,
             rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """Draw ``P`` pairs (arguments as :func:`surrogate_measure`; gates and threshold may be scalars).

        Returns:
            ``range_m, angle_rad, snr_db, detected, var_range_m2, var_angle_rad2``, each ``(P,)``;
            range, angle and variances are 0 where not detected.
        """
        num, num_symbols = beams.shape[:2]
        directions = self.patterns.directions[beams]  # (P, K, 2)
        r, dr = self.patterns.real_pattern(u, directions, derivative=True)  # (P, K)
        g = self.patterns.pair_phase(beams) * r  # g_k(u), (P, K)
        # Random draws, in this order: RCS phase (P,), then one normal vector for the noise of c
        # (real parts (P, K), imaginary parts (P, K)) and the two estimate errors (2, P).
        rcs_phase = rng.uniform(0, 2 * np.pi, num)
        normal = rng.standard_normal(2 * num * num_symbols + 2 * num)
        noise_re = normal[: num * num_symbols].reshape(num, num_symbols)
        noise_im = normal[num * num_symbols: 2 * num * num_symbols].reshape(num, num_symbols)
        err = normal[2 * num * num_symbols:].reshape(2, num)
        phase = rcs_phase[:, None] + doppler_hz[:, None] * self.doppler_phase
        c = amplitude[:, None] * g * np.exp(1j * phase) + (noise_re + 1j * noise_im) * self.noise_std
        stat = (c.real**2 + c.imag**2).sum(axis=1) * (self.num_subcarriers / self.sigma2)
        in_gate = (range_m >= gate_lo_m) & (range_m <= gate_hi_m)
        var_r, var_u = self.bound.from_pattern(amplitude * amplitude, r, dr)
        detected = (stat > threshold) & in_gate & np.isfinite(var_r) & np.isfinite(var_u)
        r_hat = range_m + np.sqrt(np.where(detected, var_r, 0.0)) * err[0]
        u_hat = np.clip(u + np.sqrt(np.where(detected, var_u, 0.0)) * err[1], -1.0, 1.0)
        angle = side * np.arccos(u_hat)
        snr_lin = np.maximum(stat - num_symbols, 1e-3)
        # Reported quality: the CRB at the estimated SNR and angle, as the signal-level estimator reports.
        r_hat_pat, dr_hat_pat = self.patterns.real_pattern(u_hat, directions, derivative=True)
        energy = np.maximum((r_hat_pat * r_hat_pat).sum(axis=1), 1e-30)
        amp_sq = snr_lin * (self.sigma2 / self.num_subcarriers) / energy
        var_r_hat, var_u_hat = self.bound.from_pattern(amp_sq, r_hat_pat, dr_hat_pat)
        var_a_hat = var_u_hat / np.maximum(np.sin(angle) ** 2, 1e-12)
        detected &= np.isfinite(var_r_hat) & np.isfinite(var_a_hat) & (r_hat > 0)
        return (np.where(detected, r_hat, 0.0), np.where(detected, angle, 0.0), 10 * np.log10(snr_lin), detected,
                np.where(detected, var_r_hat, 0.0), np.where(detected, var_a_hat, 0.0))


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
    args = [np.asarray(a, dtype=float) for a in (range_m, u, side, amplitude)]
    rng_m, ang, snr_db, detected, var_r, var_a = SurrogateFrontEnd(cfg, codebook).draw(
        *args, np.asarray(beams), np.asarray(doppler_hz, float), gate_lo_m, gate_hi_m, threshold, rng=rng)
    cov = np.zeros((len(rng_m), 2, 2))
    cov[:, 0, 0] = var_r
    cov[:, 1, 1] = var_a
    return {"range_m": rng_m, "angle_rad": ang, "snr_db": snr_db, "detected": detected, "cov": cov}
