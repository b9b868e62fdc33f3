"""BS-local estimation of range and angle for each assigned pair (the paper's
"classical parameter estimation", Sec. 2.2), from the samples of eq. (2).

Per pair (BS ``m``, RF chain ``n``, target ``i``) the samples of chain ``n`` are
matched-filtered with chain ``n``'s own known symbols, ``z = v conj(s)``; the other
chain's echoes become noise-like (their symbols are independent), and the
model of :mod:`rl_isac.physics.fisher` holds.

Range: the per-symbol range profiles ``Y_k(tau) = sum_l z[k, l] e^{j 2 pi delta_f l_c tau}``
are combined non-coherently, ``f(tau) = sum_k |Y_k(tau)|^2``: this is the ML
criterion with an unknown complex amplitude per symbol. ``f`` is searched on a
zero-padded FFT grid inside the range gate, then refined by Newton steps on the
exact DTFT (sub-bin accurate, unbiased at high SNR).

Detection: ``T = f(tau_hat) / (L sigma^2)`` is Gamma(K, 1) under noise alone per
range cell; the threshold gives false-alarm probability ``detection_pfa`` over the
independent cells of the gate. Below it the pair yields no measurement.

Angle: with ``c_k = Y_k(tau_hat) / L`` the per-symbol amplitudes, the model
``c_k = beta e^{j 2 pi nu k T_0} g_k(u)`` (known beam patterns ``g_k``, unknown complex
``beta`` and Doppler ``nu``) gives the concentrated ML criterion
``|sum_k conj(g_k(u)) e^{-j 2 pi nu k T_0} c_k|^2 / sum_k |g_k(u)|^2``, maximised on a grid
over ``u`` (within the span of the pair's beams) and ``nu`` (the physical Doppler
range) and refined by successive parabolic fits. ``theta = +arccos(u)`` for a BS
on the bottom edge, ``-arccos(u)`` for one on the top edge.

Gating: when the CU gives a predicted position the search covers only
``|d - d_pred| <= range_gate_m``, so another target in the same beam at another
range cannot replace the assigned one; without a prediction the whole area's
range span is searched and the strongest echo wins.

Quality: the integrated SNR estimate ``T - K`` and the covariance of
``(range, angle)`` from the CRB evaluated at the estimated amplitude and angle.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from rl_isac.physics.arrays import codebook_directions, two_way_gain
from rl_isac.physics.echo import subcarrier_index
from rl_isac.physics.fisher import angle_variance, range_angle_crb
from rl_isac.scenario import SPEED_OF_LIGHT_MPS, ScenarioConfig

FFT_OVERSAMPLING = 2
NEWTON_STEPS = 3
ANGLE_GRID = 32
DOPPLER_GRID = 5
PARABOLIC_ROUNDS = 3


def detection_threshold(cfg: ScenarioConfig, gate_width_m: float) -> float:
    """Threshold on ``T`` for false-alarm probability ``cfg.detection_pfa`` over the gate."""
    cells = max(1.0, gate_width_m / cfg.range_resolution_m)
    pfa_cell = -np.expm1(np.log1p(-cfg.detection_pfa) / cells)
    return float(stats.gamma.isf(pfa_cell, cfg.num_tracking_symbols))


class PairEstimator:
    """Vectorised range/angle estimator for a batch of pairs of one scenario.

    Args:
        cfg: the scenario.
        codebook: ``(N, B)`` DFT beams.
    """

    def __init__(self, cfg: ScenarioConfig, codebook: np.ndarray) -> None:
        self.cfg = cfg
        self.codebook = codebook
        self.nfft = int(2 ** np.ceil(np.log2(cfg.num_subcarriers * FFT_OVERSAMPLING)))
        self.lc = subcarrier_index(cfg.num_subcarriers)
        self.omega = 2 * np.pi * cfg.subcarrier_spacing_hz  # rad/s per subcarrier
        # Range of FFT bin n: tau_n = n / (nfft delta_f), d_n = c tau_n / 2.
        self.bin_m = SPEED_OF_LIGHT_MPS / (2 * self.nfft * cfg.subcarrier_spacing_hz)
        self.threshold_full = detection_threshold(cfg, cfg.max_range_m)
        self.threshold_gated = detection_threshold(cfg, 2 * cfg.range_gate_m)
        self.nu_max_hz = 2 * cfg.speed_mps / cfg.wavelength_m
        self.spacing = cfg.antenna_spacing_wavelengths

    # ------------------------------------------------------------------ range
    def _dtft(self, z: np.ndarray, tau: np.ndarray, order: int = 0) -> list[np.ndarray]:
        """``Y_k(tau)`` and its first ``order`` derivatives in tau, each ``(P, K)``."""
        phase = np.exp(1j * self.omega * tau[:, None] * self.lc)  # (P, L)
        weights = (1j * self.omega * self.lc) ** np.arange(order + 1)[:, None]  # (order+1, L)
        out = np.matmul(z, (phase[:, None, :] * weights).transpose(0, 2, 1))  # (P, K, order+1)
        return [out[..., j] for j in range(order + 1)]

    def estimate_range(self, z: np.ndarray, gate_lo_m: np.ndarray, gate_hi_m: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Range by ML (non-coherent over symbols).

        Args:
            z: ``(P, K, L)`` matched samples.
            gate_lo_m, gate_hi_m: ``(P,)`` range gate, metres.
        Returns:
            ``range_m (P,)``, ``statistic (P,)`` = ``T``, ``amplitudes (P, K)`` = ``c_k``.
        """
        num_l = z.shape[-1]
        spectrum = np.fft.ifft(z, n=self.nfft, axis=-1)
        power = np.sum(spectrum.real**2 + spectrum.imag**2, axis=1)  # (P, nfft), scaled by 1/nfft^2
        bins = np.arange(self.nfft) * self.bin_m
        inside = (bins[None, :] >= gate_lo_m[:, None]) & (bins[None, :] <= gate_hi_m[:, None])
        power = np.where(inside, power, -1.0)
        peak = np.argmax(power, axis=1)
        # Parabolic interpolation on the three bins around the peak (cyclic neighbours).
        rows = np.arange(len(peak))
        p0 = power[rows, peak]
        pm = np.maximum(power[rows, (peak - 1) % self.nfft], 0)
        pp = np.maximum(power[rows, (peak + 1) % self.nfft], 0)
        denom = pm - 2 * p0 + pp
        offset = np.where(denom < 0, 0.5 * (pm - pp) / np.where(denom < 0, denom, -1), 0.0)
        tau = (peak + np.clip(offset, -0.5, 0.5)) / (self.nfft * self.cfg.subcarrier_spacing_hz)
        # Newton on f(tau) = sum_k |Y_k(tau)|^2 with exact DTFT derivatives.
        for _ in range(NEWTON_STEPS):
            y0, y1, y2 = self._dtft(z, tau, order=2)
            grad = 2 * np.sum(np.real(y0.conj() * y1), axis=1)
            hess = 2 * np.sum(np.abs(y1) ** 2 + np.real(y0.conj() * y2), axis=1)
            step = np.where(hess < 0, -grad / np.where(hess < 0, hess, -1), 0.0)
            max_step = 0.5 / (self.nfft * self.cfg.subcarrier_spacing_hz)
            tau = tau + np.clip(step, -max_step, max_step)
        (y0,) = self._dtft(z, tau)
        stat = np.sum(np.abs(y0) ** 2, axis=1) / (num_l * self.cfg.noise_power_w)
        return SPEED_OF_LIGHT_MPS * tau / 2, stat, y0 / num_l

    # ------------------------------------------------------------------ angle
    def _pattern(self, u: np.ndarray, beams: np.ndarray) -> np.ndarray:
        """``g_k(u)`` for a grid: u ``(P, G)``, beams ``(P, K, 2)`` -> ``(P, G, K)``."""
        return two_way_gain(u, beams[:, None], self.codebook, self.spacing)

    def _criterion(self, c: np.ndarray, g: np.ndarray, nu: np.ndarray) -> np.ndarray:
        """Concentrated likelihood: c ``(P, K)``, g ``(P, G, K)``, nu ``(P, H)`` -> ``(P, G, H)``."""
        k = np.arange(c.shape[-1])
        rot = np.exp(-1j * 2 * np.pi * nu[..., None] * k * self.cfg.symbol_duration_s)  # (P, H, K)
        num = np.abs(np.einsum("pgk,phk,pk->pgh", g.conj(), rot, c)) ** 2
        den = np.sum(np.abs(g) ** 2, axis=-1)[..., None]
        return num / np.maximum(den, 1e-30)

    def estimate_u(self, c: np.ndarray, beams: np.ndarray) -> np.ndarray:
        """ML estimate of ``u = cos(theta)`` from per-symbol amplitudes.

        Args:
            c: ``(P, K)`` complex amplitudes.
            beams: ``(P, K, 2)`` int.
        Returns:
            ``(P,)`` in ``[-1, 1]``.
        """
        dirs = codebook_directions(self.codebook.shape[1])
        width = 2.0 / self.codebook.shape[1]
        u_beams = dirs[beams.reshape(len(beams), -1)]
        lo = np.clip(u_beams.min(axis=1) - 1.5 * width, -1, 1)
        hi = np.clip(u_beams.max(axis=1) + 1.5 * width, -1, 1)
        frac = np.linspace(0, 1, ANGLE_GRID)
        u_grid = lo[:, None] + (hi - lo)[:, None] * frac
        nu_grid = np.broadcast_to(np.linspace(-self.nu_max_hz, self.nu_max_hz, DOPPLER_GRID), (len(c), DOPPLER_GRID))
        crit = self._criterion(c, self._pattern(u_grid, beams), nu_grid)  # (P, G, H)
        flat = crit.reshape(len(c), -1).argmax(axis=1)
        gi, hi_idx = np.unravel_index(flat, crit.shape[1:])
        rows = np.arange(len(c))
        u = u_grid[rows, gi]
        nu = nu_grid[rows, hi_idx]
        h_u = (hi - lo) / (ANGLE_GRID - 1)
        h_nu = np.full(len(c), 2 * self.nu_max_hz / (DOPPLER_GRID - 1))
        for _ in range(PARABOLIC_ROUNDS):
            u, h_u = self._parabolic(c, beams, u, nu, h_u, along="u")
            nu, h_nu = self._parabolic(c, beams, u, nu, h_nu, along="nu")
        return np.clip(u, -1, 1)

    def _parabolic(self, c, beams, u, nu, h, along):
        offsets = np.array([-1.0, 0.0, 1.0])
        if along == "u":
            pts = u[:, None] + h[:, None] * offsets
            vals = self._criterion(c, self._pattern(np.clip(pts, -1, 1), beams), nu[:, None])[..., 0]
        else:
            pts = nu[:, None] + h[:, None] * offsets
            vals = self._criterion(c, self._pattern(u[:, None], beams), pts)[:, 0, :]
        fm, f0, fp = vals[:, 0], vals[:, 1], vals[:, 2]
        denom = fm - 2 * f0 + fp
        concave = denom < 0
        best_side = np.where(fp > fm, 1.0, -1.0)
        offset = np.where(concave, 0.5 * (fm - fp) / np.where(concave, denom, -1.0), best_side)
        offset = np.clip(offset, -1.0, 1.0)
        centre = pts[:, 1] + offset * h
        return centre, h * np.where(concave, 0.35, 1.0)

    # ------------------------------------------------------------------ all together
    def estimate(self, z: np.ndarray, beams: np.ndarray, side: np.ndarray, gate_lo_m: np.ndarray,
                 gate_hi_m: np.ndarray, gated: np.ndarray) -> dict[str, np.ndarray]:
        """Estimate every pair.

        Args:
            z: ``(P, K, L)`` matched samples.
            beams: ``(P, K, 2)`` int (tx, rx).
            side: ``(P,)`` +1 for a BS on the bottom edge (theta in (0, pi)), -1 on the top edge.
            gate_lo_m, gate_hi_m: ``(P,)`` range gate, metres.
            gated: ``(P,)`` bool, a CU prediction defined the gate (sets the threshold).
        Returns:
            dict of ``(P,)`` arrays ``range_m``, ``angle_rad``, ``snr_db``, ``detected`` and ``cov (P, 2, 2)``.
        """
        num = len(z)
        if num == 0:
            empty = np.zeros(0)
            return {"range_m": empty, "angle_rad": empty, "snr_db": empty, "detected": empty.astype(bool),
                    "cov": np.zeros((0, 2, 2))}
        range_m, stat, c = self.estimate_range(z, gate_lo_m, gate_hi_m)
        threshold = np.where(gated, self.threshold_gated, self.threshold_full)
        detected = stat > threshold
        u = self.estimate_u(c, beams)
        angle = side * np.arccos(u)
        snr_lin = np.maximum(stat - self.cfg.num_tracking_symbols, 1e-3)
        # Covariance: CRB at the estimated amplitude and angle.
        g = two_way_gain(u, beams, self.codebook, self.spacing)
        energy = np.maximum(np.sum(np.abs(g) ** 2, axis=-1), 1e-30)
        amp_hat = np.sqrt(snr_lin * self.cfg.noise_power_w / (self.cfg.num_subcarriers * energy))
        var_r, var_u = range_angle_crb(self.cfg, self.codebook, amp_hat, u, beams)
        var_a = angle_variance(var_u, angle)
        detected &= np.isfinite(var_r) & np.isfinite(var_a)
        cov = np.zeros((num, 2, 2))
        cov[:, 0, 0] = np.where(detected, var_r, 0.0)
        cov[:, 1, 1] = np.where(detected, var_a, 0.0)
        return {"range_m": np.where(detected, range_m, 0.0), "angle_rad": np.where(detected, angle, 0.0),
                "snr_db": 10 * np.log10(snr_lin), "detected": detected, "cov": cov}
