"""Tests of the multi-peak front end (interface 2): several resolved range peaks per gate, at both
fidelities, and the gate's measured noise-plus-interference floor in the reported covariance."""

from __future__ import annotations

import numpy as np
import pytest

from rl_isac.errors import MeasurementError
from rl_isac.network import CellFreeNetwork
from rl_isac.physics.arrays import beams_toward, dft_codebook, two_way_gain
from rl_isac.physics.echo import subcarrier_index
from rl_isac.physics.estimation import PairEstimator, merge_spread
from rl_isac.physics.measurements import Measurements
from rl_isac.scenario import SPEED_OF_LIGHT_MPS, ScenarioConfig


def _echoes(cfg, cb, ranges_m, us, amplitudes, beams, rng, noise_scale=1.0):
    """Samples ``(1, K, L)`` of several echoes through one pair's beams, plus white noise of power
    ``noise_scale * sigma^2``."""
    lc = subcarrier_index(cfg.num_subcarriers)
    z = np.zeros((1, cfg.num_tracking_symbols, cfg.num_subcarriers), complex)
    for d, u, a in zip(ranges_m, us, amplitudes):
        g = two_way_gain(np.array([u]), beams, cb, cfg.antenna_spacing_wavelengths)  # (1, K)
        tau = 2 * d / SPEED_OF_LIGHT_MPS
        z += (a * np.exp(1j * rng.uniform(0, 2 * np.pi)) * g[:, :, None]
              * np.exp(-1j * 2 * np.pi * cfg.subcarrier_spacing_hz * lc * tau))
    std = np.sqrt(noise_scale * cfg.noise_power_w / 2)
    z += (rng.standard_normal(z.shape) + 1j * rng.standard_normal(z.shape)) * std
    return z


@pytest.fixture
def setup():
    cfg = ScenarioConfig.paper(4)
    cb = dft_codebook(cfg.num_tx_antennas, cfg.codebook_size)
    return cfg, cb, PairEstimator(cfg, cb)


def test_two_echoes_in_one_gate_give_two_peaks_strongest_first(setup):
    cfg, cb, est = setup
    rng = np.random.default_rng(1)
    u = 0.3
    beams = beams_toward(np.array([u]), cfg.codebook_size, cfg.num_tracking_symbols)
    errs = []
    for _ in range(30):
        z = _echoes(cfg, cb, [60.0, 66.0], [u, u + 0.01], [1e-8, 4e-9], beams, rng)  # ~39 and ~31 dB integrated
        r, a, snr, det, vr, va = est.estimate_peaks(z.astype(np.complex64), beams, np.ones(1), np.array([52.0]),
                                                    np.array([72.0]), est.threshold_gated, 2)
        assert det[0].all()
        assert snr[0, 0] > snr[0, 1]
        errs.append((r[0] - [60.0, 66.0]) / np.sqrt(vr[0]))
    # Each peak on its own echo, errors consistent with the reported variance (|z| < 4 always).
    assert np.abs(np.array(errs)).max() < 4.0


def test_a_single_echo_gives_no_ghost_second_peak(setup):
    """The first echo is cancelled before the second search: its range sidelobes (-13 dB) are no peak."""
    cfg, cb, est = setup
    rng = np.random.default_rng(2)
    u = -0.2
    beams = beams_toward(np.array([u]), cfg.codebook_size, cfg.num_tracking_symbols)
    ghosts = 0
    for _ in range(200):
        z = _echoes(cfg, cb, [40.0 + rng.uniform(0, 1)], [u], [1e-7], beams, rng)  # ~59 dB integrated
        _, _, _, det, _, _ = est.estimate_peaks(z.astype(np.complex64), beams, np.ones(1), np.array([32.0]),
                                                np.array([52.0]), est.threshold_gated, 2)
        assert det[0, 0]
        ghosts += int(det[0, 1])
    assert ghosts <= 2  # false alarms only (detection_pfa = 1e-4 per gate)


def test_one_peak_matches_estimate_pairs(setup):
    cfg, cb, est = setup
    rng = np.random.default_rng(3)
    u = 0.5
    beams = beams_toward(np.array([u]), cfg.codebook_size, cfg.num_tracking_symbols)
    z = _echoes(cfg, cb, [80.0], [u], [1e-6], beams, rng).astype(np.complex64)
    one = est.estimate_pairs(z, beams, np.ones(1), np.array([70.0]), np.array([90.0]), est.threshold_gated)
    many = est.estimate_peaks(z, beams, np.ones(1), np.array([70.0]), np.array([90.0]), est.threshold_gated, 2)
    for a, b in zip(one, many):
        np.testing.assert_allclose(a, b[:, 0])


