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

import math

import numpy as np

from rl_isac.physics.arrays import beam_patterns, dirichlet_ratio
from rl_isac.scenario import ScenarioConfig


class Workspace:
    """Reusable scratch arrays for the per-block hot path.

    ``get(name, shape, dtype)`` returns the same array for the same name as long as shape
    and dtype match (contents undefined). Large temporaries allocated afresh every block
    cost hundreds of page faults per block (the allocator hands such memory back to the
    system between blocks); reusing them removes that cost. An array obtained from a
    workspace is overwritten by the next request for the same name, so results that
    leave the hot path must never live in one.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self._buffers[name] = np.empty(shape, dtype)
        return buf


def scratch(work: Workspace | None, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """``work.get(name, shape, dtype)``, or a fresh ``np.empty`` without a workspace."""
    return np.empty(shape, dtype) if work is None else work.get(name, shape, dtype)


def subcarrier_index(num_subcarriers: int) -> np.ndarray:
    """Centred subcarrier indices ``l - (L - 1) / 2``, shape ``(L,)``."""
    return np.arange(num_subcarriers) - (num_subcarriers - 1) / 2


def phase_ramp(theta: np.ndarray, num: int, offset: float = 0.0, dtype=np.complex128, *,
               work: Workspace | None = None, name: str = "ramp") -> np.ndarray:
    """``e^{j theta (n - offset)}`` for ``n = 0 .. num - 1``: shape ``(..., num)``.

    Built from ``2 sqrt(num)`` complex exponentials per ``theta`` instead of ``num``: with
    ``n = A a + b`` (``A = ceil(sqrt(num))``), ``e^{j theta (n - offset)} = e^{j theta (A a - offset)}
    e^{j theta b}``, one outer product of the two short bases. The exponents are formed
    in float64 (and reduced modulo ``2 pi`` for complex64, whose bases come from float32
    sine and cosine), so the phase error stays at the rounding level of ``dtype``
    (``~1e-16`` for complex128, ``~1e-7`` for complex64) for any ``theta * num``.

    Args:
        theta: ``(...)`` phase increment per index, radians.
        num: length of the ramp.
        offset: index of zero phase (``(L - 1) / 2`` gives the centred subcarriers).
        dtype: complex dtype of the result (complex128 or complex64).
        work, name: optional workspace buffer for the result (see :class:`Workspace`).
    """
    theta = np.asarray(theta, dtype=float)[..., None]
    block = int(np.ceil(np.sqrt(num)))
    rows = -(-num // block)
    fine = _unit_phasor(theta * np.arange(block), dtype)  # (..., A)
    coarse = _unit_phasor(theta * (block * np.arange(rows) - offset), dtype)  # (..., rows)
    out = scratch(work, name, (*theta.shape[:-1], rows, block), dtype)
    np.multiply(coarse[..., :, None], fine[..., None, :], out=out)
    out = out.reshape(*theta.shape[:-1], rows * block)
    return out[..., :num] if rows * block != num else out


def _unit_phasor(angle: np.ndarray, dtype) -> np.ndarray:
    """``e^{j angle}`` of float64 ``angle`` as ``dtype``; complex64 via float32 cos/sin of ``angle mod 2 pi``."""
    if dtype != np.complex64:
        return np.exp(1j * angle).astype(dtype, copy=False)
    reduced = np.mod(angle, 2 * np.pi).astype(np.float32)
    out = np.empty(angle.shape, np.complex64)
    np.cos(reduced, out=out.real)
    np.sin(reduced, out=out.imag)
    return out


def complex_normal(rng: np.random.Generator, shape: tuple[int, ...], dtype=np.complex128, *, scale: float = 1.0,
                   work: Workspace | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Circular complex Gaussian ``CN(0, scale^2)`` samples (real and imaginary parts ``N(0, scale^2 / 2)``).

    complex128: ``rng.standard_normal`` (ziggurat). complex64: the polar (Box-Muller) form
    ``w = scale sqrt(-ln u_1) e^{j 2 pi u_2}`` in float32 with ``u_1 = (k + 1/2) 2^-32`` from 32
    random bits and ``u_2`` from 32 more: exactly Gaussian up to the resolution of the
    uniforms, which caps ``|w|^2 / scale^2`` at ``ln 2^33 = 22.9`` (probability
    ``e^-22.9 = 1e-10`` per sample); two to three times faster than numpy's float32 ziggurat.
    With ``work`` the result lives in the workspace (name ``"normal"``), with ``out`` (contiguous,
    of ``shape`` and ``dtype``) in ``out``.
    """
    count = math.prod(shape)
    if dtype != np.complex64:
        draw = (rng.standard_normal(2 * count).view(np.complex128) * (scale * np.sqrt(0.5))).reshape(shape)
        if out is None:
            return draw.astype(dtype, copy=False)
        out[...] = draw
        return out
    words = rng.bit_generator.random_raw(count).view(np.uint32)  # 2 count uniform 32-bit words
    radius = scratch(work, "normal_radius", (count,), np.float32)
    np.copyto(radius, words[:count], casting="unsafe")  # k, rounded to float32 (exact below 2^24)
    radius *= np.float32(2.0**-32)
    radius += np.float32(2.0**-33)  # u_1 in (0, 1]
    np.log(radius, out=radius)
    radius *= np.float32(-scale * scale)  # |w|^2 ~ scale^2 Exp(1)
    np.sqrt(radius, out=radius)
    angle = scratch(work, "normal_angle", (count,), np.float32)
    np.copyto(angle, words[count:], casting="unsafe")
    angle *= np.float32(2 * np.pi * 2.0**-32)  # 2 pi u_2
    out = scratch(work, "normal", (count,), np.complex64) if out is None else out.reshape(count)
    np.cos(angle, out=out.real)
    out.real *= radius
    np.sin(angle, out=out.imag)
    out.imag *= radius
    return out.reshape(shape)


