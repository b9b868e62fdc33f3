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

from rl_isac.physics.arrays import two_way_gain
from rl_isac.physics.echo import subcarrier_index
from rl_isac.scenario import SPEED_OF_LIGHT_MPS, ScenarioConfig


def range_angle_crb(cfg: ScenarioConfig, codebook: np.ndarray, amplitude: np.ndarray, u: np.ndarray,
                    beams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CRB of range and ``u = cos(theta)`` for pairs.

    Args:
        amplitude: ``(P,)`` ``rho = sqrt(P) |alpha|``, sqrt(watt).
        u: ``(P,)`` true (or estimated) ``cos(theta)``.
        beams: ``(P, K, 2)`` int (tx, rx) per symbol.
    Returns:
        ``var_range_m2 (P,)`` and ``var_u (P,)``; ``inf`` where the beams carry no information.
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
