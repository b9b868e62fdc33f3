"""ULA steering vectors, the DFT codebook and beam patterns.

Each BS has a ULA along the x axis (element ``n`` at ``x = n d_s``), so a target at
angle ``theta = atan2(dy, dx)`` is seen at spatial frequency ``u = cos(theta)``.
Steering vectors follow the paper (Sec. 2.1), with element 0 as phase reference::

    a(theta) = [1, e^{j 2 pi (d_s / lambda) cos theta}, ..., e^{j 2 pi (d_s / lambda)(N - 1) cos theta}]^T

The DFT codebook of size ``B`` has unit-norm beams ``w_b = a(u_b) / sqrt(N)`` with
``u_b = -1 + (2 b + 1) / B``, ``b = 0..B-1``; beam 0 points at endfire ``theta ~ pi``
(``u ~ -1``), the last at ``theta ~ 0``. Beams are orthogonal when ``B = N``.

For a pair that transmits on beam ``t`` and receives on beam ``r``, the two-way
pattern is ``g(u) = (w_r^H a_R(u)) (a_T(u)^H w_t)``; the ``u``-dependent phases of
the two factors cancel (monostatic geometry), so the phase of ``g`` is a known
constant per (t, r) and all angle information is in its magnitude.
"""

from __future__ import annotations

import functools

import numpy as np


def steering_vector(u: np.ndarray, num_antennas: int, spacing_wl: float = 0.5) -> np.ndarray:
    """ULA steering vectors ``a(u)`` (unnormalised, entries of modulus 1).

    Args:
        u: ``(...)`` spatial frequencies ``cos(theta)``.
        num_antennas: ``N``.
        spacing_wl: element spacing in wavelengths ``d_s / lambda``.
    Returns:
        ``(..., N)`` complex128.
    """
    n = np.arange(num_antennas)
    return np.exp(1j * 2 * np.pi * spacing_wl * np.asarray(u, dtype=float)[..., None] * n)


def codebook_directions(codebook_size: int) -> np.ndarray:
    """Spatial frequencies ``u_b = -1 + (2 b + 1) / B`` of the DFT beams, shape ``(B,)``."""
    return -1.0 + (2.0 * np.arange(codebook_size) + 1.0) / codebook_size


def dft_codebook(num_antennas: int, codebook_size: int, spacing_wl: float = 0.5) -> np.ndarray:
    """Unit-norm DFT beams as columns, shape ``(N, B)`` complex128."""
    return steering_vector(codebook_directions(codebook_size), num_antennas, spacing_wl).T / np.sqrt(num_antennas)


def beam_response(u: np.ndarray, codebook: np.ndarray, spacing_wl: float = 0.5) -> np.ndarray:
    """Receive response ``w_b^H a(u)`` of every codebook beam.

    The transmit response ``a(u)^H w_b`` is its complex conjugate.

    Args:
        u: ``(...)`` spatial frequencies.
        codebook: ``(N, B)`` beams.
    Returns:
        ``(..., B)`` complex128; ``|.|^2 = N`` on a beam centre.
    """
    a = steering_vector(u, codebook.shape[0], spacing_wl)
    return a @ codebook.conj()


def beam_response_derivative(u: np.ndarray, codebook: np.ndarray, spacing_wl: float = 0.5) -> np.ndarray:
    """``d/du`` of :func:`beam_response`, shape ``(..., B)``."""
    n = np.arange(codebook.shape[0])
    a = steering_vector(u, codebook.shape[0], spacing_wl) * (1j * 2 * np.pi * spacing_wl * n)
    return a @ codebook.conj()


def dirichlet(psi: np.ndarray, num_antennas: int, derivative: bool = False):
    """``D(psi) = (1/sqrt(N)) sum_n e^{j n psi}`` in closed form (and ``dD/dpsi``).

    ``w_b^H a(u) = D(2 pi d_s (u - u_b))`` for a DFT beam ``b``; ``a(u)^H w_b`` is its conjugate.
    """
    n = num_antennas
    half = 0.5 * psi
    s_half = np.sin(half)
    small = np.abs(s_half) < 1e-9
    safe = np.where(small, 1.0, s_half)
    ratio = np.where(small, float(n), np.sin(n * half) / safe)
    phase = np.exp(1j * (n - 1) * half) / np.sqrt(n)
    d = phase * ratio
    if not derivative:
        return d
    dratio = np.where(small, 0.0, (0.5 * n * np.cos(n * half) * s_half - 0.5 * np.sin(n * half) * np.cos(half))
                      / safe**2)
    return d, phase * (0.5j * (n - 1) * ratio + dratio)


