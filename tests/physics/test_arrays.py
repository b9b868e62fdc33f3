"""Tests of rl_isac.physics.arrays: steering vectors, the DFT codebook and two-way beam patterns."""

from __future__ import annotations

import numpy as np
import pytest

from rl_isac.physics.arrays import (
    BeamPatterns,
    beam_pairs_from_ranked,
    beam_patterns,
    beam_response,
    beam_response_derivative,
    beams_toward,
    codebook_directions,
    dft_codebook,
    dirichlet,
    dirichlet_ratio,
    nearest_beams,
    steering_vector,
    two_way_gain,
)


def test_steering_vector_has_unit_modulus_entries_and_the_papers_form():
    rng = np.random.default_rng(0)
    theta = rng.uniform(0, np.pi, 7)
    u = np.cos(theta)
    a = steering_vector(u, 32, 0.5)
    assert a.shape == (7, 32)
    np.testing.assert_allclose(np.abs(a), 1.0, atol=1e-14)
    n = np.arange(32)
    # a(theta) = [1, e^{j 2 pi (d/lambda) cos theta}, ..., e^{j 2 pi (d/lambda) (N-1) cos theta}]
    expected = np.exp(1j * 2 * np.pi * 0.5 * np.cos(theta)[:, None] * n)
    np.testing.assert_allclose(a, expected, atol=1e-12)
    np.testing.assert_allclose(a[:, 0], 1.0)


def test_steering_vector_with_other_spacing_and_scalar_input():
    a = steering_vector(0.3, 5, 0.4)
    assert a.shape == (5,)
    np.testing.assert_allclose(a, np.exp(1j * 2 * np.pi * 0.4 * 0.3 * np.arange(5)))


def test_codebook_directions_are_uniform_in_u_and_symmetric():
    dirs = codebook_directions(32)
    np.testing.assert_allclose(np.diff(dirs), 2 / 32)
    np.testing.assert_allclose(dirs[0], -1 + 1 / 32)
    np.testing.assert_allclose(dirs, -dirs[::-1], atol=1e-15)


@pytest.mark.parametrize("num_antennas", [8, 32])
def test_dft_codebook_columns_are_orthonormal_when_size_equals_antennas(num_antennas):
    cb = dft_codebook(num_antennas, num_antennas)
    assert cb.shape == (num_antennas, num_antennas)
    np.testing.assert_allclose(cb.conj().T @ cb, np.eye(num_antennas), atol=1e-12)


def test_dft_codebook_columns_are_unit_norm_for_any_size():
    cb = dft_codebook(8, 12)
    np.testing.assert_allclose(np.linalg.norm(cb, axis=0), 1.0, atol=1e-14)


def test_beam_response_is_sqrt_n_at_its_centre_and_zero_at_other_centres():
    cb = dft_codebook(32, 32)
    resp = beam_response(codebook_directions(32), cb)  # [u_b', b]
    np.testing.assert_allclose(np.abs(np.diag(resp)), np.sqrt(32), atol=1e-12)
    off = resp - np.diag(np.diag(resp))
    np.testing.assert_allclose(off, 0.0, atol=1e-12)


def test_beam_response_equals_codebook_inner_product():
    cb = dft_codebook(16, 20, 0.45)
    u = np.array([-0.7, 0.05, 0.9])
    expected = steering_vector(u, 16, 0.45) @ cb.conj()  # w_b^H a(u)
    np.testing.assert_allclose(beam_response(u, cb, 0.45), expected, atol=1e-12)


def test_beam_response_derivative_matches_finite_differences():
    cb = dft_codebook(32, 32)
    u = np.array([-0.31, 0.2, 0.77])
    h = 1e-6
    fd = (beam_response(u + h, cb) - beam_response(u - h, cb)) / (2 * h)
    np.testing.assert_allclose(beam_response_derivative(u, cb), fd, rtol=1e-6, atol=1e-6)


def test_dirichlet_closed_form_equals_the_sum_including_psi_zero():
    n = 32
    psi = np.array([0.0, 1e-12, 0.01, -0.5, 2.0, 3.0, -6.0])
    explicit = np.exp(1j * psi[:, None] * np.arange(n)).sum(axis=1) / np.sqrt(n)
    np.testing.assert_allclose(dirichlet(psi, n), explicit, atol=1e-10)


