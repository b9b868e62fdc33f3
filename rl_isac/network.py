"""The world: target truth plus the BS front ends of the cell-free ISAC network.

No learning and no Ray here. One block ``q`` of :meth:`CellFreeNetwork.step`:

1. the action is checked against (5c)-(5f);
2. the targets move one block (:mod:`rl_isac.physics.mobility`);
3. every BS probes its assigned targets with the given beams; each pair yields a
   range/angle measurement or a miss, through the chosen fidelity:
   ``signal`` (eq. (2) synthesised and estimated, :mod:`rl_isac.physics.estimation`)
   or ``surrogate`` (drawn from the Fisher information, :mod:`rl_isac.physics.surrogate`).

Randomness: the target motion and the measurements come from two independent
streams spawned from the reset seed, so the same seed gives the same
trajectories whatever the fidelity and whatever the CU does.

What the CU knows at ``q = 0``: :meth:`reset` returns an initial acquisition,
the true positions plus ``N(0, acquisition_std_m^2)`` per axis; headings are
unknown, the speed is known from the scenario.

Example:
    >>> from rl_isac.scenario import ScenarioConfig
    >>> net = CellFreeNetwork(ScenarioConfig.paper(4, fidelity="surrogate"))
    >>> acq = net.reset(seed=0)
    >>> A = net.nearest_association(acq)
    >>> meas = net.step(A, net.beams_toward(acq), predicted_positions_m=acq)
    >>> meas.block, meas.range_m.shape
    (1, (6, 4))
"""

from __future__ import annotations

import numpy as np

from rl_isac.errors import ConstraintViolation
from rl_isac.physics import mobility
from rl_isac.physics.arrays import beams_toward, dft_codebook, nearest_beams
from rl_isac.physics.channel import channel_gains, delay_s, doppler_hz, geometry, received_amplitude
from rl_isac.physics.echo import qpsk_symbols, synthesize_echo
from rl_isac.physics.estimation import PairEstimator
from rl_isac.physics.fisher import expected_position_information
from rl_isac.physics.measurements import Measurements
from rl_isac.physics.surrogate import surrogate_measure
from rl_isac.scenario import ScenarioConfig