def test_interference_raises_the_floor_and_the_reported_variance(setup):
    """Ten times the thermal noise in the gate (e.g. the other chain's echoes): floor ~ 10 and the
    reported range variance follows the effective SNR, so the normalised error stays ~ N(0, 1)."""
    cfg, cb, est = setup
    rng = np.random.default_rng(4)
    u = 0.1
    beams = beams_toward(np.array([u]), cfg.codebook_size, cfg.num_tracking_symbols)
    norm = []
    for _ in range(200):
        z = _echoes(cfg, cb, [50.0], [u], [3e-8], beams, rng, noise_scale=10.0).astype(np.complex64)
        keep = {}
        r0, t0, c0 = est.estimate_range(z, np.array([40.0]), np.array([60.0]), keep=keep)
        floor, _, _ = est._residual_floor(z, keep, r0, c0, np.array([40.0]), np.array([60.0]),
                                       np.array([est.threshold_gated]), np.array([True]))
        assert 4.0 < floor[0] < 25.0
        r, _, _, det, vr, _ = est.estimate_peaks(z, beams, np.ones(1), np.array([40.0]), np.array([60.0]),
                                                 est.threshold_gated, 2)
        norm.append((r[0, 0] - 50.0) ** 2 / vr[0, 0])
    assert 0.5 < np.mean(norm) < 2.0


def test_measurements_default_peaks_and_validation():
    m = Measurements.empty(2, 3, num_peaks=2)
    assert m.num_peaks == 2 and m.peak_cov.shape == (2, 3, 2, 2, 2)
    m.validate()
    legacy = Measurements(m.assigned, m.detected, m.range_m, m.angle_rad, m.snr_db, m.cov, 0)
    assert legacy.num_peaks == 1 and legacy.peak_valid.shape == (2, 3, 1)
    valid = m.peak_valid.copy()
    valid[0, 0, 1] = True  # peak 1 without peak 0
    bad = Measurements(m.assigned, m.detected, m.range_m, m.angle_rad, m.snr_db, m.cov, 0, valid,
                       m.peak_range_m, m.peak_angle_rad, m.peak_snr_db, m.peak_cov)
    with pytest.raises(MeasurementError, match="peak"):
        bad.validate()
    with pytest.raises(MeasurementError, match="all together"):
        Measurements(m.assigned, m.detected, m.range_m, m.angle_rad, m.snr_db, m.cov, 0, valid)


@pytest.mark.parametrize("fidelity", ["signal", "surrogate"])
def test_world_reports_the_neighbour_in_the_same_beams_and_gate(fidelity):
    """Two targets 6 m apart in range, same direction from BS 0: the pair of either reports both echoes,
    peak 0 is the (M, I) field, and each peak lies on one of the two targets."""
    cfg = ScenarioConfig.paper(4, fidelity=fidelity)
    net = CellFreeNetwork(cfg)
    net.reset(seed=3)
    bs = net.bs_positions_m[0]
    ang = np.deg2rad(60.0)
    pos = net.positions_m.copy()
    pos[0] = bs + 40.0 * np.array([np.cos(ang), np.sin(ang)])
    pos[1] = bs + 46.0 * np.array([np.cos(ang + 0.01), np.sin(ang + 0.01)])
    pos[2], pos[3] = [250.0, 80.0], [280.0, 20.0]
    net.positions_m = pos
    assoc = np.zeros((cfg.num_bs, cfg.num_targets), bool)
    assoc[0, 0] = True
    assoc[2, 1] = assoc[5, 2] = assoc[2, 3] = True
    both = 0
    for _ in range(10):
        meas = net.measure(assoc, net.beams_toward(pos), predicted_positions_m=pos)
        meas.validate()
        np.testing.assert_array_equal(meas.peak_range_m[..., 0], meas.range_m)
        np.testing.assert_array_equal(meas.peak_valid[..., 0], meas.detected)
        if meas.peak_valid[0, 0].all():
            both += 1
            got = np.sort(meas.peak_positions_m(net.bs_positions_m)[0, 0], axis=0)
            want = np.sort(pos[:2], axis=0)
            assert np.abs(got - want).max() < 1.0
    assert both >= 8


