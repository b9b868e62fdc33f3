"""The fast ``surrogate`` fidelity: draws each pair's measurement from its detection
model and Fisher information instead of synthesising eq. (2).

Model, per assigned pair with true range ``d``, ``u = cos(theta)`` and beams:

* Detection: the per-symbol amplitudes at the true delay are drawn as
  ``c_k = rho g_k(u) e^{j phi_k} + CN(0, sigma^2 / L)`` (``phi_k`` the RCS phase plus
  the Doppler rotation), and the pair is detected when ``T = L sum_k |c_k|^2 / sigma^2``
  exceeds the same threshold the signal-level detector uses. Beam misalignment
  and sidelobes enter through ``|g_k(u)|``: a target outside the swept beams has a
  small ``T`` and is missed; one in a sidelobe is detected only when close enough.
  A target whose true range lies outside the range gate is missed.
* Estimates: ``d_hat ~ N(d, CRB_d)``, ``u_hat ~ N(u, CRB_u)`` with the bounds of
  :func:`rl_isac.physics.fisher.range_angle_crb` at the true amplitude and angle:
  the signal-level estimator is efficient at the integrated SNRs where pairs are
  detected (``rl-isac crb-check`` measures how close).
* Quality: ``snr_db = 10 log10(T - K)`` and the covariance from the CRB at the
  estimated SNR and angle, as the signal-level estimator reports.

* Other targets in the gate (:meth:`SurrogateFrontEnd.draw_peaks`): every other target whose
  true range from the BS lies inside the pair's range gate echoes through the pair's beams
  (its own ``|g_k(u_j)|``, its own RCS phase) and is a candidate peak exactly like the pair's
  own target. Candidates closer than ``range_resolution_m`` in true range are not resolved:
  they merge into one peak at the statistic-weighted mean of their estimates (statistics
  added), its reported covariance widened by the weighted spread of the members so that it
  covers each of them. The ``num_peaks`` strongest peaks are reported, strongest first; peak 0
  may be the neighbour's echo, as at the signal level.

Not modelled: interference from the other RF chain (below ``1/L`` after matched filtering),
ML outliers at low SNR, and the rival angle mode of a target at the edge of the swept beams
(:meth:`rl_isac.physics.estimation.PairEstimator.estimate_peaks`: at the signal level the ML
angle there is the wrong one of two near-equal maxima in ~15 % of such blocks whatever the SNR,
and its covariance is widened to cover both). A policy trained on the surrogate never sees those;
the surrogate-signal gap of ``results/ppo_table.md`` includes them.

Random draws per call, in this order: the RCS phases ``U(0, 2 pi) (P,)``, then one vector of
``N(0, 1)``: the real and the imaginary parts of the noise of ``c`` ``(P, K)`` each, and the
range and ``u`` errors ``(2, P)``; then the same for the ``N`` neighbour candidates (in
:meth:`SurrogateFrontEnd.draw_peaks`), each environment from its own generator.
"""

from __future__ import annotations

import numpy as np

from rl_isac.physics.arrays import beam_patterns
from rl_isac.physics.fisher import PairBound
from rl_isac.scenario import ScenarioConfig


