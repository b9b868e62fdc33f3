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

Speed: everything a validated association fixes (pair lists, RF-chain map, output
positions) is cached per association pattern, large scratch arrays of the signal
level are reused from block to block (:class:`rl_isac.physics.echo.Workspace`), and the
signal level synthesises and estimates in complex64. :class:`_FrontEnd` measures any
number of independent copies of the scenario at once; :mod:`rl_isac.vector_network` uses
that to step many environments per call.

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
from rl_isac.physics.arrays import beams_toward, codebook_directions, dft_codebook, nearest_beams
from rl_isac.physics.channel import geometry, path_amplitude
from rl_isac.physics.echo import Workspace, colour_noise, complex_normal, qpsk_symbols, synthesize_echo
from rl_isac.physics.estimation import PairEstimator, merge_spread
from rl_isac.physics.fisher import expected_position_information
from rl_isac.physics.measurements import Measurements
from rl_isac.physics.surrogate import SurrogateFrontEnd
from rl_isac.scenario import SPEED_OF_LIGHT_MPS, ScenarioConfig

# Complex dtype of the synthesised samples at the signal level: complex64 keeps the rounding
# (~1e-7 of the strongest echo) far below the thermal noise and halves the memory traffic.
SIGNAL_DTYPE = np.complex64
# Validated associations (and combinations of them) remembered per network.
_CACHE_SIZE = 4096


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


class _Pairs:
    """Everything a validated association ``A (M, I)`` fixes, computed once and cached.

    Pairs ``p`` are the True entries of ``A`` in row-major order (``np.nonzero``). RF chain
    ``n`` of BS ``m`` serves its ``n``-th assigned target (ascending index); idle chains are off.
    The attributes shared with :class:`_Batch` (``num``, ``counts``, ``tgt``, ``bs_pos``, ``side``,
    ``chain_active``, ``chain_flat``, ``all_chains``, ``det_index``, ``members``)
    make one association a batch of one environment.
    """

    def __init__(self, assoc: np.ndarray, key: bytes, bs_positions_m: np.ndarray, side: np.ndarray,
                 num_rf: int) -> None:
        num_bs, num_targets = assoc.shape
        self.assoc = assoc
        self.assoc.flags.writeable = False
        self.key = key
        self.bs_idx, self.tgt_idx = np.nonzero(assoc)
        self.num = len(self.bs_idx)
        self.counts = (self.num,)
        self.members = (self,)
        self.tgt = self.tgt_idx  # index into the (I,) targets
        self.bs_pos = bs_positions_m[self.bs_idx]  # (P, 2)
        self.side = side[self.bs_idx]
        self.flat = self.bs_idx * num_targets + self.tgt_idx  # index into (M * I,)
        self.det_index = self.flat
        # Chain of each pair: its rank among the BS's assigned targets.
        rank = np.cumsum(assoc, axis=1) - 1
        self.chain = rank[self.bs_idx, self.tgt_idx]  # (P,)
        self.chain_flat = self.bs_idx * num_rf + self.chain  # index into (M * R,)
        self.chain_active = np.zeros((num_bs, num_rf), bool)
        self.chain_active[self.bs_idx, self.chain] = True
        # True when every chain is in use and pairs are the chains in order: z needs no gather.
        self.all_chains = bool(self.num == num_bs * num_rf and np.array_equal(self.chain_flat, np.arange(self.num)))


