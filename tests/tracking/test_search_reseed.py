"""Re-acquisition from the last trusted position (``EKFSettings.search_reseed``, issue 7): the re-seeded state is
the moment-matched ring of a target of known speed, the looks walk round that ring, and a track pulled off its
target onto a wrong course finds it again where the coasted search never does."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rl_isac.errors import ConfigError
from rl_isac.scenario import ScenarioConfig
from rl_isac.tracking import EKFEstimator, EKFSettings
from rl_isac.tracking.ekf import SEARCH_LOOK_STEP, TRACK_FIELDS, empty_tracks
from tests.tracking.test_data_association import _peaks_block

START = np.array([[100.0, 50.0], [220.0, 60.0], [150.0, 20.0], [60.0, 80.0]])
VEL = np.array([[-1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])


def _world(cfg, blocks):
    """Straight tracks at the scenario's speed: ``(blocks + 1, 4, 2)`` positions of blocks 0..blocks."""
    q = np.arange(blocks + 1)[:, None, None]
    return START[None] + VEL[None] * cfg.speed_mps * cfg.block_duration_s * q


def _run(settings, blocks=40, corrupt_at=10, offset_m=(12.0, 0.0)):
    """Track the four targets; after block ``corrupt_at`` track 0 is put ``offset_m`` beside its target on the
    opposite course (what a neighbour's echoes do to it). The scripted front end reports a target's echo to a
    BS only while the target lies within the range gate of where that target's track looks
    (``predicted_position`` of the block before): it returns ``(errors (blocks, 4), looks of track 0,
    searching flags of track 0, estimator)``."""
    cfg = ScenarioConfig.paper(4)
    truth = _world(cfg, blocks)
    est = EKFEstimator(cfg, settings)
    est.reset(truth[0])
    errs, looks, searching = [], [], []
    for q in range(1, blocks + 1):
        look = est.predicted_position()
        looks.append(look[0].copy())
        seen = np.linalg.norm(truth[q] - look, axis=1) <= cfg.range_gate_m
        entries = [(bs, i, 0, truth[q, i], 0.05, 0.003) for i, bss in enumerate(((0, 3), (2, 5), (1, 4), (0, 3)))
                   for bs in bss if seen[i]]
        u_hat, _ = est.update(_peaks_block(cfg, entries, block=q))
        if q == corrupt_at:
            est._x[0, :2] = truth[q, 0] + np.asarray(offset_m)
            est._x[0, 2:] = -VEL[0] * cfg.speed_mps
            est._pred = None
            u_hat = est.state[:, :2]
        errs.append(np.linalg.norm(u_hat - truth[q], axis=1))
        searching.append(bool(est.searching[0]))
    return np.array(errs), np.array(looks), np.array(searching), est


RESEED = EKFSettings(search_reseed=True, reseed_min_age_blocks=0)  # re-seed whatever the trusted look's age


def test_a_track_pulled_onto_a_wrong_course_is_found_from_its_last_trusted_position():
    err_old, _, searching_old, _ = _run(EKFSettings(search_reseed=False))
    err_new, _, searching_new, est = _run(RESEED)
    # the coasted search runs after its own wrong course: never back
    assert searching_old[-1] and err_old[-10:, 0].min() > 30.0
    # the re-seeded one looks around block 10's trusted position and re-acquires within a few blocks
    back = int(np.flatnonzero(err_new[:, 0] >= 1.0).max()) + 1
    assert back <= 16 and err_new[-10:, 0].max() < 0.3 and not searching_new[-1]
    assert est.reacquired_after and est._search_block[0] == -1
    np.testing.assert_array_equal(err_new[:, 1:], err_old[:, 1:])  # the other tracks are untouched


def test_the_reseeded_state_is_the_ring_of_a_target_of_known_speed():
    """At the block the track goes searching: mean at the trusted position, velocity 0, and the covariance of a
    track started there with the uniform-heading prior ``N(0, v^2/2 I)`` and no look since."""
    cfg = ScenarioConfig.paper(4)
    settings = RESEED
    est = EKFEstimator(cfg, settings)
    truth = _world(cfg, 12)
    est.reset(truth[0])
    for q in range(1, 13):
        entries = [] if q > 5 else [(0, 0, 0, truth[q, 0], 0.05, 0.003), (3, 0, 0, truth[q, 0], 0.05, 0.003)]
        was = bool(est.searching[0])
        est.update(_peaks_block(cfg, entries, block=q))
        if est.searching[0] and not was:
            break
    q_s = est.block
    assert q_s == 5 + settings.search_after_blocks and est._search_block[0] == q_s
    assert est._trusted_block[0] == 5
    np.testing.assert_array_equal(est.state[0], [*est._trusted_m[0], 0.0, 0.0])
    assert np.linalg.norm(est._trusted_m[0] - truth[5, 0]) < 0.2
    v, t = cfg.speed_mps, (q_s - 5) * cfg.block_duration_s
    P = est.covariance[0]
    np.testing.assert_allclose(P[:2, :2], (est._trusted_var_m2[0] + (v * t) ** 2 / 2) * np.eye(2))
    np.testing.assert_allclose(P[:2, 2:], v * v * t / 2 * np.eye(2))
    np.testing.assert_allclose(P[2:, 2:], v * v / 2 * np.eye(2))
    # the moment match: E||p - p_t||^2 of the ring (v t)^2 is the trace of the added position covariance
    assert math.isclose(np.trace(P[:2, :2]) - 2 * est._trusted_var_m2[0], (v * t) ** 2)


