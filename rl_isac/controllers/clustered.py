"""A clustered classical CU: one sub-CU per CU cluster, with handover between them.

The whole network's BSs are split into ``C`` clusters (:func:`rl_isac.clusters.split_clusters`). Each
cluster is a sub-CU of the same composition as :class:`~rl_isac.controllers.composed.ComposedCU`
(EKF + association solver + geometric beams) restricted to its own BSs and the targets it owns:

* estimator: :class:`rl_isac.clusters.ClusteredEKF`, one EKF per cluster fusing only its BSs'
  measurements of its own targets; after each block ownership follows the predicted positions and
  a target whose owner changes is handed over with its posterior track (state, covariance, miss
  counter; see :mod:`rl_isac.clusters`, "Handover");
* associator: the solver of the method (``ekf-milp`` -> the exact MILP, ...) over the cluster's
  ``(M_c, n_c)`` pairs, with the same objective as the whole-network CU (expected detection,
  chain price), so (5c)-(5d) hold per cluster and therefore for the network;
* beams: geometric beams of the cluster's BSs toward the cluster's predictions (widened for uncertain
  or searching tracks).

The sub-CUs decide one after another here; deployed, they would decide in parallel, so
:attr:`ClusteredCU.last_cluster_ms` records each one's decision time (``rl-isac bench --clusters``
reports the slowest cluster beside the total). With ``C = 1`` it is the whole-network CU exactly (a test
checks identical numbers against ``ekf-milp``).

Registered as ``clustered-<method>`` (``clustered-ekf-milp``, ...) with the factory argument
``clusters`` (default 2); ``rl-isac evaluate --clusters C --method ekf-milp`` uses it.
"""

from __future__ import annotations

import time

import numpy as np

from rl_isac.association import DEFAULT_CHAIN_PRICE, check_association, make_solver
from rl_isac.clusters import HYSTERESIS_M, REPAIRS, ClusteredEKF, split_clusters
from rl_isac.controllers.base import Controller, CUAction, Estimator
from rl_isac.controllers.composed import GeometricBeams, NearestAssociation
from rl_isac.errors import ConfigError
from rl_isac.physics.arrays import dft_codebook
from rl_isac.physics.detection import credited_detection_probability
from rl_isac.physics.fisher import expected_position_information
from rl_isac.physics.measurements import Measurements
from rl_isac.scenario import ScenarioConfig

CLUSTERABLE = ("ekf-nearest", "ekf-greedy", "ekf-convex", "ekf-convex-ls", "ekf-milp", "ekf-exhaustive")
"""Methods with a clustered version (the EKF compositions)."""


class _TrackerView(Estimator):
    """What the harness and the beam selector read of an estimator: the tracker's (I, ...) arrays, or one
    cluster's rows of them (``rows``)."""

    def __init__(self, tracker: ClusteredEKF, rows: np.ndarray | None = None) -> None:
        self.tracker, self.rows = tracker, rows

    def _sel(self, arr: np.ndarray) -> np.ndarray:
        return arr if self.rows is None else arr[self.rows]

    def reset(self, initial_positions_m: np.ndarray) -> None:  # the CU resets the tracker itself
        raise NotImplementedError("reset the ClusteredCU, not its estimator view")

    def update(self, meas: Measurements):
        raise NotImplementedError("update the ClusteredCU, not its estimator view")

    def predicted_position_covariance(self) -> np.ndarray:
        return self._sel(self.tracker.predicted_position_covariance())

    @property
    def searching(self) -> np.ndarray:
        return self._sel(self.tracker.searching)


