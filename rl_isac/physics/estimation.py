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
import scipy.fft
from scipy import stats

from rl_isac.physics.arrays import beam_patterns
from rl_isac.physics.echo import Workspace, phase_ramp, scratch, subcarrier_index
from rl_isac.physics.fisher import PairBound
from rl_isac.scenario import SPEED_OF_LIGHT_MPS, ScenarioConfig

FFT_OVERSAMPLING = 2
NEWTON_STEPS = 3
# Newton evaluates the DTFT and its derivatives by a Taylor series about the last exactly
# evaluated point (orders 0 .. TAYLOR_TERMS - 1 from one matrix product) while it stays
# within TAYLOR_RADIUS (in s = omega tau (L - 1) / 2, i.e. radians at the band edge):
# truncation <= r^(T-2) / (T-2)! = 3e-11 (second derivative) and r^T / T! = 4e-14 (value)
# relative to sum_l |z_l|, far below rounding of the samples. Farther, it re-evaluates exactly.
TAYLOR_TERMS = 12
TAYLOR_RADIUS = 0.4
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

    Works in the precision of the samples it is given (complex64 or complex128) for the
    sums over subcarriers and in float64 for everything per pair.

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
        self.patterns = beam_patterns(codebook.shape[0], codebook.shape[1], self.spacing)
        self.bound = PairBound(cfg)
        num_l = cfg.num_subcarriers
        # Pruned DTFT for narrow gates: FFT bins start .. start + cols - 1 (start = the gate's first bin
        # minus one, so both neighbours of any bin inside are there) as one matrix product,
        # (z e^{j 2 pi start l / nfft}) @ gate_dtft with gate_dtft[l, j] = e^{j 2 pi j l / nfft}.
        self.gate_cols = int(np.floor(2 * cfg.range_gate_m / self.bin_m)) + 3
        l_idx = np.arange(num_l)
        self._l_idx = l_idx
        self._gate_dtft = {np.complex128: np.exp(2j * np.pi * np.outer(l_idx, np.arange(self.gate_cols))
                                                 / self.nfft)}
        # Newton in t = omega tau (rad per subcarrier): d^n/dt^n of e^{j t l_c} is (j l_c)^n e^{j t l_c}.
        self._newton_weights = {np.complex128: (1j * self.lc)[:, None] ** np.arange(3)}  # (L, 3)
        # ... and in s = t l_max (l_max = (L - 1) / 2) for the Taylor series: weights (j x_l)^n, |x_l| <= 1.
        self._l_max = max((num_l - 1) / 2, 0.5)
        self._taylor_weights = {np.complex128: (1j * self.lc / self._l_max)[:, None] ** np.arange(TAYLOR_TERMS)}
        self._inv_factorial = 1.0 / np.cumprod(np.r_[1.0, np.arange(1.0, TAYLOR_TERMS)])  # 1 / n!
        self._s_step_max = np.pi * self._l_max / self.nfft  # half an FFT bin in s
        # Angle search constants.
        self._frac = np.linspace(0, 1, ANGLE_GRID)
        self._nu_grid = np.linspace(-self.nu_max_hz, self.nu_max_hz, DOPPLER_GRID)  # (H,)
        self._k_t0 = 2 * np.pi * np.arange(cfg.num_tracking_symbols) * cfg.symbol_duration_s  # (K,)
        self._rot_grid = np.exp(-1j * self._k_t0[:, None] * self._nu_grid)  # (K, H)
        self._offsets = np.array([-1.0, 0.0, 1.0])

    def _const(self, table: dict, dtype) -> np.ndarray:
        """``table`` cast to ``dtype`` (cached)."""
        dtype = np.dtype(dtype).type
        if dtype not in table:
            table[dtype] = table[np.complex128].astype(dtype)
        return table[dtype]

    # ------------------------------------------------------------------ range
    def _dtft(self, z: np.ndarray, tau: np.ndarray, order: int = 0) -> list[np.ndarray]:
        """``Y_k(tau)`` and its first ``order`` derivatives in tau, each ``(P, K)`` complex128."""
        num, num_symbols, num_l = z.shape
        t = self.omega * np.asarray(tau, float)
        ramp = phase_ramp(t, num_l, (num_l - 1) / 2, z.dtype.type)  # (P, L) e^{j t l_c}
        weights = self._const(self._newton_weights, z.dtype)[:, : order + 1]
        out = np.matmul((z * ramp[:, None, :]).reshape(-1, num_l), weights).reshape(num, num_symbols, order + 1)
        out = out.astype(np.complex128, copy=False)
        return [out[..., j] * self.omega**j for j in range(order + 1)]

    def _coarse_peak(self, z: np.ndarray, gate_lo_m: np.ndarray, gate_hi_m: np.ndarray,
                     work: Workspace | None = None) -> np.ndarray:
        """Delay of the strongest FFT bin inside each gate, refined by a parabola: ``(P,)`` seconds.

        ``f(tau) = sum_k |Y_k(tau)|^2`` on the zero-padded FFT grid (bin ``tau_n = n / (nfft delta_f)``),
        bins outside the gate excluded (and counted as 0 for the parabola). Narrow gates
        evaluate only their own bins (a pruned DTFT, one matrix product); wide ones take
        the full FFT. Both give the same grid values.
        """
        num, num_symbols, num_l = z.shape
        lo_bin = np.ceil(np.asarray(gate_lo_m, float) / self.bin_m).astype(np.int64)
        hi_bin = np.floor(np.asarray(gate_hi_m, float) / self.bin_m).astype(np.int64)
        count = np.broadcast_to(hi_bin - lo_bin + 1, (num,))
        rows = np.arange(num)
        if count.max() <= self.gate_cols - 2 and count.min() >= 1:
            start = np.broadcast_to(lo_bin - 1, (num,))  # bin of column 0
            # (P, L): e^{j 2 pi start l / nfft}
            ramp = phase_ramp(2 * np.pi / self.nfft * start, num_l, 0.0, z.dtype.type, work=work, name="gate_ramp")
            shifted = np.multiply(z, ramp[:, None, :], out=scratch(work, "shifted", z.shape, z.dtype))
            spec = np.matmul(shifted.reshape(-1, num_l), self._const(self._gate_dtft, z.dtype))
            spec = spec.reshape(num, num_symbols, -1)
            power = (spec.real**2 + spec.imag**2).sum(axis=1).astype(float)  # (P, cols)
            col = np.arange(self.gate_cols)
            power = np.where((col >= 1) & (col <= count[:, None]), power, -1.0)
            peak = power.argmax(axis=1)
            p0 = power[rows, peak]
            pm = np.maximum(power[rows, peak - 1], 0)
            pp = np.maximum(power[rows, peak + 1], 0)
            peak = peak + start
        else:
            spectrum = scipy.fft.ifft(z, n=self.nfft, axis=-1)
            power = (spectrum.real**2 + spectrum.imag**2).sum(axis=1).astype(float)  # (P, nfft)
            bins = np.arange(self.nfft) * self.bin_m
            inside = (bins >= np.asarray(gate_lo_m, float)[..., None]) & (bins <= np.asarray(gate_hi_m, float)[..., None])
            power = np.where(inside, power, -1.0)
            peak = np.argmax(power, axis=1)
            # Parabolic interpolation on the three bins around the peak (cyclic neighbours).
            p0 = power[rows, peak]
            pm = np.maximum(power[rows, (peak - 1) % self.nfft], 0)
            pp = np.maximum(power[rows, (peak + 1) % self.nfft], 0)
        denom = pm - 2 * p0 + pp
        offset = np.where(denom < 0, 0.5 * (pm - pp) / np.where(denom < 0, denom, -1), 0.0)
        return (peak + np.clip(offset, -0.5, 0.5)) / (self.nfft * self.cfg.subcarrier_spacing_hz)

    def estimate_range(self, z: np.ndarray, gate_lo_m: np.ndarray, gate_hi_m: np.ndarray, *,
                       work: Workspace | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Range by ML (non-coherent over symbols).

        Args:
            z: ``(P, K, L)`` matched samples (complex64 or complex128).
            gate_lo_m, gate_hi_m: ``(P,)`` range gate, metres (or scalars).
            work: optional :class:`rl_isac.physics.echo.Workspace` for the large temporaries.
        Returns:
            ``range_m (P,)``, ``statistic (P,)`` = ``T``, ``amplitudes (P, K)`` = ``c_k``.
        """
        num, num_symbols, num_l = z.shape
        # Newton on f(s) = sum_k |Y_k(s)|^2, s = omega tau l_max, with exact DTFT derivatives
        # Y^(n)_k(s) = sum_l z[k, l] (j x_l)^n e^{j s x_l}, x_l = l_c / l_max: all from the
        # Taylor series about an anchor s_a, Y^(n)(s_a + d) = sum_i d^i / i! Y^(n + i)(s_a).
        scale = self.omega * self._l_max  # s per second of delay
        s = scale * self._coarse_peak(z, gate_lo_m, gate_hi_m, work)
        anchor, derivs = s, self._derivatives(z, s, work)
        for _ in range(NEWTON_STEPS):
            if np.abs(s - anchor).max() > TAYLOR_RADIUS:
                anchor, derivs = s, self._derivatives(z, s, work)
            y = self._taylor(derivs, s - anchor, 3)  # (P, K, 3)
            y0c = y[..., 0].conj()
            grad = 2 * (y0c * y[..., 1]).real.sum(axis=1)
            hess = 2 * (y[..., 1].real ** 2 + y[..., 1].imag ** 2 + (y0c * y[..., 2]).real).sum(axis=1)
            step = np.where(hess < 0, -grad / np.where(hess < 0, hess, -1), 0.0)
            s = s + np.minimum(np.maximum(step, -self._s_step_max), self._s_step_max)
        if np.abs(s - anchor).max() > TAYLOR_RADIUS:
            anchor, derivs = s, self._derivatives(z, s, work)
        y0 = self._taylor(derivs, s - anchor, 1)[..., 0]  # (P, K)
        stat = (y0.real**2 + y0.imag**2).sum(axis=1) / (num_l * self.cfg.noise_power_w)
        return SPEED_OF_LIGHT_MPS * s / (2 * scale), stat, y0 / num_l

    def _derivatives(self, z: np.ndarray, s: np.ndarray, work: Workspace | None = None) -> np.ndarray:
        """``Y^(n)_k(s)`` for ``n = 0 .. TAYLOR_TERMS - 1``: ``(P, K, TAYLOR_TERMS)`` complex128 (one matrix product)."""
        num, num_symbols, num_l = z.shape
        # (P, L): e^{j s x_l}
        ramp = phase_ramp(s / self._l_max, num_l, (num_l - 1) / 2, z.dtype.type, work=work, name="newton_ramp")
        shifted = np.multiply(z, ramp[:, None, :], out=scratch(work, "shifted", z.shape, z.dtype))
        out = np.matmul(shifted.reshape(-1, num_l), self._const(self._taylor_weights, z.dtype))
        return out.reshape(num, num_symbols, TAYLOR_TERMS).astype(np.complex128, copy=False)

    def _taylor(self, derivs: np.ndarray, delta: np.ndarray, orders: int) -> np.ndarray:
        """``Y^(j)(s_a + delta)`` for ``j < orders`` from the derivatives at ``s_a``: ``(P, K, orders)``."""
        terms = derivs.shape[-1]
        coef = delta[:, None] ** np.arange(terms) * self._inv_factorial  # (P, T): delta^i / i!
        series = np.zeros((len(delta), terms, orders))
        for j in range(orders):
            series[:, j:, j] = coef[:, : terms - j]
        return np.matmul(derivs, series)

    # ------------------------------------------------------------------ angle
    def estimate_u(self, c: np.ndarray, beams: np.ndarray) -> np.ndarray:
        """ML estimate of ``u = cos(theta)`` from per-symbol amplitudes.

        With ``g_k(u) = phase_k r_k(u)`` (:class:`rl_isac.physics.arrays.BeamPatterns`) the criterion is
        ``|sum_k r_k(u) e^{-j 2 pi nu k T_0} c'_k|^2 / sum_k r_k(u)^2`` with ``c'_k = conj(phase_k) c_k``:
        a grid over ``u`` (the span of the pair's beams plus 1.5 beam widths each side) and ``nu``,
        then ``PARABOLIC_ROUNDS`` rounds of parabolic fits along ``u`` and along ``nu``.

        Args:
            c: ``(P, K)`` complex amplitudes.
            beams: ``(P, K, 2)`` int.
        Returns:
            ``(P,)`` in ``[-1, 1]``.
        """
        u, _ = self._search_u(c, beams, self.patterns.directions[beams])
        return u

    def _search_u(self, c: np.ndarray, beams: np.ndarray, directions: np.ndarray):
        num = len(c)
        patterns = self.patterns
        c_real = c * patterns.pair_phase(beams).conj()  # c'_k: (P, K)
        width = 2.0 / patterns.size
        u_beams = directions.reshape(num, -1)
        lo = np.clip(u_beams.min(axis=1) - 1.5 * width, -1, 1)
        hi = np.clip(u_beams.max(axis=1) + 1.5 * width, -1, 1)
        u_grid = lo[:, None] + (hi - lo)[:, None] * self._frac  # (P, G)
        r_grid = patterns.real_pattern(u_grid, directions[:, None])  # (P, G, K)
        num_grid = np.matmul(r_grid, c_real[:, :, None] * self._rot_grid)  # (P, G, H)
        den = np.maximum((r_grid * r_grid).sum(axis=-1), 1e-30)  # (P, G)
        crit = (num_grid.real**2 + num_grid.imag**2) / den[..., None]
        flat = crit.reshape(num, -1).argmax(axis=1)
        gi, hi_idx = np.divmod(flat, DOPPLER_GRID)
        rows = np.arange(num)
        u = u_grid[rows, gi]
        nu = self._nu_grid[hi_idx]
        h_u = (hi - lo) / (ANGLE_GRID - 1)
        h_nu = np.full(num, 2 * self.nu_max_hz / (DOPPLER_GRID - 1))
        for _ in range(PARABOLIC_ROUNDS):
            # along u at the current nu
            pts = u[:, None] + h_u[:, None] * self._offsets  # (P, 3)
            r3 = patterns.real_pattern(np.clip(pts, -1, 1), directions[:, None])  # (P, 3, K)
            v = c_real * np.exp(-1j * nu[:, None] * self._k_t0)  # (P, K)
            s = np.matmul(r3, v[:, :, None])[..., 0]
            vals = (s.real**2 + s.imag**2) / np.maximum((r3 * r3).sum(axis=-1), 1e-30)
            u, h_u = _parabolic_step(pts, vals, h_u)
            # along nu at the current u
            pts = nu[:, None] + h_nu[:, None] * self._offsets
            r1 = patterns.real_pattern(u, directions)  # (P, K)
            rot = np.exp(-1j * pts[:, :, None] * self._k_t0)  # (P, 3, K)
            s = np.matmul(rot, (r1 * c_real)[:, :, None])[..., 0]
            vals = (s.real**2 + s.imag**2) / np.maximum((r1 * r1).sum(axis=-1), 1e-30)[:, None]
            nu, h_nu = _parabolic_step(pts, vals, h_nu)
        return np.clip(u, -1, 1), nu

    # ------------------------------------------------------------------ all together
    def estimate(self, z: np.ndarray, beams: np.ndarray, side: np.ndarray, gate_lo_m: np.ndarray,
                 gate_hi_m: np.ndarray, gated: np.ndarray) -> dict[str, np.ndarray]:
        """Estimate every pair.

        Args:
            z: ``(P, K, L)`` matched samples (complex64 or complex128).
            beams: ``(P, K, 2)`` int (tx, rx).
            side: ``(P,)`` +1 for a BS on the bottom edge (theta in (0, pi)), -1 on the top edge.
            gate_lo_m, gate_hi_m: ``(P,)`` range gate, metres.
            gated: ``(P,)`` bool, a CU prediction defined the gate (sets the threshold).
        Returns:
            dict of ``(P,)`` arrays ``range_m``, ``angle_rad``, ``snr_db``, ``detected`` and ``cov (P, 2, 2)``.
        """
        threshold = np.where(gated, self.threshold_gated, self.threshold_full)
        range_m, angle, snr_db, detected, var_r, var_a = self.estimate_pairs(
            np.asarray(z), np.asarray(beams), np.asarray(side, float), gate_lo_m, gate_hi_m, threshold)
        cov = np.zeros((len(range_m), 2, 2))
        cov[:, 0, 0] = var_r
        cov[:, 1, 1] = var_a
        return {"range_m": range_m, "angle_rad": angle, "snr_db": snr_db, "detected": detected, "cov": cov}

    def estimate_pairs(self, z: np.ndarray, beams: np.ndarray, side: np.ndarray, gate_lo_m, gate_hi_m,
                       threshold, *, work: Workspace | None = None) -> tuple[np.ndarray, ...]:
        """:meth:`estimate` without the dict: gates and threshold may be scalars; ``work`` as
        :meth:`estimate_range`.

        Returns:
            ``range_m, angle_rad, snr_db, detected, var_range_m2, var_angle_rad2``, each ``(P,)``;
            range, angle and variances are 0 where not detected.
        """
        num = len(z)
        if num == 0:
            empty = np.zeros(0)
            return empty, empty, empty, empty.astype(bool), empty, empty
        range_m, stat, c = self.estimate_range(z, gate_lo_m, gate_hi_m, work=work)
        detected = stat > threshold
        directions = self.patterns.directions[beams]  # (P, K, 2)
        u, _ = self._search_u(c, beams, directions)
        angle = side * np.arccos(u)
        snr_lin = np.maximum(stat - self.cfg.num_tracking_symbols, 1e-3)
        # Covariance: CRB at the estimated amplitude and angle.
        r, dr = self.patterns.real_pattern(u, directions, derivative=True)
        energy = np.maximum((r * r).sum(axis=-1), 1e-30)
        amp_sq = snr_lin * (self.cfg.noise_power_w / self.cfg.num_subcarriers) / energy
        var_r, var_u = self.bound.from_pattern(amp_sq, r, dr)
        var_a = var_u / np.maximum(np.sin(angle) ** 2, 1e-12)
        detected &= np.isfinite(var_r) & np.isfinite(var_a)
        return (np.where(detected, range_m, 0.0), np.where(detected, angle, 0.0), 10 * np.log10(snr_lin), detected,
                np.where(detected, var_r, 0.0), np.where(detected, var_a, 0.0))


def _parabolic_step(pts: np.ndarray, vals: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One parabolic fit through ``vals`` at ``pts = centre + h (-1, 0, 1)`` (each ``(P, 3)``).

    Returns the new centre (the vertex, limited to one step; one step uphill where the
    three points are not concave) and the next step (``0.35 h`` where concave, else ``h``).
    """
    fm, f0, fp = vals[:, 0], vals[:, 1], vals[:, 2]
    denom = fm - 2 * f0 + fp
    concave = denom < 0
    best_side = np.where(fp > fm, 1.0, -1.0)
    offset = np.where(concave, 0.5 * (fm - fp) / np.where(concave, denom, -1.0), best_side)
    offset = np.clip(offset, -1.0, 1.0)
    return pts[:, 1] + offset * h, h * np.where(concave, 0.35, 1.0)
