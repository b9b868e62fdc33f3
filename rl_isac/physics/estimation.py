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

Detection: ``T(tau) = f(tau) / (L sigma^2)`` is Gamma(K, 1) at any one delay under
noise alone, but the detector takes its maximum over the continuous gate, so the
threshold ``u`` solves the Rice up-crossing bound for this chi-square process,
``P(max T > u) ~= G_K(u) + W_tau sqrt(lambda_2 u / pi) g_K(u) = detection_pfa``
(``G_K``/``g_K`` the Gamma(K, 1) survival/density, ``W_tau = 2 W_gate / c``,
``lambda_2 = (2 pi delta_f)^2 mean(l_c^2)`` the second spectral moment of the range
profile); a test measures the false-alarm rate against ``detection_pfa``. Below the
threshold the pair yields no measurement.

Detection model in full (for anyone predicting ``P_d``, e.g. :mod:`rl_isac.physics.detection`):
a peak is reported when (1) ``T > u * F * rho`` with ``F >= 1`` the gate's floor in units of its
thermal-noise mean ``K`` (CFAR: the other RF chain's echoes, white after the matched filter, raise
it): the median of the whole range profile (hundreds of cells, with its CA-CFAR factor
``rho ~ 1.01``) unless the gate's own mean with the peak's echo removed exceeds it by more than its
spread (local structure: skirts of strong echoes, a second echo; then that mean, ``rho = 1``; see
:meth:`PairEstimator._floors`), (2) the strongest bin is a local maximum of the
profile (not the rising skirt of an echo beyond the gate), (3) the Hann-tapered profile also
exceeds ``TAPER_CHECK u F`` in the peak's resolution cell (no range sidelobe of a stronger echo),
(4) the angle estimate lies within one beam spacing of the pair's beams, and (5) the bound is
informative. For an isolated target with idle other chain, ``F ~ 1`` and (2)-(5) hold, so
``P_d ~ P(T > u)`` with ``T ~`` noncentral chi-square (``2K`` dof, noncentrality ``2 SNR``); the CU
further ignores peaks with angle std above ``MAX_ANGLE_STD_RAD`` (endfire, range-only).

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

Merges: two targets closer than about one resolution cell in range and angle give one peak between
them. A per-pair statistic reveals some of them: the single-echo fit of the angle criterion leaves more than
the noise where two echoes at different angles share the cell (:meth:`PairEstimator.mismatch_factor`); for the
rest, the network, which has the CU's predictions of every
target (the gates), adds their spread to the peaks they may have merged into (:func:`merge_spread`).

Quality: the integrated SNR estimate ``T - K`` and the covariance of
``(range, angle)`` from the CRB evaluated at the estimated amplitude and angle, widened
where the CRB is known not to hold (see :meth:`PairEstimator.estimate_peaks`). One such
case is not a low-SNR effect: a target at or just beyond the edge of the pair's swept
beams (the CU aimed them at a prediction that is off by a beam, typically at start-up
or after a turn) leaves the angle criterion with two maxima of nearly equal height, the
true one on the patterns' flank and one inside the beams (weaker in pattern energy, so
with a larger gain): the four amplitudes cannot tell them apart, and the ML picks the
wrong one in ~15 % of such blocks even at 40 dB, 2-3 deg off against a CRB of 0.03 deg.
The search therefore refines the best rival maximum too, reports the higher one, and
adds the other's posterior weight times its squared distance to ``var(u)``.

Implementation (same estimates as the plain formulation, to rounding):