class ClusteredCU(Controller):
    """``C`` sub-CUs (EKF + ``solver`` + geometric beams), one per cluster (module docstring).

    Args:
        cfg: the whole network's scenario.
        clusters: ``C`` (must divide the BSs; :func:`~rl_isac.clusters.split_clusters`).
        solver: an association solver name (``"milp"``, ...) or ``None`` for the nearest-BS rule.
        name: reported method name.
        capacity, hysteresis_m, area, repair: of the layout (defaults: ``min(I, M_c N_RF)``, 5 m,
            strips, information repair; :func:`~rl_isac.clusters.split_clusters`).
        tracker: decide on this :class:`~rl_isac.clusters.ClusteredEKF` (of the same layout) instead of an own one;
            whoever passes it updates it and calls :meth:`decide` (the clustered warm start,
            :mod:`rl_isac.rllib.cluster_warm_start`, labels the env's own tracker state this way).
        solver_kwargs: for :func:`~rl_isac.association.make_solver` (default chain price as ``ekf-*``).
    """

    def __init__(self, cfg: ScenarioConfig, clusters: int = 2, solver: str | None = "milp", name: str | None = None,
                 capacity: int | None = None, hysteresis_m: float = HYSTERESIS_M, area: str = "strip",
                 tracker: ClusteredEKF | None = None, repair: str = REPAIRS[0], **solver_kwargs) -> None:
        self.cfg = cfg
        self.layout = split_clusters(cfg, clusters, capacity=capacity, hysteresis_m=hysteresis_m, area=area,
                                     repair=repair)
        if tracker is not None and tracker.layout != self.layout:
            raise ConfigError("tracker", tracker.layout, f"must have this CU's cluster layout {self.layout}")
        self.tracker = ClusteredEKF(cfg, self.layout) if tracker is None else tracker
        self.estimator = _TrackerView(self.tracker)
        C = self.layout.num_clusters
        self.name = name or f"ekf-{solver or 'nearest'}/C{C}"
        args = {"chain_price": DEFAULT_CHAIN_PRICE, **solver_kwargs}
        self._solvers = [None if solver is None else make_solver(solver, **args) for _ in range(C)]
        self._sub_cfgs: dict[tuple[int, int], ScenarioConfig] = {}
        self.codebook = dft_codebook(cfg.num_tx_antennas, cfg.codebook_size, cfg.antenna_spacing_wavelengths)
        self.last_cluster_ms = np.zeros(C)
        """Decision time of each sub-CU in the last :meth:`act` / :meth:`reset` (its tracker update included)."""
        self.slowest_cluster_ms: list[float] = []
        """The slowest sub-CU's time of every :meth:`act` since construction (kept across episodes)."""
        self.handovers = 0
        """Handovers since construction (kept across episodes)."""

    def _sub(self, c: int, n: int) -> ScenarioConfig:
        key = (c, n)
        if key not in self._sub_cfgs:
            self._sub_cfgs[key] = self.layout.sub_scenario(self.cfg, c, num_targets=n)
        return self._sub_cfgs[key]

    def _decide(self, estimate_m: np.ndarray, prediction_m: np.ndarray, tracker_ms: np.ndarray) -> CUAction:
        cfg, layout = self.cfg, self.layout
        M, I, K = cfg.num_bs, cfg.num_targets, cfg.num_tracking_symbols
        assoc = np.zeros((M, I), bool)
        beams = np.zeros((M, I, K, 2), np.int64)
        cov_all = self.tracker.predicted_position_covariance()
        for c in range(layout.num_clusters):
            t0 = time.perf_counter()
            rows = self.tracker.slots[c][self.tracker.slots[c] >= 0]
            if rows.size == 0:
                self.last_cluster_ms[c] = tracker_ms[c]
                continue
            sub = self._sub(c, int(rows.size))
            bs = layout.bs_array(c)
            pred = prediction_m[rows]
            view = _TrackerView(self.tracker, rows)
            b = GeometricBeams(sub).select(pred, view)
            if self._solvers[c] is None:
                a = NearestAssociation(sub).associate(pred)
            else:
                cov = cov_all[rows]
                info = expected_position_information(sub, self.codebook, np.asarray(sub.bs_positions_m), pred, b)
                detection = credited_detection_probability(sub, pred, b, cov)
                a = self._solvers[c].solve(info, np.linalg.inv(cov), cfg.num_rf, detection_prob=detection)
            a = check_association(a, cfg.num_rf, shape=(bs.size, rows.size))  # (5c)-(5d) per cluster
            assoc[np.ix_(bs, rows)] = a
            beams[np.ix_(bs, rows)] = b
            self.last_cluster_ms[c] = tracker_ms[c] + 1e3 * (time.perf_counter() - t0)
        return CUAction(association=assoc, beams=beams, estimate_m=estimate_m, prediction_m=prediction_m)

    def decide(self, estimate_m: np.ndarray | None = None, prediction_m: np.ndarray | None = None) -> CUAction:
        """The decision on the tracker's current state without updating it: every sub-CU's association and beams
        toward ``prediction_m`` (default the tracker's prediction), ``estimate_m`` (default the tracker's last
        estimate) reported. For a shared ``tracker`` (constructor)."""
        est = self.tracker.estimate_m if estimate_m is None else np.asarray(estimate_m, float)
        pred = self.tracker.predicted_position() if prediction_m is None else np.asarray(prediction_m, float)
        return self._decide(est, pred, np.zeros(self.layout.num_clusters))

    def reset(self, initial_positions_m: np.ndarray) -> CUAction:
        acq = self.tracker.reset(initial_positions_m)
        # as ComposedCU: block 1's beams and association from the acquisition itself
        return self._decide(acq.copy(), acq.copy(), np.zeros(self.layout.num_clusters))

    def act(self, meas: Measurements) -> CUAction:
        t0 = time.perf_counter()
        estimate, prediction = self.tracker.update(meas)
        # the tracker's update is per cluster; its cost is shared out evenly (it is a few EKF updates each)
        tracker_ms = np.full(self.layout.num_clusters, 1e3 * (time.perf_counter() - t0) / self.layout.num_clusters)
        action = self._decide(estimate, prediction, tracker_ms)
        self.slowest_cluster_ms.append(float(self.last_cluster_ms.max()))
        self.handovers += len(self.tracker.handovers)
        return action


def make_clustered_controller(method: str, cfg: ScenarioConfig, clusters: int = 2, **kwargs) -> ClusteredCU:
    """The clustered version of ``method`` (one of :data:`CLUSTERABLE`) with ``clusters`` sub-CUs."""
    if method not in CLUSTERABLE:
        raise ConfigError("method", method, f"has no clustered version; clusterable methods: {list(CLUSTERABLE)}")
    solver = None if method == "ekf-nearest" else method.split("-")[1]
    if method == "ekf-convex-ls":
        kwargs = {"local_search": True, **kwargs}
    return ClusteredCU(cfg, clusters=clusters, solver=solver, name=f"{method}/C{clusters}", **kwargs)


__all__ = ["CLUSTERABLE", "ClusteredCU", "make_clustered_controller"]
