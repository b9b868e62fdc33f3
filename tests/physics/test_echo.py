"""Tests of rl_isac.physics.echo: the vectorised eq. (2) against a plain loop, and the beam-space noise."""

from __future__ import annotations

import numpy as np
import pytest

from rl_isac.physics.arrays import codebook_directions, dft_codebook
from rl_isac.physics.echo import (
    beam_noise,
    phase_ramp,
    qpsk_symbols,
    subcarrier_index,
    synthesize_echo,
    synthesize_echo_reference,
)


def _random_scene(cfg, num_bs, num_targets, chain_active, *, seed):
    """Random gains, angles (both half planes), delays, Dopplers, beams and symbols for the echo tests."""
    rng = np.random.default_rng(seed)
    num_rf, num_symbols = cfg.num_rf, cfg.num_tracking_symbols
    theta = rng.uniform(-np.pi, np.pi, (num_bs, num_targets))
    gains = rng.lognormal(-13, 1, (num_bs, num_targets)) * np.exp(1j * rng.uniform(0, 2 * np.pi, (num_bs, num_targets)))
    tau = rng.uniform(0, cfg.max_round_trip_s, (num_bs, num_targets))
    nu = rng.uniform(-2e3, 2e3, (num_bs, num_targets))
    beams = rng.integers(0, cfg.codebook_size, (num_bs, num_rf, num_symbols, 2))
    symbols = qpsk_symbols((num_bs, num_rf, num_symbols, cfg.num_subcarriers), rng=rng)
    return dict(chain_active=np.asarray(chain_active, bool), chain_beams=beams, gains=gains, theta=theta, tau_s=tau,
                doppler_hz=nu, symbols=symbols)


CASES = {
    # name: (num_bs, num_targets, chain_active, seed)
    # fewer targets (2) than RF chains (3), idle chains
    "fewer-targets-than-chains": (2, 2, [[True, True, False], [True, False, False]], 11),
    # more targets than chains, one BS fully idle, one fully busy
    "more-targets-one-idle-bs": (3, 5, [[True, True, True], [False, False, False], [False, True, True]], 12),
    "single-target-single-chain": (1, 1, [[False, True, False]], 13),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_vectorised_echo_equals_the_plain_loop_over_eq_2(tiny_cfg, case):
    num_bs, num_targets, active, seed = CASES[case]
    cb = dft_codebook(tiny_cfg.num_tx_antennas, tiny_cfg.codebook_size)
    s = _random_scene(tiny_cfg, num_bs, num_targets, active, seed=seed)
    fast = synthesize_echo(tiny_cfg, cb, s["chain_active"], s["chain_beams"], s["gains"], np.cos(s["theta"]),
                           s["tau_s"], s["doppler_hz"], s["symbols"], rng=None)
    ref = synthesize_echo_reference(tiny_cfg, cb, s["chain_active"], s["chain_beams"], s["gains"], s["theta"],
                                    s["tau_s"], s["doppler_hz"], s["symbols"])
    assert fast.shape == (num_bs, tiny_cfg.num_rf, tiny_cfg.num_tracking_symbols, tiny_cfg.num_subcarriers)
    assert np.max(np.abs(ref)) > 0
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-10 * np.max(np.abs(ref)))
    # Idle chains receive nothing.
    idle = ~s["chain_active"]
    assert np.all(fast[idle] == 0)


def test_vectorised_echo_equals_the_loop_for_the_paper_arrays(paper_cfg):
    cfg = paper_cfg.replace(num_subcarriers=6, num_tracking_symbols=2)
    cb = dft_codebook(cfg.num_tx_antennas, cfg.codebook_size)
    s = _random_scene(cfg, 2, 3, [[True, True], [True, False]], seed=7)
    fast = synthesize_echo(cfg, cb, s["chain_active"], s["chain_beams"], s["gains"], np.cos(s["theta"]),
                           s["tau_s"], s["doppler_hz"], s["symbols"], rng=None)
    ref = synthesize_echo_reference(cfg, cb, s["chain_active"], s["chain_beams"], s["gains"], s["theta"],
                                    s["tau_s"], s["doppler_hz"], s["symbols"])
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-10 * np.max(np.abs(ref)))


def test_echo_on_a_beam_centre_has_full_two_way_array_gain(tiny_cfg):
    """One target on beam b's centre, tx = rx = b, unit symbols, no delay or Doppler: v = sqrt(P) alpha N."""
    cb = dft_codebook(tiny_cfg.num_tx_antennas, tiny_cfg.codebook_size)
    b = 4
    u = codebook_directions(tiny_cfg.codebook_size)[[[b]]]
    active = np.array([[True, False, False]])
    beams = np.full((1, 3, tiny_cfg.num_tracking_symbols, 2), b)
    gain = np.array([[2e-6 * np.exp(0.3j)]])
    symbols = np.ones((1, 3, tiny_cfg.num_tracking_symbols, tiny_cfg.num_subcarriers), complex)
    v = synthesize_echo(tiny_cfg, cb, active, beams, gain, u, np.zeros((1, 1)), np.zeros((1, 1)), symbols, rng=None)
    np.testing.assert_allclose(v[0, 0], gain[0, 0] * tiny_cfg.num_tx_antennas, rtol=1e-12)


