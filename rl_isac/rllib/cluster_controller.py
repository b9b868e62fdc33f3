"""The clustered ``dgnn-ppo`` CU: one shared PPO module deciding for every CU cluster, in the harness, without Ray.

``rl-isac evaluate --preset large --targets 24 --clusters 2 --method dgnn-ppo --checkpoint DIR`` where ``DIR`` is a
``rl-isac train --preset large --clusters 2 --out`` directory (registered as ``clustered-dgnn-ppo``; the cluster
count is read from ``DIR/train_config.json`` when not given).

Each block, exactly as the env (:class:`rl_isac.rllib.env.ClusterObserver`, the same code): the clustered EKF
fuses the block per cluster and hands targets over, every cluster's observation is built from its BSs and
slots, and the module's greedy inference pass runs once on the batch of the ``C`` observations. Each cluster's
pairs are checked against the exact padded mask (:func:`rl_isac.clusters.check_cluster_pairs`: (5c)-(5e) per
cluster), its beams are the head's (with the re-acquisition sweep of
:class:`~rl_isac.rllib.controller.PPOController` on uncertain or searching targets), its estimate the module's;
the network's action is their union, the range-gate prediction the tracker's. Empty slots (below full load,
``targets < C * K``) are masked in the module (``target_valid``), so it never picks one; a pair on an empty
slot from any other source is refused like every other violation. The layout's capacity-repair rule is the one the
run trained with (``cluster_repair`` in ``train_config.json``; a run stored without the key evaluates with the
current default).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from rl_isac.clusters import REPAIRS, check_cluster_pairs, split_clusters
from rl_isac.controllers.base import Controller, CUAction
from rl_isac.controllers.clustered import _TrackerView
from rl_isac.controllers.composed import GeometricBeams
from rl_isac.errors import ConfigError
from rl_isac.physics.measurements import Measurements
from rl_isac.scenario import ScenarioConfig


class ClusteredPPOController(Controller):
    """One shared module, ``C`` clusters (module docstring).

    Args:
        cfg: the whole network's scenario.
        module: a trained :class:`~rl_isac.rllib.module.ISACPPOModule` with a cluster's spaces.
        clusters, capacity, hysteresis_m, area: the layout (as the training env's ``clusters``,
            ``cluster_capacity``, ``cluster_hysteresis_m``, ``cluster_area``).
        repair: the capacity-repair rule (``train_config.json``'s ``cluster_repair``, the rule the env trained
            with; default :data:`rl_isac.clusters.REPAIRS` ``[0]``).
        widen: the re-acquisition sweep on uncertain or searching targets (default on).
    """

    def __init__(self, cfg: ScenarioConfig, module, clusters: int, capacity: int | None = None,
                 hysteresis_m: float | None = None, area: str | None = None, widen: bool = True,
                 repair: str | None = None) -> None:
        from rl_isac.rllib.env import ENV_DEFAULTS, ClusterObserver

        torch.set_num_threads(1)
        h = ENV_DEFAULTS["cluster_hysteresis_m"] if hysteresis_m is None else hysteresis_m
        self.layout = split_clusters(cfg, clusters, capacity=capacity, hysteresis_m=h,
                                     area=ENV_DEFAULTS["cluster_area"] if area is None else area,
                                     repair=REPAIRS[0] if repair is None else repair)
        sub = self.layout.sub_scenario(cfg, 0)
        if (module.num_bs, module.num_targets, module.num_rf) != (sub.num_bs, sub.num_targets, sub.num_rf):
            raise ConfigError("checkpoint", f"M={module.num_bs}, I={module.num_targets}, N_RF={module.num_rf}",
                              f"the module was trained for another cluster size than {clusters} clusters of this "
                              f"scenario (M_c={sub.num_bs}, K={sub.num_targets}, N_RF={sub.num_rf})")
        self.cfg, self.module, self.widen = cfg, module, bool(widen)
        self.observer = ClusterObserver(cfg, self.layout)
        self.tracker = self.observer.tracker
        self.estimator = _TrackerView(self.tracker)
        self.name = f"dgnn-ppo/C{self.layout.num_clusters}"
        self.block = 0

    @torch.no_grad()
    def _decide(self) -> CUAction:
        from ray.rllib.core.columns import Columns

        cfg, L, trk = self.cfg, self.layout, self.tracker
        obs = self.observer.observations(self.block, cfg.num_blocks)
        batch = {Columns.OBS: {k: torch.from_numpy(np.stack([o[k] for o in obs])) for k in obs[0]}}
        out = self.module.forward_inference(batch)[Columns.ACTIONS]
        M, I, K = cfg.num_bs, cfg.num_targets, cfg.num_tracking_symbols
        assoc = np.zeros((M, I), bool)
        beams = np.zeros((M, I, K, 2), np.int64)
        estimate = trk.estimate_m  # every target is some cluster's: overwritten below
        prediction = trk.predicted_position()
        for c in range(L.num_clusters):
            sub = self.observer.sub[c]
            slots = trk.slots[c]
            valid = slots >= 0
            rows, bs = slots[valid], L.bs_array(c)
            a = check_cluster_pairs(out["pairs"][c].numpy(), sub.num_bs, sub.num_targets, sub.num_rf, valid)
            b = out["beams"][c].numpy().astype(np.int64).reshape(sub.num_bs, sub.num_targets, K, 2)[:, valid]
            if self.widen and rows.size:
                b = GeometricBeams(sub).sweep_wide(b, prediction[rows], _TrackerView(trk, rows))
            assoc[np.ix_(bs, rows)] = a[:, valid]
            beams[np.ix_(bs, rows)] = b
            estimate[rows] = out["estimate"][c].numpy().astype(float).reshape(-1, 2)[valid]
        return CUAction(association=assoc, beams=beams, estimate_m=estimate, prediction_m=prediction)

    def reset(self, initial_positions_m: np.ndarray) -> CUAction:
        self.observer.reset(initial_positions_m)
        self.block = 0
        return self._decide()

    def act(self, meas: Measurements) -> CUAction:
        self.observer.push(meas)
        self.block += 1
        return self._decide()


def make_clustered_ppo_controller(cfg: ScenarioConfig, checkpoint: str | None = None, clusters: int | None = None,
                                  **kwargs) -> ClusteredPPOController:
    """Registry factory of ``clustered-dgnn-ppo``: the layout from the run's ``train_config.json`` unless given."""
    from rl_isac.rllib.controller import load_module

    module = load_module(checkpoint)
    meta = Path(checkpoint) / "train_config.json"
    stored = json.loads(meta.read_text()) if meta.is_file() else {}
    env_config = stored.get("env_config", {})
    trained = env_config.get("clusters")
    if clusters is None:
        clusters = trained or 1
    elif trained is not None and trained != clusters:
        raise ConfigError("--clusters", clusters, f"the checkpoint {checkpoint} was trained with {trained} clusters")
    return ClusteredPPOController(cfg, module, clusters, capacity=env_config.get("cluster_capacity"),
                                  hysteresis_m=env_config.get("cluster_hysteresis_m"),
                                  area=env_config.get("cluster_area"), repair=stored.get("cluster_repair"), **kwargs)


__all__ = ["ClusteredPPOController", "make_clustered_ppo_controller"]
