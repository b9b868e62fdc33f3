"""The policy's observation, built the same way by the env and by the ``dgnn-ppo`` CU (no Ray, no torch).

``window arrays`` (:meth:`rl_isac.tracking.window.MeasurementWindow.as_arrays`, EKF anchor) plus
:data:`EXTRA_OBS_KEYS`; see :mod:`rl_isac.rllib.env` for the meaning of each key.
"""

from __future__ import annotations

import numpy as np

from rl_isac.physics.arrays import beams_toward, dft_codebook
from rl_isac.physics.channel import geometry
from rl_isac.physics.detection import credited_detection_probability
from rl_isac.physics.fisher import expected_position_information
from rl_isac.scenario import ScenarioConfig
from rl_isac.tracking.window import MeasurementWindow, observation_shapes

EXTRA_OBS_KEYS = ("block", "pair_info", "prior_cov", "pair_fim", "prior_fim")
"""Keys added to the window arrays."""
DETECTION_OBS_KEY = "pair_detect"
"""Optional key (``ObservationBuilder(cfg, detection=True)``, env_config ``detection_features``): ``(M, I)``
float32, the probability that pair ``(m, i)`` yields a measurement credited to target ``i``
(:func:`~rl_isac.physics.detection.credited_detection_probability` at the prediction, with its covariance and
the beams the CU transmits there: the geometric beams, swept where the re-acquisition rule sweeps), what the
MILP's objective weights each pair by (:mod:`rl_isac.association.objective`)."""
MILP_OBS_KEY = "pair_milp"
"""Optional key (``ObservationBuilder(cfg, detection=True, milp=True)``, env_config ``milp_features``): ``(M, I)``
float32 0/1, the exact MILP's association (:class:`~rl_isac.association.milp.MilpSolver`, the CUs' chain price)
on the observation's own quantities: the pairs' information ``J``, the prediction's ``P^-1`` and
:data:`DETECTION_OBS_KEY` (about 1 ms a block at I = 8)."""


def observation_shapes_rl(cfg: ScenarioConfig, detection: bool = False, milp: bool = False
                          ) -> dict[str, tuple[int, ...]]:
    """Shapes of every observation key (window arrays + :data:`EXTRA_OBS_KEYS`, + :data:`DETECTION_OBS_KEY` with
    ``detection``, + :data:`MILP_OBS_KEY` with ``milp``), all float32."""
    shapes = dict(observation_shapes(cfg))
    shapes.update(block=(1,), pair_info=(cfg.num_bs, cfg.num_targets, 4), prior_cov=(cfg.num_targets, 3),
                  pair_fim=(cfg.num_bs, cfg.num_targets, 3), prior_fim=(cfg.num_targets, 3))
    if detection:
        shapes[DETECTION_OBS_KEY] = (cfg.num_bs, cfg.num_targets)
    if milp:
        shapes[MILP_OBS_KEY] = (cfg.num_bs, cfg.num_targets)
    return shapes


def _log4(x: np.ndarray) -> np.ndarray:
    return np.log10(np.maximum(x, 0.0) + 1e-6) / 4.0


