"""Detection probability from the world's detector model (rl_isac.physics.detection)."""

from __future__ import annotations

import numpy as np
import pytest

from rl_isac.physics.arrays import beams_toward, dft_codebook
from rl_isac.physics.channel import geometry, received_amplitude
from rl_isac.physics.detection import (
    credited_detection_probability,
    detection_model,
    detection_probability,
)
from rl_isac.physics.surrogate import SurrogateFrontEnd
from rl_isac.scenario import ScenarioConfig


@pytest.fixture(scope="module")
def cfg():
    return ScenarioConfig.preset("paper", num_targets=4, fidelity="surrogate")


def test_pd_matches_the_surrogate_detectors_frequency(cfg):
    """P_d (non-central chi-square) against the surrogate's own draws of T > threshold, per pair."""
    model = detection_model(cfg)
    codebook = dft_codebook(cfg.num_tx_antennas, cfg.codebook_size, cfg.antenna_spacing_wavelengths)
    front = SurrogateFrontEnd(cfg, codebook)
    rng = np.random.default_rng(0)
    trials = 3000
    # ranges from sure to hopeless, beams on the target and half a beam off
    cases = [(r, off) for r in (40.0, 110.0, 140.0, 160.0, 200.0) for off in (0.0, 0.03)]
    for range_m, offset in cases:
        u = 0.3
        beams = beams_toward(np.array(u + offset), cfg.codebook_size, cfg.num_tracking_symbols)  # (K, 2)
        pd = float(model.probability_from_noncentrality(model.noncentrality(np.array(range_m), np.array(u), beams)))
        amp = received_amplitude(cfg, np.full(trials, range_m))
        out = front.draw(np.full(trials, range_m), np.full(trials, u), np.ones(trials), amp,
                         np.broadcast_to(beams, (trials, *beams.shape)), np.zeros(trials), range_m - 10.0,
                         range_m + 10.0, model.threshold, rng=rng)
        freq = out[3].mean()
        tol = 4 * np.sqrt(max(pd * (1 - pd), 1e-4) / trials) + 2e-3
        assert abs(freq - pd) <= tol, (range_m, offset, freq, pd)


def test_tabulated_pd_equals_the_exact_non_central_chi_square(cfg):
    model = detection_model(cfg)
    lam = np.concatenate([np.linspace(0.0, 200.0, 20001), 10.0 ** np.linspace(-6, 5, 500)])
    err = np.abs(model.probability_from_noncentrality(lam) - model.probability_from_noncentrality(lam, exact=True))
    assert err.max() < 1e-5


def test_pd_of_every_pair_has_the_network_shape_and_falls_with_range(cfg):
    bs = np.asarray(cfg.bs_positions_m, float)
    targets = np.array([[50.0, 60.0], [120.0, 80.0], [20.0, 30.0], [180.0, 100.0]])
    _, angle = geometry(bs, targets)
    beams = beams_toward(np.cos(angle), cfg.codebook_size, cfg.num_tracking_symbols)  # (M, I, K, 2)
    pd = detection_probability(cfg, targets, beams)
    assert pd.shape == (cfg.num_bs, cfg.num_targets) and np.all((pd >= 0) & (pd <= 1))
    range_m, _ = geometry(bs, targets)
    assert pd[range_m < 50].min() > 0.99 and pd[range_m > 220].max() < 0.05


def test_uncertainty_and_a_neighbour_in_the_beams_lower_the_credited_probability(cfg):
    bs = np.asarray(cfg.bs_positions_m, float)
    targets = np.array([[60.0, 60.0], [150.0, 120.0], [20.0, 110.0], [170.0, 30.0]])
    _, angle = geometry(bs, targets)
    beams = beams_toward(np.cos(angle), cfg.codebook_size, cfg.num_tracking_symbols)
    sharp = credited_detection_probability(cfg, targets, beams, np.tile(1e-4 * np.eye(2), (4, 1, 1)))
    wide = credited_detection_probability(cfg, targets, beams, np.tile(25.0 * np.eye(2), (4, 1, 1)))
    sure = sharp > 0.9  # (a hopeless pair may gain: part of the spread is closer to its BS)
    assert np.all(wide[sure] <= sharp[sure] + 1e-9) and np.any(wide[sure] < sharp[sure] - 0.1)
    # move target 1 right behind target 0 as seen from BS 0 (same beam, 3 m further): target 0's BS-0 pair
    # may now report target 1's echo
    direction = (targets[0] - bs[0]) / np.linalg.norm(targets[0] - bs[0])
    crowded = targets.copy()
    crowded[1] = targets[0] + 3.0 * direction
    _, angle = geometry(bs, crowded)
    beams = beams_toward(np.cos(angle), cfg.codebook_size, cfg.num_tracking_symbols)
    cov = np.tile(1e-4 * np.eye(2), (4, 1, 1))
    alone = detection_probability(cfg, crowded, beams, cov)
    credited = credited_detection_probability(cfg, crowded, beams, cov)
    assert alone[0, 0] > 0.99 and credited[0, 0] < 0.7
    assert np.all(credited <= alone + 1e-12)
