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

from rl_isac.physics.arrays import beam_patterns, dirichlet_ratio
from rl_isac.scenario import ScenarioConfig


def subcarrier_index(num_subcarriers: int) -> np.ndarray:
    """Centred subcarrier indices ``l - (L - 1) / 2``, shape ``(L,)``."""
    return np.arange(num_subcarriers) - (num_subcarriers - 1) / 2


def phase_ramp(theta: np.ndarray, num: int, offset: float = 0.0, dtype=np.complex128) -> np.ndarray:
    """``e^{j theta (n - offset)}`` for ``n = 0 .. num - 1``: shape ``(..., num)``.

    Built from ``2 sqrt(num)`` complex exponentials per ``theta`` instead of ``num``: with
    ``n = A a + b`` (``A = ceil(sqrt(num))``), ``e^{j theta (n - offset)} = e^{j theta (A a - offset)}
    e^{j theta b}``, one outer product of the two short bases. The exponents are formed
    in float64 before any cast to ``dtype``, so the phase error stays at rounding level
    (``~1e-16`` for complex128, ``~1e-7`` for complex64) for any ``theta * num``.

    Args:
        theta: ``(...)`` phase increment per index, radians.
        num: length of the ramp.
        offset: index of zero phase (``(L - 1) / 2`` gives the centred subcarriers).
        dtype: complex dtype of the result.
    """
    theta = np.asarray(theta, dtype=float)[..., None]
    block = int(np.ceil(np.sqrt(num)))
    rows = -(-num // block)
    fine = np.exp(1j * theta * np.arange(block)).astype(dtype, copy=False)  # (..., A)
    coarse = np.exp(1j * theta * (block * np.arange(rows) - offset)).astype(dtype, copy=False)  # (..., rows)
    out = (coarse[..., :, None] * fine[..., None, :]).reshape(*theta.shape[:-1], rows * block)
    return out[..., :num] if rows * block != num else out


def qpsk_symbols(shape: tuple[int, ...], *, rng: np.random.Generator, dtype=np.complex128) -> np.ndarray:
    """Unit-modulus QPSK symbols of the given shape (uniform over the four points), ``dtype``.

    Four symbols per random byte (two bits each), looked up in a 256 x 4 table.
    """
    count = int(np.prod(shape))
    raw = np.frombuffer(rng.bytes(-(-count // 4)), dtype=np.uint8)
    table = _QPSK_BYTE if dtype == np.complex128 else _QPSK_BYTE.astype(dtype)
    return table[raw].reshape(-1)[:count].reshape(shape)


_QPSK = np.exp(1j * (np.pi / 4 + np.pi / 2 * np.arange(4)))
# _QPSK_BYTE[b, j] = the j-th symbol coded by byte b (bits 2j, 2j + 1).
_QPSK_BYTE = _QPSK[(np.arange(256)[:, None] >> (2 * np.arange(4))) & 3]


def synthesize_echo(cfg: ScenarioConfig, codebook: np.ndarray, chain_active: np.ndarray, chain_beams: np.ndarray,
                    gains: np.ndarray, u: np.ndarray, tau_s: np.ndarray, doppler_hz: np.ndarray,
                    symbols: np.ndarray, *, rng: np.random.Generator | None, dtype=np.complex128) -> np.ndarray:
    """Received samples of eq. (2) for all BSs.

    The beam responses use the closed form of the DFT codebook
    (:class:`rl_isac.physics.arrays.BeamPatterns`): the echo of target ``i`` sent on chain
    ``t``'s tx beam and received on chain ``r``'s rx beam in symbol ``k`` has the gain

        C[m, t, r, k, i] = sqrt(P) alpha_{m,i} e^{j 2 pi nu_{m,i} k T_0} (f_r^H a(u_i)) (a(u_i)^H w_t)
                         = sqrt(P) alpha_{m,i} e^{j 2 pi nu_{m,i} k T_0} phase[t_k, r_k] R(psi_r) R(psi_t) / N,

    and ``v[m, r, k, l] = sum_t s[m, t, k, l] sum_i C[m, t, r, k, i] e^{-j 2 pi delta_f l_c tau_{m,i}}``
    (the inner sum one matrix product over targets), plus the beam-space noise.

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
        dtype: complex dtype of the result: complex128 (default) or complex64 (the
            network's choice: half the memory traffic, rounding ~1e-7 of the
            strongest echo, far below the thermal noise).
    Returns:
        ``(M, R, K, L)`` received samples ``v`` (rx chain ``R``) of ``dtype``.
    """
    num_bs, num_rf = chain_active.shape
    num_symbols = chain_beams.shape[2]
    num_l = symbols.shape[-1]
    patterns = beam_patterns(codebook.shape[0], codebook.shape[1], cfg.antenna_spacing_wavelengths)
    n_ant = patterns.num_antennas
    # Real beam factors R(psi) / sqrt(N) of every chain's tx and rx beam toward every target: (M, R, K, I, 2).
    psi = patterns.scale * (u[:, None, None, :, None] - patterns.directions[chain_beams][:, :, :, None, :])
    factor = dirichlet_ratio(psi, n_ant) * (chain_active / np.sqrt(n_ant))[:, :, None, None, None]
    f_tx = factor[..., 0]  # (M, T, K, I)
    f_rx = factor[..., 1]  # (M, R, K, I)
    # phase[tx of chain t, rx of chain r] per symbol: (M, T, R, K)
    phase = patterns.phase[chain_beams[:, :, None, :, 0], chain_beams[:, None, :, :, 1]]
    k = np.arange(num_symbols)
    amp = gains[:, None, :] * np.exp(1j * 2 * np.pi * cfg.symbol_duration_s * doppler_hz[:, None, :]
                                     * k[None, :, None])  # (M, K, I)
    coef = (phase[..., None] * f_tx[:, :, None] * f_rx[:, None] * amp[:, None, None]).astype(dtype, copy=False)
    omega = 2 * np.pi * cfg.subcarrier_spacing_hz
    phasor = phase_ramp(-omega * tau_s, num_l, (num_l - 1) / 2, dtype)  # (M, I, L): e^{-j 2 pi delta_f l_c tau}
    x = np.matmul(coef.reshape(num_bs, -1, coef.shape[-1]), phasor)  # (M, T*R*K, L)
    x = x.reshape(num_bs, num_rf, num_rf, num_symbols, num_l)
    symbols = symbols.astype(dtype, copy=False)
    y = x[:, 0] * symbols[:, 0, None]
    for t in range(1, num_rf):
        y += x[:, t] * symbols[:, t, None]
    if rng is not None:
        y += beam_noise(cfg, codebook, chain_active, chain_beams[..., 1], rng=rng, dtype=dtype)
    return y


def beam_noise(cfg: ScenarioConfig, codebook: np.ndarray, chain_active: np.ndarray, rx_idx: np.ndarray, *,
               rng: np.random.Generator, dtype=np.complex128) -> np.ndarray:
    """``F^H n`` with ``n ~ CN(0, sigma^2 I)``: correlated across chains by ``F^H F``, shape ``(M, R, K, L)``.

    White draws ``w (M, R, K, L)`` (real and imaginary parts ``N(0, sigma^2 / 2)``, float32
    for complex64); when the active chains' rx beams are orthonormal in every symbol
    (distinct beams of an orthonormal codebook) ``F^H n = w`` on active chains, else
    ``F^H n = G^{1/2} w`` with ``G = F^H F`` per BS and symbol.
    """
    num_bs, num_rf, num_symbols = rx_idx.shape
    patterns = beam_patterns(codebook.shape[0], codebook.shape[1], cfg.antenna_spacing_wavelengths)
    count = num_bs * num_rf * num_symbols * cfg.num_subcarriers
    real = np.float32 if dtype == np.complex64 else np.float64
    w = rng.standard_normal(2 * count, dtype=real).view(dtype).reshape(num_bs, num_rf, num_symbols, -1)
    w *= real(np.sqrt(cfg.noise_power_w / 2))
    active = np.asarray(chain_active, bool)
    gram = patterns.gram[rx_idx[:, :, None, :], rx_idx[:, None, :, :]]  # (M, R, S, K): f_r^H f_s
    both = active[:, None, :, None] & active[:, :, None, None]
    gram = np.where(both, gram, 0.0)
    white = np.eye(num_rf)[None, :, :, None] * active[:, :, None, None]
    if np.abs(gram - white).max(initial=0.0) <= 1e-8:
        # Orthonormal rx beams: F^H n is white on active chains, zero on idle ones.
        if not active.all():
            w *= active[:, :, None, None]
        return w
    evals, evecs = np.linalg.eigh(np.moveaxis(gram, -1, 1))  # (M, K, R, R), Hermitian
    # Eigenvalues at rounding level (a shared rx beam makes G singular) are zero: chains that share
    # a beam then see exactly the same noise.
    evals = np.where(evals > 1e-12 * evals.max(axis=-1, keepdims=True), evals, 0.0)
    root = evecs * np.sqrt(evals)[..., None, :]  # gram = root root^H
    return np.einsum("mkrs,mskl->mrkl", root, w).astype(dtype, copy=False)


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