def info_features(prior_cov_m2: np.ndarray, info: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``pair_info (M, I, 4)`` and ``prior_cov (I, 3)`` float32 from ``P (I, 2, 2)`` m^2 and ``J (M, I, 2, 2)`` 1/m^2.

    ``pair_info = [log10(J_xx + 1e-6) / 4, log10(J_yy + 1e-6) / 4, J_xy / sqrt(J_xx J_yy), log10(g + 1e-6) / 4]``
    with ``g = tr P - tr (P^-1 + J)^-1`` (m^2, what the pair alone removes from the prediction's
    variance); ``prior_cov = [log10 P_xx / 4, log10 P_yy / 4, P_xy / sqrt(P_xx P_yy)]``.
    """
    jxx, jyy, jxy = info[..., 0, 0], info[..., 1, 1], info[..., 0, 1]
    prior_info = np.linalg.inv(prior_cov_m2)                                       # (I, 2, 2)
    post = np.linalg.inv(prior_info[None] + info)                                  # (M, I, 2, 2)
    gain = np.trace(prior_cov_m2, axis1=-2, axis2=-1)[None] - np.trace(post, axis1=-2, axis2=-1)
    pair = np.stack([_log4(jxx), _log4(jyy), jxy / np.sqrt(jxx * jyy + 1e-12), _log4(gain)], axis=-1)
    pxx, pyy, pxy = prior_cov_m2[:, 0, 0], prior_cov_m2[:, 1, 1], prior_cov_m2[:, 0, 1]
    prior = np.stack([np.log10(pxx) / 4.0, np.log10(pyy) / 4.0, pxy / np.sqrt(pxx * pyy)], axis=-1)
    return pair.astype(np.float32), prior.astype(np.float32)


class ObservationBuilder:
    """Observation of one CU cluster from its window (the CU's view only, never the truth)."""

    def __init__(self, cfg: ScenarioConfig, detection: bool = False, milp: bool = False) -> None:
        from rl_isac.errors import ConfigError

        if milp and not detection:
            raise ConfigError("milp_features", True, "needs detection_features (the MILP weighs pairs by pair_detect)")
        self.cfg = cfg
        self.detection = bool(detection)
        """Add :data:`DETECTION_OBS_KEY` (about 0.5 ms a block at I = 8, so only when a module reads it)."""
        self.milp = bool(milp)
        """Add :data:`MILP_OBS_KEY`."""
        self._solver = None
        self.bs_positions_m = np.asarray(cfg.bs_positions_m, dtype=float)
        self.codebook = dft_codebook(cfg.num_tx_antennas, cfg.codebook_size, cfg.antenna_spacing_wavelengths)
        self.last_info: np.ndarray | None = None
        """Pair Fisher information ``J (M, I, 2, 2)`` 1/m^2 of the last :meth:`build` (the env's Fisher reward)."""
        self.last_prior_info: np.ndarray | None = None
        """Prediction information ``P^-1 (I, 2, 2)`` 1/m^2 of the last :meth:`build`."""

    def build(self, window: MeasurementWindow, block: int, num_blocks: int) -> dict[str, np.ndarray]:
        """All keys of :func:`observation_shapes_rl` for block ``q = block`` of an episode of ``num_blocks``."""
        cfg = self.cfg
        obs = window.as_arrays()
        pred = window.anchor_next_m
        range_m, angle = geometry(self.bs_positions_m, pred)
        beams = beams_toward(np.cos(angle), cfg.codebook_size, cfg.num_tracking_symbols)
        info = expected_position_information(cfg, self.codebook, self.bs_positions_m, pred, beams)
        prior_cov = window.anchor_predicted_covariance()
        obs["pair_info"], obs["prior_cov"] = info_features(prior_cov, info)
        # raw [xx, xy, yy] entries (1/m^2) of each pair's J and of the prediction's information P^-1: the
        # actor's marginal-gain feature (the myopic objective's per-step increment) is computed from them
        prior_info = np.linalg.inv(prior_cov)
        self.last_info, self.last_prior_info = info, prior_info
        obs["pair_fim"] = np.stack([info[..., 0, 0], info[..., 0, 1], info[..., 1, 1]], -1).astype(np.float32)
        obs["prior_fim"] = np.stack([prior_info[:, 0, 0], prior_info[:, 0, 1], prior_info[:, 1, 1]], -1).astype(
            np.float32)
        obs["block"] = np.array([block / num_blocks], dtype=np.float32)
        if self.detection:
            obs[DETECTION_OBS_KEY] = self._detection(window, pred, (range_m, angle), beams, prior_cov)
        if self.milp:
            if self._solver is None:  # one per builder: it keeps its warm-started LP model between blocks
                from rl_isac.association.milp import MilpSolver
                from rl_isac.association.objective import DEFAULT_CHAIN_PRICE

                self._solver = MilpSolver(chain_price=DEFAULT_CHAIN_PRICE)
            assoc = self._solver.solve(info, prior_info, cfg.num_rf,
                                       detection_prob=obs[DETECTION_OBS_KEY].astype(np.float64).clip(0.0, 1.0))
            obs[MILP_OBS_KEY] = np.asarray(assoc, dtype=np.float32)
        return obs

    def _detection(self, window: MeasurementWindow, pred: np.ndarray, range_angle: tuple[np.ndarray, np.ndarray],
                   beams: np.ndarray, prior_cov: np.ndarray) -> np.ndarray:
        """:data:`DETECTION_OBS_KEY` ``(M, I)`` float32 (the sweep rule of
        :meth:`~rl_isac.controllers.composed.GeometricBeams.sweep_wide`, as the ``dgnn-ppo`` CU applies it)."""
        from rl_isac.controllers.composed import GeometricBeams

        if getattr(self, "_geometric", None) is None:
            self._geometric = GeometricBeams(self.cfg)
        swept = self._geometric.sweep_wide(beams, pred, _AnchorView(window, prior_cov), range_angle)
        return credited_detection_probability(self.cfg, pred, swept, prior_cov).astype(np.float32)


class _AnchorView:
    """The window's anchor as the estimator :meth:`GeometricBeams.sweep_wide` reads (covariance, searching)."""

    def __init__(self, window: MeasurementWindow, cov: np.ndarray) -> None:
        self._cov = cov
        self.searching = getattr(window, "searching", None)

    def predicted_position_covariance(self) -> np.ndarray:
        return self._cov


def build_observations(builders: list[ObservationBuilder], windows: list[MeasurementWindow], blocks: list[int],
                       num_blocks: int) -> list[dict[str, np.ndarray]]:
    """:meth:`ObservationBuilder.build` of several envs at once (one builder and window each, same scenario).

    The pair geometry, the beams toward the predictions, the pair Fisher information and the
    :func:`info_features` run once over all the envs' targets (concatenated along the target axis: every
    one of them is per target, so each env gets the same numbers, bit for bit, as its own ``build``; a test
    checks it); the windows' arrays come from :meth:`~rl_isac.tracking.window.MeasurementWindow.as_arrays_many`
    (the same entries as each window's ``as_arrays``). Builders with the detection or MILP key build
    one by one. Sets each builder's ``last_info`` / ``last_prior_info`` as ``build`` does.
    """
    first = builders[0]
    cfg = first.cfg
    if len(builders) == 1 or any(b.detection or b.milp or (b.cfg is not cfg and b.cfg != cfg) for b in builders):
        return [b.build(w, q, num_blocks) for b, w, q in zip(builders, windows, blocks)]
    I = cfg.num_targets
    obs = MeasurementWindow.as_arrays_many(windows)  # the windows' residual channels in one pass
    pred = np.concatenate([w.anchor_next_m for w in windows])                          # (E I, 2)
    range_m, angle = geometry(first.bs_positions_m, pred)                              # (M, E I)
    beams = beams_toward(np.cos(angle), cfg.codebook_size, cfg.num_tracking_symbols)
    info = expected_position_information(cfg, first.codebook, first.bs_positions_m, pred, beams)  # (M, E I, 2, 2)
    prior_cov = np.concatenate([w.anchor_predicted_covariance() for w in windows])     # (E I, 2, 2)
    pair_info, prior_feat = info_features(prior_cov, info)
    prior_info = np.linalg.inv(prior_cov)
    pair_fim = np.stack([info[..., 0, 0], info[..., 0, 1], info[..., 1, 1]], -1).astype(np.float32)
    prior_fim = np.stack([prior_info[:, 0, 0], prior_info[:, 0, 1], prior_info[:, 1, 1]], -1).astype(np.float32)
    for e, (b, o, q) in enumerate(zip(builders, obs, blocks)):
        t = slice(e * I, (e + 1) * I)
        b.last_info, b.last_prior_info = np.ascontiguousarray(info[:, t]), prior_info[t].copy()
        o["pair_info"], o["prior_cov"] = np.ascontiguousarray(pair_info[:, t]), prior_feat[t].copy()
        o["pair_fim"], o["prior_fim"] = np.ascontiguousarray(pair_fim[:, t]), prior_fim[t].copy()
        o["block"] = np.array([q / num_blocks], dtype=np.float32)
    return obs
