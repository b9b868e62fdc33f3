"""Tests of rl_isac.physics.fisher: the (range, angle) CRB, position information and the PCRB recursion."""

from __future__ import annotations

import numpy as np
import pytest

from rl_isac.physics.arrays import beams_toward, codebook_directions, dft_codebook, steering_vector
from rl_isac.physics.channel import geometry, received_amplitude
from rl_isac.physics.echo import subcarrier_index
from rl_isac.physics.fisher import (
    angle_variance,
    expected_position_information,
    pcrb_recursion,
    position_information,
    range_angle_crb,
    range_angle_crb_reference,
)
from rl_isac.scenario import SPEED_OF_LIGHT_MPS


def _mean_samples(cfg, cb, params, beams):
    """Noise-free ``mu[k, l]`` built from steering vectors for params ``(tau, u, rho, phi0, nu)``, ``(K, L)``."""
    tau, u, rho, phi0, nu = params
    a = steering_vector(u, cb.shape[0], cfg.antenna_spacing_wavelengths)
    g = np.array([(cb[:, r].conj() @ a) * (a.conj() @ cb[:, t]) for t, r in beams])  # (w_rx^H a)(a^H w_tx)
    k = np.arange(len(beams))[:, None]
    lc = subcarrier_index(cfg.num_subcarriers)
    return (rho * np.exp(1j * phi0) * np.exp(1j * 2 * np.pi * nu * k * cfg.symbol_duration_s) * g[:, None]
            * np.exp(-1j * 2 * np.pi * cfg.subcarrier_spacing_hz * lc * tau))


def _brute_force_crb(cfg, cb, params, beams):
    """Numerical FIM ``2/sigma^2 Re(D^H D)`` over all five parameters, inverted: ``(var_tau, var_u)``."""
    params = np.asarray(params, float)
    steps = np.array([1e-12, 1e-6, 1e-6 * params[2], 1e-6, 1e-2])
    cols = []
    for p, h in enumerate(steps):
        up, down = params.copy(), params.copy()
        up[p] += h
        down[p] -= h
        cols.append(((_mean_samples(cfg, cb, up, beams) - _mean_samples(cfg, cb, down, beams)) / (2 * h)).ravel())
    d = np.stack(cols, axis=1)
    fim = 2 / cfg.noise_power_w * np.real(d.conj().T @ d)
    scale = 1 / np.sqrt(np.diag(fim))  # invert the well-scaled matrix
    crb = np.linalg.inv(fim * scale[:, None] * scale[None, :]) * scale[:, None] * scale[None, :]
    return crb[0, 0], crb[1, 1]


@pytest.mark.parametrize("case", ["bracketing-beams", "random-beams", "near-beam-centre"])
def test_range_angle_crb_matches_a_brute_force_numerical_fim(single_bs_cfg, case):
    cfg = single_bs_cfg
    cb = dft_codebook(cfg.num_tx_antennas, cfg.codebook_size)
    rng = np.random.default_rng({"bracketing-beams": 0, "random-beams": 1, "near-beam-centre": 2}[case])
    range_m = rng.uniform(30, 150)
    u = rng.uniform(-0.8, 0.8)
    if case == "near-beam-centre":
        # Exactly on the centre only symbol 0 carries signal, the Doppler is unobservable and a numerical FIM
        # is singular up to round-off; 0.002 (3% of the beam spacing) off it, every parameter is observable.
        u = codebook_directions(cfg.codebook_size)[9] + 0.002
    beams = beams_toward(np.array([u]), cfg.codebook_size, cfg.num_tracking_symbols)[0]
    if case == "random-beams":
        nearest = int(np.argmin(np.abs(codebook_directions(cfg.codebook_size) - u)))
        beams = np.clip(nearest + rng.integers(-2, 3, (cfg.num_tracking_symbols, 2)), 0, cfg.codebook_size - 1)
    rho = received_amplitude(cfg, np.array([range_m]))
    params = (2 * range_m / SPEED_OF_LIGHT_MPS, u, rho[0], rng.uniform(0, 2 * np.pi), rng.uniform(-1500, 1500))
    var_tau, var_u = _brute_force_crb(cfg, cb, params, beams)
    var_r, var_u_code = range_angle_crb(cfg, cb, rho, np.array([u]), beams[None])
    np.testing.assert_allclose(var_r[0], (SPEED_OF_LIGHT_MPS / 2) ** 2 * var_tau, rtol=1e-4)
    np.testing.assert_allclose(var_u_code[0], var_u, rtol=1e-4)