class _Batch:
    """The pairs of several environments' associations, concatenated environment by environment.

    Same attributes as :class:`_Pairs`, with targets, chains and outputs indexed over the
    environments stacked: target ``e I + i``, chain ``(e M + m) R + n``, output buffer row ``e``.
    """

    def __init__(self, members: list[_Pairs], num_bs: int, num_targets: int, num_rf: int) -> None:
        self.members = tuple(members)
        self.counts = tuple(p.num for p in members)
        self.num = sum(self.counts)
        size = num_bs * num_targets
        self.tgt = np.concatenate([p.tgt_idx + e * num_targets for e, p in enumerate(members)])
        self.bs_pos = np.concatenate([p.bs_pos for p in members])
        self.side = np.concatenate([p.side for p in members])
        self.det_index = np.concatenate([p.flat + e * size for e, p in enumerate(members)])
        self.chain_flat = np.concatenate([p.chain_flat + e * num_bs * num_rf for e, p in enumerate(members)])
        self.chain_active = np.concatenate([p.chain_active for p in members])
        self.all_chains = all(p.all_chains for p in members)


class _ActionChecker:
    """(5c)-(5f) as :func:`check_action`, with validated associations cached by their bytes."""

    def __init__(self, cfg: ScenarioConfig, bs_positions_m: np.ndarray, side: np.ndarray) -> None:
        self.cfg = cfg
        self.bs_positions_m = bs_positions_m
        self.side = side
        self.shape = (cfg.num_bs, cfg.num_targets)
        self.beam_shape = (cfg.num_bs, cfg.num_targets, cfg.num_tracking_symbols, 2)
        self.pairs: dict[bytes, _Pairs] = {}
        self.batches: dict[tuple[bytes, ...], _Batch] = {}

    def check(self, association, beams) -> tuple[_Pairs, np.ndarray]:
        """The cached pairs of ``association`` and the pairs' beams ``(P, K, 2)`` int64.

        A bool association of the right shape is looked up by its bytes (validated the first
        time it is seen); beams are range-checked on the assigned pairs only. Anything
        unusual goes through :func:`check_action`, which raises the named error.
        """
        cfg = self.cfg
        a = association
        pairs = None
        if type(a) is np.ndarray and a.dtype == np.bool_ and a.shape == self.shape:
            pairs = self.pairs.get(a.tobytes())
        if pairs is None:
            from rl_isac.association.constraints import check_association

            assoc = check_association(a, cfg.num_rf, shape=self.shape)
            key = assoc.tobytes()
            pairs = self.pairs.get(key)
            if pairs is None:
                if len(self.pairs) >= _CACHE_SIZE:
                    self.pairs.clear()
                    self.batches.clear()
                pairs = self.pairs[key] = _Pairs(assoc, key, self.bs_positions_m, self.side, cfg.num_rf)
        b = beams
        if not (type(b) is np.ndarray and b.dtype == np.int64 and b.shape == self.beam_shape):
            _, b = check_action(pairs.assoc, b, cfg.num_rf, cfg.codebook_size, cfg.num_tracking_symbols,
                                self.shape)
            b = b.astype(np.int64, copy=False)
        pair_beams = b[pairs.bs_idx, pairs.tgt_idx]  # (P, K, 2)
        # Negative indices become huge as uint64: one comparison checks both ends of the codebook.
        if pairs.num and pair_beams.view(np.uint64).max() >= cfg.codebook_size:
            check_action(pairs.assoc, b, cfg.num_rf, cfg.codebook_size, cfg.num_tracking_symbols, self.shape)
        return pairs, pair_beams

    def batch(self, members: list[_Pairs]) -> _Batch:
        """The cached :class:`_Batch` of these environments' pairs."""
        key = tuple(p.key for p in members)
        batch = self.batches.get(key)
        if batch is None:
            if len(self.batches) >= _CACHE_SIZE:
                self.batches.clear()
            cfg = self.cfg
            batch = self.batches[key] = _Batch(members, cfg.num_bs, cfg.num_targets, cfg.num_rf)
        return batch

    def prediction(self, predicted, shape: tuple[int, ...]) -> np.ndarray | None:
        """``predicted`` as a finite float array of ``shape`` (or None)."""
        if predicted is None:
            return None
        predicted = np.asarray(predicted, dtype=float)
        if predicted.shape != shape or not np.isfinite(predicted).all():
            raise ValueError(f"predicted_positions_m must be finite with shape {shape}")
        return predicted


