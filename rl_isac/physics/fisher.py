"""Fisher information, CRB and PCRB for the BS-local (range, angle) estimation.

Per assigned pair, after matched filtering with its own known symbols, the
samples are (eq. (1)-(2), centred subcarriers ``l_c``)::

    z[k, l] = rho e^{j phi_0} e^{j 2 pi nu k T_0} g_k(u) e^{-j 2 pi delta_f l_c tau} + w[k, l],
    w ~ CN(0, sigma^2)

with unknowns ``(tau, u, rho, phi_0, nu)``; ``g_k(u)`` is the two-way beam pattern
of symbol ``k`` (:func:`rl_isac.physics.arrays.two_way_gain`). With centred
subcarriers ``sum_l l_c = 0``, so ``tau`` decouples from the rest::

    J_tau = (2 / sigma^2) (2 pi delta_f)^2 (sum_l l_c^2) rho^2 sum_k |g_k|^2

and the angle block ``(u, rho, phi_0, nu)`` is ``(2 L / sigma^2) Re sum_k conj(d_p a_k) d_q a_k``
with ``a_k = rho e^{j phi_0} e^{j 2 pi nu k T_0} g_k(u)``; ``CRB(u) = [J^{-1}]_uu``. Range is
``d = c tau / 2`` and angle ``theta = +-arccos(u)``, so ``var(d) = (c/2)^2 / J_tau`` and
``var(theta) = var(u) / sin^2(theta)``.

Interference from other targets and the other RF chain's symbols is not in the
bound (it is below ``1/L`` after matched filtering); the bound is per pair.
"""

from __future__ import annotations

import numpy as np

from rl_isac.physics.arrays import beam_patterns, two_way_gain
from rl_isac.physics.echo import subcarrier_index
from rl_isac.scenario import SPEED_OF_LIGHT_MPS, ScenarioConfig