def two_way_gain(u: np.ndarray, beams: np.ndarray, codebook: np.ndarray, spacing_wl: float = 0.5,
                 derivative: bool = False):
    """Two-way pattern ``g_k(u) = (w_rx^H a(u)) (a(u)^H w_tx)`` for each symbol's beam pair.

    Closed form (Dirichlet kernel) for the DFT codebook; only the needed beams are evaluated.

    Args:
        u: ``(...)`` spatial frequencies, broadcast against ``beams[..., 0, 0]``.
        beams: ``(..., K, 2)`` int codebook indices ``(tx, rx)`` per symbol.
        codebook: ``(N, B)`` DFT codebook (only its shape is used: ``N`` antennas, ``B`` beams).
        derivative: also return ``d g / d u``.
    Returns:
        ``(..., K)`` complex128 (and its derivative if asked).
    """
    num_antennas, size = codebook.shape
    dirs = codebook_directions(size)
    u = np.asarray(u, dtype=float)[..., None]
    scale = 2 * np.pi * spacing_wl
    psi_rx = scale * (u - dirs[beams[..., 1]])
    psi_tx = scale * (u - dirs[beams[..., 0]])
    if not derivative:
        return dirichlet(psi_rx, num_antennas) * dirichlet(psi_tx, num_antennas).conj()
    d_rx, dd_rx = dirichlet(psi_rx, num_antennas, derivative=True)
    d_tx, dd_tx = dirichlet(psi_tx, num_antennas, derivative=True)
    g = d_rx * d_tx.conj()
    return g, scale * (dd_rx * d_tx.conj() + d_rx * dd_tx.conj())