class _FrontEnd:
    """The BS front ends of one scenario, measuring one or several independent environments at once.

    Environments share the scenario (BSs, codebook, link budget) and nothing else: each has
    its own targets and its own measurement generator, drawn in the same order as a single
    network would, so environment ``e`` measures exactly what a :class:`CellFreeNetwork` with
    the same state and generator would (up to floating-point rounding).
    """

    def __init__(self, cfg: ScenarioConfig, codebook: np.ndarray, bs_positions_m: np.ndarray) -> None:
        self.cfg = cfg
        self.codebook = codebook
        self.bs_positions_m = bs_positions_m
        self.estimator = PairEstimator(cfg, codebook)
        self.surrogate = SurrogateFrontEnd(cfg, codebook)
        self.signal = cfg.fidelity == "signal"
        self.amp_const = np.sqrt(cfg.tx_power_per_subcarrier_w) * float(path_amplitude(cfg, 1.0))  # rho d^2
        self.doppler_scale = -2.0 / cfg.wavelength_m  # nu = scale * (unit vector . velocity)
        self.noise_std = float(np.sqrt(cfg.noise_power_w))
        self.work = Workspace()  # scratch arrays of the signal level (reused every block)

    def measure(self, batch, pair_beams: np.ndarray, positions_m: np.ndarray, velocities_mps: np.ndarray,
                predicted_m: np.ndarray | None, rngs: list[np.random.Generator], block: int) -> list[Measurements]:
        """Measure every pair of ``batch`` (a :class:`_Pairs` or :class:`_Batch`).

        Args:
            pair_beams: ``(P, K, 2)`` int64 beams of the pairs, environment by environment.
            positions_m, velocities_mps: ``(E, I, 2)`` truth and velocity of the move just made.
            predicted_m: ``(E, I, 2)`` CU predictions (range gates) or None. At the signal level they also
                widen the covariance of peaks two predicted targets may have merged into
                (:func:`~rl_isac.physics.estimation.merge_spread`; the surrogate widens its merges itself).
            rngs: the ``E`` measurement generators.
        Returns:
            one :class:`Measurements` per environment.
        """
        cfg = self.cfg
        if predicted_m is not None:
            # Gate +-range_gate_m around the predicted range of each pair.
            d = predicted_m.reshape(-1, 2)[batch.tgt] - batch.bs_pos
            pred_range = np.hypot(d[:, 0], d[:, 1])
            gate_lo = np.maximum(pred_range - cfg.range_gate_m, 0.0)
            gate_hi = pred_range + cfg.range_gate_m
            threshold = self.estimator.threshold_gated
        else:
            gate_lo, gate_hi = 0.0, cfg.max_range_m
            threshold = self.estimator.threshold_full
        extra_cov = None
        if self.signal:
            est = self._signal_level(batch, pair_beams, positions_m, velocities_mps, gate_lo, gate_hi, threshold, rngs)
            if predicted_m is not None and cfg.num_targets > 1:
                # Peaks other predicted targets may have merged into (the surrogate widens its merges itself).
                env = batch.tgt // cfg.num_targets
                d = predicted_m[env] - batch.bs_pos[:, None, :]  # (P, I, 2)
                extra_cov = merge_spread(cfg, est[0], est[1], est[3], np.hypot(d[..., 0], d[..., 1]),
                                         np.arctan2(d[..., 1], d[..., 0]))
        else:
            est = self._surrogate(batch, pair_beams, positions_m, velocities_mps, gate_lo, gate_hi, threshold, rngs)
        return self._collect(batch, est, block, extra_cov)

    def _surrogate(self, batch, pair_beams, positions_m, velocities_mps, gate_lo, gate_hi, threshold, rngs):
        """Surrogate draws for the assigned pairs (geometry of eq. (1) per pair), with every other target
        of the same environment whose true range lies inside the pair's gate as a candidate peak."""
        cfg = self.cfg
        num_targets = cfg.num_targets
        flat_pos = positions_m.reshape(-1, 2)
        flat_vel = velocities_mps.reshape(-1, 2)
        delta = flat_pos[batch.tgt] - batch.bs_pos  # (P, 2)
        range_m = np.hypot(delta[:, 0], delta[:, 1])
        u = delta[:, 0] / range_m  # cos(theta)
        # nu = 2 v_r / lambda with the closing speed v_r = -(unit vector . velocity).
        nu = (delta * flat_vel[batch.tgt]).sum(axis=1) * (self.doppler_scale / range_m)
        amplitude = self.amp_const / (range_m * range_m)
        rng = rngs[0] if len(rngs) == 1 else list(zip(rngs, batch.counts))
        # Other targets of the pair's environment inside its gate: (P, I) candidates, own target excluded.
        env_first = (batch.tgt // num_targets) * num_targets
        others = env_first[:, None] + np.arange(num_targets)  # (P, I) flat target indices
        d_all = flat_pos[others] - batch.bs_pos[:, None, :]
        r_all = np.hypot(d_all[..., 0], d_all[..., 1])
        lo = np.broadcast_to(np.asarray(gate_lo, float), range_m.shape)[:, None]
        hi = np.broadcast_to(np.asarray(gate_hi, float), range_m.shape)[:, None]
        inside = (r_all >= lo) & (r_all <= hi) & (others != batch.tgt[:, None])
        pair_idx, tgt_slot = np.nonzero(inside)  # row-major: pairs in order, so environments in order
        nb_range = r_all[pair_idx, tgt_slot]
        nb_delta = d_all[pair_idx, tgt_slot]
        nb_vel = flat_vel[others[pair_idx, tgt_slot]]
        if len(rngs) == 1:
            nb_rng = rngs[0]
        else:
            env_of_pair = np.repeat(np.arange(len(rngs)), batch.counts)
            nb_rng = list(zip(rngs, np.bincount(env_of_pair[pair_idx], minlength=len(rngs))))
        neighbours = {"pair": pair_idx, "range_m": nb_range, "u": nb_delta[:, 0] / nb_range,
                      "amplitude": self.amp_const / (nb_range * nb_range),
                      "doppler_hz": (nb_delta * nb_vel).sum(axis=1) * (self.doppler_scale / nb_range), "rng": nb_rng}
        return self.surrogate.draw_peaks(range_m, u, batch.side, amplitude, pair_beams, nu, gate_lo, gate_hi,
                                         threshold, rng=rng, neighbours=neighbours, num_peaks=cfg.num_peaks,
                                         resolution_m=cfg.range_resolution_m)

    def _signal_level(self, batch, pair_beams, positions_m, velocities_mps, gate_lo, gate_hi, threshold, rngs):
        """Synthesise eq. (2) at every BS (all targets echo), matched-filter each pair, estimate.

        The BSs of all environments are stacked (``E M`` of them, each seeing its own
        environment's targets); per environment and in this order its generator draws the
        RCS phases, the symbols and the noise.
        """
        cfg = self.cfg
        work = self.work
        num_env = len(rngs)
        num_bs, num_rf = cfg.num_bs, cfg.num_rf
        shape = (num_bs, num_rf, cfg.num_tracking_symbols, cfg.num_subcarriers)  # per environment
        delta = positions_m[:, None, :, :] - self.bs_positions_m[None, :, None, :]  # (E, M, I, 2)
        delta = delta.reshape(num_env * num_bs, -1, 2)
        range_m = np.hypot(delta[..., 0], delta[..., 1])  # (E M, I)
        u = delta[..., 0] / range_m
        velocities = velocities_mps if num_env == 1 else np.repeat(velocities_mps, num_bs, axis=0)
        nu = (delta * velocities).sum(axis=-1) * (self.doppler_scale / range_m)
        # Channel gains sqrt(P) alpha with a uniform random RCS phase (eq. (1)).
        gain_shape = (num_bs, cfg.num_targets)
        phase = rngs[0].uniform(0, 2 * np.pi, gain_shape) if num_env == 1 else np.concatenate(
            [rng.uniform(0, 2 * np.pi, gain_shape) for rng in rngs])
        gains = (self.amp_const / (range_m * range_m)) * np.exp(1j * phase)
        # (tx, rx) beams per chain: the beams of the chain's pair; idle chains keep beam 0 (they are off).
        if batch.all_chains:
            chain_beams = pair_beams.reshape(num_env * num_bs, num_rf, *pair_beams.shape[1:])
        else:
            chain_beams = np.zeros((num_env * num_bs * num_rf, *pair_beams.shape[1:]), np.int64)
            chain_beams[batch.chain_flat] = pair_beams
            chain_beams = chain_beams.reshape(num_env * num_bs, num_rf, *pair_beams.shape[1:])
        symbols = work.get("symbols", (num_env * num_bs, *shape[1:]), SIGNAL_DTYPE)
        for e, rng in enumerate(rngs):
            qpsk_symbols(shape, rng=rng, dtype=SIGNAL_DTYPE, work=work, out=symbols[e * num_bs:(e + 1) * num_bs])
        # Beam-space noise F^H n first (drawn into the echo buffer), then the echoes of eq. (2) added to it.
        y = work.get("echo", symbols.shape, SIGNAL_DTYPE)
        for e, rng in enumerate(rngs):
            complex_normal(rng, shape, SIGNAL_DTYPE, scale=self.noise_std, work=work,
                           out=y[e * num_bs:(e + 1) * num_bs])
        colour_noise(y, cfg, self.codebook, batch.chain_active, chain_beams[..., 1])
        y = synthesize_echo(cfg, self.codebook, batch.chain_active, chain_beams, gains, u,
                            (2.0 / SPEED_OF_LIGHT_MPS) * range_m, nu, symbols, rng=None, dtype=SIGNAL_DTYPE, work=work,
                            add_to=y)
        # Matched filter: pair p uses its own chain's samples and symbols, z = v conj(s): (P, K, L).
        y = y.reshape(-1, *y.shape[2:])
        symbols = np.conjugate(symbols, out=symbols).reshape(y.shape)
        if batch.all_chains:
            z = np.multiply(y, symbols, out=y)
        else:
            z = y[batch.chain_flat] * symbols[batch.chain_flat]
        return self.estimator.estimate_peaks(z, pair_beams, batch.side, gate_lo, gate_hi, threshold, cfg.num_peaks,
                                             work=work)

    def _collect(self, batch, est, block: int, extra_cov: np.ndarray | None = None) -> list[Measurements]:
        """Scatter the per-pair, per-peak results ``(P, num_peaks)`` into one :class:`Measurements` per
        environment: ``(M, I, num_peaks)`` peak arrays, and peak 0 as the ``(M, I)`` fields; ``extra_cov``
        ``(P, num_peaks, 2, 2)`` is added to the peaks' diagonal covariances."""
        range_m, angle, snr_db, detected, var_range, var_angle = est
        cfg = self.cfg
        num_env = len(batch.members)
        num_peaks = cfg.num_peaks
        shape = (cfg.num_bs, cfg.num_targets)
        size = cfg.num_bs * cfg.num_targets
        buf = np.zeros((5, num_env * size, num_peaks))
        buf[:, batch.det_index] = np.stack((range_m, angle, snr_db, var_range, var_angle))
        valid = np.zeros((num_env * size, num_peaks), bool)
        valid[batch.det_index] = detected
        cov = np.zeros((num_env * size, num_peaks, 2, 2))
        cov[..., 0, 0] = buf[3]
        cov[..., 1, 1] = buf[4]
        if extra_cov is not None:
            cov[batch.det_index] += extra_cov
        pshape = (num_env, *shape, num_peaks)
        buf = buf.reshape(5, *pshape)
        valid = valid.reshape(pshape)
        cov = cov.reshape(*pshape, 2, 2)
        # the world's own output: built valid, marked as validated (Measurements.trusted)
        return [Measurements.trusted(assigned=pairs.assoc.copy(), detected=valid[e, ..., 0].copy(),
                                     range_m=buf[0, e, ..., 0].copy(), angle_rad=buf[1, e, ..., 0].copy(),
                                     snr_db=buf[2, e, ..., 0].copy(), cov=cov[e, ..., 0, :, :].copy(), block=block,
                                     peak_valid=valid[e], peak_range_m=buf[0, e], peak_angle_rad=buf[1, e],
                                     peak_snr_db=buf[2, e], peak_cov=cov[e])
                for e, pairs in enumerate(batch.members)]


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
        # +1: BS on the bottom edge sees targets at theta in (0, pi); -1: top edge, theta in (-pi, 0).
        self.side = np.where(self.bs_positions_m[:, 1] == 0.0, 1.0, -1.0)
        self._front = _FrontEnd(cfg, self.codebook, self.bs_positions_m)
        self._checker = _ActionChecker(cfg, self.bs_positions_m, self.side)
        self.estimator = self._front.estimator
        self.surrogate = self._front.surrogate
        self.positions_m = np.zeros((cfg.num_targets, 2))
        self.headings_rad = np.zeros(cfg.num_targets)
        self.block = 0
        self._motion_rng: np.random.Generator | None = None
        self._meas_rng: np.random.Generator | None = None

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int) -> np.ndarray:
        """Start an episode; return the initial acquisition ``(I, 2)`` metres (truth + noise)."""
        self._motion_rng, self._meas_rng, acq_rng = _episode_generators(seed)
        self.positions_m, self.headings_rad = mobility.initial_state(self.cfg, rng=self._motion_rng)
        self.block = 0
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
        pairs, pair_beams = self._checker.check(association, beams)
        predicted = self._checker.prediction(predicted_positions_m, self.positions_m.shape)
        self.positions_m, self.headings_rad, velocities = mobility.advance(self.cfg, self.positions_m,
                                                                           self.headings_rad, rng=self._motion_rng)
        self.block += 1
        return self._front.measure(pairs, pair_beams, self.positions_m[None], velocities[None],
                                   None if predicted is None else predicted[None], [self._meas_rng], self.block)[0]

    def measure(self, association: np.ndarray, beams: np.ndarray,
                predicted_positions_m: np.ndarray | None = None) -> Measurements:
        """Probe the current positions without moving the targets (calibration and tests).

        Same arguments and checks as :meth:`step`; the block index does not advance.
        """
        if self._meas_rng is None:
            raise RuntimeError("call reset(seed) before measure()")
        pairs, pair_beams = self._checker.check(association, beams)
        predicted = self._checker.prediction(predicted_positions_m, self.positions_m.shape)
        return self._front.measure(pairs, pair_beams, self.positions_m[None], self.velocities_mps[None],
                                   None if predicted is None else predicted[None], [self._meas_rng], self.block)[0]

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
        return nearest_association(self.cfg, self.bs_positions_m, positions_m)


def nearest_association(cfg: ScenarioConfig, bs_positions_m: np.ndarray, positions_m: np.ndarray) -> np.ndarray:
    """:meth:`CellFreeNetwork.nearest_association` for BSs ``(M, 2)`` and positions ``(I, 2)``: ``(M, I)`` bool."""
    range_m, _ = geometry(bs_positions_m, np.asarray(positions_m, float))
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


def _episode_generators(seed: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Motion, measurement and acquisition generators of an episode, spawned from ``seed``."""
    motion_seq, meas_seq, acq_seq = np.random.SeedSequence(int(seed)).spawn(3)
    return np.random.default_rng(motion_seq), np.random.default_rng(meas_seq), np.random.default_rng(acq_seq)
