"""Tests of rl_isac.physics.channel: geometry, radar-equation gain, delay and Doppler of eq. (1)."""

from __future__ import annotations

import numpy as np

from rl_isac.physics.channel import (
    channel_gains,
    delay_s,
    doppler_hz,
    geometry,
    path_amplitude,
    received_amplitude,
)
from rl_isac.scenario import SPEED_OF_LIGHT_MPS, ScenarioConfig


def test_geometry_uses_atan2_from_each_bs():
    bs = np.array([[0.0, 0.0], [150.0, 100.0]])
    pos = np.array([[30.0, 40.0], [150.0, 60.0]])
    range_m, angle = geometry(bs, pos)
    assert range_m.shape == angle.shape == (2, 2)
    np.testing.assert_allclose(range_m[0], [50.0, np.hypot(150, 60)])
    np.testing.assert_allclose(angle[0, 0], np.arctan2(40, 30))
    np.testing.assert_allclose(angle[1, 1], -np.pi / 2)  # straight below a top-edge BS
    assert np.all(angle[0] > 0) and np.all(angle[1] < 0)


def test_radar_equation_gain_and_round_trip_delay():
    cfg = ScenarioConfig()
    d = np.array([10.0, 100.0])
    amp = path_amplitude(cfg, d)
    np.testing.assert_allclose(amp**2, cfg.wavelength_m**2 * cfg.rcs_m2 / ((4 * np.pi) ** 3 * d**4))
    np.testing.assert_allclose(amp[0] / amp[1], 100.0)  # |alpha| ~ 1/d^2
    np.testing.assert_allclose(received_amplitude(cfg, d), np.sqrt(cfg.tx_power_per_subcarrier_w) * amp)
    np.testing.assert_allclose(delay_s(d), 2 * d / SPEED_OF_LIGHT_MPS)


def test_doppler_is_positive_for_an_approaching_target():
    cfg = ScenarioConfig()
    bs = np.array([[0.0, 0.0]])
    pos = np.array([[30.0, 40.0], [30.0, 40.0], [30.0, 40.0]])
    radial = pos[0] / 50.0
    vel = np.array([-10 * radial, 10 * radial, [-8.0, 6.0]])  # approaching, receding, tangential
    nu = doppler_hz(cfg, bs, pos, vel)
    np.testing.assert_allclose(nu[0], [2 * 10 / cfg.wavelength_m, -2 * 10 / cfg.wavelength_m, 0.0], atol=1e-9)


def test_channel_gains_have_radar_amplitude_and_uniform_random_phase():
    cfg = ScenarioConfig()
    d = np.full((4, 5000), 60.0)
    g = channel_gains(cfg, d, rng=np.random.default_rng(0))
    np.testing.assert_allclose(np.abs(g), received_amplitude(cfg, d))
    # Uniform phase: the mean of e^{j phi} over 20000 draws is ~ 0 (std 0.007).
    assert abs(np.mean(g / np.abs(g))) < 0.03
    g2 = channel_gains(cfg, d, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(g, g2)
