"""``rl-isac dgnn-report``: the DGNN estimator against the EKF on identical measurement sequences.

How to run::

    rl-isac dgnn-report --checkpoint results/checkpoints/dgnn-I4 --targets 4 --episodes 5 --blocks 100 \\
        --fidelity signal --json results/dgnn_report_I4.json

The world is driven by one fixed CU (``ekf-milp`` by default) on the evaluation
seeds; after every block the same :class:`~rl_isac.physics.measurements.Measurements`
go to a standalone EKF and to the DGNN, so both see the same associations, beams
and noise. Reported, per target (RMSE over targets, blocks and episodes):

* ``rmse_now_m`` / ``rmse_next_m`` for ``dgnn`` and ``ekf``: ``u_hat_q`` and ``u_tilde_{q+1}``;
  the same over the target-blocks where neither estimator is lost (error below
  :data:`~rl_isac.evaluation.harness.LOST_M`), ``*_tracked``, with that fraction: the world's
  lost tracks (targets within one range cell, never re-acquired) otherwise dominate both;
* ``beam_top1`` / ``beam_top2``: how often the best codebook beam toward the true
  next position (from every BS, for every target) is the head's first / among its
  first two tx beams;
* ``dgnn_ms_p50`` / ``p99``: one DGNN forward per block (window featurisation + model +
  beam decoding) at one thread;
* the checkpoint's pre-training wall time and validation numbers (``metrics.json``).
"""

from __future__ import annotations

import time

import numpy as np

from rl_isac.controllers import make_controller
from rl_isac.controllers.learned import DGNNEstimator, load_dgnn
from rl_isac.evaluation.harness import LOST_M, git_revision
from rl_isac.network import CellFreeNetwork
from rl_isac.scenario import ScenarioConfig
from rl_isac.seeds import evaluation_seeds
from rl_isac.tracking.ekf import EKFEstimator


def dgnn_report(checkpoint: str, targets: int, episodes: int, blocks: int, seed: int = 0,
                fidelity: str = "signal", driver: str = "ekf-milp", progress: bool = True) -> dict:
    import torch

    torch.set_num_threads(1)
    cfg = ScenarioConfig.paper(targets, fidelity=fidelity, num_blocks=blocks)
    model, configs, metrics = load_dgnn(checkpoint, cfg)
    dgnn = DGNNEstimator(cfg, model)
    ekf = EKFEstimator(cfg)
    cu = make_controller(driver, cfg)
    se = {k: [] for k in ("dgnn_now", "dgnn_next", "ekf_now", "ekf_next")}
    top1 = top2 = total = 0
    times = []
    for e, world_seed in enumerate(evaluation_seeds(seed, episodes)):
        net = CellFreeNetwork(cfg)
        acq = net.reset(world_seed)
        action = cu.reset(acq)
        dgnn.reset(acq)
        ekf.reset(acq)
        prev = None
        for _ in range(blocks):
            meas = net.step(action.association, action.beams, predicted_positions_m=action.prediction_m)
            truth = net.positions_m.copy()
            if prev is not None:  # predictions made after the previous block, scored now
                se["dgnn_next"].append(np.sum((truth - prev[0]) ** 2, axis=1))
                se["ekf_next"].append(np.sum((truth - prev[1]) ** 2, axis=1))
                best = net.best_beam_index(truth)  # (M, I)
                ranked = np.argsort(-prev[2], axis=-1)  # (M, I, C) tx beams, best first
                top1 += int(np.sum(ranked[..., 0] == best))
                top2 += int(np.sum((ranked[..., 0] == best) | (ranked[..., 1] == best)))
                total += best.size
            t0 = time.perf_counter()
            d_now, d_next = dgnn.update(meas)
            times.append(time.perf_counter() - t0)
            k_now, k_next = ekf.update(meas)
            se["dgnn_now"].append(np.sum((truth - d_now) ** 2, axis=1))
            se["ekf_now"].append(np.sum((truth - k_now) ** 2, axis=1))
            prev = (d_next, k_next, dgnn.last["beam_logits_tx"])
            action = cu.act(meas)
        if progress:
            print(f"  episode {e + 1}/{episodes}: dgnn {np.sqrt(np.mean(se['dgnn_now'])):.3f} m, "
                  f"ekf {np.sqrt(np.mean(se['ekf_now'])):.3f} m (u_hat, per target)", flush=True)
    rmse = {k: float(np.sqrt(np.mean(v))) for k, v in se.items()}
    arr = {k: np.concatenate(v) for k, v in se.items()}
    tracked = {}
    for kind in ("now", "next"):
        ok = (arr[f"dgnn_{kind}"] < LOST_M**2) & (arr[f"ekf_{kind}"] < LOST_M**2)
        tracked[kind] = float(ok.mean())
        for est in ("dgnn", "ekf"):
            rmse[f"{est}_{kind}_tracked"] = float(np.sqrt(np.mean(arr[f"{est}_{kind}"][ok])))
    ms = 1e3 * np.asarray(times)
    return {
        "checkpoint": str(checkpoint), "targets": targets, "episodes": episodes, "blocks": blocks, "seed": seed,
        "fidelity": fidelity, "driver": driver,
        "dgnn": {"rmse_now_m": rmse["dgnn_now"], "rmse_next_m": rmse["dgnn_next"],
                 "rmse_now_m_tracked": rmse["dgnn_now_tracked"], "rmse_next_m_tracked": rmse["dgnn_next_tracked"]},
        "ekf": {"rmse_now_m": rmse["ekf_now"], "rmse_next_m": rmse["ekf_next"],
                "rmse_now_m_tracked": rmse["ekf_now_tracked"], "rmse_next_m_tracked": rmse["ekf_next_tracked"]},
        "tracked_fraction": tracked,
        "beam_top1": top1 / max(total, 1), "beam_top2": top2 / max(total, 1),
        "dgnn_ms_p50": float(np.percentile(ms, 50)), "dgnn_ms_p99": float(np.percentile(ms, 99)),
        "pretrain_wall_time_s": metrics.get("wall_time_s"),
        "pretrain_best": {k: metrics.get("best", {}).get(k) for k in ("epoch", "val_rmse_m", "val_rmse_next_m")},
        "pretrain_samples": metrics.get("num_train_samples"),
        "pretrain_fidelity": configs["scenario"].fidelity,
        "git_revision": git_revision(),
        "note": "RMSE per target over targets, blocks and episodes; same measurement sequences for both estimators",
    }


def write_report(data: dict, path: str) -> None:
    from rl_isac.evaluation.harness import write_json_atomic

    write_json_atomic(data, path)


__all__ = ["dgnn_report", "write_report"]
