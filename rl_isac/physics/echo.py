"""The echo of eq. (2) at every BS, vectorised over BSs, symbols, RF chains and subcarriers.

Each BS transmits on its own contiguous band of ``L`` subcarriers; subcarrier
indices are centred, ``l_c = l - (L - 1) / 2``, so the band's centre is the phase
reference of the delay term (any other reference only adds a constant phase,
absorbed into the random RCS phase). In symbol ``k`` RF chain ``n`` of BS ``m``
transmits the known unit-modulus symbols ``s[m, n, k, :]`` on tx beam
``W[:, n]`` and receives on rx beam ``F[:, n]``; idle chains are off. The received
samples sum the echoes of ALL targets (unassigned targets inside a beam still
echo) through every active tx chain::

    v[m, n, k, l] = sqrt(P) F_k^H sum_i H_{m,i}^{k,l} W_k s^{k,l} + F_k^H n^{k,l}      (2)

Noise ``F^H n`` is drawn with its exact covariance ``sigma^2 F^H F``.
"""

from __future__ import annotations

import numpy as np

from rl_isac.physics.arrays import beam_response
from rl_isac.scenario import ScenarioConfig


def subcarrier_index(num_subcarriers: int) -> np.ndarray:
    """Centred subcarrier indices ``l - (L - 1) / 2``, shape ``(L,)``."""
    return np.arange(num_subcarriers) - (num_subcarriers - 1) / 2


def qpsk_symbols(shape: tuple[int, ...], *, rng: np.random.Generator) -> np.ndarray:
    """Unit-modulus QPSK symbols of the given shape, complex128."""
    return _QPSK[rng.integers(0, 4, shape, dtype=np.uint8)]


_QPSK = np.exp(1j * (np.pi / 4 + np.pi / 2 * np.arange(4)))


def synthesize_echo(cfg: ScenarioConfig, codebook: np.ndarray, chain_active: np.ndarray, chain_beams: np.ndarray,
                    gains: np.ndarray, u: np.ndarray, tau_s: np.ndarray, doppler_hz: np.ndarray,
                    symbols: np.ndarray, *, rng: np.random.Generator | None) -> np.ndarray:
    """Received samples of eq. (2) for all BSs.

    Args:
        codebook: ``(N, B)`` DFT beams (tx and rx arrays share it; ``N_T = N_R``).
        chain_active: ``(M, R)`` bool, RF chain in use.
        chain_beams: ``(M, R, K, 2)`` int (tx, rx) codebook indices per chain and symbol.
        gains: ``(M, I)`` complex ``sqrt(P) alpha``.
        u: ``(M, I)`` ``cos(theta)`` of every target from every BS.
        tau_s: ``(M, I)`` round-trip delays, seconds.
        doppler_hz: ``(M, I)`` Doppler shifts, hertz.
        symbols: ``(M, R, K, L)`` complex transmit symbols ``s``.
        rng: noise generator; ``None`` for the noise-free echo.
    Returns:
        ``(M, R, K, L)`` complex128 received samples ``v`` (rx chain ``R``).
    """
    num_symbols = chain_beams.shape[2]
    resp = beam_response(u, codebook, cfg.antenna_spacing_wavelengths)  # (M, I, B): w_b^H a(u)
    tx_idx = chain_beams[..., 0]  # (M, R, K)
    rx_idx = chain_beams[..., 1]
    m_idx = np.arange(resp.shape[0])[:, None, None]
    # (M, R, K, I): rx response of each chain's rx beam, conj tx response a^H w of each tx beam.
    g_rx = np.moveaxis(resp[m_idx, :, rx_idx], -1, -1) * chain_active[..., None, None]
    g_tx = resp[m_idx, :, tx_idx].conj() * chain_active[..., None, None]
    k = np.arange(num_symbols)
    # (M, K, I) Doppler rotation per symbol
    doppler_phase = np.exp(1j * 2 * np.pi * doppler_hz[:, None, :] * k[None, :, None] * cfg.symbol_duration_s)
    amp = gains[:, None, :] * doppler_phase  # (M, K, I)
    # C[m, k, r, t, i] = sqrt(P) alpha e^{j2 pi nu k T0} (f_r^H a_R)(a_T^H w_t)
    coef = np.einsum("mki,mrki,mtki->mkrti", amp, g_rx, g_tx)
    lc = subcarrier_index(cfg.num_subcarriers)
    phasor = np.exp(-1j * 2 * np.pi * cfg.subcarrier_spacing_hz * tau_s[..., None] * lc)  # (M, I, L)
    num_bs, num_rf = chain_active.shape
    x = np.matmul(coef.reshape(num_bs, -1, coef.shape[-1]), phasor)  # (M, K*R*T, L)
    x = x.reshape(num_bs, num_symbols, num_rf, num_rf, -1)
    # y[m, r, k, l] = sum_t x[m, k, r, t, l] s[m, t, k, l]
    y = np.einsum("mkrtl,mtkl->mrkl", x, symbols)
    if rng is not None:
        y = y + beam_noise(cfg, codebook, chain_active, rx_idx, rng=rng)
    return y