def test_echo_delay_and_doppler_phases_follow_eq_1(tiny_cfg):
    cb = dft_codebook(tiny_cfg.num_tx_antennas, tiny_cfg.codebook_size)
    u = codebook_directions(tiny_cfg.codebook_size)[[[4]]]
    active = np.array([[True, False, False]])
    beams = np.full((1, 3, tiny_cfg.num_tracking_symbols, 2), 4)
    symbols = np.ones((1, 3, tiny_cfg.num_tracking_symbols, tiny_cfg.num_subcarriers), complex)
    tau, nu = 1.3e-6, 1500.0
    v = synthesize_echo(tiny_cfg, cb, active, beams, np.ones((1, 1), complex), u, np.array([[tau]]),
                        np.array([[nu]]), symbols, rng=None)[0, 0]
    k = np.arange(tiny_cfg.num_tracking_symbols)[:, None]
    lc = subcarrier_index(tiny_cfg.num_subcarriers)
    expected = tiny_cfg.num_tx_antennas * np.exp(1j * 2 * np.pi * nu * k * tiny_cfg.symbol_duration_s) * np.exp(
        -1j * 2 * np.pi * tiny_cfg.subcarrier_spacing_hz * lc * tau)
    np.testing.assert_allclose(v, expected, rtol=1e-10)


def test_subcarrier_index_is_centred():
    lc = subcarrier_index(528)
    assert lc.sum() == 0
    np.testing.assert_allclose(np.diff(lc), 1.0)


def test_qpsk_symbols_are_unit_modulus_and_seeded():
    s = qpsk_symbols((3, 100), rng=np.random.default_rng(0))
    np.testing.assert_allclose(np.abs(s), 1.0)
    assert len(np.unique(np.round(np.angle(s), 6))) == 4
    np.testing.assert_array_equal(s, qpsk_symbols((3, 100), rng=np.random.default_rng(0)))


def test_noisy_echo_is_the_noise_free_echo_plus_beam_noise(tiny_cfg):
    cb = dft_codebook(tiny_cfg.num_tx_antennas, tiny_cfg.codebook_size)
    s = _random_scene(tiny_cfg, 2, 3, [[True, True, False], [True, True, True]], seed=3)
    args = (tiny_cfg, cb, s["chain_active"], s["chain_beams"], s["gains"], np.cos(s["theta"]), s["tau_s"],
            s["doppler_hz"], s["symbols"])
    noisy = synthesize_echo(*args, rng=np.random.default_rng(9))
    clean = synthesize_echo(*args, rng=None)
    noise = beam_noise(tiny_cfg, cb, s["chain_active"], s["chain_beams"][..., 1], rng=np.random.default_rng(9))
    np.testing.assert_allclose(noisy, clean + noise, rtol=1e-12, atol=1e-30)


# ---------------------------------------------------------------------------------------------- noise
def _empirical_vs_model(cfg, cb, active, rx_idx, seed):
    """Empirical covariance over subcarriers of F^H n and the model sigma^2 F^H F, both ``(M, K, R, R)``."""
    noise = beam_noise(cfg, cb, active, rx_idx, rng=np.random.default_rng(seed))  # (M, R, K, L)
    num_l = noise.shape[-1]
    emp = np.einsum("mrkl,mskl->mkrs", noise, noise.conj()) / num_l
    f = cb[:, rx_idx] * active[None, :, :, None]  # (N, M, R, K)
    model = cfg.noise_power_w * np.einsum("nmrk,nmsk->mkrs", f.conj(), f)
    return noise, emp, model


def test_beam_noise_covariance_is_sigma2_f_h_f_with_correlated_chains(tiny_cfg):
    cfg = tiny_cfg.replace(num_subcarriers=6000)
    cb = dft_codebook(cfg.num_rx_antennas, cfg.codebook_size)  # 12 beams on 8 antennas: not orthogonal
    active = np.array([[True, True, True], [True, True, False]])
    rx_idx = np.array([[[2, 2], [2, 3], [7, 3]],       # symbol 0: chains 0 and 1 share rx beam 2
                       [[0, 1], [1, 11], [5, 5]]])      # BS 1, chain 2 idle
    noise, emp, model = _empirical_vs_model(cfg, cb, active, rx_idx, seed=0)
    sigma2 = cfg.noise_power_w
    # Each entry's estimate has std ~ sigma^2 / sqrt(L) = 0.013 sigma^2: allow 6 of them.
    np.testing.assert_allclose(emp, model, rtol=0, atol=0.08 * sigma2)
    # Partial correlation (adjacent beams 0 and 1: |w_0^H w_1| = 0.418) and full correlation are exercised.
    np.testing.assert_allclose(abs(model[1, 0, 0, 1]), 0.418 * sigma2, rtol=1e-3)
    np.testing.assert_allclose(abs(model[0, 1, 1, 2]), sigma2, rtol=1e-12)
    # Same rx beam: the two chains see the very same noise.
    np.testing.assert_allclose(noise[0, 0, 0], noise[0, 1, 0], rtol=1e-6, atol=1e-9 * np.sqrt(sigma2))
    # Idle chain: no noise at all.
    assert np.all(noise[1, 2] == 0)