def test_the_looks_walk_round_the_ring_from_the_coasted_heading():
    """While the ring is no wider than the range gate the BSs look at its centre; then at points of the ring
    ``SEARCH_LOOK_STEP`` gate half-widths of arc apart, alternating to both sides of the coasted heading."""
    cfg = ScenarioConfig.paper(4)
    est = EKFEstimator(cfg, EKFSettings(search_reseed=True))
    est.reset(START)
    est.missed[0] = est.settings.search_after_blocks  # searching since block 0
    est._search_block[0], est._search_heading_rad[0] = 0, 0.5
    centre = est.predicted_state()[0, :2]
    est.block = int(cfg.range_gate_m / cfg.step_m) - 1  # the ring reaches the gate's width at the next block
    np.testing.assert_allclose(est.predicted_position()[0], centre)
    est.block += 20
    radius = cfg.step_m * (est.block + 1)
    dphi = SEARCH_LOOK_STEP * cfg.range_gate_m / radius
    k = est.block % math.ceil(2 * math.pi / dphi)  # the looks made since the search started, once round
    assert k not in (0, est.block)  # a look to one side, after a full round
    j = (k + 1) // 2 * (1 if k % 2 else -1)
    want = centre + radius * np.array([math.cos(0.5 + j * dphi), math.sin(0.5 + j * dphi)])
    np.testing.assert_allclose(est.predicted_position()[0], np.clip(want, est._lower_m, est._upper_m))
    np.testing.assert_array_equal(est.predicted_position()[1:], est.predicted_state()[1:, :2])  # not searching


def test_search_state_round_trips_through_export_and_load():
    err, _, _, est = _run(RESEED, blocks=13)
    assert est.searching[0] and est._search_block[0] >= 0  # searching since block 13
    tracks = est.export_tracks()
    assert set(tracks) >= set(TRACK_FIELDS)
    buffer = empty_tracks(len(est.state))  # the gathering buffer of the cluster tracker has every exported key
    assert {k: (v.shape, v.dtype) for k, v in buffer.items()} == {k: (v.shape, v.dtype) for k, v in tracks.items()}
    other = EKFEstimator(est.cfg, est.settings)
    other.load_tracks(tracks, est.block)
    np.testing.assert_array_equal(other.predicted_position(), est.predicted_position())
    with pytest.raises(ConfigError, match="tracks.search_block"):
        other.load_tracks({**tracks, "search_block": tracks["search_block"][:2]}, est.block)


def test_a_track_trusted_until_its_misses_began_keeps_its_coast():
    """A target unseen for a few blocks right after clean looks (at the endfire of its BSs, say) was tracked with
    a good velocity: with the default ``reseed_min_age_blocks`` its search starts from its coasted state, as
    without the option, and the coast finds it; re-seeding it would report the ring's centre, ``v t`` off."""
    cfg = ScenarioConfig.paper(4)
    truth = _world(cfg, 30)
    runs = {}
    for name, settings in (("default", EKFSettings()), ("off", EKFSettings(search_reseed=False)), ("always", RESEED)):
        est = EKFEstimator(cfg, settings)
        est.reset(truth[0])
        errs = []
        for q in range(1, 31):
            unseen = 15 <= q <= 19  # five blocks without a look at target 0 (searching from block 17)
            entries = [(bs, i, 0, truth[q, i], 0.05, 0.003) for i, bss in enumerate(((0, 3), (2, 5), (1, 4), (0, 3)))
                       for bs in bss if not (i == 0 and unseen)]
            u_hat, _ = est.update(_peaks_block(cfg, entries, block=q))
            errs.append(np.linalg.norm(u_hat - truth[q], axis=1))
            if q == 17:
                assert est.searching[0]
        runs[name] = np.array(errs)
    assert EKFSettings().reseed_min_age_blocks >= EKFSettings().search_after_blocks + 1
    np.testing.assert_array_equal(runs["default"], runs["off"])
    assert runs["default"][:, 0].max() < 1.0
    assert runs["always"][16:19, 0].min() > 1.5  # the centre of the ring is v t from a target still moving


def test_search_reseed_must_be_a_bool():
    with pytest.raises(ConfigError, match="search_reseed"):
        EKFSettings(search_reseed=1)
    with pytest.raises(ConfigError, match="reseed_min_age_blocks"):
        EKFSettings(reseed_min_age_blocks=-1)


def test_a_dgnn_cu_looks_where_its_ekf_anchor_searches_and_the_dgnn_sees_the_ring_centre(dgnn_i4):
    """A DGNN CU takes the EKF anchor's look for a target on a ring search (the DGNN was not trained to search);
    the DGNN's own input ``anchor_next`` is the ring's centre (the predicted mean), not the look."""
    from rl_isac.controllers.learned import DGNNEstimator, load_dgnn
    from rl_isac.physics.measurements import Measurements

    cfg = ScenarioConfig.paper(4)
    model, _, _ = load_dgnn(dgnn_i4, cfg)
    est = DGNNEstimator(cfg, model)
    est.reset(START)
    ekf = est.window._ekf
    ekf.settings = EKFSettings(search_reseed=True)
    ekf.missed[0] = ekf.settings.search_after_blocks  # searching since block 0, heading 0
    ekf._search_block[0] = 0
    ekf.block = 20  # its ring is wider than a range gate: the look is off its centre
    ekf._pred = None
    u_hat, u_tilde = est.update(Measurements.empty(cfg.num_bs, cfg.num_targets, block=21, num_peaks=2))
    assert ekf.ring_search[0] and not ekf.ring_search[1:].any()
    look, centre = est.window.search_looks_m()[0], est.window.anchor_next_m[0]
    np.testing.assert_array_equal(u_tilde[0], look)
    np.testing.assert_allclose(centre, ekf.predicted_state()[0, :2])
    assert np.linalg.norm(look - centre) > cfg.range_gate_m
    np.testing.assert_array_equal(u_tilde[1:], est.last["u_tilde"][1:].astype(float))  # the DGNN's elsewhere