* the FFT grid inside a narrow gate is a pruned DTFT (one matrix product over the
  gate's bins, ``gate_cols`` of them, instead of an ``nfft``-point FFT per symbol);
* Newton's DTFT and derivatives come from one matrix product at the peak bin
  (``TAYLOR_TERMS`` derivatives) and a Taylor series from there, exact to ~1e-11;
* the angle criterion uses the real factor of the two-way pattern (its constant phase
  applied to ``c_k`` once), the coarse ``(u, nu)`` grid in float32 (it only picks the
  starting cell), the parabolic rounds in float64;
* samples may be complex64 (the network's choice); per-pair quantities are float64.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft
from scipy import stats
from scipy.optimize import brentq

from rl_isac.physics.arrays import beam_patterns
from rl_isac.physics.echo import Workspace, phase_ramp, scratch, subcarrier_index
from rl_isac.physics.fisher import PairBound
from rl_isac.scenario import SPEED_OF_LIGHT_MPS, ScenarioConfig

FFT_OVERSAMPLING = 2
NEWTON_STEPS = 3
# Newton evaluates the DTFT and its derivatives by a Taylor series about an exactly evaluated
# anchor (the peak FFT bin; orders 0 .. TAYLOR_TERMS - 1 from one matrix product) while it
# stays within TAYLOR_RADIUS of it (in s = omega tau (L - 1) / 2, i.e. radians at the band
# edge; one FFT bin is 2 pi (L - 1) / (2 nfft) = 1.6 here): truncation <= r^(T-2) / (T-2)! =
# 1e-11 (second derivative) and r^T / T! = 5e-14 (value) relative to sum_l |z_l|, below the
# rounding of the samples. Farther away it re-anchors at the current point.
TAYLOR_TERMS = 16
TAYLOR_RADIUS = 1.0
ANGLE_GRID = 32
DOPPLER_GRID = 5
PARABOLIC_ROUNDS = 3
FINE_SPAN = 2.0
"""Half-width of the final fine angle search, in coarse grid steps (:meth:`PairEstimator._refine_u`)."""
FINE_STEPS = 41
"""Points of the final fine angle search (0.1 coarse steps apart)."""
NEAR_RIVAL_SPAN = 1.0
"""Half-width of the scan for a second mode of the angle criterion next to the estimate, in beam spacings
(:meth:`PairEstimator._near_rival`)."""
NEAR_RIVAL_STEPS = 41
"""Points of that scan (0.05 beam spacings apart; odd, so the estimate itself is the middle one)."""
MISMATCH_PFA: float | None = 1e-3
"""False-alarm rate of the single-echo fit test of the angle criterion (:meth:`PairEstimator.fit_residual`): a
peak whose residual exceeds the Gamma(K - 2) quantile at this rate has its covariance scaled by the residual over
its mean (the Birge ratio). ``None`` switches the test off."""
MISMATCH_SPREAD = 0.2
"""Std added (in quadrature) to ``u`` of a peak that fails the single-echo fit test, in beam spacings
(:meth:`PairEstimator.mismatch_factor`)."""
CFAR_CELLS_PER_RESOLUTION = 0.6
"""Independent cells of a gate's own measured floor per range resolution cell (its spread, in
:meth:`PairEstimator._floors`). Measured (white interference 20 dB above the noise in an empty 20 m gate,
12 000 pairs): the false-alarm rate of a threshold ``rho u F_hat`` on that floor is ``pfa`` for ``rho``
1.29 at ``pfa = 1e-2`` and 1.40 at ``1e-3``, :func:`cfar_factor`'s values at 5 cells, i.e. 0.6 per
resolution cell."""
MERGE_CELLS = 1.5
"""Another predicted target within this many resolution cells of a peak may be merged into it
(:func:`merge_spread`)."""
PROFILE_FLOOR_CELLS = 0.3
"""Independent cells of the whole range profile's median floor per subcarrier (``L`` cells over the
unambiguous range, the median's efficiency ~0.6, halved for margin): :meth:`PairEstimator._floors`."""
LOCAL_EXCESS_SIGMAS = 2.0
"""A gate's own floor counts as local structure (rather than a draw of the white floor) when it exceeds
the profile's by more than this many of its standard deviations (:meth:`PairEstimator._floors`)."""
EDGE_CELLS = 3.0
"""Peaks this close to an edge of their gate (resolution cells) are checked against the profile beyond it
(:meth:`PairEstimator._edge_sidelobe`)."""
FIRST_SIDELOBE = 0.0472
"""Power of the rectangular window's first range sidelobe relative to its main lobe (-13.26 dB)."""
SIDELOBE_MARGIN = 2.0
"""A peak within this factor (3 dB) of the first sidelobe of a stronger echo beyond the gate is no peak."""
CFAR_TABLE_POINTS = 24
CFAR_QUADRATURE = 2000


def detection_threshold(cfg: ScenarioConfig, gate_width_m: float) -> float:
    """Threshold on ``T`` for false-alarm probability ``cfg.detection_pfa`` over a gate (Rice bound).

    Args:
        gate_width_m: width of the searched range interval, metres.
    """
    known = _gate_false_alarm(cfg.num_tracking_symbols, cfg.num_subcarriers, cfg.subcarrier_spacing_hz,
                              gate_width_m)
    return _solve_threshold(known, cfg.num_tracking_symbols, cfg.detection_pfa)


def _gate_false_alarm(num_symbols: int, num_subcarriers: int, spacing_hz: float, gate_width_m: float):
    """``u -> P(max_gate T > u)`` for a known noise floor (Rice bound, see the module docstring),
    vectorised over ``u``."""
    lc = subcarrier_index(num_subcarriers)
    lambda2 = (2 * np.pi * spacing_hz) ** 2 * np.mean(lc**2)  # 1/s^2
    width_s = 2 * gate_width_m / SPEED_OF_LIGHT_MPS

    def probability(u):
        upcrossings = width_s * np.sqrt(lambda2 * u / np.pi) * stats.gamma.pdf(u, num_symbols)
        return stats.gamma.sf(u, num_symbols) + upcrossings

    return probability


def _solve_threshold(probability, num_symbols: int, pfa: float) -> float:
    return float(brentq(lambda u: probability(u) - pfa, num_symbols + 0.5, 50.0 * num_symbols + 200.0,
                        xtol=1e-10))


def cfar_factor(cfg: ScenarioConfig, gate_width_m, floor_cells: float) -> np.ndarray:
    """CFAR factor ``rho >= 1`` of gates ``gate_width_m`` (metres, any shape): with the floor ``F_hat``
    estimated, a threshold ``rho u F_hat`` on ``T`` has the false-alarm probability ``detection_pfa``.

    ``u`` (:func:`detection_threshold`) holds for a known floor. An estimated floor fluctuates, and the
    false alarms follow its low draws. With ``F_hat / F ~ Gamma(n K, 1 / (n K))`` (``n`` independent cells
    of ``K``-symbol statistics), ``rho`` solves ``E[P(max_gate T > rho u F_hat / F)] = pfa`` (the CA-CFAR
    multiplier of a chi-square detector); ``floor_cells`` is ``n``. Tabulated once per scenario over gate widths
    and interpolated in log width.
    """
    log_w, factors = _cfar_table(cfg.num_tracking_symbols, cfg.num_subcarriers, cfg.subcarrier_spacing_hz,
                                 cfg.detection_pfa, cfg.range_resolution_m, cfg.max_range_m, float(floor_cells))
    width = np.maximum(np.asarray(gate_width_m, float), np.exp(log_w[0]))
    return np.interp(np.log(width), log_w, factors)


@functools.lru_cache(maxsize=32)
def _cfar_table(num_symbols: int, num_subcarriers: int, spacing_hz: float, pfa: float, res_m: float,
                max_range_m: float, floor_cells: float) -> tuple[np.ndarray, np.ndarray]:
    """Log gate widths ``(n,)`` and their factors ``(n,)`` for :func:`cfar_factor`."""
    widths = np.geomspace(res_m, max(2 * max_range_m, 2 * res_m), CFAR_TABLE_POINTS)
    quantiles = (np.arange(CFAR_QUADRATURE) + 0.5) / CFAR_QUADRATURE
    factors = np.empty(len(widths))
    for n, width in enumerate(widths):
        known = _gate_false_alarm(num_symbols, num_subcarriers, spacing_hz, width)
        u = _solve_threshold(known, num_symbols, pfa)
        dof = max(floor_cells, 1.0) * num_symbols
        ratio = stats.gamma.ppf(quantiles, dof, scale=1.0 / dof)  # F_hat / F at equal-probability points
        def excess(r, known=known, u=u, ratio=ratio):
            return np.mean(np.minimum(known(r * u * ratio), 1.0)) - pfa

        factors[n] = brentq(excess, 1.0, 50.0, xtol=1e-6)
    return np.log(widths), factors


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
        self._profile_bins = scipy.fft.next_fast_len(cfg.num_subcarriers)
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
        self._gate_col = np.arange(self.gate_cols)
        self._inv_bin_m = 1.0 / self.bin_m
        self._bin_phase = 2 * np.pi / self.nfft  # rad per subcarrier per bin
        self._offsets_int = np.array([-1, 0, 1])
        l_idx = np.arange(num_l)
        self._gate_dtft = {np.complex128: np.exp(2j * np.pi * np.outer(l_idx, np.arange(self.gate_cols))
                                                 / self.nfft)}
        # Rows n = -1 .. top_bin - 1 of e^{j 2 pi n l_c / nfft}: every bin a gate inside the area can
        # touch (row n + 1), built per dtype on first use; bins beyond fall back to phase_ramp.
        self._top_bin = int(np.ceil(cfg.max_range_m / self.bin_m)) + self.gate_cols + 2
        self._bin_ramps: dict = {}
        # Newton in s = omega tau l_max (l_max = (L - 1) / 2): d^n/ds^n of e^{j s x_l} is (j x_l)^n e^{j s x_l},
        # x_l = l_c / l_max in [-1, 1].
        self._l_max = max((num_l - 1) / 2, 0.5)
        self._taylor_weights = {np.complex128: (1j * self.lc / self._l_max)[:, None] ** np.arange(TAYLOR_TERMS)}
        self._taylor_factors = np.r_[0.0, 1.0 / np.arange(1.0, TAYLOR_TERMS), 0.0]  # (T + 1,)
        # For _taylor_matrix: entry (n, j) takes coefficient n - j, or the trailing 0 where n < j.
        self._taylor_index = {orders: np.array([[n - j if n >= j else TAYLOR_TERMS for j in range(orders)]
                                                for n in range(TAYLOR_TERMS)]) for orders in (1, 3)}
        self._s_step_max = np.pi * self._l_max / self.nfft  # half an FFT bin in s
        # Angle search constants.
        self._grid_steps = np.arange(ANGLE_GRID, dtype=float)
        self._grid_margin = 1.5 * 2.0 / codebook.shape[1]  # 1.5 beam widths in u
        self._fine_offsets = np.linspace(-FINE_SPAN, FINE_SPAN, FINE_STEPS)  # (F,) in coarse steps
        spacing_u = 2.0 / codebook.shape[1]  # one beam spacing in u
        self._near_offsets = np.linspace(-NEAR_RIVAL_SPAN, NEAR_RIVAL_SPAN, NEAR_RIVAL_STEPS) * spacing_u
        self._nu_grid = np.linspace(-self.nu_max_hz, self.nu_max_hz, DOPPLER_GRID)  # (H,)
        self._nu_step = 2 * self.nu_max_hz / (DOPPLER_GRID - 1)
        self._k_t0 = 2 * np.pi * np.arange(cfg.num_tracking_symbols) * cfg.symbol_duration_s  # (K,)
        self._minus_j_k_t0 = -1j * self._k_t0
        self._rot_grid = np.exp(-1j * self._k_t0[:, None] * self._nu_grid)  # (K, H)
        self._offsets = np.array([-1.0, 0.0, 1.0])
        self._offsets4 = np.array([-1.0, 0.0, 1.0, 0.0])
        # Hann taper over subcarriers, w = 0.5 + 0.5 cos(alpha l_c), alpha = 2 pi / (L - 1), scaled to unit
        # mean square (noise statistics unchanged); its coherent power gain is mean(w)^2 / mean(w^2) = 2/3.
        self._taper_alpha = 2 * np.pi / max(num_l - 1, 1)
        hann = 0.5 + 0.5 * np.cos(self._taper_alpha * self.lc)
        self._taper_scale = 1.0 / np.sqrt(np.mean(hann**2))
        self._taper = (hann * self._taper_scale).astype(np.float32)
        # f / (L sigma^2) is Gamma(K, 1) under noise alone: its median is the floor's unit.
        self._floor_scale = 1.0 / (num_l * cfg.noise_power_w * stats.gamma.median(cfg.num_tracking_symbols))

    def _const(self, table: dict, dtype) -> np.ndarray:
        """``table`` cast to ``dtype`` (cached)."""
        dtype = np.dtype(dtype).type
        if dtype not in table:
            table[dtype] = table[np.complex128].astype(dtype)
        return table[dtype]

    # ------------------------------------------------------------------ range
    def _coarse_peak(self, z: np.ndarray, gate_lo_m: np.ndarray, gate_hi_m: np.ndarray,
                     work: Workspace | None = None, exclude_m: np.ndarray | None = None,
                     floor: bool = False, keep: dict | None = None):
        """The strongest FFT bin inside each gate ``(P,)`` int and its parabolic offset ``(P,)`` in bins.

        ``f(tau) = sum_k |Y_k(tau)|^2`` on the zero-padded FFT grid (bin ``tau_n = n / (nfft delta_f)``),
        bins outside the gate excluded (and counted as 0 for the parabola). Narrow gates
        evaluate only their own bins (a pruned DTFT, one matrix product); wide ones take
        the full FFT. Both give the same grid values.

        ``exclude_m`` ``(P, E)``: ranges whose resolution cell (``|d - d_e| < range_resolution_m``)
        is left out of the search (peaks already found). With ``floor=True`` the median of ``f``
        over the gate's bins in units of its noise-only median ``L sigma^2 median(Gamma(K, 1))``
        is returned as a fourth value ``(P,)``: the noise-plus-interference floor of the gate. The third
        value ``(P,)`` bool says whether the strongest bin is a local maximum of the unmasked profile (a
        maximum at the gate's edge that rises beyond it is a stronger echo's skirt, not an echo).
        ``keep``: a dict that receives, on the pruned path only, the gate's spectrum ``"spec"``
        ``(P, K, cols)`` (column ``j`` = bin ``start + j``, phase reference as ``_gate_dtft``),
        ``"start"`` ``(P,)`` and ``"outside"`` ``(P, cols)`` bool.
        """
        num, num_symbols, num_l = z.shape
        rows = np.arange(num)
        lo_bin = np.ceil(np.asarray(gate_lo_m, float) * self._inv_bin_m)  # first bin inside the gate
        count = np.floor(np.asarray(gate_hi_m, float) * self._inv_bin_m) - lo_bin + 1  # bins inside
        if np.ndim(count) == 1 and count.max() <= self.gate_cols - 2 and count.min() >= 1:
            start = lo_bin.astype(np.int64) - 1  # bin of column 0
            shifted = np.multiply(z, self._bin_ramp(start, z.dtype, work)[:, None, :],
                                  out=scratch(work, "shifted", z.shape, z.dtype))
            spec = np.matmul(shifted.reshape(-1, num_l), self._const(self._gate_dtft, z.dtype))  # (P K, cols)
            power = np.square(np.abs(spec)).reshape(num, num_symbols, -1).sum(axis=1)  # (P, cols)
            outside = self._gate_col > count[:, None]
            outside[:, 0] = True
            if keep is not None:
                # ... and the same with the Hann taper across subcarriers (sidelobes < -31 dB), for the check
                # of :meth:`_tapered_check`.
                spec_w = np.matmul((shifted * self._taper).reshape(-1, num_l), self._const(self._gate_dtft, z.dtype))
                keep.update(spec=spec.reshape(num, num_symbols, -1), start=start, outside=outside.copy(),
                            spec_w=spec_w.reshape(num, num_symbols, -1))
            if floor:
                level = np.nanmedian(np.where(outside, np.nan, power), axis=1) * self._floor_scale
            if exclude_m is not None:
                col_m = (start[:, None] + self._gate_col) * self.bin_m  # (P, cols)
                outside |= (np.abs(col_m[:, :, None] - exclude_m[:, None, :]) < self.cfg.range_resolution_m).any(-1)
            raw = power.copy()
            power[outside] = -1.0
            peak = power.argmax(axis=1)
            around = power[rows[:, None], peak[:, None] + self._offsets_int].astype(float)  # (P, 3)
            unmasked = raw[rows[:, None], peak[:, None] + self._offsets_int]
            peak = peak + start
        else:
            spectrum = scipy.fft.ifft(z, n=self.nfft, axis=-1)
            power = (spectrum.real**2 + spectrum.imag**2).sum(axis=1).astype(float)  # (P, nfft)
            bins = np.arange(self.nfft) * self.bin_m
            lo_m, hi_m = np.asarray(gate_lo_m, float)[..., None], np.asarray(gate_hi_m, float)[..., None]
            inside = (bins >= lo_m) & (bins <= hi_m)
            if floor:
                level = np.nanmedian(np.where(inside, power, np.nan), axis=1) * (self._floor_scale * self.nfft**2)
            if exclude_m is not None:
                inside &= ~(np.abs(bins[None, :, None] - exclude_m[:, None, :]) < self.cfg.range_resolution_m).any(-1)
            raw = power
            power = np.where(inside, power, -1.0)
            peak = np.argmax(power, axis=1)
            around = power[rows[:, None], (peak[:, None] + self._offsets_int) % self.nfft]  # cyclic neighbours
            unmasked = raw[rows[:, None], (peak[:, None] + self._offsets_int) % self.nfft]
        # Parabolic interpolation on the three bins around the peak (bins outside the gate count as 0).
        fit = np.maximum(around, 0.0) @ _PARABOLA  # 0.5 (p_- - p_+), p_- - 2 p_0 + p_+
        offset = np.divide(fit[:, 0], fit[:, 1], out=np.zeros(num), where=fit[:, 1] < 0)
        offset = np.minimum(np.maximum(offset, -0.5), 0.5)
        # A maximum at the gate's edge that keeps rising outside it is the skirt of a stronger echo beyond
        # the gate (its range sidelobes), not an echo inside: no peak.
        is_peak = (unmasked[:, 1] >= unmasked[:, 0]) & (unmasked[:, 1] >= unmasked[:, 2])
        if floor:
            return peak, offset, is_peak, level
        return peak, offset, is_peak

    def _bin_ramp(self, bins: np.ndarray, dtype, work: Workspace | None) -> np.ndarray:
        """``e^{j 2 pi n l_c / nfft}`` for integer bins ``n (P,)``: ``(P, L)`` of ``dtype`` (table rows)."""
        table = self._bin_ramps.get(dtype)
        if table is None:
            rows = np.arange(-1, self._top_bin)
            table = self._bin_ramps[dtype] = np.exp(2j * np.pi / self.nfft * np.outer(rows, self.lc)).astype(dtype)
        if bins.min() >= -1 and bins.max() < len(table) - 1:
            return np.take(table, bins + 1, axis=0, out=scratch(work, "bin_ramp", (len(bins), table.shape[1]), dtype))
        num_l = table.shape[1]
        return phase_ramp(self._bin_phase * bins, num_l, (num_l - 1) / 2, dtype, work=work, name="bin_ramp")

    def estimate_range(self, z: np.ndarray, gate_lo_m: np.ndarray, gate_hi_m: np.ndarray, *,
                       work: Workspace | None = None, exclude_m: np.ndarray | None = None,
                       keep: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Range by ML (non-coherent over symbols).

        Args:
            z: ``(P, K, L)`` matched samples (complex64 or complex128).
            gate_lo_m, gate_hi_m: ``(P,)`` range gate, metres (or scalars).
            work: optional :class:`rl_isac.physics.echo.Workspace` for the large temporaries.
            exclude_m: optional ``(P, E)`` ranges whose resolution cells the coarse search skips.
            keep: optional dict for the coarse search's gate spectrum (see :meth:`_coarse_peak`).
        Returns:
            ``range_m (P,)``, ``statistic (P,)`` = ``T``, ``amplitudes (P, K)`` = ``c_k``.
        """
        num, num_symbols, num_l = z.shape
        # Newton on f(s) = sum_k |Y_k(s)|^2, s = omega tau l_max, with exact DTFT derivatives
        # Y^(n)_k(s) = sum_l z[k, l] (j x_l)^n e^{j s x_l}, x_l = l_c / l_max: all from the
        # Taylor series about an anchor s_a, Y^(n)(s_a + d) = sum_i d^i / i! Y^(n + i)(s_a).
        # In real arithmetic: the rows of X = D C (P, 2K, 3) are the real and imaginary parts of
        # (Y, Y', Y'') per symbol, so with G = X^T X: f' = 2 G_01, f'' = 2 (G_11 + G_02).
        scale = self.omega * self._l_max  # s per second of delay
        peak, offset, is_peak = self._coarse_peak(z, gate_lo_m, gate_hi_m, work, exclude_m, keep=keep)
        bin_s = self._bin_phase * self._l_max  # one FFT bin in s
        anchor = peak * bin_s
        derivs = self._derivatives(z, self._bin_ramp(peak, z.dtype, work), work)
        s = anchor + offset * bin_s
        for _ in range(NEWTON_STEPS):
            if np.abs(s - anchor).max() > TAYLOR_RADIUS:
                anchor, derivs = s, self._derivatives(z, self._ramp(s, z.dtype, work), work)
            x = np.matmul(derivs, self._taylor_matrix(s - anchor, 3))  # (P, 2K, 3)
            gram = np.matmul(x.transpose(0, 2, 1), x)  # (P, 3, 3)
            hess = gram[:, 1, 1] + gram[:, 0, 2]
            step = np.divide(gram[:, 0, 1], hess, out=np.zeros(num), where=hess < 0)  # -f'/f'' where concave
            s = s - np.minimum(np.maximum(step, -self._s_step_max), self._s_step_max)
        if np.abs(s - anchor).max() > TAYLOR_RADIUS:
            anchor, derivs = s, self._derivatives(z, self._ramp(s, z.dtype, work), work)
        y0 = np.matmul(derivs, self._taylor_matrix(s - anchor, 1))[..., 0]  # (P, 2K): Re Y_k, Im Y_k
        stat = np.square(y0).sum(axis=1) * (1.0 / (num_l * self.cfg.noise_power_w))
        stat = np.where(is_peak, stat, 0.0)  # no echo inside the gate: below any threshold
        c = (y0[:, :num_symbols] + 1j * y0[:, num_symbols:]) * (1.0 / num_l)
        return SPEED_OF_LIGHT_MPS * s / (2 * scale), stat, c

    def _ramp(self, s: np.ndarray, dtype, work: Workspace | None) -> np.ndarray:
        """``e^{j s x_l}`` for ``s (P,)``: ``(P, L)``."""
        num_l = len(self.lc)
        return phase_ramp(s / self._l_max, num_l, (num_l - 1) / 2, dtype, work=work, name="newton_ramp")

    def _derivatives(self, z: np.ndarray, ramp: np.ndarray, work: Workspace | None = None) -> np.ndarray:
        """``Y^(n)_k(s) = sum_l z[k, l] (j x_l)^n e^{j s x_l}`` for ``n < TAYLOR_TERMS`` given the ramp
        ``e^{j s x_l} (P, L)`` (one matrix product), as real rows: ``(P, 2K, TAYLOR_TERMS)`` float64,
        rows ``k`` the real and rows ``K + k`` the imaginary parts."""
        num, num_symbols, num_l = z.shape
        shifted = np.multiply(z, ramp[:, None, :], out=scratch(work, "shifted", z.shape, z.dtype))
        out = np.matmul(shifted.reshape(-1, num_l), self._const(self._taylor_weights, z.dtype))  # (P K, T)
        out = out.view(out.real.dtype).reshape(num, num_symbols, TAYLOR_TERMS, 2)
        return out.transpose(0, 3, 1, 2).reshape(num, 2 * num_symbols, TAYLOR_TERMS).astype(float)

    def _taylor_matrix(self, delta: np.ndarray, orders: int) -> np.ndarray:
        """``(P, T, orders)`` real: column ``j`` holds ``delta^i / i!`` at row ``j + i``, so that
        ``derivs @ it`` gives ``Y^(j)(s_a + delta) = sum_i delta^i / i! Y^(j + i)(s_a)``."""
        # Running products of (1, delta / 1, delta / 2, ..., delta / (T - 1), 0): delta^i / i! and a trailing 0.
        coef = delta[:, None] * self._taylor_factors
        coef[:, 0] = 1.0
        return np.cumprod(coef, axis=1)[:, self._taylor_index[orders]]

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

    def symbol_power(self, z: np.ndarray) -> np.ndarray:
        """Range-profile power ``(P, K, n)`` of each symbol of pairs ``z (P, K, L)`` on ``n = ~L`` bins over the whole
        unambiguous range (one per resolution cell: independent under noise); what :meth:`symbol_weights` and
        :meth:`_profile_floor` take their medians of (one FFT for both)."""
        spec = scipy.fft.ifft(z, n=self._profile_bins, axis=-1)
        return np.square(spec.real) + np.square(spec.imag)

    def symbol_weights(self, z: np.ndarray, power: np.ndarray | None = None) -> np.ndarray:
        """Whitening weights ``w_k = sqrt(min_j F_j / F_k)`` ``(P, K)`` (at most 1) of the symbols of pairs
        ``z (P, K, L)``: ``F_k`` the floor of symbol ``k``, the median of its range profile over the whole
        unambiguous range (robust to the few echoes in it; the median of one complex Gaussian's power is ``ln 2``
        times its mean), in noise units, at least 1.

        The other RF chain's echoes are white after the matched filter, but its beams change from symbol to
        symbol, so their leak does too: in the tenth of the pairs at I = 8 whose floor it raises, the K floors
        differ by a median 2.7-37x (``results/tracks/symbol_floors.txt``). Scaling symbol ``k`` by ``w_k`` makes the
        noise plus interference equal over the symbols, at the level of the quietest: the non-coherent range
        criterion becomes the ML one (symbols weighted by ``1 / F_k``), the detection statistic the Gamma(K) of
        the threshold again, and the angle search and the bound use the patterns scaled alike
        (:meth:`_search_u`, ``weights``). Noise-limited pairs keep ``w ~ 1``. Without it, such gates gave
        false peaks (range errors of metres) and second-peak ghosts: on two sets of 32 development episodes at
        I = 8 the peaks outside the 99.9 % gate went from 0.34 % to 0.17 % and 0.20 %, at I = 4 from 0.22 / 0.17 %
        to 0.11 / 0.07 % (``results/tracks/nis_breakdown.txt``). Closed
        loop (``ekf-milp``, 800 development worlds, ``results/tracks/dev_variants.md`` rows ``cfar-merge`` and
        ``symbol-whitening``) the lost fraction moved from 0.0069 to 0.0055 at I = 8 and 0.0044 to 0.0046 at
        I = 6, each decided by a handful of start-up and crossing swaps either way.
        """
        n = self._profile_bins
        power = self.symbol_power(z) if power is None else power
        floors = np.median(power, axis=2) * (n * n / (len(self.lc) * self.cfg.noise_power_w * np.log(2)))
        floors = np.maximum(floors, 1.0)
        return np.sqrt(floors.min(axis=1, keepdims=True) / floors)

    def _shape(self, u: np.ndarray, directions: np.ndarray, weights: np.ndarray | None, dtype=np.float64):
        """:meth:`~rl_isac.physics.arrays.BeamPatterns.pattern_shape` ``(P, ..., K)`` with symbol ``k`` scaled by
        ``weights (P, K)`` (the whitening of :meth:`symbol_weights`; ``None``: unweighted)."""
        r = self.patterns.pattern_shape(u, directions, dtype)
        if weights is None:
            return r
        w = weights.reshape(weights.shape[0], *([1] * (r.ndim - 2)), weights.shape[1])
        return (r * w).astype(r.dtype, copy=False)

    def _search_u(self, c: np.ndarray, beams: np.ndarray, directions: np.ndarray, rival: bool = False,
                  weights: np.ndarray | None = None):
        """The angle search of :meth:`estimate_u`; also returns the Doppler estimate ``(P,)`` Hz.

        ``weights (P, K)``: the symbols' whitening (:meth:`symbol_weights`) already applied to ``c``; the
        patterns are scaled alike, so the criterion is the ML one for unequal noise over the symbols.

        The criterion does not depend on the scale of ``r``, so ``N r`` is used throughout;
        the coarse grid is evaluated in float32 (it only picks the starting cell), the
        parabolic refinement in float64.

        With ``rival=True`` the best other local maximum of the coarse criterion (over ``u``, the
        Doppler maximised out; at least two grid cells from the best one) is refined as well, and
        the higher of the two refined maxima is the estimate. Returns then also the other one's
        ``u`` ``(P,)`` (NaN where the criterion has a single maximum) and the criterion gap
        ``crit(best) - crit(other)`` ``(P,)`` (``inf`` there), in units of ``|c|^2``: the
        concentrated log-likelihood ratio of the two times the noise variance of ``c_k``.

        The span is clipped to the visible region ``[-1, 1]``, although every two-way pattern is periodic in ``u``
        (period 2 at half-wavelength spacing) and beams at one endfire also see the other end through it. Tried
        unwrapped (2026-12-02): the echoes from a few degrees off the array's axis, which lie within the noise of
        ``u = +-1``, were then put on the other side of the BS about half the time, and the detections outside the
        99.9 % gate against the truth rose from ~0.2 % to 1.5-1.6 % (``results/tracks/nis_breakdown.py``, I = 6 / 8,
        32 development episodes each). Clipped, the estimate stays on the side the CU aimed its beams at; the
        other end's echoes that come in through the period (a second target at the same range there) are then
        placed wrongly, which the gates reject (a few per 10 000 peaks). Taking them right needs the tracker to
        fuse ``u`` with a wrapped innovation instead of the angle.
        """
        num = len(c)
        patterns = self.patterns
        c_real = c * patterns.pair_phase(beams).conj()  # c'_k: (P, K)
        u_beams = directions.reshape(num, -1)
        lo = np.maximum(u_beams.min(axis=1) - self._grid_margin, -1.0)
        hi = np.minimum(u_beams.max(axis=1) + self._grid_margin, 1.0)
        h_u = (hi - lo) * (1.0 / (ANGLE_GRID - 1))
        u_grid = lo[:, None] + h_u[:, None] * self._grid_steps  # (P, G)
        r_grid = self._shape(u_grid, directions[:, None], weights, np.float32)  # (P, G, K)
        v_grid = (c_real[:, :, None] * self._rot_grid).astype(np.complex64)  # (P, K, H)
        s_grid = np.matmul(r_grid, v_grid.view(np.float32)).view(np.complex64)  # (P, G, H)
        den = np.maximum((r_grid * r_grid).sum(axis=-1), 1e-30)  # (P, G)
        crit = np.square(np.abs(s_grid)) / den[..., None]  # (P, G, H)
        gi, hi_idx = np.divmod(crit.reshape(num, -1).argmax(axis=1), DOPPLER_GRID)
        u = u_grid[np.arange(num), gi]
        nu = self._nu_grid[hi_idx]
        if not rival:
            u, nu, _ = self._refine_u(c_real, directions, u, nu, h_u, weights)
            return u, nu
        # The other local maxima of the profile over u (interior grid points, two cells or more from the best).
        prof = crit.max(axis=2)  # (P, G)
        inner = (prof[:, 1:-1] >= prof[:, :-2]) & (prof[:, 1:-1] >= prof[:, 2:])
        inner &= np.abs(np.arange(1, ANGLE_GRID - 1)[None, :] - gi[:, None]) >= 2
        score = np.where(inner, prof[:, 1:-1], -np.inf)
        g2 = score.argmax(axis=1) + 1
        rows2 = np.flatnonzero(np.isfinite(score[np.arange(num), g2 - 1]))
        g2 = g2[rows2]
        nu2 = self._nu_grid[crit[rows2, g2].argmax(axis=1)]
        stack = np.concatenate([np.arange(num), rows2])
        u_all, nu_all, val = self._refine_u(c_real[stack], directions[stack], np.concatenate([u, u_grid[rows2, g2]]),
                                            np.concatenate([nu, nu2]), h_u[stack],
                                            None if weights is None else weights[stack])
        u, nu, best = u_all[:num], nu_all[:num], val[:num]
        u_other = np.full(num, np.nan)
        gap = np.full(num, np.inf)
        u2, nu2b, val2 = u_all[num:], nu_all[num:], val[num:]
        distinct = np.abs(u2 - u[rows2]) >= h_u[rows2]  # refinement may climb back to the best maximum
        rows2, u2, nu2b, val2 = rows2[distinct], u2[distinct], nu2b[distinct], val2[distinct]
        better = val2 > best[rows2]
        u_other[rows2] = np.where(better, u[rows2], u2)
        gap[rows2] = np.abs(val2 - best[rows2])
        u[rows2[better]], nu[rows2[better]] = u2[better], nu2b[better]
        return u, nu, u_other, gap

    def _refine_u(self, c_real: np.ndarray, directions: np.ndarray, u: np.ndarray, nu: np.ndarray,
                  h_u: np.ndarray, weights=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``PARABOLIC_ROUNDS`` rounds of parabolic fits from the coarse cell ``(u, nu)`` (rows ``(P,)``), then a
        fine search over ``u`` (``FINE_STEPS`` points over ``+-FINE_SPAN`` coarse steps) and two parabolic rounds.

        Returns the refined ``u`` (clipped to ``[-1, 1]``), ``nu`` and the criterion there ``(P,)``.
        """
        num = len(c_real)
        h0 = h_u
        h_nu = np.full(num, self._nu_step)
        # Each round: a parabola along u at the current nu, then one along nu at the new u. The
        # pattern at the new u and at the next round's three u points comes from one evaluation
        # at (u - h_u, u, u + h_u) clipped to [-1, 1] and u itself. Along nu the denominator
        # sum_k r_k^2 is common to the three points and so left out (the vertex does not change).
        r4 = self._shape(self._u_points(u, h_u), directions[:, None], weights)  # (P, 4, K)
        for _ in range(PARABOLIC_ROUNDS):
            # along u at the current nu: three points u + h_u (-1, 0, 1)
            r3 = r4[:, :3]
            v = c_real * np.exp(nu[:, None] * self._minus_j_k_t0)  # (P, K) complex
            u, h_u = _parabolic_step(u, _u_criterion(r3, v), h_u)
            r4 = self._shape(self._u_points(u, h_u), directions[:, None], weights)
            # along nu at the new u: three points nu + h_nu (-1, 0, 1)
            rot = np.exp((nu[:, None] + h_nu[:, None] * self._offsets)[:, :, None] * self._minus_j_k_t0)  # (P, 3, K)
            s3 = np.matmul(rot, (r4[:, 3] * c_real)[:, :, None])[..., 0]  # (P, 3)
            nu, h_nu = _parabolic_step(nu, np.square(np.abs(s3)), h_nu)
        u = np.minimum(np.maximum(u, -1.0), 1.0)
        # Polish on a fine grid at the refined Doppler: where one beam holds nearly all the echo (a target near
        # its boresight, the others near their nulls) the criterion is flat-topped over several coarse cells,
        # the three-point parabolas above misplace its maximum (biases up to 0.25 beam spacings, ~1 deg,
        # whatever the SNR), and only the weak beams' responses locate it. The criterion on
        # u + h0 (-FINE_SPAN..FINE_SPAN) in FINE_STEPS points, then two parabolic rounds at the fine step.
        v = c_real * np.exp(nu[:, None] * self._minus_j_k_t0)  # (P, K)
        u_fine = np.minimum(np.maximum(u[:, None] + h0[:, None] * self._fine_offsets, -1.0), 1.0)  # (P, F)
        crit_f = _u_criterion(self._shape(u_fine, directions[:, None], weights), v)  # (P, F)
        u = u_fine[np.arange(num), crit_f.argmax(axis=1)]
        h_f = h0 * (2.0 * FINE_SPAN / (FINE_STEPS - 1))
        for _ in range(2):
            r3 = self._shape(self._u_points(u, h_f)[:, :3], directions[:, None], weights)
            u, h_f = _parabolic_step(u, _u_criterion(r3, v), h_f)
        u = np.minimum(np.maximum(u, -1.0), 1.0)
        r = self._shape(u[:, None], directions[:, None], weights)[:, 0]
        s = (r * v).sum(axis=1)
        return u, nu, np.square(np.abs(s)) / np.maximum((r * r).sum(axis=1), 1e-30)

    def _near_rival(self, c: np.ndarray, beams: np.ndarray, directions: np.ndarray, u: np.ndarray, nu: np.ndarray,
                    weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """A second mode of the angle criterion within ``NEAR_RIVAL_SPAN`` beam spacings of the estimate ``u``.

        Where every symbol uses the same beam for transmit and receive, the two-way patterns ``r_k = R_k^2`` are
        non-negative, and only the ratios of the symbols' magnitudes locate the target. Near the boresight of the
        sweep's edge beam, with the others near their nulls, the same ratios recur on the beam's far side: the
        criterion has two maxima a fraction of a beam spacing apart, of equal height up to the noise, so the ML
        angle takes either, whatever the SNR (evaluation world 1000000014, I = 4: a 41 dB target 0.17 spacings
        inside the edge beam of the sweep 10-13, estimated 0.44 spacings off, on the far side, in 55 % of 300
        draws; the CRB's std is 0.05 spacings). The coarse grid of :meth:`_search_u` cannot see such a pair (two
        or three of its cells apart, often a single plateau on it), so its rival is some far maximum and the
        reported covariance missed the other mode: this scan finds it.

        The criterion at the refined Doppler ``nu`` on ``u + NEAR_RIVAL_STEPS`` offsets over ``+-NEAR_RIVAL_SPAN``
        spacings; its best local maximum other than the estimate's own point and neighbours, polished by two
        parabolic rounds. Where it is higher than the estimate's, the two change places (the estimate becomes
        the higher mode).

        Args:
            c: ``(P, K)`` complex amplitudes (whitened as for :meth:`_search_u`); beams: ``(P, K, 2)`` int;
            directions: ``(P, K, 2)`` their ``u``; u, nu: ``(P,)`` the estimate and its Doppler (Hz);
            weights: ``(P, K)`` the symbols' whitening or ``None``.
        Returns:
            ``(u, u_near, gap, crit_u)``, each ``(P,)``: the estimate (changed where the near mode is higher), the
            other mode (NaN where there is none), ``crit(u) - crit(u_near)`` in units of ``|c|^2`` (``inf`` where
            none) and the criterion at the returned ``u`` (for :meth:`fit_residual`; the scan holds it already).
        """
        num = len(c)
        u_near = np.full(num, np.nan)
        gap = np.full(num, np.inf)
        if num == 0:
            return u, u_near, gap, np.zeros(0)
        v = c * self.patterns.pair_phase(beams).conj() * np.exp(nu[:, None] * self._minus_j_k_t0)  # (P, K)
        grid = np.minimum(np.maximum(u[:, None] + self._near_offsets, -1.0), 1.0)  # (P, N)
        crit = _u_criterion(self._shape(grid, directions[:, None], weights), v)  # (P, N)
        mid = NEAR_RIVAL_STEPS // 2
        crit_u = crit[:, mid].copy()  # offset 0: the estimate itself
        inner = (crit[:, 1:-1] >= crit[:, :-2]) & (crit[:, 1:-1] >= crit[:, 2:])  # local maxima, interior points
        idx = np.arange(1, NEAR_RIVAL_STEPS - 1)
        inner &= np.abs(idx - mid)[None, :] >= 2
        inner &= np.diff(grid, axis=1)[:, 1:] > 0  # not a point clipped onto its neighbour at u = +-1
        score = np.where(inner, crit[:, 1:-1], -np.inf)
        j = score.argmax(axis=1)
        rows = np.flatnonzero(np.isfinite(score[np.arange(num), j]))
        if rows.size == 0:
            return u, u_near, gap, crit_u
        u2 = grid[rows, j[rows] + 1]
        h = np.full(rows.size, self._near_offsets[1] - self._near_offsets[0])
        for _ in range(2):
            r3 = self._shape(self._u_points(u2, h)[:, :3], directions[rows][:, None],
                             None if weights is None else weights[rows])
            u2, h = _parabolic_step(u2, _u_criterion(r3, v[rows]), h)
        u2 = np.minimum(np.maximum(u2, -1.0), 1.0)
        pair = np.stack([u[rows], u2], axis=1)  # (n, 2)
        vals = _u_criterion(self._shape(pair, directions[rows][:, None], None if weights is None else weights[rows]),
                            v[rows])  # (n, 2)
        distinct = np.abs(u2 - u[rows]) >= 1.5 * (self._near_offsets[1] - self._near_offsets[0])
        rows, pair, vals = rows[distinct], pair[distinct], vals[distinct]
        better = vals[:, 1] > vals[:, 0]
        u = u.copy()
        u[rows] = np.where(better, pair[:, 1], pair[:, 0])
        u_near[rows] = np.where(better, pair[:, 0], pair[:, 1])
        gap[rows] = np.abs(vals[:, 0] - vals[:, 1])
        crit_u[rows] = np.maximum(vals[:, 0], vals[:, 1])  # the higher mode is the estimate now
        return u, u_near, gap, crit_u

    @staticmethod
    def fit_residual(c: np.ndarray, crit_u: np.ndarray) -> np.ndarray:
        """What the single-echo model leaves of the amplitudes: ``sum_k |c_k|^2 - crit(u, nu)`` ``(P,)``, in units
        of ``|c|^2`` (divide by the noise variance of ``c_k`` for the test statistic of :meth:`mismatch_factor`).

        ``c``: ``(P, K)`` the amplitudes as for :meth:`_near_rival`; ``crit_u``: ``(P,)`` the criterion at the final
        estimate and its Doppler (:meth:`_near_rival`'s last output).
        """
        return np.maximum(np.square(np.abs(c)).sum(axis=1) - crit_u, 0.0)

    def mismatch_factor(self, statistic: np.ndarray) -> np.ndarray:
        """Covariance scale ``(P,)`` from the single-echo fit test: ``statistic / (K - 2)`` where it exceeds the
        Gamma(K - 2, 1) quantile at ``MISMATCH_PFA``, else 1.

        ``statistic``: the fit residual over the noise variance of ``c_k``. With one echo (complex gain, Doppler
        and ``u`` fitted to ``K`` complex amplitudes) it is Gamma(K - 2, 1); two echoes in one range cell at
        different angles leave more (the gain ratios over the symbols fit no single ``u``). The estimate is then a
        blend of the two, pulled toward the other echo by up to its share of their separation, which the CRB of
        one echo does not see. Scaling the covariance by the residual over its mean (the Birge ratio of a least-
        squares fit) is the usual cover for such a model error, but not enough here: the bias is a share of the
        separation whatever the SNR, so :meth:`estimate_peaks` also adds ``MISMATCH_SPREAD`` beam spacings of std
        to ``u`` of a flagged peak (two equal echoes 0.4-1.3 spacings apart at 28 dB, four swept beams: of the
        flagged detections 3-29 % were outside the 99.9 % gate against the nearer target with 0.05-0.1 spacings,
        none with 0.15-0.3). In evaluation world 1000000046 at I = 6 (targets 3 and 4 spawned 0.9 m apart,
        parting at one range from BS 4) the flagged peaks had been 3-20 reported stds off. Not every blend is
        flagged: with four symbols and non-negative two-way patterns a fifth of the equal-echo blends fit one echo
        at the blend's angle as well as the noise allows (``tests/physics/test_estimation.py``); those only the
        CU's predictions of both targets can cover (:func:`merge_spread`).
        """
        if not 0.0 < MISMATCH_PFA < 1.0:
            raise ValueError(f"estimation.MISMATCH_PFA = {MISMATCH_PFA!r}: a false-alarm rate must lie in (0, 1) "
                             "(None switches the fit test off)")
        dof = max(self.cfg.num_tracking_symbols - 2, 1)
        limit = _gamma_isf(MISMATCH_PFA, dof)
        return np.where(statistic > limit, statistic / dof, 1.0)

    def _u_points(self, u: np.ndarray, h_u: np.ndarray) -> np.ndarray:
        """``(P, 4)``: ``u - h_u, u, u + h_u`` clipped to ``[-1, 1]``, and ``u`` as is."""
        pts = u[:, None] + h_u[:, None] * self._offsets4
        np.minimum(np.maximum(pts[:, :3], -1.0), 1.0, out=pts[:, :3])
        return pts

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
        :meth:`estimate_range`. The strongest peak of each gate only (:meth:`estimate_peaks` with one peak).

        Returns:
            ``range_m, angle_rad, snr_db, detected, var_range_m2, var_angle_rad2``, each ``(P,)``;
            range, angle and variances are 0 where not detected.
        """
        return tuple(a[:, 0] for a in self.estimate_peaks(z, beams, side, gate_lo_m, gate_hi_m, threshold, 1,
                                                          work=work))

    def estimate_peaks(self, z: np.ndarray, beams: np.ndarray, side: np.ndarray, gate_lo_m, gate_hi_m,
                       threshold, num_peaks: int = 1, *, work: Workspace | None = None) -> tuple[np.ndarray, ...]:
        """The ``num_peaks`` strongest resolved range peaks of each gate, each with its angle and quality.

        Successive cancellation (CLEAN): peak 0 is the strongest echo in the gate (exactly as with
        one peak); the echo it implies, ``c_k e^{-j 2 pi delta_f l_c tau_hat}``, is subtracted from the
        samples and the residual searched again outside the resolution cells (``range_resolution_m``)
        of the peaks already found, and so on. Where peak 1 is detected, peak 0 is re-estimated on
        the samples with peak 1's echo removed (its sidelobes no longer bias it), and peak 1 on the
        samples with that peak 0 removed. A peak is
        detected when its statistic ``T`` exceeds ``threshold`` (the known-noise one) times the gate's CFAR
        scale (:meth:`_floors`), is no range sidelobe of a stronger echo (:meth:`_tapered_check`, and
        :meth:`_edge_sidelobe` near the gate's edges); a later peak only when the earlier ones are. Peaks are
        returned sorted by ``T``, descending.

        Reported covariance (honest rather than the bare CRB): the CRB at the estimated amplitude and
        angle with the noise power scaled by the gate's measured floor (:meth:`_floors`: the whole range
        profile's median, or the gate's own mean with all detected peaks removed where that is higher,
        in noise units, at least 1): the other RF chain's echoes and any unresolved clutter raise it, and
        the bound then covers them. The angle variance is further inflated at low SNR (:func:`angle_tail_factor`:
        the ML angle's outliers below ~20 dB are not in the CRB) and where the angle criterion has a
        rival maximum (:meth:`_search_u` with ``rival=True``): by ``w d_u^2``, ``d_u`` the distance of the
        rival and ``w = 1 / (1 + e^LLR)`` its posterior weight from the concentrated log-likelihood ratio
        ``LLR = (crit_best - crit_rival) L / (F sigma^2)``. In the test geometry (a 40 dB target 0.4 beam
        spacings beyond four swept beams) this took the detections outside the 99.9 % gate against the
        truth from 41 % to under 1 % (``tests/physics/test_estimation.py``). A second mode next to the
        estimate, closer than the coarse grid resolves (:meth:`_near_rival`: a target just inside the edge beam
        of a sweep whose symbols use one beam each for transmit and receive), adds its own term alike: in that
        test geometry from 52-84 % outside to under 2 %. Two echoes in one range cell at different angles (two
        targets at one range from the BS, under a beam spacing or two apart) give one peak whose angle is a blend of
        theirs, many CRB stds from either: where the single-echo fit of the angle criterion fails its test
        (:meth:`mismatch_factor`), the covariance is scaled by the Birge ratio and ``(MISMATCH_SPREAD x spacing)^2``
        is added to ``var(u)``.

        Returns:
            ``range_m, angle_rad, snr_db, detected, var_range_m2, var_angle_rad2``, each ``(P, num_peaks)``;
            zeros where not detected (``snr_db`` is filled for every peak searched).
        """
        num = len(z)
        cfg = self.cfg
        if num == 0:
            empty = np.zeros((0, num_peaks))
            return empty, empty, empty, empty.astype(bool), empty, empty
        gate_lo = np.broadcast_to(np.asarray(gate_lo_m, float), (num,))
        gate_hi = np.broadcast_to(np.asarray(gate_hi_m, float), (num,))
        threshold = np.broadcast_to(np.asarray(threshold, float), (num,))
        ranges = np.zeros((num, num_peaks))
        stats_ = np.zeros((num, num_peaks))
        amps = np.zeros((num, num_peaks, z.shape[1]), complex)
        valid = np.zeros((num, num_peaks), bool)
        keep: dict = {}
        # Symbols whitened by their floors: the other chain's leak differs from symbol to symbol (its beams
        # change), so the K symbols' noise-plus-interference powers are unequal (symbol_weights).
        power = self.symbol_power(z)  # (P, K, n)
        wk = self.symbol_weights(z, power)  # (P, K)
        z = (z * wk[:, :, None]).astype(z.dtype, copy=False)
        r0, t0, c0 = self.estimate_range(z, gate_lo, gate_hi, work=work, keep=keep)
        ranges[:, 0], stats_[:, 0], amps[:, 0] = r0, t0, c0
        valid[:, 0] = t0 > threshold
        floor, candidate, unresolved = self._residual_floor(z, keep, r0, c0, gate_lo, gate_hi, threshold,
                                                            valid[:, 0])
        # CFAR: the threshold holds for thermal noise; where the gate's floor is higher (the other chain's
        # echoes), it scales with it, or the interference's fluctuations would be "detections" (_floors: the
        # whole profile's white floor where the gate's own is consistent with it).
        width = gate_hi - gate_lo
        # wide gates: already a median of many cells; the whitened profile is the weighted sum of the symbols' powers
        white = self._profile_floor(z, power * np.square(wk)[:, :, None]) if "spec" in keep else floor
        floor, scale = self._floors(floor, white, width)
        threshold = threshold * scale
        valid[:, 0] &= t0 > threshold
        rows = np.flatnonzero(valid[:, 0])
        if rows.size and "spec_w" in keep:
            valid[rows, 0] = self._tapered_check(keep, rows, [], r0[rows], threshold[rows])
        if rows.size:
            valid[rows, 0] &= ~self._edge_sidelobe(z[rows], r0[rows], t0[rows], gate_lo[rows], gate_hi[rows])
        candidate &= valid[:, 0]
        # Residual left inside peak 0's own resolution cell (noise units): an unresolved second echo.
        unresolved = np.where(unresolved > threshold, unresolved, 0.0)
        residual = None
        rows = np.flatnonzero(candidate) if num_peaks > 1 else np.zeros(0, np.int64)
        for p in range(1, num_peaks):
            if rows.size == 0:
                break
            if residual is None:
                residual = z[rows] - self._echo(c0[rows], r0[rows], z.dtype)
            rp, tp, cp = self.estimate_range(residual, gate_lo[rows], gate_hi[rows], exclude_m=ranges[rows, :p])
            ok = (tp > threshold[rows]) & (np.abs(rp[:, None] - ranges[rows, :p])
                                           >= cfg.range_resolution_m).all(axis=1)
            ranges[rows, p], stats_[rows, p], amps[rows, p] = rp, tp, cp
            valid[rows, p] = ok
            residual = residual[ok] - self._echo(cp[ok], rp[ok], z.dtype)
            rows = rows[ok]
        if num_peaks > 1:
            # Peak 0 again without peak 1's echo where it is close enough for its sidelobes to bias peak 0.
            rows = np.flatnonzero(valid[:, 1] & (np.abs(ranges[:, 1] - ranges[:, 0])
                                                 < REESTIMATE_CELLS * cfg.range_resolution_m))
            if rows.size:
                clean = z[rows] - self._echo(amps[rows, 1], ranges[rows, 1], z.dtype)
                r0b, t0b, c0b = self.estimate_range(clean, gate_lo[rows], gate_hi[rows], exclude_m=ranges[rows, 1:2])
                ranges[rows, 0], stats_[rows, 0], amps[rows, 0] = r0b, t0b, c0b
                valid[rows, 0] &= t0b > threshold[rows]
                # ... and peak 1 again without the re-estimated peak 0 (one more round of cancellation).
                clean = z[rows] - self._echo(c0b, r0b, z.dtype)
                r1b, t1b, c1b = self.estimate_range(clean, gate_lo[rows], gate_hi[rows], exclude_m=r0b[:, None])
                ranges[rows, 1], stats_[rows, 1], amps[rows, 1] = r1b, t1b, c1b
                valid[rows, 1] &= t1b > threshold[rows]
            rows = np.flatnonzero(valid[:, 1])
            if rows.size and "spec_w" in keep:
                valid[rows, 1] = self._tapered_check(keep, rows, [(amps[rows, 0], ranges[rows, 0])], ranges[rows, 1],
                                                     threshold[rows])
            if rows.size:
                clean = z[rows] - self._echo(amps[rows, 0], ranges[rows, 0], z.dtype)
                valid[rows, 1] &= ~self._edge_sidelobe(clean, ranges[rows, 1], stats_[rows, 1], gate_lo[rows],
                                                       gate_hi[rows])
            # The floor of gates with a second echo, both echoes removed (peak 1's sidelobes were in it).
            rows = np.flatnonzero(valid[:, 1])
            if rows.size and "spec" in keep:
                both = self._spectral_floor(keep, rows, [(amps[rows, q], ranges[rows, q]) for q in range(2)])
                floor[rows] = self._floors(both, white[rows], width[rows])[0]
            elif rows.size:
                clean = z[rows] - self._echo(amps[rows, 0], ranges[rows, 0], z.dtype)
                clean -= self._echo(amps[rows, 1], ranges[rows, 1], z.dtype)
                _, _, _, level = self._coarse_peak(clean, gate_lo[rows], gate_hi[rows], None, floor=True)
                floor[rows] = np.maximum(np.nan_to_num(level, nan=1.0), 1.0)
        directions = self.patterns.directions[beams]  # (P, K, 2)
        out = np.zeros((6, num, num_peaks))  # range, angle, snr_db, detected, var_range, var_angle
        num_symbols = cfg.num_tracking_symbols
        # One angle search over every searched peak: peak 0 of every pair, later peaks where detected.
        rows, peaks = np.arange(num), np.zeros(num, np.int64)
        if num_peaks > 1 and valid[:, 1:].any():
            extra_rows, extra_peaks = np.nonzero(valid[:, 1:])
            rows = np.concatenate([rows, extra_rows])
            peaks = np.concatenate([peaks, extra_peaks + 1])
        c_rows = amps[rows, peaks]
        u, nu_rows, u_other, gap = self._search_u(c_rows, beams[rows], directions[rows], rival=True, weights=wk[rows])
        # ... and a second mode next to it, which the coarse grid does not resolve (_near_rival)
        u, u_near, gap_near, crit_u = self._near_rival(c_rows, beams[rows], directions[rows], u, nu_rows, wk[rows])
        residual = self.fit_residual(c_rows, crit_u)
        # An echo whose angle estimate falls more than one beam spacing outside the beams' directions came
        # in through sidelobes: its angle is not measured (the criterion's maximum sits at the edge of the
        # search span, its CRB meaningless), so it is no measurement.
        span = directions[rows].reshape(rows.size, -1)
        spacing = 2.0 / self.codebook.shape[1]
        inside_beams = (u >= span.min(axis=1) - spacing) & (u <= span.max(axis=1) + spacing)
        angle = side[rows] * np.arccos(u)
        stat = stats_[rows, peaks]
        fl = floor[rows]
        snr_lin = np.maximum(stat - num_symbols, 1e-3)  # thermal-referenced integrated SNR
        snr_eff = np.maximum(stat - num_symbols * fl, 1e-3) / fl  # over noise + interference
        # The bound's pattern sums over the whitened symbols: sum_k w_k^2 r_k^2 etc. (n, 2, 2).
        r_k, dr_k = self.patterns.real_pattern(u, directions[rows], derivative=True)
        q = np.stack([r_k * wk[rows], dr_k * wk[rows]], axis=1)
        sums = np.matmul(q, q.transpose(0, 2, 1))
        amp_sq = snr_eff * (cfg.noise_power_w / cfg.num_subcarriers) / np.maximum(sums[:, 0, 0], 1e-30)
        var = np.empty((2, rows.size))
        with np.errstate(divide="ignore", invalid="ignore"):
            _, informative = self.bound.from_sums(amp_sq, sums, out=var)
            var[1] *= angle_tail_factor(10 * np.log10(snr_eff))
            # A rival maximum of the angle criterion (the target outside or at the edge of the pair's beams):
            # the ML estimate is one of two modes whatever the SNR, which the CRB (local) does not see.
            # The posterior weight of the other mode, 1 / (1 + e^LLR) with the concentrated log-likelihood
            # ratio LLR = gap / (floor sigma^2 / L), times its squared distance, is added to var(u): the
            # mean squared error about the reported mode.
            # The near mode of _near_rival adds its own term alike (a distinct maximum: at least 1.5 scan steps
            # from the estimate; the far rival is two coarse cells or more away, or the same mode counted once).
            to_llr = cfg.num_subcarriers / (cfg.noise_power_w * fl)
            same = np.abs(u_near - u_other) < 2.0 * (self._near_offsets[1] - self._near_offsets[0])
            for other, g in ((np.where(same, np.nan, u_other), gap), (u_near, gap_near)):
                rival = np.isfinite(other)
                w_other = np.where(rival, 1.0 / (1.0 + np.exp(np.minimum(g * to_llr, 700.0))), 0.0)
                var[1] += w_other * np.square(np.where(rival, other - u, 0.0))
            var[1] /= np.maximum(np.sin(angle) ** 2, 1e-12)  # var(theta) = var(u) / sin^2(theta)
        # Peak 0 with an unresolved echo in its cell (residual above the threshold there): its estimate
        # is pulled toward the other echo by up to its share of the power, within one resolution cell in
        # range and one beam spacing in u; added to the variance as (half the cell x share)^2 and
        # (half the beam spacing x share)^2 (share = residual / (statistic + residual)).
        share = np.divide(unresolved[rows], stat + unresolved[rows], out=np.zeros(rows.size),
                          where=(peaks == 0) & (stat + unresolved[rows] > 0))
        near_excess = np.where(peaks == 0, self._near_excess[rows], 1.0)
        var *= near_excess
        var[0] *= RANGE_MODEL_FACTOR
        var[0] += np.square(0.5 * cfg.range_resolution_m * share)
        var[1] += np.square(0.5 * (2.0 / cfg.codebook_size) * share) / np.maximum(np.sin(angle) ** 2, 1e-12)
        # More than one echo in the cell (the single-echo fit of the angle criterion fails its test): the
        # estimate is a blend, biased toward the other echo, and the CRB of one echo does not cover it.
        if MISMATCH_PFA is not None:
            birge = self.mismatch_factor(residual * to_llr)
            var *= birge  # the range too: the two echoes' ranges differ within the cell
            var[1] += np.where(birge > 1.0, np.square(MISMATCH_SPREAD * spacing), 0.0) / np.maximum(
                np.sin(angle) ** 2, 1e-12)
        det = valid[rows, peaks] & informative & (ranges[rows, peaks] > 0) & inside_beams
        out[:, rows, peaks] = (np.where(det, ranges[rows, peaks], 0.0), np.where(det, angle, 0.0),
                               10 * np.log10(snr_lin), det, np.where(det, var[0], 0.0), np.where(det, var[1], 0.0))
        detected = out[3].astype(bool)
        if num_peaks > 1:
            # Later peaks valid only after valid earlier ones; sorted by statistic, descending.
            detected = np.cumprod(detected, axis=1).astype(bool)
            key = np.where(detected, stats_, -np.inf)
            order = np.argsort(-key, axis=1, kind="stable")
            out = np.take_along_axis(out, order[None], axis=2)
            detected = np.take_along_axis(detected, order, axis=1)
            out[:, ~detected] = np.where(np.arange(6)[:, None] == 2, out[:, ~detected], 0.0)
        return out[0], out[1], out[2], detected, out[4], out[5]

    def _echo(self, c: np.ndarray, range_m: np.ndarray, dtype) -> np.ndarray:
        """The echo ``c_k e^{-j 2 pi delta_f l_c tau}`` of amplitudes ``c (P, K)`` at ``range_m (P,)``:
        ``(P, K, L)``."""
        num_l = len(self.lc)
        tau = 2.0 * np.asarray(range_m, float) / SPEED_OF_LIGHT_MPS
        ramp = phase_ramp(-self.omega * tau, num_l, (num_l - 1) / 2, dtype)  # (P, L)
        return c.astype(dtype)[:, :, None] * ramp[:, None, :]

    def _residual_floor(self, z, keep, r0, c0, gate_lo, gate_hi, threshold, detected):
        """Floor of each gate with peak 0 removed ``(P,)`` (>= 1, noise units), which pairs may hold a
        second detectable peak ``(P,)`` bool, and the largest residual inside peak 0's own resolution cell
        ``(P,)`` (noise units; an echo there is not resolved from peak 0).

        On the pruned path the residual spectrum is ``spec - c_k e^{j pi j (L - 1) / nfft} D_L(x_j)`` with
        ``x_j = 2 pi (start + j - d_hat / bin_m) / nfft`` and ``D_L(x) = sin(L x / 2) / sin(x / 2)`` (the echo of
        peak 0 on the gate's bins, no new transform); otherwise (wide gates) the residual samples are
        transformed. A pair is a candidate when the residual's largest grid value outside peak 0's
        resolution cell exceeds ``0.9 threshold`` (on the 3.9x oversampled grid a peak is under-read by at
        most ~0.25 dB).
        """
        num_l = len(self.lc)
        noise_unit = 1.0 / (num_l * self.cfg.noise_power_w)
        if "spec" not in keep:
            residual = z - self._echo(c0, r0, z.dtype) * detected[:, None, None]
            _, _, _, level = self._coarse_peak(residual, gate_lo, gate_hi, None, floor=True)
            floor = np.maximum(np.nan_to_num(level, nan=1.0), 1.0)
            self._near_excess = np.ones(len(r0))
            return floor, detected.copy(), np.zeros(len(r0))
        power, floor = self._spectral_residual(keep, slice(None), [(c0 * detected[:, None], r0)])
        start, outside, cols = keep["start"], keep["outside"], self._gate_col
        col_m = (start[:, None] + cols) * self.bin_m
        near = np.abs(col_m - r0[:, None]) < self.cfg.range_resolution_m
        search = ~outside & ~near
        best = np.where(search, power, 0.0).max(axis=1) * noise_unit
        unresolved = np.where(~outside & near, power, 0.0).max(axis=1) * noise_unit  # (P,)
        # Mean residual within two cells of peak 0 over its noise-only mean K (>= 1): what the cancellation
        # left near the peak (skirts of echoes beyond the gate, unresolved ones) biases the estimate.
        around = ~outside & (np.abs(col_m - r0[:, None]) < 2 * self.cfg.range_resolution_m)
        excess = (np.where(around, power, 0.0).sum(axis=1) / np.maximum(around.sum(axis=1), 1)) * noise_unit
        self._near_excess = np.maximum(excess / (self.cfg.num_tracking_symbols * floor), 1.0)
        return floor, detected & (best > 0.9 * threshold), unresolved

    def _profile_floor(self, z: np.ndarray, power: np.ndarray | None = None) -> np.ndarray:
        """The white floor ``(n,)`` of pairs ``z (n, K, L)`` (noise units, >= 1): the median of the range profile
        over the whole unambiguous range (robust to the few echoes in it), as the floor of a wide gate; on
        ``~L`` bins (one per resolution cell: independent under noise, half the cost of ``nfft``). ``power``:
        :meth:`symbol_power` of ``z`` when already at hand."""
        n = self._profile_bins
        power = (self.symbol_power(z) if power is None else power).sum(axis=1)
        level = np.median(power, axis=1) * (self._floor_scale * n * n)
        return np.maximum(level, 1.0)

    def _floors(self, local, white, width_m) -> tuple[np.ndarray, np.ndarray]:
        """The floor ``(n,)`` of each gate and what multiplies the known-noise threshold ``(n,)``.

        ``local``: the gate's own floor (its mean with the detected echo removed, ~5 independent cells);
        ``white``: the whole profile's (:meth:`_profile_floor`, hundreds of cells). Where the local one is
        within ``LOCAL_EXCESS_SIGMAS`` of its spread above the white one, the gate holds white noise plus
        interference (the other RF chain's echoes are white after the matched filter) and the white floor
        is the better estimate: the threshold is ``u`` times it times its small CFAR factor
        (:func:`cfar_factor`, ~1.01). With the local floor alone, white interference gave 7x
        ``detection_pfa`` at 1.5x the noise and at 100x (its low draws set the threshold); now at most
        nominal (``tests/physics/test_peaks.py``). A local floor above that (the skirts of strong echoes, a
        second echo in the gate) is kept as it was, the threshold ``u`` times it.
        """
        cells = np.maximum(width_m / self.cfg.range_resolution_m * CFAR_CELLS_PER_RESOLUTION, 1.0)
        consistent = local <= white * (1.0 + LOCAL_EXCESS_SIGMAS / np.sqrt(cells * self.cfg.num_tracking_symbols))
        profile = cfar_factor(self.cfg, width_m, PROFILE_FLOOR_CELLS * self.cfg.num_subcarriers)
        return np.where(consistent, white, local), np.where(consistent, white * profile, local)

    def _edge_sidelobe(self, z: np.ndarray, range_m: np.ndarray, stat: np.ndarray, gate_lo, gate_hi) -> np.ndarray:
        """Which peaks ``(n,)`` near an edge of their gate could be a range sidelobe of a stronger echo just
        beyond it (``(n,)`` bool; ``z (n, K, L)`` the samples with the earlier peaks removed).

        The gate holds no sidelobe-free view of an echo 1-3 m beyond its edge: its first sidelobe (-13.3 dB,
        1.43 cells from it) lies inside, is a local maximum, and its Hann-tapered profile is within the
        echo's own wide main lobe, so neither test rejects it (closed loop, I = 8: a fifth of the peaks
        outside the 99.9 % gate, all 3.4 m from a target beyond the gate). For peaks within ``EDGE_CELLS``
        resolution cells of an edge the profile is evaluated beyond it (every quarter cell out to
        ``EDGE_CELLS`` cells); a peak is rejected when ``SIDELOBE_MARGIN`` times the first sidelobe of the
        strongest value there reaches its statistic.
        """
        cfg = self.cfg
        reach = EDGE_CELLS * cfg.range_resolution_m
        lo, hi = np.broadcast_to(gate_lo, range_m.shape), np.broadcast_to(gate_hi, range_m.shape)
        near_lo, near_hi = range_m - lo < reach, hi - range_m < reach
        out = np.zeros(len(range_m), bool)
        rows = np.flatnonzero(near_lo | near_hi)
        if rows.size == 0:
            return out
        steps = np.arange(1, 4 * EDGE_CELLS + 1) * (cfg.range_resolution_m / 4)  # (O,)
        sign = np.where(near_lo[rows], -1.0, 1.0)
        edge = np.where(near_lo[rows], lo[rows], hi[rows])
        beyond = np.maximum(edge[:, None] + sign[:, None] * steps, 0.0)  # (n, O) metres
        ramp = phase_ramp(self.omega * 2.0 * beyond / SPEED_OF_LIGHT_MPS, len(self.lc), (len(self.lc) - 1) / 2,
                          z.dtype)  # (n, O, L): the matched DTFT at those ranges
        spec = np.matmul(z[rows], ramp.transpose(0, 2, 1))  # (n, K, O)
        power = (np.square(spec.real) + np.square(spec.imag)).sum(axis=1) / (len(self.lc) * cfg.noise_power_w)
        out[rows] = SIDELOBE_MARGIN * FIRST_SIDELOBE * power.max(axis=1) >= stat[rows]
        return out

    def _tapered_check(self, keep, rows, echoes, range_m, threshold) -> np.ndarray:
        """Which peaks ``range_m (n,)`` of gates ``rows`` stand out of the Hann-tapered profile (``(n,)`` bool).

        The tapered spectrum (``keep["spec_w"]``) minus the tapered echoes ``[(c (n, K), d (n,)), ...]`` already
        found, ``c_k e^{j pi j (L - 1) / nfft} s (D_L(x) / 2 + D_L(x + a) / 4 + D_L(x - a) / 4)``
        (``a = 2 pi / (L - 1)``, ``s`` the taper's scale), its largest value within one resolution cell of the
        peak against
        ``TAPER_CHECK x threshold`` (noise units).
        """
        num_l = len(self.lc)
        spec, start = keep["spec_w"][rows], keep["start"][rows]
        cols = self._gate_col
        res = spec.astype(complex)
        col_phase = np.exp(1j * np.pi * (num_l - 1) / self.nfft * cols)
        shift = 0.5 * self._taper_alpha
        for c, d in echoes:
            half = (np.pi / self.nfft) * (start[:, None] + cols - d[:, None] * self._inv_bin_m)
            kernel = 0.5 * _dirichlet(half, num_l) + 0.25 * (_dirichlet(half + shift, num_l)
                                                             + _dirichlet(half - shift, num_l))
            res -= c[:, :, None] * (self._taper_scale * kernel * col_phase)[:, None, :]
        power = (np.square(res.real).sum(axis=1) + np.square(res.imag).sum(axis=1)) / (num_l * self.cfg.noise_power_w)
        col_m = (start[:, None] + cols) * self.bin_m
        near = (np.abs(col_m - np.asarray(range_m)[:, None]) < self.cfg.range_resolution_m) & ~keep["outside"][rows]
        return np.where(near, power, 0.0).max(axis=1) > TAPER_CHECK * np.asarray(threshold)

    def _spectral_floor(self, keep, rows, echoes) -> np.ndarray:
        """Floor ``(n,)`` of the gates ``rows`` with the given echoes removed (see :meth:`_spectral_residual`)."""
        return self._spectral_residual(keep, rows, echoes)[1]

    def _spectral_residual(self, keep, rows, echoes) -> tuple[np.ndarray, np.ndarray]:
        """Residual gate spectrum power ``(n, cols)`` of ``rows`` with ``echoes`` ``[(c (n, K), d (n,)), ...]``
        removed, and its floor ``(n,)``: the mean over the gate's bins in noise units, at least 1.

        The echo of amplitudes ``c_k`` at range ``d`` on column ``j`` (bin ``start + j``) of the pruned DTFT
        is ``c_k e^{j pi j (L - 1) / nfft} D_L(x_j)``, ``x_j = 2 pi (start + j - d / bin_m) / nfft``,
        ``D_L(x) = sin(L x / 2) / sin(x / 2)``.
        """
        num_l = len(self.lc)
        spec, start, outside = keep["spec"][rows], keep["start"][rows], keep["outside"][rows]
        cols = self._gate_col
        res = spec.copy()
        col_phase = np.exp(1j * np.pi * (num_l - 1) / self.nfft * cols)
        for c, d in echoes:
            half = (np.pi / self.nfft) * (start[:, None] + cols - d[:, None] * self._inv_bin_m)  # x / 2: (n, cols)
            res -= c[:, :, None] * (_dirichlet(half, num_l) * col_phase)[:, None, :]
        power = np.square(res.real).sum(axis=1) + np.square(res.imag).sum(axis=1)  # (n, cols)
        # Mean over the gate's bins in units of its noise-only mean K L sigma^2 (the mean, not the median:
        # a gate holds only ~8 independent cells, and the mean's spread is the smaller).
        inside = ~outside
        mean = np.where(inside, power, 0.0).sum(axis=1) / np.maximum(inside.sum(axis=1), 1)
        return power, np.maximum(mean / (self.cfg.num_tracking_symbols * num_l * self.cfg.noise_power_w), 1.0)


def merge_spread(cfg: ScenarioConfig, peak_range_m: np.ndarray, peak_angle_rad: np.ndarray, valid: np.ndarray,
                 pred_range_m: np.ndarray, pred_angle_rad: np.ndarray) -> np.ndarray:
    """Covariance ``(P, Q, 2, 2)`` (range m, angle rad) to add to peaks that other predicted targets may have
    merged into: the targets closer than about a resolution cell cannot be told apart by one pair, and the
    peak then sits between them, at a share of their separation set by their echoes.

    For peak ``(p, q)`` at ``(r, u = cos(theta))`` and the predicted targets ``k`` of its environment at
    ``(r_k, u_k)`` seen from the pair's BS, with ``j`` the predicted target nearest the peak (in cells),
    each other ``k`` adds ``o_k (D_k / 2)(D_k / 2)^T``, ``D_k = (r_k - r_j, theta_k - theta_j)`` and the overlap
    ``o_k = (1 - |r_k - r| / W_r)_+ (1 - |u_k - u| / W_u)_+`` (``W_r = MERGE_CELLS range_resolution_m``,
    ``W_u = MERGE_CELLS 2 / N_rx``): a merge moves the peak by up to half the separation from the nearer
    target (closed loop, I = 8: the crowded peaks outside the 99.9 % gate sat 0.3-0.6 of the way from the
    nearer target to the other, targets 1-2.8 m and 0.3-4 deg apart).

    Args:
        peak_range_m, peak_angle_rad, valid: ``(P, Q)`` the peaks of ``P`` pairs.
        pred_range_m, pred_angle_rad: ``(P, I)`` every predicted target of each pair's environment, seen from
            the pair's BS.
    """
    width_r = MERGE_CELLS * cfg.range_resolution_m
    width_u = MERGE_CELLS * 2.0 / cfg.num_rx_antennas
    r, th = peak_range_m[..., None], peak_angle_rad[..., None]                       # (P, Q, 1)
    rk, thk = pred_range_m[:, None, :], pred_angle_rad[:, None, :]                   # (P, 1, I)
    dr, du = np.abs(rk - r) / width_r, np.abs(np.cos(thk) - np.cos(th)) / width_u     # (P, Q, I)
    nearest = np.argmin(dr**2 + du**2, axis=-1)                                      # (P, Q)
    overlap = np.maximum(1.0 - dr, 0.0) * np.maximum(1.0 - du, 0.0)
    rj = np.take_along_axis(np.broadcast_to(rk, dr.shape), nearest[..., None], axis=-1)
    thj = np.take_along_axis(np.broadcast_to(thk, dr.shape), nearest[..., None], axis=-1)
    half = 0.5 * np.stack([rk - rj, (thk - thj + np.pi) % (2 * np.pi) - np.pi], axis=-1)  # (P, Q, I, 2)
    cov = np.einsum("pqk,pqka,pqkb->pqab", overlap, half, half)
    return np.where(valid[..., None, None], cov, 0.0)


@functools.lru_cache(maxsize=8)
def _gamma_isf(pfa: float, shape: int) -> float:
    """The Gamma(shape, 1) quantile exceeded with probability ``pfa`` (cached: a scipy call per block costs ~0.1 ms)."""
    return float(stats.gamma.isf(pfa, shape))


def _dirichlet(half_x: np.ndarray, num_l: int) -> np.ndarray:
    """``D_L(x) = sum_{l_c} e^{j l_c x} = sin(L x / 2) / sin(x / 2)`` from ``x / 2`` (centred indices: real)."""
    sin_half = np.sin(half_x)
    small = np.abs(sin_half) < 1e-9
    return np.where(small, float(num_l), np.sin(num_l * half_x) / np.where(small, 1.0, sin_half))


RANGE_MODEL_FACTOR = 1.5
"""The range variance reported is the CRB (at the effective SNR, inflated as above) times this: in closed
loop (``ekf-milp``, I = 4, 6, 8, training-range world seeds) the range errors' mean square was 1.2-1.4
times the CRB's and their tail heavier (other echoes' skirts and partly resolved neighbours), so the bare
CRB left 0.8 % of the peaks outside the 99.9 % gate."""
TAPER_CHECK = 0.6
"""A peak is kept only if the Hann-tapered range profile (residual of the earlier peaks) exceeds
``TAPER_CHECK x threshold`` within its resolution cell: the taper's 2/3 coherent gain (1.8 dB), with
margin. An echo's range sidelobes (-13 dB, decaying as 1/x) above the threshold are no peak: a strong
echo just outside the gate puts them inside it, and they fall below -31 dB once tapered."""
REESTIMATE_CELLS = 4.0
"""Peak 0 is re-estimated without peak 1's echo when the two are closer than this many range
resolution cells (farther, the range profile's sidelobes bias it by far less than its CRB)."""
ANGLE_TAIL_SNR_DB = 18.0
"""SNR (dB, integrated, over noise plus interference) below which the ML angle's outliers
(a sidelobe or the wrong beam's lobe winning the criterion) are no longer negligible."""
ANGLE_TAIL_GAIN = 1.0
"""Size of the low-SNR inflation of the angle variance (:func:`angle_tail_factor`)."""


def angle_tail_factor(snr_db: np.ndarray) -> np.ndarray:
    """Inflation of the angle CRB that covers the ML threshold effect: ``1 + g 10^{(s0 - snr) / 10}``.

    Above ``ANGLE_TAIL_SNR_DB`` the ML angle is efficient (factor -> 1); below it the error
    distribution grows a tail the CRB does not see. ``g = ANGLE_TAIL_GAIN`` and ``s0`` were fitted so
    that the fraction of signal-level detections outside the 99.9 % chi-square gate against the
    truth is within twice nominal (``tests/physics/test_estimation.py`` measures it).
    """
    return 1.0 + ANGLE_TAIL_GAIN * 10.0 ** ((ANGLE_TAIL_SNR_DB - np.asarray(snr_db, float)) / 10.0)


def _u_criterion(r: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The angle criterion ``|sum_k r_k v_k|^2 / sum_k r_k^2`` at ``n`` points per row: ``r (P, n, K)`` real
    pattern, ``v (P, K)`` Doppler-corrected amplitudes; returns ``(P, n)``."""
    s = np.matmul(r, v.view(float).reshape(len(v), -1, 2)).view(complex)[..., 0]
    return np.square(np.abs(s)) / np.maximum((r * r).sum(axis=-1), 1e-30)


def _parabolic_step(centre: np.ndarray, vals: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One parabolic fit through ``vals (P, 3)`` at ``centre + h (-1, 0, 1)``.

    Returns the new centre (the vertex, limited to one step; one step uphill where the
    three points are not concave) and the next step (``0.35 h`` where concave, else ``h``).
    """
    fit = vals @ _PARABOLA  # (P, 2): 0.5 (f_- - f_+) and f_- - 2 f_0 + f_+
    half_diff, curvature = fit[:, 0], fit[:, 1]
    concave = curvature < 0
    uphill = np.where(half_diff < 0, 1.0, -1.0)  # toward the larger end point (f_- on a tie)
    offset = np.divide(half_diff, curvature, out=uphill, where=concave)
    offset = np.minimum(np.maximum(offset, -1.0), 1.0)
    return centre + offset * h, np.where(concave, 0.35 * h, h)


_PARABOLA = np.array([[0.5, 1.0], [0.0, -2.0], [-0.5, 1.0]])