class SurrogateFrontEnd:
    """The surrogate draws of one scenario, with its constants computed once.

    Args:
        cfg: the scenario.
        codebook: ``(N, B)`` DFT beams (only the shape is used).
    """

    def __init__(self, cfg: ScenarioConfig, codebook: np.ndarray) -> None:
        self.patterns = beam_patterns(codebook.shape[0], codebook.shape[1], cfg.antenna_spacing_wavelengths)
        self.bound = PairBound(cfg)
        self.num_symbols = cfg.num_tracking_symbols
        self.sigma2 = cfg.noise_power_w
        self.noise_std = np.sqrt(self.sigma2 / (2 * cfg.num_subcarriers))  # per real part of c_k
        self.amp_sq_per_snr = cfg.noise_power_w / cfg.num_subcarriers  # rho^2 sum_k r_k^2 per unit SNR
        self.doppler_phase = 2 * np.pi * cfg.symbol_duration_s * np.arange(self.num_symbols)  # (K,) rad per Hz

    def draw(self, range_m: np.ndarray, u: np.ndarray, side: np.ndarray, amplitude: np.ndarray,
             beams: np.ndarray, doppler_hz: np.ndarray, gate_lo_m, gate_hi_m, threshold, *,
             rng) -> tuple[np.ndarray, ...]:
        """Draw ``P`` pairs, own target only (arguments as :func:`surrogate_measure`; gates and
        threshold may be scalars).

        ``rng`` is one generator, or ``[(generator, count), ...]``: consecutive runs of pairs
        (several environments), each drawn from its own generator exactly as one call per run.

        Returns:
            ``range_m, angle_rad, snr_db, detected, var_range_m2, var_angle_rad2``, each ``(P,)``;
            range, angle and variances are 0 where not detected.
        """
        num, num_symbols = beams.shape[:2]
        res = self._candidates(range_m, u, side, amplitude, beams, doppler_hz, gate_lo_m, gate_hi_m, threshold,
                               *_draws(rng, num, num_symbols))
        r_hat, u_hat, angle, stat, detected, var_r, var_a, snr_lin = res
        return (np.where(detected, r_hat, 0.0), np.where(detected, angle, 0.0), 10 * np.log10(snr_lin), detected,
                np.where(detected, var_r, 0.0), np.where(detected, var_a, 0.0))

    def _candidates(self, range_m, u, side, amplitude, beams, doppler_hz, gate_lo_m, gate_hi_m, threshold,
                    rcs_phase, noise, err):
        """One echo per entry (``(n,)`` arrays, ``beams (n, K, 2)``) seen through the given beams.

        Returns ``r_hat, u_hat, angle, stat, detected, var_range, var_angle, snr_lin``, each ``(n,)``
        (estimates meaningful where detected).
        """
        num_symbols = beams.shape[1]
        patterns = self.patterns
        directions = patterns.directions[beams]  # (n, K, 2)
        sums, r = patterns.pattern_sums(u, directions, with_pattern=True)  # at the truth
        # c_k / std with std = sqrt(sigma^2 / (2 L)) per real part, so that T = sum_k |c_k / std|^2 / 2.
        c = ((amplitude / self.noise_std)[:, None] * patterns.pair_phase(beams) * r
             * np.exp(1j * (rcs_phase[:, None] + doppler_hz[:, None] * self.doppler_phase))
             + (noise[0] + 1j * noise[1]))
        stat = 0.5 * np.square(c.view(float)).sum(axis=1)
        out = np.empty((4, len(u)))  # range, angle, var_range, var_angle of the estimate
        with np.errstate(divide="ignore", invalid="ignore"):
            var, informative = self.bound.from_sums(amplitude * amplitude, sums)  # CRB at the truth
            detected = (stat > threshold) & (range_m >= gate_lo_m) & (range_m <= gate_hi_m) & informative
            spread = np.sqrt(np.where(detected, var, 0.0))
            spread *= err
            r_hat = np.add(range_m, spread[0], out=out[0])
            u_hat = np.minimum(np.maximum(u + spread[1], -1.0), 1.0)
            angle = np.multiply(side, np.arccos(u_hat), out=out[1])
            snr_lin = np.maximum(stat - num_symbols, 1e-3)
            # Reported quality: the CRB at the estimated SNR and angle, as the signal-level estimator reports.
            sums = patterns.pattern_sums(u_hat, directions)
            amp_sq = snr_lin * self.amp_sq_per_snr / np.maximum(sums[:, 0, 0], 1e-30)
            _, informative = self.bound.from_sums(amp_sq, sums, out=out[2:])
            out[3] /= np.maximum(np.sin(angle) ** 2, 1e-12)  # var(theta) = var(u) / sin^2(theta)
            detected &= informative & (r_hat > 0)
            out = np.where(detected, out, 0.0)
        return out[0], u_hat, out[1], stat, detected, out[2], out[3], snr_lin

    def draw_peaks(self, range_m: np.ndarray, u: np.ndarray, side: np.ndarray, amplitude: np.ndarray,
                   beams: np.ndarray, doppler_hz: np.ndarray, gate_lo_m, gate_hi_m, threshold, *, rng,
                   neighbours: dict | None = None, num_peaks: int = 1,
                   resolution_m: float = 0.0) -> tuple[np.ndarray, ...]:
        """Draw ``P`` pairs with the other targets inside their gates: the ``num_peaks`` strongest peaks.

        Args:
            range_m, u, side, amplitude, beams, doppler_hz, gate_lo_m, gate_hi_m, threshold, rng: as
                :meth:`draw` (the pair's own target).
            neighbours: the other targets inside some pair's gate, ``(N,)`` arrays ``pair`` (int index
                of the pair), ``range_m``, ``u``, ``amplitude``, ``doppler_hz``, and ``rng`` (one generator
                or ``[(generator, count), ...]`` as ``rng``); None or ``N = 0``: own targets only.
            num_peaks: peaks reported per pair.
            resolution_m: candidates closer than this in true range merge into one peak.
        Returns:
            ``range_m, angle_rad, snr_db, detected, var_range_m2, var_angle_rad2``, each ``(P, num_peaks)``.
        """
        num, num_symbols = beams.shape[:2]
        count = 0 if neighbours is None else len(neighbours["pair"])
        rcs_phase, noise, err = _draws(rng, num, num_symbols)
        lo = np.broadcast_to(np.asarray(gate_lo_m, float), (num,))
        hi = np.broadcast_to(np.asarray(gate_hi_m, float), (num,))
        thr = np.broadcast_to(np.asarray(threshold, float), (num,))
        pair_of = np.arange(num)
        true_range = np.asarray(range_m, float)
        args = (true_range, u, side, amplitude, beams, doppler_hz, lo, hi, thr)
        if count:
            nb = neighbours["pair"]
            nb_phase, nb_noise, nb_err = _draws(neighbours["rng"], count, num_symbols)
            rcs_phase = np.concatenate([rcs_phase, nb_phase])
            noise = np.concatenate([noise, nb_noise], axis=1)
            err = np.concatenate([err, nb_err], axis=1)
            pair_of = np.concatenate([pair_of, nb])
            args = tuple(np.concatenate([a, b]) for a, b in zip(args, (
                neighbours["range_m"], neighbours["u"], side[nb], neighbours["amplitude"], beams[nb],
                neighbours["doppler_hz"], lo[nb], hi[nb], thr[nb])))
            true_range = args[0]
        cand = self._candidates(*args, rcs_phase, noise, err)
        r_hat, u_hat, angle, stat, detected, var_r, var_a, snr_lin = cand
        if not detected[num:].any():
            # No other target's echo detected anywhere: peak 0 is the own target, nothing else.
            out = np.zeros((6, num, num_peaks))
            out[:, :, 0] = (r_hat[:num], angle[:num], 10 * np.log10(snr_lin[:num]), detected[:num], var_r[:num],
                            var_a[:num])
            return out[0], out[1], out[2], out[3].astype(bool), out[4], out[5]
        keep = np.concatenate([np.arange(num), num + np.flatnonzero(detected[num:])])
        count = len(keep) - num
        pair_of, true_range = pair_of[keep], true_range[keep]
        r_hat, u_hat, angle, stat, detected, var_r, var_a, snr_lin = (a[keep] for a in cand)
        # (P, C) table of each pair's candidates (own first), C = 1 + most neighbours of one pair.
        slot = np.zeros(len(pair_of), np.int64)
        if count:
            order = np.argsort(pair_of[num:], kind="stable")
            sorted_pairs = pair_of[num:][order]
            first = np.searchsorted(sorted_pairs, sorted_pairs)
            slot[num + order] = 1 + np.arange(count) - first
        width = int(slot.max()) + 1
        table = np.full((num, width), -1, np.int64)
        table[pair_of, slot] = np.arange(len(pair_of))
        has = table >= 0
        idx = np.where(has, table, 0)
        t_stat = np.where(has & detected[idx], stat[idx], -np.inf)  # (P, C)
        t_range = true_range[idx]
        out = np.zeros((6, num, num_peaks))  # range, angle, snr_db, detected, var_range, var_angle
        out[2, :, 0] = 10 * np.log10(snr_lin[:num])
        remaining = np.isfinite(t_stat)
        rows = np.arange(num)
        for p in range(num_peaks):
            key = np.where(remaining, t_stat, -np.inf)
            best = key.argmax(axis=1)
            ok = np.isfinite(key[rows, best])
            if not ok.any():
                break
            members = remaining & (np.abs(t_range - t_range[rows, best][:, None]) < resolution_m)
            members[rows, best] |= ok
            members &= ok[:, None]
            remaining &= ~members
            w = np.where(members, t_stat, 0.0)
            wsum = np.maximum(w.sum(axis=1), 1e-300)
            w = w / wsum[:, None]
            m_r = (w * r_hat[idx]).sum(axis=1)
            m_u = (w * u_hat[idx]).sum(axis=1)
            spread_r = (w * (r_hat[idx] - m_r[:, None]) ** 2).sum(axis=1)
            spread_u = (w * (u_hat[idx] - m_u[:, None]) ** 2).sum(axis=1)
            lead = idx[rows, best]
            m_angle = side * np.arccos(np.clip(m_u, -1.0, 1.0))
            sin2 = np.maximum(np.sin(m_angle) ** 2, 1e-12)
            merged_stat = np.where(members, t_stat, 0.0).sum(axis=1)
            out[0, :, p] = np.where(ok, m_r, 0.0)
            out[1, :, p] = np.where(ok, m_angle, 0.0)
            out[2, :, p] = np.where(ok, 10 * np.log10(np.maximum(merged_stat - num_symbols, 1e-3)), out[2, :, p])
            out[3, :, p] = ok
            # Widen by the members' spread (zero for a single candidate): the merged peak covers each member.
            out[4, :, p] = np.where(ok, var_r[lead] + spread_r, 0.0)
            out[5, :, p] = np.where(ok, var_a[lead] + spread_u / sin2, 0.0)
        return out[0], out[1], out[2], out[3].astype(bool), out[4], out[5]


