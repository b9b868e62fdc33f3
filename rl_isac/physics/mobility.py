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

import functools

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
    heading_rad = np.asarray(heading_rad, dtype=float)
    out = np.empty((*heading_rad.shape, 2))
    np.cos(heading_rad, out=out[..., 0])
    np.sin(heading_rad, out=out[..., 1])
    return cfg.speed_mps * out


def step(cfg: ScenarioConfig, pos: np.ndarray, heading: np.ndarray, *, rng: np.random.Generator
         ) -> tuple[np.ndarray, np.ndarray]:
    """Advance all targets by one block.

    Args:
        pos: ``(I, 2)`` metres; heading: ``(I,)`` radians.
    Returns:
        new positions ``(I, 2)`` and headings ``(I,)`` (the heading used for the next move).
    """
    new, heading, _ = advance(cfg, pos, heading, rng=rng)
    return new, heading


def advance(cfg: ScenarioConfig, pos: np.ndarray, heading: np.ndarray, *, rng: np.random.Generator | None,
            turns: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`step`, also returning the velocity ``(I, 2)`` m/s of the move just made (before reflection).

    Both axes are folded at once: with ``rel = (x - lo) mod 2 span`` the position is
    ``lo + rel`` or, past the far wall (``rel > span``), ``lo + 2 span - rel``, and the
    velocity component along that axis flips. ``turns`` (``(I,)``, radians) replaces the
    heading steps drawn from ``rng`` (several environments advanced at once, each with its
    own generator).
    """
    margin = cfg.edge_margin_m
    span, period = _box(margin, *cfg.area_size_m)
    direction = np.empty((len(heading), 2))
    np.cos(heading, out=direction[:, 0])
    np.sin(heading, out=direction[:, 1])
    velocity = cfg.speed_mps * direction
    new = pos + velocity * cfg.block_duration_s
    rel = np.mod(new - margin, period)
    flipped = rel > span
    if flipped.any():
        new = margin + np.where(flipped, period - rel, rel)
        # Mirror the heading where a wall was hit: vx -> -vx (vertical wall), vy -> -vy (horizontal wall).
        np.negative(direction, out=direction, where=flipped)
    else:
        new = margin + rel
    heading = np.arctan2(direction[:, 1], direction[:, 0])
    heading += heading_turns(cfg, len(heading), rng) if turns is None else turns
    heading = np.mod(heading + np.pi, 2 * np.pi) - np.pi
    return new, heading, velocity


def heading_turns(cfg: ScenarioConfig, num: int, rng: np.random.Generator) -> np.ndarray:
    """The heading steps ``U(-h, h)`` of ``num`` targets for one block, radians."""
    return rng.uniform(-cfg.heading_step_rad, cfg.heading_step_rad, num)


@functools.lru_cache(maxsize=16)
def _box(margin: float, width: float, height: float) -> tuple[np.ndarray, np.ndarray]:
    """Side lengths ``span`` of the reflecting box and the folding period ``2 span``, each ``(2,)``."""
    span = np.array((width - 2 * margin, height - 2 * margin))
    span.flags.writeable = False
    period = 2 * span
    period.flags.writeable = False
    return span, period
