"""Target mobility: the paper's stop-and-go model with a heading random walk (Sec. 4).

Each block a target moves ``u_{q+1} = u_q + v [cos b_q, sin b_q] dT`` and turns
``b_{q+1} = b_q + U(-h, h)``. Targets stay strictly inside the area: the box
``[margin, W - margin] x [margin, H - margin]`` reflects them like a mirror (the
overshoot is folded back inside and the heading component normal to the wall
flips: ``b -> pi - b`` at a vertical wall, ``b -> -b`` at a horizontal one), so
speed is preserved and no target ever reaches a BS's array axis (``y = 0`` or
``y = H``), where the ULA's ``cos(theta)`` mirror would make it ambiguous.
"""

from __future__ import annotations

import numpy as np

from rl_isac.scenario import ScenarioConfig


def initial_state(cfg: ScenarioConfig, *, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Uniform positions inside the spawn box and uniform headings.

    Returns:
        positions ``(I, 2)`` metres, headings ``(I,)`` radians.
    """
    lo = np.full(2, cfg.spawn_margin_m)
    hi = np.asarray(cfg.area_size_m) - cfg.spawn_margin_m
    pos = lo + (hi - lo) * rng.random((cfg.num_targets, 2))
    heading = rng.uniform(-np.pi, np.pi, cfg.num_targets)
    return pos, heading


def velocities(cfg: ScenarioConfig, heading_rad: np.ndarray) -> np.ndarray:
    """Velocity vectors ``v [cos b, sin b]``, shape ``(I, 2)`` m/s."""
    return cfg.speed_mps * np.stack([np.cos(heading_rad), np.sin(heading_rad)], axis=-1)


def step(cfg: ScenarioConfig, pos: np.ndarray, heading: np.ndarray, *, rng: np.random.Generator
         ) -> tuple[np.ndarray, np.ndarray]:
    """Advance all targets by one block.

    Args:
        pos: ``(I, 2)`` metres; heading: ``(I,)`` radians.
    Returns:
        new positions ``(I, 2)`` and headings ``(I,)`` (the heading used for the next move).
    """
    lo = np.full(2, cfg.edge_margin_m)
    hi = np.asarray(cfg.area_size_m) - cfg.edge_margin_m
    new = pos + velocities(cfg, heading) * cfg.block_duration_s
    span = hi - lo
    vel_sign = np.ones((len(pos), 2))
    for axis in range(2):
        rel = np.mod(new[:, axis] - lo[axis], 2 * span[axis])
        flipped = rel > span[axis]
        new[:, axis] = lo[axis] + np.where(flipped, 2 * span[axis] - rel, rel)
        vel_sign[:, axis] = np.where(flipped, -1.0, 1.0)
    # Mirror the heading where a wall was hit: vx -> -vx (vertical wall), vy -> -vy (horizontal wall).
    vx = np.cos(heading) * vel_sign[:, 0]
    vy = np.sin(heading) * vel_sign[:, 1]
    heading = np.arctan2(vy, vx)
    heading = heading + rng.uniform(-cfg.heading_step_rad, cfg.heading_step_rad, len(heading))
    heading = np.mod(heading + np.pi, 2 * np.pi) - np.pi
    return new, heading