def _explicit_two_way(u, beams, cb, spacing):
    """``(w_rx^H a(u)) (a(u)^H w_tx)`` from steering vectors, per symbol: u ``(P,)``, beams ``(P, K, 2)``."""
    a = steering_vector(u, cb.shape[0], spacing)  # (P, N)
    w_tx = cb[:, beams[..., 0]]  # (N, P, K)
    w_rx = cb[:, beams[..., 1]]
    rx = np.einsum("npk,pn->pk", w_rx.conj(), a)
    tx = np.einsum("pn,npk->pk", a.conj(), w_tx)
    return rx * tx


@pytest.mark.parametrize(("num_antennas", "size", "spacing"), [(32, 32, 0.5), (8, 12, 0.5), (15, 15, 0.4)])
def test_two_way_gain_closed_form_equals_steering_vector_product(num_antennas, size, spacing):
    rng = np.random.default_rng(1)
    cb = dft_codebook(num_antennas, size, spacing)
    u = np.concatenate([rng.uniform(-1, 1, 20), codebook_directions(size)[[0, 3]]])  # incl. beam centres
    beams = rng.integers(0, size, (len(u), 4, 2))
    beams[-2:, 0] = [[0, 0], [3, 3]]  # same tx/rx beam right on its centre
    np.testing.assert_allclose(two_way_gain(u, beams, cb, spacing), _explicit_two_way(u, beams, cb, spacing),
                               atol=1e-10)


@pytest.mark.parametrize(("num_antennas", "size", "spacing"), [(32, 32, 0.5), (8, 12, 0.5), (15, 15, 0.4)])
def test_two_way_gain_derivative_matches_finite_differences(num_antennas, size, spacing):
    rng = np.random.default_rng(2)
    cb = dft_codebook(num_antennas, size, spacing)
    u = np.concatenate([rng.uniform(-0.95, 0.95, 20), codebook_directions(size)[[5]]])
    beams = rng.integers(0, size, (len(u), 3, 2))
    beams[-1] = 5  # on the centre of both beams: g is at its peak, dg/du = 0
    g, dg = two_way_gain(u, beams, cb, spacing, derivative=True)
    np.testing.assert_allclose(g, two_way_gain(u, beams, cb, spacing), atol=0)
    h = 1e-6
    fd = (_explicit_two_way(u + h, beams, cb, spacing) - _explicit_two_way(u - h, beams, cb, spacing)) / (2 * h)
    scale = np.max(np.abs(fd))
    np.testing.assert_allclose(dg, fd, atol=1e-6 * scale)
    np.testing.assert_allclose(np.abs(dg[-1]), 0.0, atol=1e-6 * scale)


def test_two_way_gain_phase_does_not_depend_on_u():
    """Monostatic geometry: the u-dependent phases of rx and tx factors cancel; |g| carries the angle."""
    cb = dft_codebook(32, 32)
    beams = np.array([[[10, 11]]])
    u = codebook_directions(32)[10] + np.linspace(0.001, 0.06, 9)  # between beams 10 and 11: main lobes
    g = two_way_gain(u, np.broadcast_to(beams, (len(u), 1, 2)), cb)[:, 0]
    np.testing.assert_allclose(np.angle(g), np.angle(g[0]), atol=1e-9)


def test_nearest_beams_bracket_u_inside_the_codebook_span():
    rng = np.random.default_rng(3)
    dirs = codebook_directions(32)
    u = rng.uniform(dirs[0], dirs[-1], 500)
    lo, hi = nearest_beams(u, 32)
    assert np.all(hi == lo + 1)
    assert np.all(dirs[lo] <= u + 1e-12) and np.all(u <= dirs[hi] + 1e-12)


def test_nearest_beams_at_the_ends_use_the_two_outermost_beams():
    lo, hi = nearest_beams(np.array([-1.0, 1.0]), 32)
    assert (lo[0], hi[0]) == (0, 1)
    assert (lo[1], hi[1]) == (30, 31)


def test_beam_pairs_from_ranked_follow_the_documented_order():
    tx = np.array([7, 8, 9])
    rx = np.array([17, 18, 19])
    pairs = beam_pairs_from_ranked(tx, rx, 4)
    np.testing.assert_array_equal(pairs, [[7, 17], [7, 18], [8, 17], [8, 18]])
    assert beam_pairs_from_ranked(tx, rx, 6).shape == (6, 2)