def _bs1_serving_targets_0_and_1():
    """The paper scene at I = 4, signal level: BS 1 serves targets 0 and 1 on its two RF chains (BSs 3 and 5 the
    others). Returns ``(net, bs_position (2,), association (6, 4))``."""
    net = CellFreeNetwork(ScenarioConfig.paper(4, fidelity="signal"))
    net.reset(seed=5)
    assoc = np.zeros((6, 4), bool)
    assoc[1, 0] = assoc[1, 1] = assoc[3, 2] = assoc[5, 3] = True
    return net, net.bs_positions_m[1], assoc


def test_nis_against_the_truth_with_a_stronger_target_on_the_other_chain():
    """Honest covariance at the signal level: BS 1 serves a target and, on its other RF chain, one about
    10 dB stronger elsewhere (the issue measured 8.8 % of such detections outside the 99.9 % gate with the
    bare CRB). Over 600 random geometries at most one peak (2x nominal) is outside the gate."""
    net, bs, assoc = _bs1_serving_targets_0_and_1()
    rng = np.random.default_rng(0)
    nis = []
    for _ in range(600):
        ra, aa = rng.uniform(50, 90), rng.uniform(0.4, 2.7)
        rb, ab = ra / 1.8 + rng.uniform(-3, 3), aa + rng.choice([-1, 1]) * rng.uniform(0.3, 1.0)  # d^-4: ~10 dB
        pos = np.array([bs + ra * np.array([np.cos(aa), np.sin(aa)]), bs + rb * np.array([np.cos(ab), np.sin(ab)]),
                        [20.0, 80.0], [280.0, 80.0]])
        pos[:, 1] = np.clip(pos[:, 1], 3, 97)
        net.positions_m = pos
        m = net.measure(assoc, net.beams_toward(pos), predicted_positions_m=pos)
        if m.detected[1, 0]:
            d = pos[0] - bs
            err = [m.range_m[1, 0] - np.hypot(*d), np.angle(np.exp(1j * (m.angle_rad[1, 0] - np.arctan2(d[1], d[0]))))]
            nis.append(err[0] ** 2 / m.cov[1, 0, 0, 0] + err[1] ** 2 / m.cov[1, 0, 1, 1])
    nis = np.array(nis)
    assert len(nis) > 550
    assert np.sum(nis > 13.8) <= 1
    assert 1.0 < nis.mean() < 3.0  # chi-square with 2 dof has mean 2: not simply inflated


# ---------------------------------------------------------------------------------------------- CFAR and merges
def _amplitude(cfg, cb, u, beams, snr_db):
    """Echo amplitude whose integrated SNR through ``beams`` is ``snr_db``."""
    g2 = np.sum(np.abs(two_way_gain(np.array([u]), beams, cb, cfg.antenna_spacing_wavelengths)) ** 2)
    return np.sqrt(10 ** (snr_db / 10) * cfg.noise_power_w / cfg.num_subcarriers / g2)


def _empty_gate_false_alarm_rate(pfa: float, symbol_scale: np.ndarray, seed: int) -> float:
    """False-alarm rate of 4000 empty gates (two peaks each) whose K symbols hold white noise times
    ``symbol_scale (K,)`` in power (the other chain's interference is white after the matched filter)."""
    cfg = ScenarioConfig.paper(4).replace(detection_pfa=pfa)
    cb = dft_codebook(cfg.num_tx_antennas, cfg.codebook_size)
    est = PairEstimator(cfg, cb)
    rng = np.random.default_rng(seed)
    num = 4000
    shape = (num, cfg.num_tracking_symbols, cfg.num_subcarriers)
    w = ((rng.standard_normal(shape) + 1j * rng.standard_normal(shape))
         * np.sqrt(np.asarray(symbol_scale)[None, :, None] * cfg.noise_power_w / 2)).astype(np.complex64)
    beams = beams_toward(np.zeros(num), cfg.codebook_size, cfg.num_tracking_symbols)
    det = est.estimate_peaks(w, beams, np.ones(num), np.full(num, 50.0), np.full(num, 50.0 + 2 * cfg.range_gate_m),
                             est.threshold_gated, 2)[3]
    return float(det[:, 0].mean())


@pytest.mark.parametrize("interference", [1.5, 100.0])
def test_false_alarm_rate_under_white_interference_matches_detection_pfa(interference):
    """The other RF chain's echoes are white after the matched filter and raise the floor of an empty gate.
    With the threshold scaled by the gate's own ~5-cell floor the rate was 7x ``detection_pfa`` at both
    levels (its low draws); with the whole profile's floor (and its CFAR factor) it is at most nominal."""
    pfa = 0.01
    rate = _empty_gate_false_alarm_rate(pfa, np.full(ScenarioConfig.paper(4).num_tracking_symbols, interference), 11)
    # Binomial std at p = 0.01, n = 4000 is 0.0016: 1.6 x pfa is 3.8 sigma above nominal.
    assert rate <= 1.6 * pfa, f"false-alarm rate {rate} under interference {interference}x for pfa {pfa}"
    assert rate >= 0.2 * pfa  # still a detector at the nominal rate, not a silenced one