def check_action(association: np.ndarray, beams: np.ndarray, num_rf: int, codebook_size: int,
                 num_symbols: int, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Validate an action against (5c)-(5f); return it as ``(bool (M, I), int (M, I, K, 2))``.

    Raises:
        ConstraintViolation: naming the constraint, the BS/target and the counts.
    """
    from rl_isac.association.constraints import check_association

    assoc = check_association(association, num_rf, shape=shape)
    beams = np.asarray(beams)
    expected = (*assoc.shape, num_symbols, 2)
    if beams.shape != expected:
        raise ConstraintViolation("(5f)", f"beams must have shape (M, I, K, 2) = {expected}, got {beams.shape}")
    if not np.issubdtype(beams.dtype, np.integer):
        if not np.all(np.isfinite(beams)) or np.any(beams != np.round(beams)):
            raise ConstraintViolation("(5f)", "beam indices must be integers (codebook entries)")
        beams = beams.astype(np.int64)
    used = beams[assoc]
    if used.size and (used.min() < 0 or used.max() >= codebook_size):
        bad = np.argwhere(assoc[..., None, None] & ((beams < 0) | (beams >= codebook_size)))[0]
        raise ConstraintViolation("(5f)", f"beam index {int(beams[tuple(bad)])} of pair (bs={bad[0]}, "
                                          f"target={bad[1]}), symbol {bad[2]} is outside the codebook "
                                          f"[0, {codebook_size - 1}]")
    return assoc, beams


class CellFreeNetwork:
    """Truth and BS front ends of one cell-free cluster.

    Args:
        cfg: the scenario (``cfg.fidelity`` selects ``signal`` or ``surrogate``).

    Attributes:
        bs_positions_m: ``(M, 2)`` metres.
        positions_m: ``(I, 2)`` true target positions of the current block, metres.
        headings_rad: ``(I,)`` headings of the next move, radians.
        block: index ``q`` of the current block (0 after reset).
    """

    def __init__(self, cfg: ScenarioConfig) -> None:
        self.cfg = cfg
        self.bs_positions_m = np.asarray(cfg.bs_positions_m, dtype=float)
        self.codebook = dft_codebook(cfg.num_tx_antennas, cfg.codebook_size, cfg.antenna_spacing_wavelengths)
        if cfg.num_rx_antennas != cfg.num_tx_antennas:
            raise NotImplementedError("different tx and rx array sizes: the echo model assumes N_T = N_R")
        # +1: BS on the bottom edge sees targets at theta in (0, pi); -1: top edge, theta in (-pi, 0).
        self.side = np.where(self.bs_positions_m[:, 1] == 0.0, 1.0, -1.0)
        self.estimator = PairEstimator(cfg, self.codebook)
        self.positions_m = np.zeros((cfg.num_targets, 2))
        self.headings_rad = np.zeros(cfg.num_targets)
        self.block = 0
        self._motion_rng: np.random.Generator | None = None
        self._meas_rng: np.random.Generator | None = None

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int) -> np.ndarray:
        """Start an episode; return the initial acquisition ``(I, 2)`` metres (truth + noise)."""
        seq = np.random.SeedSequence(int(seed))
        motion_seq, meas_seq, acq_seq = seq.spawn(3)
        self._motion_rng = np.random.default_rng(motion_seq)
        self._meas_rng = np.random.default_rng(meas_seq)
        self.positions_m, self.headings_rad = mobility.initial_state(self.cfg, rng=self._motion_rng)
        self.block = 0
        acq_rng = np.random.default_rng(acq_seq)
        return self.positions_m + self.cfg.acquisition_std_m * acq_rng.standard_normal(self.positions_m.shape)

    @property
    def velocities_mps(self) -> np.ndarray:
        """``(I, 2)`` velocity of the next move, m/s."""
        return mobility.velocities(self.cfg, self.headings_rad)

    def step(self, association: np.ndarray, beams: np.ndarray,
             predicted_positions_m: np.ndarray | None = None) -> Measurements:
        """Move the targets one block and measure them with the given association and beams.

        Args:
            association: ``(M, I)`` bool ``A_q`` (each BS <= ``num_rf`` targets (5c), each target >= 1 BS (5d)).
            beams: ``(M, I, K, 2)`` int (tx, rx) codebook indices per pair and symbol (5f); ignored where
                ``association`` is False.
            predicted_positions_m: ``(I, 2)`` the CU's prediction for this block; when given, each pair's
                range search is gated to ``+-range_gate_m`` around the predicted range.
        Returns:
            the block's :class:`Measurements` (``block`` = the new ``q``).
        """
        if self._motion_rng is None:
            raise RuntimeError("call reset(seed) before step()")
        cfg = self.cfg
        assoc, beams = check_action(association, beams, cfg.num_rf, cfg.codebook_size, cfg.num_tracking_symbols,
                                    (cfg.num_bs, cfg.num_targets))
        gated = predicted_positions_m is not None
        if gated:
            predicted_positions_m = np.asarray(predicted_positions_m, dtype=float)
            if predicted_positions_m.shape != (cfg.num_targets, 2) or not np.all(np.isfinite(predicted_positions_m)):
                raise ValueError(f"predicted_positions_m must be finite with shape {(cfg.num_targets, 2)}")
        velocities = self.velocities_mps
        self.positions_m, self.headings_rad = mobility.step(cfg, self.positions_m, self.headings_rad,
                                                            rng=self._motion_rng)
        self.block += 1
        return self._measure(assoc, beams, velocities, predicted_positions_m if gated else None)

    def measure(self, association: np.ndarray, beams: np.ndarray,
                predicted_positions_m: np.ndarray | None = None) -> Measurements:
        """Probe the current positions without moving the targets (calibration and tests).

        Same arguments and checks as :meth:`step`; the block index does not advance.
        """
        if self._meas_rng is None:
            raise RuntimeError("call reset(seed) before measure()")
        cfg = self.cfg
        assoc, beams = check_action(association, beams, cfg.num_rf, cfg.codebook_size, cfg.num_tracking_symbols,
                                    (cfg.num_bs, cfg.num_targets))
        return self._measure(assoc, beams, self.velocities_mps, predicted_positions_m)

    # ------------------------------------------------------------------ measurement
    def _measure(self, assoc, beams, velocities, predicted) -> Measurements:
        cfg = self.cfg
        rng = self._meas_rng
        num_bs, num_targets = assoc.shape
        range_m, angle = geometry(self.bs_positions_m, self.positions_m)
        u = np.cos(angle)
        nu = doppler_hz(cfg, self.bs_positions_m, self.positions_m, velocities)
        if predicted is not None:
            pred_range, _ = geometry(self.bs_positions_m, predicted)
            gate_lo = np.maximum(pred_range - cfg.range_gate_m, 0.0)
            gate_hi = pred_range + cfg.range_gate_m
        else:
            gate_lo = np.zeros_like(range_m)
            gate_hi = np.full_like(range_m, cfg.max_range_m)
        bs_idx, tgt_idx = np.nonzero(assoc)
        pair_beams = beams[bs_idx, tgt_idx]
        gated = np.full(len(bs_idx), predicted is not None)
        if cfg.fidelity == "signal":
            est = self._signal_level(assoc, beams, range_m, u, nu, gate_lo, gate_hi, bs_idx, tgt_idx, gated, rng)
        else:
            threshold = np.where(gated, self.estimator.threshold_gated, self.estimator.threshold_full)
            est = surrogate_measure(cfg, self.codebook, range_m[bs_idx, tgt_idx], u[bs_idx, tgt_idx],
                                    self.side[bs_idx], received_amplitude(cfg, range_m[bs_idx, tgt_idx]),
                                    pair_beams, nu[bs_idx, tgt_idx], gate_lo[bs_idx, tgt_idx],
                                    gate_hi[bs_idx, tgt_idx], threshold, rng=rng)
        out = {name: np.zeros((num_bs, num_targets)) for name in ("range_m", "angle_rad", "snr_db")}
        detected = np.zeros((num_bs, num_targets), bool)
        cov = np.zeros((num_bs, num_targets, 2, 2))
        for name in out:
            out[name][bs_idx, tgt_idx] = est[name]
        detected[bs_idx, tgt_idx] = est["detected"]
        cov[bs_idx, tgt_idx] = est["cov"]
        return Measurements(assigned=assoc.copy(), detected=detected, range_m=out["range_m"],
                            angle_rad=out["angle_rad"], snr_db=out["snr_db"], cov=cov, block=self.block)

    def _signal_level(self, assoc, beams, range_m, u, nu, gate_lo, gate_hi, bs_idx, tgt_idx, gated, rng):
        cfg = self.cfg
        num_rf = cfg.num_rf
        # RF chain n of BS m serves its n-th assigned target (ascending index); idle chains are off.
        order = np.argsort(~assoc, axis=1, kind="stable")[:, :num_rf]  # (M, min(R, I))
        chain_active = np.take_along_axis(assoc, order, axis=1)
        if order.shape[1] < num_rf:  # fewer targets than RF chains: the extra chains stay idle
            pad = num_rf - order.shape[1]
            order = np.pad(order, ((0, 0), (0, pad)))
            chain_active = np.pad(chain_active, ((0, 0), (0, pad)))
        chain_beams = beams[np.arange(cfg.num_bs)[:, None], order] * chain_active[..., None, None]
        gains = channel_gains(cfg, range_m, rng=rng)
        symbols = qpsk_symbols((cfg.num_bs, num_rf, cfg.num_tracking_symbols, cfg.num_subcarriers), rng=rng)
        y = synthesize_echo(cfg, self.codebook, chain_active, chain_beams, gains, u, delay_s(range_m), nu, symbols,
                            rng=rng)
        # Pair p = (bs_idx[p], tgt_idx[p]) uses the chain whose target it is.
        chain_of_pair = np.argmax((order[bs_idx] == tgt_idx[:, None]) & chain_active[bs_idx], axis=1)
        z = y[bs_idx, chain_of_pair] * symbols[bs_idx, chain_of_pair].conj()  # matched filter: (P, K, L)
        return self.estimator.estimate(z, beams[bs_idx, tgt_idx], self.side[bs_idx], gate_lo[bs_idx, tgt_idx],
                                       gate_hi[bs_idx, tgt_idx], gated)

    # ------------------------------------------------------------------ helpers for CUs and labels
    def spatial_frequency(self, positions_m: np.ndarray) -> np.ndarray:
        """``u = cos(theta)`` of the given positions ``(I, 2)`` from every BS, shape ``(M, I)``."""
        _, angle = geometry(self.bs_positions_m, np.asarray(positions_m, float))
        return np.cos(angle)

    def beams_toward(self, positions_m: np.ndarray) -> np.ndarray:
        """Well-placed beams from every BS toward positions ``(I, 2)``: ``(M, I, K, 2)`` int."""
        return beams_toward(self.spatial_frequency(positions_m), self.cfg.codebook_size,
                            self.cfg.num_tracking_symbols)

    def best_beam_index(self, positions_m: np.ndarray) -> np.ndarray:
        """Codebook beam nearest to each position from every BS, ``(M, I)`` int."""
        u = self.spatial_frequency(positions_m)
        lo, hi = nearest_beams(u, self.cfg.codebook_size)
        from rl_isac.physics.arrays import codebook_directions

        dirs = codebook_directions(self.cfg.codebook_size)
        return np.where(np.abs(u - dirs[lo]) <= np.abs(u - dirs[hi]), lo, hi)

    def expected_information(self, positions_m: np.ndarray, beams: np.ndarray) -> np.ndarray:
        """Position Fisher information each BS would give each target with these beams.

        Args:
            positions_m: ``(I, 2)`` metres (true or predicted).
            beams: ``(M, I, K, 2)`` int.
        Returns:
            ``(M, I, 2, 2)`` in 1/m^2, assuming detection (CRB of range and angle at the
            expected amplitude, mapped to the position).
        """
        return expected_position_information(self.cfg, self.codebook, self.bs_positions_m, positions_m, beams)

    def nearest_association(self, positions_m: np.ndarray) -> np.ndarray:
        """A simple feasible association: each target to its nearest BS with a free chain, then fill.

        Every target gets one BS (nearest first, in order of how close the target is to
        any BS); remaining chains go to the nearest targets not yet on that BS.
        Returns ``(M, I)`` bool satisfying (5c)-(5e).
        """
        cfg = self.cfg
        range_m, _ = geometry(self.bs_positions_m, np.asarray(positions_m, float))
        assoc = np.zeros((cfg.num_bs, cfg.num_targets), bool)
        free = np.full(cfg.num_bs, cfg.num_rf)
        for i in np.argsort(range_m.min(axis=0)):
            for m in np.argsort(range_m[:, i]):
                if free[m] > 0:
                    assoc[m, i] = True
                    free[m] -= 1
                    break
        for m in range(cfg.num_bs):
            for i in np.argsort(range_m[m]):
                if free[m] == 0:
                    break
                if not assoc[m, i]:
                    assoc[m, i] = True
                    free[m] -= 1
        return assoc