def test_beams_toward_brackets_target_and_uses_distinct_tx_rx_beams():
    rng = np.random.default_rng(4)
    dirs = codebook_directions(32)
    u = np.concatenate([rng.uniform(dirs[0], dirs[-1], 200), dirs[[4, 20]]])  # incl. exact beam centres
    beams = beams_toward(u, 32, 4)
    assert beams.shape == (len(u), 4, 2)
    assert np.issubdtype(beams.dtype, np.integer)
    used = np.sort(beams.reshape(len(u), -1), axis=1)
    lo, hi = used[:, 0], used[:, -1]
    assert np.all(dirs[lo] <= u + 1e-12) and np.all(u <= dirs[hi] + 1e-12)
    assert np.all(hi - lo == 1)  # the two adjacent bracketing beams
    # Some symbols use different tx and rx beams (angle information on a beam centre too).
    assert np.all(np.any(beams[..., 0] != beams[..., 1], axis=1))
    # The first symbol uses the nearest beam for both tx and rx.
    first = beams[:, 0, 0]
    assert np.all(np.abs(dirs[first] - u) <= 1 / 32 + 1e-12)


def test_beams_toward_gives_angle_information_on_a_beam_centre():
    """With distinct tx/rx beams, dg/du != 0 for a target exactly on a beam centre."""
    cb = dft_codebook(32, 32)
    u = codebook_directions(32)[[12]]
    beams = beams_toward(u, 32, 4)
    _, dg = two_way_gain(u, beams, cb, derivative=True)
    assert np.sum(np.abs(dg) ** 2) > 1.0


# ---------------------------------------------------------------------------------------------- hot-path form
@pytest.mark.parametrize(("num_antennas", "size", "spacing"), [(32, 32, 0.5), (8, 12, 0.5), (15, 15, 0.4)])
def test_beam_patterns_constant_phase_times_real_factor_equals_two_way_gain(num_antennas, size, spacing):
    rng = np.random.default_rng(5)
    cb = dft_codebook(num_antennas, size, spacing)
    pat = BeamPatterns(num_antennas, size, spacing)
    u = np.concatenate([rng.uniform(-1, 1, 30), codebook_directions(size)[[2]]])
    beams = rng.integers(0, size, (len(u), 4, 2))
    g, dg = two_way_gain(u, beams, cb, spacing, derivative=True)
    np.testing.assert_allclose(pat.gain(u, beams), g, atol=1e-10)
    phase = pat.pair_phase(beams)
    np.testing.assert_allclose(np.abs(phase), 1.0, atol=1e-14)
    r, dr = pat.real_pattern(u, pat.beam_directions(beams), derivative=True)
    assert r.dtype == dr.dtype == np.float64
    np.testing.assert_allclose(phase * r, g, atol=1e-10)
    np.testing.assert_allclose(phase * dr, dg, atol=1e-9 * np.abs(dg).max())
    np.testing.assert_allclose(pat.real_pattern(u, pat.beam_directions(beams)), r, atol=0)


def test_beam_patterns_gram_is_the_codebook_gram_and_flags_orthonormal_codebooks():
    for n, b, ortho in ((32, 32, True), (8, 12, False)):
        cb = dft_codebook(n, b)
        pat = beam_patterns(n, b)
        np.testing.assert_allclose(pat.gram, cb.conj().T @ cb, atol=1e-12)
        assert pat.orthonormal is ortho
    assert beam_patterns(32, 32) is beam_patterns(32, 32)  # shared tables
    assert BeamPatterns.of(dft_codebook(8, 12)).size == 12


def test_dirichlet_ratio_is_the_real_factor_of_dirichlet_with_its_derivative():
    n = 32
    psi = np.array([0.0, 1e-12, 0.01, -0.5, 2.0, 3.0, -6.0])
    ratio, dratio = dirichlet_ratio(psi, n, derivative=True)
    np.testing.assert_allclose(np.exp(0.5j * (n - 1) * psi) * ratio / np.sqrt(n), dirichlet(psi, n), atol=1e-10)
    h = 1e-6
    fd = (dirichlet_ratio(psi + h, n) - dirichlet_ratio(psi - h, n)) / (2 * h)
    np.testing.assert_allclose(dratio, fd, atol=1e-4)