class PairBound:
    """The per-pair CRB of one scenario in closed form, with its constants computed once.

    Write the two-way pattern as ``g_k(u) = phase_k r_k(u)`` (constant unit phase, real
    ``r_k``; :class:`rl_isac.physics.arrays.BeamPatterns`). Every column of ``d a_k / d(u, rho,
    phi_0, nu)`` carries the same factor ``phase_k e^{j phi_0} e^{j 2 pi nu k T_0}``, so (with
    ``J = (2 L / sigma^2) J'``)::

        J'_uu = rho^2 S_dd,  J'_u,rho = rho S_rd,  J'_rho,rho = S_rr,
        J'_u,phi0 = J'_u,nu = J'_rho,phi0 = J'_rho,nu = 0,
        S_rr = sum_k r_k^2,  S_rd = sum_k r_k r_k',  S_dd = sum_k r_k'^2,

    and ``[J^{-1}]_uu = 1 / ((2 L / sigma^2) rho^2 (S_dd - S_rd^2 / S_rr))``: the phase and Doppler
    nuisances decouple from ``u``. This is exactly the Schur complement of the general
    4 x 4 information (:func:`range_angle_crb_reference`), including its ``1e-12`` relative
    regularisation of the nuisance block (which only matters where ``u`` and ``rho`` cannot be
    told apart). The range bound is ``var(d) = (c/2)^2 / J_tau`` with
    ``J_tau = (2 / sigma^2) (2 pi delta_f)^2 (sum_l l_c^2) rho^2 S_rr``.

    Args:
        cfg: the scenario (noise power, numerology, symbol duration).
        num_symbols: ``K`` of the patterns passed in (default ``cfg.num_tracking_symbols``).
    """

    def __init__(self, cfg: ScenarioConfig, num_symbols: int | None = None) -> None:
        num_symbols = cfg.num_tracking_symbols if num_symbols is None else int(num_symbols)
        sigma2 = cfg.noise_power_w
        num_l = cfg.num_subcarriers
        self.sigma2 = sigma2
        self.num_subcarriers = num_l
        self.num_symbols = num_symbols
        self.info_scale = 2 * num_l / sigma2  # J = info_scale * J'
        lc = subcarrier_index(num_l)
        self.tau_scale = (2 / sigma2) * (2 * np.pi * cfg.subcarrier_spacing_hz) ** 2 * float(np.sum(lc**2))
        self.range_scale = (SPEED_OF_LIGHT_MPS / 2) ** 2
        # (d a_k / d nu) / (j a_k) = 2 pi k T_0: only enters the regularisation of the nuisance block.
        self.nu_weight = (2 * np.pi * np.arange(num_symbols) * cfg.symbol_duration_s) ** 2

    def from_pattern(self, amplitude_sq: np.ndarray, r: np.ndarray, dr: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
        """``var_range_m2 (...)`` and ``var_u (...)`` from ``rho^2 (...)`` and the real pattern ``r, dr/du (..., K)``.

        ``inf`` where the beams carry no information (zero pattern, or ``u`` not separable from ``rho``).
        """
        r2 = r * r
        sums = np.empty((*r.shape[:-1], 2, 2))
        sums[..., 0, 0] = r2.sum(axis=-1)
        sums[..., 0, 1] = (r * dr).sum(axis=-1)
        sums[..., 1, 1] = (dr * dr).sum(axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            var, informative = self.from_sums(amplitude_sq, sums, r2 @ self.nu_weight)
        return np.where(var[0] > 0, var[0], np.inf), np.where(informative, var[1], np.inf)

    def from_sums(self, amplitude_sq, sums: np.ndarray, s_nn=0.0, out: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """The bounds from the pattern sums (:meth:`rl_isac.physics.arrays.BeamPatterns.pattern_sums`).

        Args:
            amplitude_sq: ``rho^2 (...)``.
            sums: ``(..., 2, 2)`` ``[[S_rr, S_rd], [S_rd, S_dd]]`` (only the upper triangle is read).
            s_nn: ``sum_k (2 pi k T_0)^2 r_k^2``; only in the ``1e-12`` regularisation, where leaving it
                out changes ``var_u`` by less than ``1e-8 rho^2`` relative.
            out: optional ``(2, ...)`` array for the result.
        Returns:
            ``[var_range_m2, var_u]`` as ``(2, ...)`` and ``informative (...)`` (both bounds finite and
            positive). Where not informative the variances are ``inf``, negative or NaN, with numpy
            warnings, so call it under ``np.errstate`` when that can happen.
        """
        s_rr, s_rd, s_dd = sums[..., 0, 0], sums[..., 0, 1], sums[..., 1, 1]
        # Nuisance (rho) information, regularised as in the general solve: J'_rr + 1e-12 trace(J'_nn).
        j_rr = s_rr * (1.0 + 1e-12 * (1.0 + amplitude_sq))
        if not np.isscalar(s_nn) or s_nn != 0.0:
            j_rr = j_rr + 1e-12 * amplitude_sq * s_nn
        eff_u = (self.info_scale * amplitude_sq) * (s_dd - s_rd * s_rd / j_rr)
        j_tau = (self.tau_scale * amplitude_sq) * s_rr
        if out is None:
            out = np.empty((2, *np.shape(j_tau)))
        np.divide(self.range_scale, j_tau, out=out[0])
        np.divide(1.0, eff_u, out=out[1])
        return out, (eff_u > 0) & (j_tau > 0)


def range_angle_crb(cfg: ScenarioConfig, codebook: np.ndarray, amplitude: np.ndarray, u: np.ndarray,
                    beams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CRB of range and ``u = cos(theta)`` for pairs (closed form, :class:`PairBound`).

    Args:
        amplitude: ``(P,)`` ``rho = sqrt(P) |alpha|``, sqrt(watt).
        u: ``(P,)`` true (or estimated) ``cos(theta)``.
        beams: ``(P, K, 2)`` int (tx, rx) per symbol.
    Returns:
        ``var_range_m2 (P,)`` and ``var_u (P,)``; ``inf`` where the beams carry no information.
    """
    amplitude = np.asarray(amplitude, float)
    beams = np.asarray(beams)
    patterns = beam_patterns(codebook.shape[0], codebook.shape[1], cfg.antenna_spacing_wavelengths)
    r, dr = patterns.real_pattern(np.asarray(u, float), patterns.directions[beams], derivative=True)
    return PairBound(cfg, beams.shape[-2]).from_pattern(amplitude**2, r, dr)


def range_angle_crb_reference(cfg: ScenarioConfig, codebook: np.ndarray, amplitude: np.ndarray, u: np.ndarray,
                              beams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`range_angle_crb` from the general 4 x 4 Fisher information of ``(u, rho, phi_0, nu)``.

    The reference the closed form is tested against; same arguments and returns.
    """
    amplitude = np.asarray(amplitude, float)
    g, dg = two_way_gain(np.asarray(u, float), beams, codebook, cfg.antenna_spacing_wavelengths,
                         derivative=True)  # (P, K)
    sigma2 = cfg.noise_power_w
    num_l = cfg.num_subcarriers
    lc = subcarrier_index(num_l)
    energy = np.sum(np.abs(g) ** 2, axis=-1)
    j_tau = (2 / sigma2) * (2 * np.pi * cfg.subcarrier_spacing_hz) ** 2 * np.sum(lc**2) * amplitude**2 * energy
    k = np.arange(g.shape[-1])
    t0 = cfg.symbol_duration_s
    # d a_k / d(u, rho, phi0, nu), evaluated at phi0 = nu = 0 (the information does not depend on them).
    da = np.stack([amplitude[..., None] * dg, g, 1j * amplitude[..., None] * g,
                   1j * 2 * np.pi * k * t0 * amplitude[..., None] * g], axis=-1)  # (P, K, 4)
    fim = (2 * num_l / sigma2) * np.real(np.einsum("pkx,pky->pxy", da.conj(), da))
    with np.errstate(divide="ignore", invalid="ignore"):
        var_u = _schur_inverse_first(fim)
        var_range = (SPEED_OF_LIGHT_MPS / 2) ** 2 / j_tau
    var_u = np.where(np.isfinite(var_u) & (var_u > 0), var_u, np.inf)
    var_range = np.where(np.isfinite(var_range) & (var_range > 0), var_range, np.inf)
    return var_range, var_u


def _schur_inverse_first(fim: np.ndarray) -> np.ndarray:
    """``[J^{-1}]_00`` for a batch of symmetric matrices, robust to singular nuisance blocks."""
    j_uu = fim[..., 0, 0]
    j_un = fim[..., 0, 1:]
    j_nn = fim[..., 1:, 1:]
    # Regularise the nuisance block relative to its scale so a zero Doppler column cannot break the solve.
    scale = np.trace(j_nn, axis1=-2, axis2=-1)[..., None, None] + 1e-300
    eye = np.eye(j_nn.shape[-1])
    sol = np.linalg.solve(j_nn + 1e-12 * scale * eye, j_un[..., None])[..., 0]
    eff = j_uu - np.einsum("...i,...i->...", j_un, sol)
    return 1.0 / eff


def angle_variance(var_u: np.ndarray, angle_rad: np.ndarray) -> np.ndarray:
    """``var(theta) = var(u) / sin^2(theta)`` (radians^2)."""
    return var_u / np.maximum(np.sin(angle_rad) ** 2, 1e-12)


def position_information(range_m: np.ndarray, angle_rad: np.ndarray, var_range_m2: np.ndarray,
                         var_angle_rad2: np.ndarray) -> np.ndarray:
    """Fisher information of the 2-D position from one (range, angle) measurement.

    ``J_pos = H^T diag(1/var_d, 1/var_theta) H`` with ``H = d(d, theta)/d(x, y)``.

    Args:
        range_m, angle_rad, var_range_m2, var_angle_rad2: ``(...)``.
    Returns:
        ``(..., 2, 2)`` in 1/m^2 (zero where a variance is infinite).
    """
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    h = np.stack([np.stack([c, s], -1), np.stack([-s / range_m, c / range_m], -1)], -2)  # (..., 2, 2)
    with np.errstate(divide="ignore"):
        w = np.stack([1.0 / var_range_m2, 1.0 / var_angle_rad2], -1)
    w = np.where(np.isfinite(w), w, 0.0)
    return np.einsum("...ji,...j,...jk->...ik", h, w, h)


def pcrb_recursion(prior_info: np.ndarray, transition: np.ndarray, process_noise: np.ndarray,
                   measurement_info: np.ndarray) -> np.ndarray:
    """Posterior CRB recursion (Tichavsky et al., 1998) for a linear-Gaussian motion model.

    ``J_q = (F J_{q-1}^{-1} F^T + Q)^{-1} + E^T J_meas,q E`` with ``E`` selecting the
    position from the state ``[x, y, vx, vy]``. The paper's motion (fixed speed, random
    heading) is approximated by the constant-velocity model ``(F, Q)`` the EKF uses, so
    the bound is the PCRB of that model evaluated along the true trajectory.

    Args:
        prior_info: ``(I, 4, 4)`` information at q = 0.
        transition: ``(4, 4)`` ``F``.
        process_noise: ``(4, 4)`` ``Q``.
        measurement_info: ``(Q, I, 2, 2)`` position information of each block
            (sum over the BSs actually associated).
    Returns:
        ``(Q, I, 4, 4)`` bound covariances ``J_q^{-1}``.
    """
    info = prior_info
    out = np.empty((measurement_info.shape[0], *prior_info.shape))
    for q in range(measurement_info.shape[0]):
        cov = np.linalg.inv(info)
        pred = transition @ cov @ transition.T + process_noise
        info = np.linalg.inv(pred)
        info[..., :2, :2] += measurement_info[q]
        out[q] = np.linalg.inv(info)
    return out


def expected_position_information(cfg: ScenarioConfig, codebook: np.ndarray, bs_positions_m: np.ndarray,
                                  positions_m: np.ndarray, beams: np.ndarray) -> np.ndarray:
    """Position Fisher information every BS would give every target with the given beams.

    Uses the radar-equation amplitude at the given positions (true ones for bounds,
    predicted ones for association objectives) and assumes detection.

    Args:
        codebook: ``(N, B)``.
        bs_positions_m: ``(M, 2)`` metres.
        positions_m: ``(I, 2)`` metres.
        beams: ``(M, I, K, 2)`` int.
    Returns:
        ``(M, I, 2, 2)`` in 1/m^2.
    """
    from rl_isac.physics.channel import geometry, received_amplitude

    range_m, angle = geometry(bs_positions_m, np.asarray(positions_m, float))
    amp = received_amplitude(cfg, range_m)
    var_r, var_u = range_angle_crb(cfg, codebook, amp.ravel(), np.cos(angle).ravel(),
                                   beams.reshape(-1, *beams.shape[2:]))
    var_a = angle_variance(var_u, angle.ravel())
    return position_information(range_m.ravel(), angle.ravel(), var_r, var_a).reshape(*range_m.shape, 2, 2)