def test_closed_form_crb_equals_the_general_4x4_fisher_solve(single_bs_cfg):
    cfg = single_bs_cfg
    cb = dft_codebook(cfg.num_tx_antennas, cfg.codebook_size)
    rng = np.random.default_rng(7)
    num = 400
    u = rng.uniform(-0.95, 0.95, num)
    nearest = np.clip(np.round((u + 1) * 16 - 0.5).astype(int), 0, 31)
    beams = np.clip(nearest[:, None, None] + rng.integers(-2, 3, (num, cfg.num_tracking_symbols, 2)), 0, 31)
    beams[:100] = beams_toward(u[:100], cfg.codebook_size, cfg.num_tracking_symbols)
    beams[-5:] = 0  # far from the target: (almost) no information
    amp = received_amplitude(cfg, rng.uniform(20, 300, num))
    var_r, var_u = range_angle_crb(cfg, cb, amp, u, beams)
    ref_r, ref_u = range_angle_crb_reference(cfg, cb, amp, u, beams)
    np.testing.assert_allclose(var_r, ref_r, rtol=1e-9)
    np.testing.assert_allclose(var_u[:-5], ref_u[:-5], rtol=1e-6)
    # Beams far away: both forms agree there is no usable angle information (rounding differs in sidelobes).
    assert np.all(var_u[-5:] > 1e6) and np.all(ref_u[-5:] > 1e6)


def test_expected_position_information_composes_the_crb_and_the_geometry(single_bs_cfg):
    cfg = single_bs_cfg
    cb = dft_codebook(cfg.num_tx_antennas, cfg.codebook_size)
    bs = np.array([[200.0, 0.0], [100.0, 200.0]])
    pos = np.array([[230.0, 60.0], [150.0, 120.0], [320.0, 20.0]])
    range_m, angle = geometry(bs, pos)
    beams = beams_toward(np.cos(angle), cfg.codebook_size, cfg.num_tracking_symbols)
    info = expected_position_information(cfg, cb, bs, pos, beams)
    assert info.shape == (2, 3, 2, 2)
    amp = received_amplitude(cfg, range_m)
    for m in range(2):
        var_r, var_u = range_angle_crb(cfg, cb, amp[m], np.cos(angle[m]), beams[m])
        expected = position_information(range_m[m], angle[m], var_r, angle_variance(var_u, angle[m]))
        np.testing.assert_allclose(info[m], expected, rtol=1e-12)


def test_crb_scales_inversely_with_snr_and_is_infinite_without_signal(single_bs_cfg):
    cfg = single_bs_cfg
    cb = dft_codebook(cfg.num_tx_antennas, cfg.codebook_size)
    u = np.array([0.3, 0.3, 0.3])
    beams = beams_toward(u, cfg.codebook_size, cfg.num_tracking_symbols)
    var_r, var_u = range_angle_crb(cfg, cb, np.array([1e-7, 2e-7, 0.0]), u, beams)
    np.testing.assert_allclose(var_r[0] / var_r[1], 4.0)
    np.testing.assert_allclose(var_u[0] / var_u[1], 4.0)
    assert np.isinf(var_r[2]) and np.isinf(var_u[2])


def test_same_tx_rx_beam_on_its_centre_gives_no_angle_information(single_bs_cfg):
    """The physics trap: g is at its peak, dg/du = 0, so the angle is unobservable (infinite or huge CRB)."""
    cfg = single_bs_cfg
    cb = dft_codebook(cfg.num_tx_antennas, cfg.codebook_size)
    u = codebook_directions(cfg.codebook_size)[[9]]
    same = np.full((1, cfg.num_tracking_symbols, 2), 9)
    good = beams_toward(u, cfg.codebook_size, cfg.num_tracking_symbols)
    amp = np.array([1e-6])
    _, var_same = range_angle_crb(cfg, cb, amp, u, same)
    _, var_good = range_angle_crb(cfg, cb, amp, u, good)
    assert np.isfinite(var_good[0])
    assert var_same[0] > 1e6 * var_good[0]


def test_angle_variance_maps_u_to_theta():
    np.testing.assert_allclose(angle_variance(np.array([1e-4]), np.array([np.pi / 6])), 1e-4 / 0.25)