def beam_noise(cfg: ScenarioConfig, codebook: np.ndarray, chain_active: np.ndarray, rx_idx: np.ndarray, *,
               rng: np.random.Generator) -> np.ndarray:
    """``F^H n`` with ``n ~ CN(0, sigma^2 I)``: correlated across chains by ``F^H F``, shape ``(M, R, K, L)``."""
    num_bs, num_rf, num_symbols = rx_idx.shape
    f = codebook[:, rx_idx] * chain_active[None, :, :, None]  # (N, M, R, K)
    gram = np.einsum("nmrk,nmsk->mkrs", f.conj(), f)  # (M, K, R, R) = F^H F
    shape = (num_bs, num_symbols, num_rf, cfg.num_subcarriers)
    w = rng.standard_normal((*shape, 2)).view(np.complex128)[..., 0] * np.sqrt(cfg.noise_power_w / 2)
    if np.allclose(gram, np.eye(num_rf) * chain_active.transpose(0, 1)[:, None, :, None] * np.eye(num_rf)):
        # Distinct DFT beams are orthonormal: F^H n is white on active chains, zero on idle ones.
        return np.transpose(w, (0, 2, 1, 3)) * chain_active[:, :, None, None]
    evals, evecs = np.linalg.eigh(gram)
    root = evecs * np.sqrt(np.clip(evals, 0, None))[..., None, :]  # gram = root root^H
    return np.einsum("mkrs,mksl->mrkl", root, w)


def synthesize_echo_reference(cfg: ScenarioConfig, codebook: np.ndarray, chain_active: np.ndarray,
                              chain_beams: np.ndarray, gains: np.ndarray, theta_rad: np.ndarray, tau_s: np.ndarray,
                              doppler_hz: np.ndarray, symbols: np.ndarray, noise: np.ndarray | None = None
                              ) -> np.ndarray:
    """Plain loop over eq. (1)-(2), for tests: builds ``H``, ``W``, ``F`` and multiplies them out.

    Args as :func:`synthesize_echo` but with angles ``theta_rad (M, I)`` and optional
    antenna-domain noise ``noise (M, K, L, N_R)``.
    """
    from rl_isac.physics.arrays import steering_vector

    num_bs, num_rf, num_symbols, _ = chain_beams.shape
    num_targets = gains.shape[1]
    n_ant = codebook.shape[0]
    out = np.zeros((num_bs, num_rf, num_symbols, cfg.num_subcarriers), complex)
    lc = subcarrier_index(cfg.num_subcarriers)
    for m in range(num_bs):
        for k in range(num_symbols):
            w_mat = np.zeros((n_ant, num_rf), complex)
            f_mat = np.zeros((n_ant, num_rf), complex)
            for n in range(num_rf):
                if chain_active[m, n]:
                    w_mat[:, n] = codebook[:, chain_beams[m, n, k, 0]]
                    f_mat[:, n] = codebook[:, chain_beams[m, n, k, 1]]
            for li, l_val in enumerate(lc):
                h_sum = np.zeros((n_ant, n_ant), complex)
                for i in range(num_targets):
                    a = steering_vector(np.cos(theta_rad[m, i]), n_ant, cfg.antenna_spacing_wavelengths)
                    h = (gains[m, i] * np.exp(1j * 2 * np.pi * doppler_hz[m, i] * k * cfg.symbol_duration_s)
                         * np.exp(-1j * 2 * np.pi * l_val * cfg.subcarrier_spacing_hz * tau_s[m, i])
                         * np.outer(a, a.conj()))  # eq. (1); sqrt(P) is inside gains
                    h_sum += h
                v = f_mat.conj().T @ h_sum @ w_mat @ symbols[m, :, k, li]
                if noise is not None:
                    v = v + f_mat.conj().T @ noise[m, k, li]
                out[m, :, k, li] = v
    return out
