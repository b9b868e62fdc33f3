"""Tests of rl_isac.physics.mobility: stop-and-go motion with a heading random walk, reflected at the edges."""

from __future__ import annotations

import numpy as np

from rl_isac.physics import mobility
from rl_isac.scenario import ScenarioConfig


def _wrap(angle):
    return np.mod(angle + np.pi, 2 * np.pi) - np.pi


def _inside(cfg, pos, tol=0.0):
    lo = cfg.edge_margin_m - tol
    hi = np.asarray(cfg.area_size_m) - cfg.edge_margin_m + tol
    return np.all((pos >= lo) & (pos <= hi), axis=-1)


def test_initial_state_lies_in_the_spawn_box_with_headings_in_range():
    cfg = ScenarioConfig.paper(8)
    pos, heading = mobility.initial_state(cfg, rng=np.random.default_rng(0))
    assert pos.shape == (8, 2) and heading.shape == (8,)
    assert np.all(pos >= cfg.spawn_margin_m)
    assert np.all(pos <= np.asarray(cfg.area_size_m) - cfg.spawn_margin_m)
    assert np.all(np.abs(heading) <= np.pi)


def test_velocities_have_the_configured_speed_along_the_heading():
    cfg = ScenarioConfig.paper(4)
    heading = np.array([0.0, np.pi / 2, -2.0, 3.0])
    vel = mobility.velocities(cfg, heading)
    np.testing.assert_allclose(np.linalg.norm(vel, axis=1), cfg.speed_mps)
    np.testing.assert_allclose(np.arctan2(vel[:, 1], vel[:, 0]), heading, atol=1e-12)


def test_step_away_from_walls_moves_v_dt_along_the_heading_and_turns_within_the_step():
    cfg = ScenarioConfig.paper(8)
    rng = np.random.default_rng(1)
    pos = np.column_stack([rng.uniform(50, 250, 8), rng.uniform(30, 70, 8)])
    heading = rng.uniform(-np.pi, np.pi, 8)
    new, new_heading = mobility.step(cfg, pos, heading, rng=rng)
    # u_{q+1} = u_q + v [cos b_q, sin b_q] dT
    np.testing.assert_allclose(new - pos, cfg.step_m * np.column_stack([np.cos(heading), np.sin(heading)]),
                               atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(new - pos, axis=1), cfg.speed_mps * cfg.block_duration_s)
    turn = _wrap(new_heading - heading)
    assert np.all(np.abs(turn) <= cfg.heading_step_rad + 1e-12)
    assert np.all(np.abs(new_heading) <= np.pi)


def test_heading_steps_fill_the_uniform_interval():
    cfg = ScenarioConfig.paper(8)
    rng = np.random.default_rng(2)
    pos = np.full((8, 2), [150.0, 50.0])
    turns = []
    for _ in range(200):
        heading = rng.uniform(-np.pi, np.pi, 8)
        _, new_heading = mobility.step(cfg, pos, heading, rng=rng)
        turns.append(_wrap(new_heading - heading))
    turns = np.concatenate(turns)
    h = cfg.heading_step_rad
    assert np.all(np.abs(turns) <= h + 1e-12)
    assert turns.min() < -0.9 * h and turns.max() > 0.9 * h
    assert abs(turns.mean()) < 0.1 * h  # U(-h, h): mean 0, std h / sqrt(3) -> SE of the mean 0.014 h
    np.testing.assert_allclose(turns.std(), h / np.sqrt(3), rtol=0.1)


def test_target_next_to_a_wall_heading_into_it_is_reflected_back_inside():
    cfg = ScenarioConfig.paper(4)
    margin = cfg.edge_margin_m
    width, height = cfg.area_size_m
    # Left, right, bottom and top walls, each target 0.1 m from the wall and heading straight into it.
    pos = np.array([[margin + 0.1, 50.0], [width - margin - 0.1, 50.0], [150.0, margin + 0.1],
                    [150.0, height - margin - 0.1]])
    heading = np.array([np.pi, 0.0, -np.pi / 2, np.pi / 2])
    new, new_heading = mobility.step(cfg, pos, heading, rng=np.random.default_rng(3))
    assert np.all(_inside(cfg, new))
    overshoot = cfg.step_m - 0.1
    expected = np.array([[margin + overshoot, 50.0], [width - margin - overshoot, 50.0],
                         [150.0, margin + overshoot], [150.0, height - margin - overshoot]])
    np.testing.assert_allclose(new, expected, atol=1e-9)
    # The heading normal to the wall flips, so the next move leads away from the wall (turn <= 15 deg).
    away = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    direction = np.column_stack([np.cos(new_heading), np.sin(new_heading)])
    assert np.all(np.sum(direction * away, axis=1) >= np.cos(cfg.heading_step_rad) - 1e-12)