def test_position_information_equals_h_transpose_diag_h():
    rng = np.random.default_rng(3)
    bs = np.array([[150.0, 0.0]])
    pos = np.column_stack([rng.uniform(10, 290, 6), rng.uniform(5, 95, 6)])
    range_m, angle = geometry(bs, pos)
    range_m, angle = range_m[0], angle[0]
    var_r = rng.uniform(1e-3, 1.0, 6)
    var_a = rng.uniform(1e-6, 1e-3, 6)
    info = position_information(range_m, angle, var_r, var_a)
    assert info.shape == (6, 2, 2)
    h_step = 1e-5
    for i in range(6):
        # H = d(range, angle) / d(x, y) by central differences of the geometry itself.
        jac = np.zeros((2, 2))
        for axis in range(2):
            dp = np.zeros(2)
            dp[axis] = h_step
            r_p, a_p = geometry(bs, (pos[i] + dp)[None])
            r_m, a_m = geometry(bs, (pos[i] - dp)[None])
            jac[:, axis] = [(r_p - r_m)[0, 0] / (2 * h_step), (a_p - a_m)[0, 0] / (2 * h_step)]
        expected = jac.T @ np.diag([1 / var_r[i], 1 / var_a[i]]) @ jac
        np.testing.assert_allclose(info[i], expected, rtol=1e-6)
        np.testing.assert_allclose(info[i], info[i].T)


def test_position_information_ignores_infinite_variances():
    info = position_information(np.array([50.0, 50.0]), np.array([1.0, 1.0]), np.array([np.inf, 0.01]),
                                np.array([1e-4, np.inf]))
    assert np.all(np.isfinite(info))
    # Only the angle (first) or only the range (second) contributes: rank one.
    np.testing.assert_allclose(np.linalg.det(info), 0.0, atol=1e-12 * np.abs(info).max() ** 2)
    c, s = np.cos(1.0), np.sin(1.0)
    np.testing.assert_allclose(info[1], np.outer([c, s], [c, s]) / 0.01)


# ---------------------------------------------------------------------------------------------- PCRB
def _cv_model(dt=0.1, q=1.0):
    f = np.eye(4)
    f[0, 2] = f[1, 3] = dt
    g = np.array([[dt**2 / 2, 0], [0, dt**2 / 2], [dt, 0], [0, dt]])
    return f, q * g @ g.T + 1e-9 * np.eye(4)


def test_pcrb_without_measurements_grows_every_block():
    f, qn = _cv_model()
    prior = np.linalg.inv(np.diag([1.0, 1.0, 4.0, 4.0]))[None]
    out = pcrb_recursion(prior, f, qn, np.zeros((20, 1, 2, 2)))
    assert out.shape == (20, 1, 4, 4)
    pos_var = np.trace(out[:, 0, :2, :2], axis1=-2, axis2=-1)
    assert pos_var[0] > 2.0
    assert np.all(np.diff(pos_var) > 0)


def test_pcrb_with_measurements_shrinks_and_settles():
    f, qn = _cv_model()
    prior = np.linalg.inv(np.diag([100.0, 100.0, 25.0, 25.0]))[None]
    meas = np.broadcast_to(np.eye(2) / 0.01, (30, 1, 2, 2))  # 10 cm std per axis each block
    out = pcrb_recursion(prior, f, qn, meas)
    pos_var = np.trace(out[:, 0, :2, :2], axis1=-2, axis2=-1)
    assert pos_var[0] < 0.02 + 1e-9  # below the single-measurement bound 2 x 0.01
    assert pos_var[-1] < pos_var[0]
    np.testing.assert_allclose(pos_var[-1], pos_var[-2], rtol=1e-3)  # steady state
    free = pcrb_recursion(prior, f, qn, np.zeros((30, 1, 2, 2)))
    assert np.all(np.linalg.eigvalsh(free[:, 0] - out[:, 0]) > -1e-12)  # information only helps


def test_pcrb_equals_the_kalman_filter_covariance_of_the_linear_model():
    """Two forms of one computation: information-form recursion vs Joseph-form Kalman update."""
    rng = np.random.default_rng(4)
    f, qn = _cv_model(q=3.0)
    p0 = np.diag([4.0, 9.0, 1.0, 2.0])
    num_blocks = 12
    meas = np.zeros((num_blocks, 2, 2, 2))
    for qi in range(num_blocks):
        for i in range(2):
            if rng.random() < 0.7:  # some blocks carry no information (target not associated)
                a = rng.standard_normal((2, 2))
                meas[qi, i] = a @ a.T + 0.1 * np.eye(2)
    out = pcrb_recursion(np.stack([np.linalg.inv(p0)] * 2), f, qn, meas)
    e = np.eye(4)[:2]
    for i in range(2):
        p = p0
        for qi in range(num_blocks):
            p = f @ p @ f.T + qn
            if np.any(meas[qi, i]):
                r = np.linalg.inv(meas[qi, i])
                gain = p @ e.T @ np.linalg.inv(e @ p @ e.T + r)
                ikh = np.eye(4) - gain @ e
                p = ikh @ p @ ikh.T + gain @ r @ gain.T
            np.testing.assert_allclose(out[qi, i], p, rtol=1e-8, atol=1e-12)