def qpsk_symbols(shape: tuple[int, ...], *, rng: np.random.Generator, dtype=np.complex128,
                 work: Workspace | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Unit-modulus QPSK symbols of the given shape (uniform over the four points), ``dtype``.

    Four symbols per random byte (two bits each), looked up in a 256 x 4 table. With
    ``work`` the result lives in the workspace (name ``"qpsk"``), with ``out`` (contiguous,
    of ``shape`` and ``dtype``) in ``out``.
    """
    count = math.prod(shape)
    raw = np.frombuffer(rng.bytes(-(-count // 4)), dtype=np.uint8)
    table = _QPSK_BYTE.get(np.dtype(dtype))
    if table is None:
        table = _QPSK_BYTE[np.dtype(dtype)] = _QPSK_BYTE[np.dtype(np.complex128)].astype(dtype)
    if out is not None and count % 4 == 0:
        np.take(table, raw, axis=0, out=out.reshape(-1, 4))
        return out
    symbols = np.take(table, raw, axis=0, out=scratch(work, "qpsk", (len(raw), 4), table.dtype))
    symbols = symbols.reshape(-1)[:count].reshape(shape)
    if out is None:
        return symbols
    out[...] = symbols
    return out


_QPSK = np.exp(1j * (np.pi / 4 + np.pi / 2 * np.arange(4)))
# _QPSK_BYTE[dtype][b, j] = the j-th symbol coded by byte b (bits 2j, 2j + 1).
_QPSK_BYTE = {np.dtype(np.complex128): _QPSK[(np.arange(256)[:, None] >> (2 * np.arange(4))) & 3]}


def synthesize_echo(cfg: ScenarioConfig, codebook: np.ndarray, chain_active: np.ndarray, chain_beams: np.ndarray,
                    gains: np.ndarray, u: np.ndarray, tau_s: np.ndarray, doppler_hz: np.ndarray,
                    symbols: np.ndarray, *, rng: np.random.Generator | None, dtype=np.complex128,
                    work: Workspace | None = None, add_to: np.ndarray | None = None) -> np.ndarray:
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
        work: optional :class:`Workspace` for the large arrays; the result then lives in
            it (name ``"echo"``) until the next call.
        add_to: optional ``(M, R, K, L)`` array of ``dtype`` (e.g. noise drawn beforehand) the
            echo is added to, in place; it is returned.
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
    # (M, I, L): e^{-j 2 pi delta_f l_c tau}
    phasor = phase_ramp(-omega * tau_s, num_l, (num_l - 1) / 2, dtype, work=work, name="echo_phasor")
    symbols = symbols.astype(dtype, copy=False)
    # y[m, r, k, l] = sum_t s[m, t, k, l] x_t[m, r, k, l], x_t = C[:, t] @ phasor (one product per tx chain).
    y = scratch(work, "echo", (num_bs, num_rf, num_symbols, num_l), dtype) if add_to is None else add_to
    for t in range(num_rf):
        x = scratch(work, "echo_x", (num_bs, num_rf * num_symbols, num_l), dtype)
        np.matmul(coef[:, t].reshape(num_bs, num_rf * num_symbols, -1), phasor, out=x)
        x = x.reshape(num_bs, num_rf, num_symbols, num_l)
        if t == 0 and add_to is None:
            np.multiply(x, symbols[:, 0, None], out=y)
        else:
            x *= symbols[:, t, None]
            y += x
    if rng is not None:
        y += beam_noise(cfg, codebook, chain_active, chain_beams[..., 1], rng=rng, dtype=dtype, work=work)
    return y


def beam_noise(cfg: ScenarioConfig, codebook: np.ndarray, chain_active: np.ndarray, rx_idx: np.ndarray, *,
               rng: np.random.Generator, dtype=np.complex128, work: Workspace | None = None) -> np.ndarray:
    """``F^H n`` with ``n ~ CN(0, sigma^2 I)``: correlated across chains by ``F^H F``, shape ``(M, R, K, L)``.

    White draws ``w (M, R, K, L) ~ CN(0, sigma^2)`` (:func:`complex_normal`), coloured by
    :func:`colour_noise`. With ``work`` the result lives in the workspace.
    """
    num_bs, num_rf, num_symbols = rx_idx.shape
    w = complex_normal(rng, (num_bs, num_rf, num_symbols, cfg.num_subcarriers), dtype,
                       scale=np.sqrt(cfg.noise_power_w), work=work)
    return colour_noise(w, cfg, codebook, chain_active, rx_idx)


def colour_noise(w: np.ndarray, cfg: ScenarioConfig, codebook: np.ndarray, chain_active: np.ndarray,
                 rx_idx: np.ndarray) -> np.ndarray:
    """Turn white beam-space noise ``w (M, R, K, L) ~ CN(0, sigma^2)`` into ``F^H n``, in place.

    Where the active chains' rx beams are orthonormal in a symbol (distinct beams of an
    orthonormal codebook) ``F^H n = w`` on active chains; elsewhere ``F^H n = G^{1/2} w`` with
    ``G = F^H F`` of that BS and symbol; idle chains get no noise. Returns ``w``.
    """
    num_rf = rx_idx.shape[1]
    patterns = beam_patterns(codebook.shape[0], codebook.shape[1], cfg.antenna_spacing_wavelengths)
    active = np.asarray(chain_active, bool)
    gram = patterns.gram[rx_idx[:, :, None, :], rx_idx[:, None, :, :]]  # (M, R, S, K): f_r^H f_s
    gram = gram * (active[:, :, None, None] & active[:, None, :, None])
    white = np.eye(num_rf)[None, :, :, None] * active[:, :, None, None]
    coloured = np.abs(gram - white).max(axis=(1, 2)) > 1e-8  # (M, K)
    if coloured.any():
        # Correlated chains (a shared or non-orthogonal rx beam) in these (BS, symbol)s: G^{1/2} w there.
        m_idx, k_idx = np.nonzero(coloured)
        evals, evecs = np.linalg.eigh(gram[m_idx, :, :, k_idx])  # (C, R, R), Hermitian
        # Eigenvalues at rounding level (a shared rx beam makes G singular) are zero: chains that
        # share a beam then see exactly the same noise.
        evals = np.where(evals > 1e-12 * evals.max(axis=-1, keepdims=True), evals, 0.0)
        root = (evecs * np.sqrt(evals)[..., None, :]).astype(w.dtype)  # gram = root root^H
        w[m_idx, :, k_idx] = np.matmul(root, w[m_idx, :, k_idx])  # (C, R, L)
    if not active.all():
        w *= active[:, :, None, None]
    return w


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