def test_merge_spread_covers_the_nearer_target_of_a_merged_peak(setup):
    """Two equal 25 dB echoes 1.2 m and 0.02 in u apart are one peak between them: against the nearer
    target 57 % of such peaks are outside the 99.9 % gate with the estimator's own covariance, none with
    the merge spread of the two predicted targets added."""
    cfg, cb, est = setup
    rng = np.random.default_rng(14)
    u = 0.3
    beams = beams_toward(np.array([u]), cfg.codebook_size, cfg.num_tracking_symbols)
    a = _amplitude(cfg, cb, u, beams, 25.0)
    plain = spread = n = 0
    for _ in range(200):
        ra, ua = 60.0 + rng.uniform(0, 1), u + rng.uniform(-0.02, 0.02)
        truth = np.array([[ra, np.arccos(ua)], [ra + 1.2, np.arccos(ua + 0.02)]])
        z = _echoes(cfg, cb, truth[:, 0], np.cos(truth[:, 1]), [a, a], beams, rng).astype(np.complex64)
        r, ang, _, det, vr, va = est.estimate_peaks(z, beams, np.ones(1), np.array([50.0]), np.array([70.0]),
                                                    est.threshold_gated, 2)
        if not det[0, 0]:
            continue
        n += 1
        extra = merge_spread(cfg, r, ang, det, truth[None, :, 0], truth[None, :, 1])[0, 0]
        cov = np.diag([vr[0, 0], va[0, 0]])
        y = np.array([r[0, 0], ang[0, 0]]) - truth  # (2 targets, 2)
        plain += min(e @ np.linalg.solve(cov, e) for e in y) > 13.8155
        spread += min(e @ np.linalg.solve(cov + extra, e) for e in y) > 13.8155
    assert n >= 190
    assert plain >= 0.3 * n  # the need
    assert spread <= 0.01 * n


def test_merge_spread_is_zero_without_a_neighbour_and_psd_with_one():
    cfg = ScenarioConfig.paper(4)
    res = cfg.range_resolution_m
    peaks_r, peaks_a = np.array([[60.0, 80.0]]), np.array([[1.0, 1.0]])
    valid = np.array([[True, False]])
    # the other target two cells away in range: no merge possible
    far = merge_spread(cfg, peaks_r, peaks_a, valid, np.array([[60.0, 60.0 + 2 * res]]), np.array([[1.0, 1.0]]))
    np.testing.assert_array_equal(far, 0.0)
    near = merge_spread(cfg, peaks_r, peaks_a, valid, np.array([[60.0, 61.0]]), np.array([[1.0, 1.005]]))
    np.testing.assert_array_equal(near[0, 1], 0.0)  # an invalid peak gets nothing
    cov = near[0, 0]
    np.testing.assert_allclose(cov, cov.T)
    assert np.all(np.linalg.eigvalsh(cov) >= -1e-15)
    # half the separation, weighted by the overlap (1 - 1 / (1.5 res)) (1 - |du| / (1.5 * 2 / N))
    du = abs(np.cos(1.005) - np.cos(1.0))
    overlap = (1 - 1.0 / (1.5 * res)) * (1 - du / (1.5 * 2 / cfg.num_rx_antennas))
    np.testing.assert_allclose(cov[0, 0], overlap * 0.25, rtol=1e-12)
    np.testing.assert_allclose(cov[1, 1], overlap * 0.25 * 0.005**2, rtol=1e-12)