def test_beam_noise_is_white_with_variance_sigma2_for_distinct_orthogonal_beams(paper_cfg):
    cfg = paper_cfg.replace(num_subcarriers=6000)
    cb = dft_codebook(32, 32)
    active = np.array([[True, True], [True, False]])
    rx_idx = np.array([[[3, 4], [4, 3]], [[10, 11], [0, 0]]])
    _, emp, model = _empirical_vs_model(cfg, cb, active, rx_idx, seed=1)
    sigma2 = cfg.noise_power_w
    np.testing.assert_allclose(model[0, 0], sigma2 * np.eye(2), atol=1e-12 * sigma2)
    np.testing.assert_allclose(emp, model, rtol=0, atol=0.08 * sigma2)


def test_beam_noise_same_seed_same_draw(tiny_cfg):
    cb = dft_codebook(tiny_cfg.num_rx_antennas, tiny_cfg.codebook_size)
    active = np.ones((2, 3), bool)
    rx_idx = np.random.default_rng(0).integers(0, 12, (2, 3, 3))
    a = beam_noise(tiny_cfg, cb, active, rx_idx, rng=np.random.default_rng(4))
    b = beam_noise(tiny_cfg, cb, active, rx_idx, rng=np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------------- precision
@pytest.mark.parametrize("theta", [0.0, 1e-3, -0.7, 2.5, 1234.5])
def test_phase_ramp_equals_the_direct_exponential(theta):
    num, offset = 528, 263.5
    direct = np.exp(1j * theta * (np.arange(num) - offset))
    np.testing.assert_allclose(phase_ramp(np.array([theta]), num, offset)[0], direct, atol=1e-10)
    ramp64 = phase_ramp(np.array([theta]), num, offset, np.complex64)[0]
    assert ramp64.dtype == np.complex64
    np.testing.assert_allclose(ramp64, direct, atol=1e-6)
    assert phase_ramp(np.array([[theta, 1.0]]), 7).shape == (1, 2, 7)


def test_complex64_echo_matches_complex128_to_single_precision(tiny_cfg):
    cb = dft_codebook(tiny_cfg.num_tx_antennas, tiny_cfg.codebook_size)
    s = _random_scene(tiny_cfg, 2, 3, [[True, True, False], [True, True, True]], seed=4)
    args = (tiny_cfg, cb, s["chain_active"], s["chain_beams"], s["gains"], np.cos(s["theta"]), s["tau_s"],
            s["doppler_hz"], s["symbols"])
    y128 = synthesize_echo(*args, rng=None)
    y64 = synthesize_echo(*args, rng=None, dtype=np.complex64)
    assert y128.dtype == np.complex128 and y64.dtype == np.complex64
    np.testing.assert_allclose(y64, y128, rtol=0, atol=1e-5 * np.abs(y128).max())
    noisy = synthesize_echo(*args, rng=np.random.default_rng(0), dtype=np.complex64)
    assert noisy.dtype == np.complex64


def test_complex64_beam_noise_has_variance_sigma2(paper_cfg):
    cfg = paper_cfg.replace(num_subcarriers=4000)
    cb = dft_codebook(32, 32)
    noise = beam_noise(cfg, cb, np.ones((1, 2), bool), np.array([[[3], [9]]]), rng=np.random.default_rng(2),
                       dtype=np.complex64)
    assert noise.dtype == np.complex64
    np.testing.assert_allclose(np.mean(np.abs(noise.astype(complex)) ** 2), cfg.noise_power_w, rtol=0.05)


def test_qpsk_symbols_are_uniform_over_the_four_points():
    s = qpsk_symbols((40001,), rng=np.random.default_rng(1))
    assert s.shape == (40001,)
    quadrant = np.round((np.angle(s) - np.pi / 4) / (np.pi / 2)).astype(int) % 4
    freq = np.bincount(quadrant, minlength=4) / len(s)
    np.testing.assert_allclose(freq, 0.25, atol=0.01)  # std 0.0022 each
    assert qpsk_symbols((3, 5), rng=np.random.default_rng(1), dtype=np.complex64).dtype == np.complex64