def nearest_beams(u: np.ndarray, codebook_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The two codebook beams that bracket ``u``: ``(lo, hi)`` with ``u_lo <= u <= u_hi`` where possible.

    Args:
        u: ``(...)`` spatial frequencies.
    Returns:
        two ``(...)`` int arrays; at the codebook's ends both neighbours are the
        two outermost beams.
    """
    pos = (np.asarray(u, dtype=float) + 1.0) * codebook_size / 2.0 - 0.5  # fractional beam index
    lo = np.clip(np.floor(pos).astype(int), 0, codebook_size - 2)
    return lo, lo + 1


def beam_pairs_from_ranked(tx_ranked: np.ndarray, rx_ranked: np.ndarray, num_symbols: int) -> np.ndarray:
    """Group ranked tx and rx beams into ``K`` (tx, rx) pairs, one per tracking symbol.

    The paper groups each pair's top-K beams into K symbols (Sec. 3.2). A target on a
    beam centre gives no first-order angle information when tx and rx use the same
    beam, so the symbols cycle through the combinations of the two best tx and the
    two best rx beams, distinct tx/rx first: ``(t0, r0), (t0, r1), (t1, r0), (t1, r1)``
    then further ranks ``(t2, r2), (t2, r0), ...``. With ``K = 4`` and the two beams that
    bracket the target this gives sum/difference (monopulse-like) patterns whose
    ratio measures the angle anywhere between the beam centres.

    Args:
        tx_ranked: ``(..., R)`` int, best first (``R >= 2``).
        rx_ranked: ``(..., R)`` int, best first.
        num_symbols: ``K``.
    Returns:
        ``(..., K, 2)`` int ``(tx, rx)`` per symbol.
    """
    ranks = tx_ranked.shape[-1]
    order = [pair for s in range(ranks)
             for pair in ([(s, s)] + [(s, t) for t in range(s)] + [(t, s) for t in range(s)])]
    # order: (0,0), (1,1), (1,0), (0,1), (2,2), ... ; reorder the first block to the documented one.
    first = [(0, 0), (0, 1), (1, 0), (1, 1)]
    order = first + [p for p in order if p not in first]
    order = [order[k % len(order)] for k in range(num_symbols)]
    ti = np.array([a for a, _ in order])
    ri = np.array([b for _, b in order])
    return np.stack([tx_ranked[..., ti], rx_ranked[..., ri]], axis=-1)


def beams_toward(u: np.ndarray, codebook_size: int, num_symbols: int) -> np.ndarray:
    """Well-placed beams toward spatial frequency ``u``: the two bracketing beams, see
    :func:`beam_pairs_from_ranked`.

    Args:
        u: ``(...)`` spatial frequencies.
    Returns:
        ``(..., K, 2)`` int.
    """
    lo, hi = nearest_beams(u, codebook_size)
    u_lo = codebook_directions(codebook_size)[lo]
    u_hi = codebook_directions(codebook_size)[hi]
    near_lo = np.abs(np.asarray(u) - u_lo) <= np.abs(np.asarray(u) - u_hi)
    first = np.where(near_lo, lo, hi)
    second = np.where(near_lo, hi, lo)
    ranked = np.stack([first, second], axis=-1)
    return beam_pairs_from_ranked(ranked, ranked, num_symbols)


# ---------------------------------------------------------------------------------------------- hot-path form
def dirichlet_ratio(psi: np.ndarray, num_antennas: int, derivative: bool = False):
    """The real factor of :func:`dirichlet`: ``R(psi) = sin(N psi / 2) / sin(psi / 2)`` (``N`` at ``psi = 0``).

    ``D(psi) = e^{j (N - 1) psi / 2} R(psi) / sqrt(N)``; with ``derivative`` also
    ``dR/dpsi = (N cos(N psi / 2) - R cos(psi / 2)) / (2 sin(psi / 2))`` (0 at ``psi = 0``).
    Same small-angle guard as :func:`dirichlet`. Real in, real out, shape of ``psi``.
    """
    half = 0.5 * psi
    s_half = np.sin(half)
    regular = np.abs(s_half) >= 1e-9
    ratio = np.divide(np.sin(num_antennas * half), s_half, out=np.full_like(half, float(num_antennas)),
                      where=regular)
    if not derivative:
        return ratio
    top = num_antennas * np.cos(num_antennas * half) - ratio * np.cos(half)
    return ratio, np.divide(top, 2.0 * s_half, out=np.zeros_like(half), where=regular)


class BeamPatterns:
    """Closed-form two-way patterns of one DFT codebook, split into a constant phase and a real factor.

    For a DFT codebook (:func:`dft_codebook`) the two-way pattern of a (tx ``t``, rx ``r``)
    beam pair is, with ``psi_b = 2 pi d_s (u - u_b)`` and ``R`` of :func:`dirichlet_ratio`::

        g(u) = D(psi_r) conj(D(psi_t)) = phase[t, r] * r(u),
        phase[t, r] = e^{j (N - 1) pi d_s (u_t - u_r)}   (unit modulus, independent of u),
        r(u) = R(psi_r) R(psi_t) / N                     (real).

    The hot paths (echo synthesis, the angle search, the CRB) work with the real
    factor and apply the constant phase once; :func:`two_way_gain` is the complex
    reference it equals (to rounding).

    Args:
        num_antennas: ``N`` (tx and rx arrays alike).
        codebook_size: ``B``.
        spacing_wl: element spacing ``d_s / lambda``.

    Attributes:
        directions: ``(B,)`` beam directions ``u_b``.
        scale: ``2 pi d_s``, so ``psi = scale (u - u_b)``.
        phase: ``(B, B)`` complex ``phase[t, r]``.
        gram: ``(B, B)`` complex ``w_r^H w_s`` (beam-space noise covariance / sigma^2).
        orthonormal: whether ``gram`` is the identity (``B = N``): distinct rx beams give white noise.
    """

    def __init__(self, num_antennas: int, codebook_size: int, spacing_wl: float = 0.5) -> None:
        self.num_antennas = int(num_antennas)
        self.size = int(codebook_size)
        self.spacing = float(spacing_wl)
        self.directions = codebook_directions(self.size)
        self.scale = 2 * np.pi * self.spacing
        diff = self.directions[:, None] - self.directions[None, :]
        self.phase = np.exp(0.5j * (self.num_antennas - 1) * self.scale * diff)
        self._half_scale = 0.5 * self.scale
        self._n_ant = {np.float64: np.float64(self.num_antennas), np.float32: np.float32(self.num_antennas)}
        self._harmonics = np.array([1.0, self.num_antennas])[:, None, None, None]
        # q rows of pattern_sums: N r_k and 2 (dR_t R_r + R_t dR_r) -> r_k and dr_k/du.
        self._sum_scale = np.array([1.0 / self.num_antennas, self.scale / (2 * self.num_antennas)])[:, None]
        codebook = dft_codebook(self.num_antennas, self.size, self.spacing)
        self.gram = codebook.conj().T @ codebook
        self.orthonormal = bool(np.allclose(self.gram, np.eye(self.size), atol=1e-12))

    @classmethod
    def of(cls, codebook: np.ndarray, spacing_wl: float = 0.5) -> BeamPatterns:
        """Tables of the DFT codebook ``(N, B)`` (only its shape is used, as in :func:`two_way_gain`)."""
        return cls(codebook.shape[0], codebook.shape[1], spacing_wl)

    def beam_directions(self, beams: np.ndarray) -> np.ndarray:
        """``u_b`` of each beam of ``beams (..., K, 2)``: ``(..., K, 2)`` float (tx, rx)."""
        return self.directions[beams]

    def real_pattern(self, u: np.ndarray, directions: np.ndarray, derivative: bool = False):
        """Real factor ``r_k(u)`` of the two-way pattern (and ``d r_k / du``).

        Args:
            u: ``(...)`` spatial frequencies.
            directions: ``(..., K, 2)`` ``(u_tx, u_rx)`` per symbol (:meth:`beam_directions`),
                broadcast against ``u[..., None, None]``.
        Returns:
            ``(..., K)`` float64 (and its derivative).
        """
        psi = self.scale * (np.asarray(u, dtype=float)[..., None, None] - directions)
        n = self.num_antennas
        if not derivative:
            ratio = dirichlet_ratio(psi, n)
            return ratio[..., 0] * ratio[..., 1] * (1.0 / n)
        ratio, dratio = dirichlet_ratio(psi, n, derivative=True)
        r = ratio[..., 0] * ratio[..., 1] * (1.0 / n)
        dr = (dratio[..., 0] * ratio[..., 1] + ratio[..., 0] * dratio[..., 1]) * (self.scale / n)
        return r, dr

    def pattern_shape(self, u: np.ndarray, directions: np.ndarray, dtype=np.float64) -> np.ndarray:
        """``N r_k(u) = R(psi_t) R(psi_r)``: the real pattern up to its constant ``1 / N``, for
        scale-free criteria (the angle search). Arguments as :meth:`real_pattern`; ``dtype``
        float64 or float32 (the sines are then evaluated in float32)."""
        half = (self._half_scale * (u[..., None, None] - directions)).astype(dtype, copy=False)  # psi / 2
        sines = np.sin(half)
        if np.abs(sines).min(initial=1.0) < 1e-9:  # on a beam centre: the guarded form
            ratio = dirichlet_ratio(2 * half, self.num_antennas)
        else:
            ratio = np.sin(half * self._n_ant[dtype]) / sines
        return ratio[..., 0] * ratio[..., 1]

    def pattern_sums(self, u: np.ndarray, directions: np.ndarray, with_pattern: bool = False):
        """Sums over symbols of products of the real pattern and its slope, for the CRB.

        Args:
            u: ``(P,)`` spatial frequencies.
            directions: ``(P, K, 2)`` ``(u_tx, u_rx)`` per symbol (:meth:`beam_directions`).
            with_pattern: also return the real pattern ``r_k(u)`` ``(P, K)``.
        Returns:
            ``(P, 2, 2)`` ``[[S_rr, S_rd], [S_rd, S_dd]]`` with ``S_rr = sum_k r_k^2``,
            ``S_rd = sum_k r_k r_k'``, ``S_dd = sum_k r_k'^2`` (``r' = dr/du``).
        """
        half = self._half_scale * (u[:, None, None] - directions)  # psi / 2: (P, K, 2)
        angles = half * self._harmonics  # (2, P, K, 2): psi / 2 and N psi / 2
        sines = np.sin(angles)
        if np.abs(sines[0]).min(initial=1.0) < 1e-9:  # on a beam centre: the guarded form
            r, dr = self.real_pattern(u, directions, derivative=True)
            q = np.stack([r, dr], axis=1)
        else:
            cosines = np.cos(angles)
            ratio = sines[1] / sines[0]  # R(psi)
            dratio = (self.num_antennas * cosines[1] - ratio * cosines[0]) / sines[0]  # 2 dR/dpsi
            q = np.empty((len(u), 2, directions.shape[-2]))
            np.multiply(ratio[..., 0], ratio[..., 1], out=q[:, 0])
            np.add(dratio[..., 0] * ratio[..., 1], ratio[..., 0] * dratio[..., 1], out=q[:, 1])
            q *= self._sum_scale  # rows r_k and dr_k/du
        sums = np.matmul(q, q.transpose(0, 2, 1))
        return (sums, q[:, 0]) if with_pattern else sums

    def pair_phase(self, beams: np.ndarray) -> np.ndarray:
        """``phase[tx_k, rx_k]`` for ``beams (..., K, 2)``: ``(..., K)`` complex, unit modulus."""
        return self.phase[beams[..., 0], beams[..., 1]]

    def gain(self, u: np.ndarray, beams: np.ndarray) -> np.ndarray:
        """Complex ``g_k(u)`` (equals :func:`two_way_gain`): ``u (...)``, beams ``(..., K, 2)`` -> ``(..., K)``."""
        return self.pair_phase(beams) * self.real_pattern(u, self.directions[beams])


@functools.lru_cache(maxsize=32)
def beam_patterns(num_antennas: int, codebook_size: int, spacing_wl: float = 0.5) -> BeamPatterns:
    """Shared (cached) :class:`BeamPatterns` of a DFT codebook; treat it as read-only."""
    return BeamPatterns(num_antennas, codebook_size, spacing_wl)