def _draws(rng, num: int, num_symbols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RCS phases ``(P,)``, noise of ``c`` ``(2, P, K)`` (real, imaginary) and estimate errors ``(2, P)``."""
    if isinstance(rng, np.random.Generator):
        rcs_phase = rng.uniform(0, 2 * np.pi, num)
        normal = rng.standard_normal(2 * num * (num_symbols + 1))
        return (rcs_phase, normal[: 2 * num * num_symbols].reshape(2, num, num_symbols),
                normal[2 * num * num_symbols:].reshape(2, num))
    parts = [_draws(gen, count, num_symbols) for gen, count in rng]
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts], axis=1),
            np.concatenate([p[2] for p in parts], axis=1))


def surrogate_measure(cfg: ScenarioConfig, codebook: np.ndarray, range_m: np.ndarray, u: np.ndarray,
                      side: np.ndarray, amplitude: np.ndarray, beams: np.ndarray, doppler_hz: np.ndarray,
                      gate_lo_m: np.ndarray, gate_hi_m: np.ndarray, threshold: np.ndarray, *,
                      rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw measurements for ``P`` pairs.

    Args:
        range_m, u, side, amplitude, doppler_hz, gate_lo_m, gate_hi_m, threshold: ``(P,)``.
        beams: ``(P, K, 2)`` int.
    Returns:
        dict as :meth:`rl_isac.physics.estimation.PairEstimator.estimate`.

    """
    args = [np.asarray(a, dtype=float) for a in (range_m, u, side, amplitude)]
    rng_m, ang, snr_db, detected, var_r, var_a = SurrogateFrontEnd(cfg, codebook).draw(
        *args, np.asarray(beams), np.asarray(doppler_hz, float), gate_lo_m, gate_hi_m, threshold, rng=rng)
    cov = np.zeros((len(rng_m), 2, 2))
    cov[:, 0, 0] = var_r
    cov[:, 1, 1] = var_a
    return {"range_m": rng_m, "angle_rad": ang, "snr_db": snr_db, "detected": detected, "cov": cov}
