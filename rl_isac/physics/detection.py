"""Detection probability of a pair at a predicted position, from the world's own detector model.

The detector (:mod:`rl_isac.physics.estimation`, mirrored by :mod:`rl_isac.physics.surrogate`)
declares a pair detected when ``T = L sum_k |c_k|^2 / sigma^2`` exceeds the threshold of
:func:`~rl_isac.physics.estimation.detection_threshold` (the gated one when the CU gives a
prediction), with per-symbol amplitudes ``c_k = rho g_k(u) e^{j phi_k} + CN(0, sigma^2 / L)``.
So ``2 T`` is non-central chi-square with ``2 K`` degrees of freedom and non-centrality

    lambda = (2 L / sigma^2) rho^2 sum_k r_k(u)^2       (``PairBound.info_scale * rho^2 * S_rr``)

(``r_k`` the real two-way pattern of the pair's beams, ``rho`` the radar-equation amplitude,
:func:`~rl_isac.physics.channel.received_amplitude``), and

    P_d = P(chi2'_{2K}(lambda) > 2 u)                   (scipy ``ncx2.sf``),

times the probability that the true range lies in the range gate ``|d - d_pred| <= range_gate_m``.

For the association (:func:`credited_detection_probability`) two effects the CU can predict
lower the chance that a pair yields a measurement credited to its own target:

* **prediction uncertainty**: the target is somewhere in ``N(u_pred, P_pred)``, not at
  ``u_pred``; ``P_d`` is averaged over it (a 5-point cubature; the gate term in
  closed form with the predicted range spread ``sigma_d^2 = h^T P_pred h``), so a large
  predicted uncertainty that the narrow beams may miss lowers ``P_d``;
* **a neighbour in the same beams and range gate**: target ``j``'s echo, seen through
  pair ``(m, i)``'s beams with non-centrality ``lambda_j``, lies in the gate with probability
  ``g_j`` and then wins the gate's strongest peak with probability
  ``lambda_j / (lambda_i + lambda_j)``; the pair is credited only if no neighbour does:
  ``prod_j (1 - g_j lambda_j / (lambda_i + lambda_j))``.

Both enter the association objective through its expectation over detection outcomes
(:mod:`rl_isac.association.objective`), which then values a second BS for such a target.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import special, stats

from rl_isac.physics.arrays import beam_patterns
from rl_isac.physics.channel import geometry, received_amplitude
from rl_isac.physics.estimation import detection_threshold
from rl_isac.physics.fisher import PairBound
from rl_isac.scenario import ScenarioConfig

__all__ = ["DetectionModel", "credited_detection_probability", "detection_model", "detection_probability"]

# 5-point symmetric cubature for N(0, I_2): the mean (weight 1/3) and +-sqrt(3) along each axis (1/6 each);
# exact for every polynomial of degree <= 3 and for z_k^4
_CUBATURE_POINTS = np.array([[0.0, 0.0], [np.sqrt(3.0), 0.0], [-np.sqrt(3.0), 0.0], [0.0, np.sqrt(3.0)],
                             [0.0, -np.sqrt(3.0)]])
_CUBATURE_WEIGHTS = np.array([1 / 3, 1 / 6, 1 / 6, 1 / 6, 1 / 6])
_TABLE_POINTS = 4097


class DetectionModel:
    """The detector constants of one scenario (threshold, pattern tables, SNR scale).

    Args:
        cfg: the scenario.
        num_symbols: ``K`` of the beams (default ``cfg.num_tracking_symbols``).
    """

    def __init__(self, cfg: ScenarioConfig, num_symbols: int | None = None) -> None:
        self.cfg = cfg
        self.num_symbols = cfg.num_tracking_symbols if num_symbols is None else int(num_symbols)
        self.patterns = beam_patterns(cfg.num_tx_antennas, cfg.codebook_size, cfg.antenna_spacing_wavelengths)
        self.info_scale = PairBound(cfg, self.num_symbols).info_scale  # 2 L / sigma^2
        self.threshold = detection_threshold(cfg, 2 * cfg.range_gate_m)  # the gated detector's
        self.range_gate_m = float(cfg.range_gate_m)
        self.bs_positions_m = np.asarray(cfg.bs_positions_m, dtype=float)
        # P_d is a smooth increasing function of sqrt(lambda): tabulated once (4097 points up to where it is
        # 1 - 1e-12), then linear interpolation (|error| < 1e-5, a test checks it) -- the CU calls it every block
        dof = 2 * self.num_symbols
        hi = 1.0
        while stats.ncx2.sf(2 * self.threshold, dof, hi * hi) < 1 - 1e-12:
            hi *= 1.5
        self._sqrt_lam = np.linspace(0.0, hi, _TABLE_POINTS)
        self._pd_table = stats.ncx2.sf(2 * self.threshold, dof, self._sqrt_lam ** 2)

    def noncentrality(self, range_m: np.ndarray, u: np.ndarray, beams: np.ndarray) -> np.ndarray:
        """``lambda = (2 L / sigma^2) rho(d)^2 sum_k r_k(u)^2`` of echoes at ``(range_m, u)`` through ``beams``.

        Args:
            range_m, u: ``(...)``.
            beams: ``(..., K, 2)`` int (broadcast against ``(...)``).
        Returns:
            ``(...)`` float64, dimensionless.
        """
        r = self.patterns.real_pattern(np.asarray(u, float), self.patterns.directions[beams])  # (..., K)
        amp_sq = received_amplitude(self.cfg, range_m) ** 2
        return self.info_scale * amp_sq * np.sum(r * r, axis=-1)

    def probability_from_noncentrality(self, lam: np.ndarray, exact: bool = False) -> np.ndarray:
        """``P(chi2'_{2K}(lambda) > 2 u)``, the detector's P_d at non-centrality ``lambda`` (same shape).

        ``exact=False`` interpolates the table built at construction (``|error| < 1e-5``).
        """
        lam = np.maximum(np.asarray(lam, float), 0.0)
        if exact:
            return stats.ncx2.sf(2 * self.threshold, 2 * self.num_symbols, lam)
        return np.interp(np.sqrt(lam), self._sqrt_lam, self._pd_table, right=1.0)

    def probability(self, positions_m: np.ndarray, beams: np.ndarray,
                    position_cov_m2: np.ndarray | None = None,
                    predicted_m: np.ndarray | None = None) -> np.ndarray:
        """``P_d (M, I)`` of every pair with the given beams.

        Args:
            positions_m: ``(I, 2)`` where the targets are (or are predicted to be).
            beams: ``(M, I, K, 2)`` int, the beams each pair transmits.
            position_cov_m2: ``(I, 2, 2)`` predicted covariance; when given, ``P_d`` is averaged
                over ``N(positions_m, cov)`` (5-point cubature) and the gate term is the probability that the
                range falls in ``+-range_gate_m`` of the predicted range.
            predicted_m: ``(I, 2)`` centre of the range gates (default ``positions_m``); without a
                covariance the gate term is ``|d - d_pred| <= range_gate_m``.
        Returns:
            ``(M, I)`` float64 in [0, 1].
        """
        positions_m = np.asarray(positions_m, float)
        predicted_m = positions_m if predicted_m is None else np.asarray(predicted_m, float)
        pred_range, _ = geometry(self.bs_positions_m, predicted_m)  # (M, I)
        if position_cov_m2 is None:
            range_m, angle = geometry(self.bs_positions_m, positions_m)
            pd = self.probability_from_noncentrality(self.noncentrality(range_m, np.cos(angle), beams))
            return pd * (np.abs(range_m - pred_range) <= self.range_gate_m)
        cov = np.asarray(position_cov_m2, float)
        chol = np.linalg.cholesky(0.5 * (cov + np.swapaxes(cov, -1, -2)) + 1e-12 * np.eye(2))  # (I, 2, 2)
        points = positions_m[None] + np.einsum("ixy,ny->nix", chol, _CUBATURE_POINTS)  # (5, I, 2)
        range_m, angle = geometry(self.bs_positions_m, points)  # (5, M, I)
        pd = self.probability_from_noncentrality(self.noncentrality(range_m, np.cos(angle), beams[None]))
        pd = np.einsum("n,nmi->mi", _CUBATURE_WEIGHTS, pd)
        # gate: d ~ N(d(mean), h^T P h) with h the unit vector BS -> target
        mean_range, mean_angle = geometry(self.bs_positions_m, positions_m)
        h = np.stack([np.cos(mean_angle), np.sin(mean_angle)], axis=-1)  # (M, I, 2)
        sd = np.sqrt(np.maximum(np.einsum("mix,ixy,miy->mi", h, cov, h), 1e-12))
        return pd * _interval_probability(mean_range, sd, pred_range - self.range_gate_m,
                                          pred_range + self.range_gate_m)


def _interval_probability(mean: np.ndarray, sd: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``P(lo <= N(mean, sd^2) <= hi)`` elementwise."""
    scale = 1.0 / (np.sqrt(2.0) * sd)
    return 0.5 * (special.erf((hi - mean) * scale) - special.erf((lo - mean) * scale))


@functools.lru_cache(maxsize=16)
def detection_model(cfg: ScenarioConfig) -> DetectionModel:
    """The (cached) :class:`DetectionModel` of a scenario; treat it as read-only."""
    return DetectionModel(cfg)


def detection_probability(cfg: ScenarioConfig, positions_m: np.ndarray, beams: np.ndarray,
                          position_cov_m2: np.ndarray | None = None) -> np.ndarray:
    """The detector's ``P_d (M, I)`` of every pair with ``beams (M, I, K, 2)`` at ``positions_m (I, 2)``.

    See :meth:`DetectionModel.probability`.
    """
    return detection_model(cfg).probability(positions_m, beams, position_cov_m2)


def credited_detection_probability(cfg: ScenarioConfig, predicted_m: np.ndarray, beams: np.ndarray,
                                   position_cov_m2: np.ndarray | None = None) -> np.ndarray:
    """Probability ``(M, I)`` that pair ``(m, i)`` yields a measurement of target ``i`` itself.

    ``P_d`` averaged over the prediction (:meth:`DetectionModel.probability`) times the
    chance that no neighbour's echo wins the pair's gate (module docstring).

    Args:
        cfg: the scenario.
        predicted_m: ``(I, 2)`` predicted positions, metres.
        beams: ``(M, I, K, 2)`` int, the beams the CU will transmit.
        position_cov_m2: ``(I, 2, 2)`` predicted position covariances (optional).
    Returns:
        ``(M, I)`` float64 in [0, 1].
    """
    model = detection_model(cfg)
    predicted_m = np.asarray(predicted_m, float)
    beams = np.asarray(beams)
    pd = model.probability(predicted_m, beams, position_cov_m2)
    num_targets = predicted_m.shape[0]
    if num_targets < 2:
        return pd
    range_m, angle = geometry(model.bs_positions_m, predicted_m)  # (M, I)
    u = np.cos(angle)
    # lam[m, i, j]: target j's echo through pair (m, i)'s beams
    lam = model.noncentrality(range_m[:, None, :], u[:, None, :], beams[:, :, None])  # (M, I, J)
    own = np.diagonal(lam, axis1=1, axis2=2)[:, :, None]  # (M, I, 1)
    if position_cov_m2 is None:
        sd = np.full(range_m.shape, 1e-6)
    else:
        cov = np.asarray(position_cov_m2, float)
        h = np.stack([np.cos(angle), np.sin(angle)], axis=-1)
        sd = np.sqrt(np.maximum(np.einsum("mjx,jxy,mjy->mj", h, cov, h), 1e-12))
    in_gate = _interval_probability(range_m[:, None, :], sd[:, None, :], range_m[:, :, None] - model.range_gate_m,
                                    range_m[:, :, None] + model.range_gate_m)  # (M, I, J)
    with np.errstate(invalid="ignore", divide="ignore"):
        wins = np.where(lam > 0, lam / (own + lam), 0.0)
    steal = in_gate * wins
    idx = np.arange(num_targets)
    steal[:, idx, idx] = 0.0
    return pd * np.prod(1.0 - steal, axis=2)