def test_world_widens_the_covariance_of_peaks_of_two_crowded_targets():
    """Signal level, BS 1 serving two targets 1-2 m apart in range and 0.5-2 deg apart in angle on its two
    chains, their predictions given: detections outside the 99.9 % gate against the nearer true target are
    at most 2 % (55 % of them with the estimator's own covariance)."""
    net, bs, assoc = _bs1_serving_targets_0_and_1()
    rng = np.random.default_rng(1)
    outside = count = 0
    for _ in range(150):
        ra, aa = rng.uniform(40, 80), rng.uniform(0.6, 2.5)
        rb, ab = ra + rng.uniform(1.0, 2.0), aa + rng.choice([-1, 1]) * np.radians(rng.uniform(0.5, 2.0))
        pos = np.array([bs + ra * np.array([np.cos(aa), np.sin(aa)]), bs + rb * np.array([np.cos(ab), np.sin(ab)]),
                        [20.0, 80.0], [280.0, 80.0]])
        net.positions_m = pos
        m = net.measure(assoc, net.beams_toward(pos), predicted_positions_m=pos)
        for i in (0, 1):
            for p in range(m.num_peaks):
                if not m.peak_valid[1, i, p]:
                    continue
                z = np.array([m.peak_range_m[1, i, p], m.peak_angle_rad[1, i, p]])
                d = pos[:2] - bs
                y = z - np.c_[np.hypot(d[:, 0], d[:, 1]), np.arctan2(d[:, 1], d[:, 0])]
                nis = [e @ np.linalg.solve(m.peak_cov[1, i, p], e) for e in y]
                count += 1
                outside += min(nis) > 13.8155
    assert count >= 200
    assert outside <= 0.02 * count


@pytest.mark.parametrize("own_db", [38.0, 25.0], ids=["own-stronger", "sidelobe-stronger"])
def test_the_first_sidelobe_of_an_echo_just_beyond_the_gate_is_no_peak(setup, own_db):
    """A 45 dB echo 1.5-2.5 m below the gate puts its first range sidelobe (~32 dB, 1.43 cells = 3.4 m from it)
    inside the gate, a local maximum that the Hann test does not reject (it lies in the echo's wide tapered
    main lobe). It is never reported. The gate's own target 12 m away is, when it is the stronger of the two
    (38 dB); when the sidelobe is (own target 25 dB), the gate reports nothing (a known limit: the search
    does not go on past a rejected first peak)."""
    cfg, cb, est = setup
    rng = np.random.default_rng(15)
    u = 0.3
    beams = beams_toward(np.array([u]), cfg.codebook_size, cfg.num_tracking_symbols)
    strong, own = _amplitude(cfg, cb, u, beams, 45.0), _amplitude(cfg, cb, u, beams, own_db)
    ghosts = found = 0
    lo, hi = 50.0, 70.0
    for _ in range(60):
        outside = lo - rng.uniform(1.5, 2.5)
        z = _echoes(cfg, cb, [outside, 62.0], [u, u], [strong, own], beams, rng).astype(np.complex64)
        r, _, _, det, _, _ = est.estimate_peaks(z, beams, np.ones(1), np.array([lo]), np.array([hi]),
                                                est.threshold_gated, 2)
        found += bool(det[0, 0] and abs(r[0, 0] - 62.0) < 1.0)
        ghosts += int(np.sum(det[0] & (np.abs(r[0] - (outside + 1.43 * cfg.range_resolution_m)) < 1.0)))
    assert ghosts <= 1
    if own_db > 32.0:
        assert found >= 57


def test_false_alarm_rate_with_interference_in_one_symbol_matches_detection_pfa():
    """The other chain's leak changes with its beams from symbol to symbol: here symbol 0 holds white
    interference 30x the noise, the other three none. Unwhitened, the gate's statistic is no longer Gamma(K)
    (one symbol dominates it) and an empty gate fired 42x ``detection_pfa``; with the symbols whitened by their
    floors it is at most nominal."""
    pfa = 0.01
    scale = np.ones(ScenarioConfig.paper(4).num_tracking_symbols)
    scale[0] = 30.0
    rate = _empty_gate_false_alarm_rate(pfa, scale, 16)
    assert rate <= 1.6 * pfa, f"false-alarm rate {rate} with one symbol's floor 30x for pfa {pfa}"


def test_symbol_weights_equalise_the_floors_and_leave_noise_alone(setup):
    cfg, cb, est = setup
    rng = np.random.default_rng(17)
    shape = (200, cfg.num_tracking_symbols, cfg.num_subcarriers)
    noise = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) * np.sqrt(cfg.noise_power_w / 2)
    w = est.symbol_weights(noise)
    assert w.shape == shape[:2] and np.all(w <= 1.0)
    assert np.median(w) > 0.9  # noise-limited pairs are (nearly) untouched
    loud = noise * np.sqrt(np.array([1.0, 4.0, 16.0, 64.0]))[None, :, None]
    w = est.symbol_weights(loud)
    np.testing.assert_allclose(np.median(w, axis=0), [1.0, 0.5, 0.25, 0.125], rtol=0.1)
