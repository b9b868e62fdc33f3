"""Many independent copies of the world stepped together: :class:`VectorCellFreeNetwork`.

A batched counterpart of :class:`rl_isac.network.CellFreeNetwork` for throughput (RL
rollouts, Monte Carlo). ``E`` environments share the scenario and nothing else: each has
its own targets, its own episode seed and its own generators, spawned exactly as
:meth:`CellFreeNetwork.reset` does, and every random draw of environment ``e`` comes from
its own generators in the same order as a single network's. So environment ``e`` stepped
here gives the same trajectories and the same measurements as a ``CellFreeNetwork`` reset
with ``seeds[e]`` and given the same actions (measurements equal up to floating-point
rounding of the batched matrix products).

What is shared is the per-call work: the checks, the motion, the echo synthesis (the BSs of
all environments are stacked), the estimation and the surrogate draws each run once over
all environments' pairs, so the Python overhead of a block is paid once per call rather
than once per environment.

Example:
    >>> from rl_isac.scenario import ScenarioConfig
    >>> vec = VectorCellFreeNetwork(ScenarioConfig.paper(4, fidelity="surrogate"), num_envs=3)
    >>> acq = vec.reset(seeds=[0, 1, 2])
    >>> meas = vec.step(vec.nearest_association(acq), vec.beams_toward(acq), predicted_positions_m=acq)
    >>> len(meas), meas[0].range_m.shape
    (3, (6, 4))
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rl_isac.network import CellFreeNetwork, _ActionChecker, _episode_generators, _FrontEnd, nearest_association
from rl_isac.physics import mobility
from rl_isac.physics.measurements import Measurements
from rl_isac.scenario import ScenarioConfig


class VectorCellFreeNetwork:
    """``num_envs`` independent cell-free clusters of one scenario, stepped with one call.

    Args:
        cfg: the scenario (``cfg.fidelity`` selects ``signal`` or ``surrogate``).
        num_envs: number of environments ``E``.

    Attributes:
        bs_positions_m: ``(M, 2)`` metres (shared).
        positions_m: ``(E, I, 2)`` true target positions of the current block, metres.
        headings_rad: ``(E, I)`` headings of the next move, radians.
        block: index ``q`` of the current block (all environments move in lockstep).
    """

    def __init__(self, cfg: ScenarioConfig, num_envs: int) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        template = CellFreeNetwork(cfg)  # same checks and constants as one network
        self.cfg = cfg
        self.num_envs = int(num_envs)
        self.bs_positions_m = template.bs_positions_m
        self.codebook = template.codebook
        self.side = template.side
        self._front = _FrontEnd(cfg, self.codebook, self.bs_positions_m)
        self._checker = _ActionChecker(cfg, self.bs_positions_m, self.side)
        self.positions_m = np.zeros((self.num_envs, cfg.num_targets, 2))
        self.headings_rad = np.zeros((self.num_envs, cfg.num_targets))
        self.block = 0
        self._motion_rngs: list[np.random.Generator] | None = None
        self._meas_rngs: list[np.random.Generator] | None = None

    # ------------------------------------------------------------------ episode
    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        """Start an episode in every environment; return the initial acquisitions ``(E, I, 2)`` metres.

        ``seeds[e]`` plays the role of :meth:`CellFreeNetwork.reset`'s seed for environment ``e``.
        """
        seeds = list(seeds)
        if len(seeds) != self.num_envs:
            raise ValueError(f"need one seed per environment: {self.num_envs}, got {len(seeds)}")
        gens = [_episode_generators(seed) for seed in seeds]
        self._motion_rngs = [g[0] for g in gens]
        self._meas_rngs = [g[1] for g in gens]
        states = [mobility.initial_state(self.cfg, rng=rng) for rng in self._motion_rngs]
        self.positions_m = np.stack([pos for pos, _ in states])
        self.headings_rad = np.stack([heading for _, heading in states])
        self.block = 0
        noise = np.stack([g[2].standard_normal(self.positions_m.shape[1:]) for g in gens])
        return self.positions_m + self.cfg.acquisition_std_m * noise

    @property
    def velocities_mps(self) -> np.ndarray:
        """``(E, I, 2)`` velocity of the next move, m/s."""
        return mobility.velocities(self.cfg, self.headings_rad)

    def step(self, associations, beams, predicted_positions_m: np.ndarray | None = None) -> list[Measurements]:
        """Move every environment's targets one block and measure them.

        Args:
            associations: ``(E, M, I)`` bool, or a sequence of ``E`` associations ``(M, I)``, each
                checked against (5c)-(5e) as in :meth:`CellFreeNetwork.step`.
            beams: ``(E, M, I, K, 2)`` int, or a sequence of ``E`` beam arrays (5f).
            predicted_positions_m: ``(E, I, 2)`` the CU's predictions (range gates), or None.
        Returns:
            one :class:`Measurements` per environment (``block`` = the new ``q``).
        """
        if self._motion_rngs is None:
            raise RuntimeError("call reset(seeds) before step()")
        batch, pair_beams = self._check(associations, beams)
        predicted = self._checker.prediction(predicted_positions_m, self.positions_m.shape)
        cfg = self.cfg
        turns = np.concatenate([mobility.heading_turns(cfg, cfg.num_targets, rng) for rng in self._motion_rngs])
        pos, heading, velocities = mobility.advance(cfg, self.positions_m.reshape(-1, 2),
                                                    self.headings_rad.reshape(-1), rng=None, turns=turns)
        self.positions_m = pos.reshape(self.positions_m.shape)
        self.headings_rad = heading.reshape(self.headings_rad.shape)
        self.block += 1
        return self._front.measure(batch, pair_beams, self.positions_m, velocities.reshape(self.positions_m.shape),
                                   predicted, self._meas_rngs, self.block)

    def measure(self, associations, beams, predicted_positions_m: np.ndarray | None = None) -> list[Measurements]:
        """Probe the current positions of every environment without moving the targets."""
        if self._meas_rngs is None:
            raise RuntimeError("call reset(seeds) before measure()")
        batch, pair_beams = self._check(associations, beams)
        predicted = self._checker.prediction(predicted_positions_m, self.positions_m.shape)
        return self._front.measure(batch, pair_beams, self.positions_m, self.velocities_mps, predicted,
                                   self._meas_rngs, self.block)

    def _check(self, associations, beams):
        if len(associations) != self.num_envs or len(beams) != self.num_envs:
            raise ValueError(f"need one association and one beam array per environment ({self.num_envs}), got "
                             f"{len(associations)} and {len(beams)}")
        checked = [self._checker.check(a, b) for a, b in zip(associations, beams)]
        if self.num_envs == 1:
            return checked[0]
        return self._checker.batch([c[0] for c in checked]), np.concatenate([c[1] for c in checked])

    # ------------------------------------------------------------------ helpers for CUs and labels
    # The single network's helpers broadcast over leading axes: positions ``(E, I, 2)`` give
    # ``u (E, M, I)`` and beams ``(E, M, I, K, 2)``.
    spatial_frequency = CellFreeNetwork.spatial_frequency
    beams_toward = CellFreeNetwork.beams_toward

    def nearest_association(self, positions_m: np.ndarray) -> np.ndarray:
        """:meth:`CellFreeNetwork.nearest_association` per environment: ``(E, M, I)`` bool."""
        return np.stack([nearest_association(self.cfg, self.bs_positions_m, pos) for pos in positions_m])


def step_networks(nets: Sequence[CellFreeNetwork], associations, beams,
                  predicted_positions_m: Sequence[np.ndarray | None]) -> list[Measurements]:
    """Step several existing :class:`CellFreeNetwork` objects one block with one batched call.

    What :meth:`CellFreeNetwork.step` does to each network (each keeps its own targets and generators,
    and draws from them in the same order), with the checks, the motion and the measurement run once over
    all of them as :class:`VectorCellFreeNetwork` does (an env runner's envs each own a network). Every
    action is checked before any network changes, so a refused action leaves all of them unchanged.
    Falls back to one :meth:`CellFreeNetwork.step` per network where the batched path would not be the
    same numbers bit for bit: the ``signal`` fidelity (batched matrix products round differently), networks
    at different blocks, of different scenarios, or a prediction of ``None`` beside a given one.

    Args:
        nets: the ``E`` networks (reset).
        associations: ``E`` associations ``(M, I)`` bool (5c)-(5e).
        beams: ``E`` beam arrays ``(M, I, K, 2)`` int (5f).
        predicted_positions_m: ``E`` predictions ``(I, 2)`` (range gates) or None each.
    Returns:
        one :class:`Measurements` per network (``block`` = its new ``q``).
    """
    nets = list(nets)
    if not (len(associations) == len(beams) == len(predicted_positions_m) == len(nets)):
        raise ValueError(f"need one association, beam array and prediction per network ({len(nets)}), got "
                         f"{len(associations)}, {len(beams)} and {len(predicted_positions_m)}")
    first = nets[0]
    cfg = first.cfg
    given = [p is not None for p in predicted_positions_m]
    if (len(nets) == 1 or cfg.fidelity != "surrogate" or any(n._motion_rng is None for n in nets)
            or any(n.block != first.block or (n.cfg is not cfg and n.cfg != cfg) for n in nets)
            or any(given) != all(given)):
        for n, a, b in zip(nets, associations, beams):  # every action checked before any network steps
            n._checker.check(a, b)
        return [n.step(a, b, predicted_positions_m=p) for n, a, b, p in zip(nets, associations, beams,
                                                                           predicted_positions_m)]
    checker = first._checker  # one cache of validated associations and batches for all of them
    checked = [checker.check(a, b) for a, b in zip(associations, beams)]
    predicted = None
    if all(given):
        predicted = np.stack([checker.prediction(p, n.positions_m.shape) for n, p in zip(nets, predicted_positions_m)])
    batch = checker.batch([c[0] for c in checked])
    pair_beams = np.concatenate([c[1] for c in checked])
    turns = np.concatenate([mobility.heading_turns(cfg, cfg.num_targets, n._motion_rng) for n in nets])
    pos, heading, velocities = mobility.advance(cfg, np.concatenate([n.positions_m for n in nets]),
                                                np.concatenate([n.headings_rad for n in nets]), rng=None, turns=turns)
    I = cfg.num_targets
    for e, n in enumerate(nets):
        n.positions_m, n.headings_rad = pos[e * I:(e + 1) * I].copy(), heading[e * I:(e + 1) * I].copy()
        n.block += 1
    E = len(nets)
    return first._front.measure(batch, pair_beams, pos.reshape(E, I, 2), velocities.reshape(E, I, 2), predicted,
                                [n._meas_rng for n in nets], first.block)