def test_oblique_reflection_mirrors_the_heading():
    cfg = ScenarioConfig.paper(4, heading_step_deg=0.0)
    margin = cfg.edge_margin_m
    pos = np.array([[100.0, margin + 0.2]])
    heading = np.array([-np.pi / 4])  # down and to the right, into the bottom wall
    new, new_heading = mobility.step(cfg, pos, heading, rng=np.random.default_rng(4))
    np.testing.assert_allclose(new_heading, [np.pi / 4], atol=1e-12)  # b -> -b at a horizontal wall
    np.testing.assert_allclose(new[0, 0], 100.0 + cfg.step_m / np.sqrt(2))
    assert new[0, 1] >= margin
    pos = np.array([[margin + 0.2, 50.0]])
    new, new_heading = mobility.step(cfg, pos, np.array([3 * np.pi / 4]), rng=np.random.default_rng(4))
    np.testing.assert_allclose(new_heading, [np.pi / 4], atol=1e-12)  # b -> pi - b at a vertical wall


def test_targets_stay_strictly_inside_the_area_over_long_runs():
    cfg = ScenarioConfig.paper(8)
    rng = np.random.default_rng(5)
    pos, heading = mobility.initial_state(cfg, rng=rng)
    pos = np.concatenate([pos, np.random.default_rng(6).uniform(2.0, 98.0, (8, 2))])  # some start near walls
    heading = np.concatenate([heading, np.full(8, -np.pi / 2)])
    for _ in range(3000):
        pos, heading = mobility.step(cfg, pos, heading, rng=rng)
        assert np.all(_inside(cfg, pos))
        assert np.all(pos > 0) and np.all(pos < np.asarray(cfg.area_size_m))


def test_fast_targets_that_cross_the_area_in_one_step_stay_inside():
    """An overshoot longer than the box is folded back too (speed 1500 m/s: 150 m per block > 96 m)."""
    cfg = ScenarioConfig.paper(8, speed_mps=1500.0)
    rng = np.random.default_rng(7)
    pos, heading = mobility.initial_state(cfg, rng=rng)
    for _ in range(500):
        pos, heading = mobility.step(cfg, pos, heading, rng=rng)
        assert np.all(_inside(cfg, pos))


def test_same_seed_gives_identical_trajectories():
    cfg = ScenarioConfig.paper(6)

    def run(seed):
        rng = np.random.default_rng(seed)
        pos, heading = mobility.initial_state(cfg, rng=rng)
        out = [pos]
        for _ in range(50):
            pos, heading = mobility.step(cfg, pos, heading, rng=rng)
            out.append(pos)
        return np.stack(out)

    np.testing.assert_array_equal(run(11), run(11))
    assert not np.array_equal(run(11), run(12))


def test_advance_returns_the_velocity_of_the_move_before_reflection():
    cfg = ScenarioConfig.paper(4)
    pos = np.array([[150.0, 50.0], [cfg.edge_margin_m + 0.1, 50.0], [150.0, 40.0], [20.0, 20.0]])
    heading = np.array([0.3, np.pi, -2.0, 1.0])
    new, new_heading, vel = mobility.advance(cfg, pos, heading, rng=np.random.default_rng(8))
    np.testing.assert_allclose(vel, mobility.velocities(cfg, heading), atol=1e-12)
    new2, heading2 = mobility.step(cfg, pos, heading, rng=np.random.default_rng(8))
    np.testing.assert_array_equal(new, new2)
    np.testing.assert_array_equal(new_heading, heading2)
