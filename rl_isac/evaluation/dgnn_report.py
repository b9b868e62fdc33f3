"""``rl-isac dgnn-report``: the DGNN estimator against the EKF on identical measurement sequences.

How to run::

    rl-isac dgnn-report --checkpoint results/checkpoints/dgnn-I4 --targets 4 --episodes 30 --blocks 100 \\
        --fidelity signal --driver self --json results/dgnn_report_I4.json

The world is driven by one CU on the evaluation seeds (:func:`rl_isac.seeds.evaluation_seeds`):

* ``--driver self`` (or ``dgnn-milp`` / ``dgnn-greedy`` / ``dgnn-exhaustive``): the DGNN CU of this
  checkpoint itself, in closed loop (its estimate, its association, its head's beams). The reference
  ``ekf`` is then the CU's **own anchor**, the EKF that runs inside its window on the same
  measurements (``anchor`` / ``anchor_next`` of :class:`~rl_isac.tracking.window.MeasurementWindow`):
  the question "does the learned correction help the CU that uses it?";
* any other method (default ``ekf-milp``): that CU drives; after every block the same
  :class:`~rl_isac.physics.measurements.Measurements` go to a standalone EKF and to a DGNN, so both see
  the same associations, beams and noise.

Reported, per target (RMSE over targets, blocks ``1..Q`` and episodes; block 0's estimate is the given
acquisition, as in the harness):

* ``rmse_now_m`` / ``rmse_next_m`` for ``dgnn`` and ``ekf``: ``u_hat_q`` and ``u_tilde_{q+1}``, with
  ``*_ci95_m`` (95 % half-width over episodes, delta method as :func:`rl_isac.evaluation.compare.rmse_ci95`),
  ``lost_fraction`` (target-blocks with ``u_hat`` error above :data:`~rl_isac.evaluation.harness.LOST_M`),
  the median error and ``rmse_per_episode_m``;
* ``paired``: the per-episode difference ``rmse_dgnn - rmse_ekf`` of ``u_hat`` (mean and 95 % t-style
  half-width ``1.96 sd / sqrt(E)``) and how many episodes the DGNN wins;
* the same RMSEs over the target-blocks where neither estimator is lost (``*_tracked``), with that fraction;
* ``beam_top1`` / ``beam_top2``: how often the best codebook beam toward the true next position (from
  every BS, for every target) is the head's first / among its first two tx beams;
* ``dgnn_ms_p50`` / ``p99``: one DGNN forward per block (window featurisation + model + beam decoding)
  at one thread;
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

SELF_DRIVERS = ("self", "dgnn-milp", "dgnn-greedy", "dgnn-exhaustive")
"""Drivers that make the checkpoint's own DGNN CU drive the world (the reference is then its anchor)."""


def _ci95(per_episode_rmse: np.ndarray, rmse: float) -> float:
    mse = np.square(per_episode_rmse)
    if len(mse) < 2 or rmse <= 0:
        return float("nan")
    return float(1.96 * mse.std(ddof=1) / np.sqrt(len(mse)) / (2 * rmse))


def _summary(sq_now: np.ndarray, sq_next: np.ndarray) -> dict:
    """``sq_now``/``sq_next``: ``(E, Q, I)`` squared errors, m^2."""
    per_ep = np.sqrt(sq_now.mean(axis=(1, 2)))
    rmse_now = float(np.sqrt(sq_now.mean()))
    rmse_next = float(np.sqrt(sq_next.mean()))
    return {"rmse_now_m": rmse_now, "rmse_now_ci95_m": _ci95(per_ep, rmse_now),
            "rmse_next_m": rmse_next, "rmse_next_ci95_m": _ci95(np.sqrt(sq_next.mean(axis=(1, 2))), rmse_next),
            "median_error_now_m": float(np.median(np.sqrt(sq_now))),
            "lost_fraction": float(np.mean(sq_now > LOST_M**2)), "rmse_per_episode_m": per_ep.tolist()}


def dgnn_report(checkpoint: str, targets: int, episodes: int, blocks: int, seed: int = 0,
                fidelity: str = "signal", driver: str = "ekf-milp", progress: bool = True) -> dict:
    """Run the report (see the module docstring); returns the JSON-ready dict."""
    import torch

    torch.set_num_threads(1)
    cfg = ScenarioConfig.paper(targets, fidelity=fidelity, num_blocks=blocks)
    model, configs, metrics = load_dgnn(checkpoint, cfg)
    closed_loop = driver in SELF_DRIVERS
    if closed_loop:
        cu = make_controller("dgnn-milp" if driver == "self" else driver, cfg, checkpoint=checkpoint)
        dgnn = cu.estimator  # the CU's own DGNN (and, in its window, its own EKF anchor)
        ekf = None
    else:
        cu = make_controller(driver, cfg)
        dgnn = DGNNEstimator(cfg, model)
        ekf = EKFEstimator(cfg)
    E, Q, I = episodes, blocks, targets
    sq = {k: np.zeros((E, Q, I)) for k in ("dgnn_now", "dgnn_next", "ekf_now", "ekf_next")}
    top1 = top2 = total = 0
    times = []
    for e, world_seed in enumerate(evaluation_seeds(seed, episodes)):
        net = CellFreeNetwork(cfg)
        acq = net.reset(world_seed)
        action = cu.reset(acq)
        if not closed_loop:
            dgnn.reset(acq)
            ekf.reset(acq)
        prev = None
        for q in range(blocks):
            meas = net.step(action.association, action.beams, predicted_positions_m=action.prediction_m)
            truth = net.positions_m.copy()
            if prev is not None:  # predictions made after the previous block, scored now
                sq["dgnn_next"][e, q] = np.sum((truth - prev[0]) ** 2, axis=1)
                sq["ekf_next"][e, q] = np.sum((truth - prev[1]) ** 2, axis=1)
                best = net.best_beam_index(truth)  # (M, I)
                ranked = np.argsort(-prev[2], axis=-1)  # (M, I, C) tx beams, best first
                top1 += int(np.sum(ranked[..., 0] == best))
                top2 += int(np.sum((ranked[..., 0] == best) | (ranked[..., 1] == best)))
                total += best.size
            else:  # the first prediction is the acquisition for both
                sq["dgnn_next"][e, q] = sq["ekf_next"][e, q] = np.sum((truth - action.prediction_m) ** 2, axis=1)
            t0 = time.perf_counter()
            if closed_loop:
                action = cu.act(meas)
                d_now, d_next = action.estimate_m, action.prediction_m
                k_now, k_next = dgnn.window.anchor_m, dgnn.window.anchor_next_m
            else:
                d_now, d_next = dgnn.update(meas)
            times.append(time.perf_counter() - t0)
            if not closed_loop:
                k_now, k_next = ekf.update(meas)
                action = cu.act(meas)
            sq["dgnn_now"][e, q] = np.sum((truth - d_now) ** 2, axis=1)
            sq["ekf_now"][e, q] = np.sum((truth - k_now) ** 2, axis=1)
            prev = (d_next, k_next, dgnn.last["beam_logits_tx"])
        if progress:
            print(f"  episode {e + 1}/{episodes}: dgnn {np.sqrt(np.mean(sq['dgnn_now'][e])):.3f} m, "
                  f"{'anchor' if closed_loop else 'ekf'} {np.sqrt(np.mean(sq['ekf_now'][e])):.3f} m "
                  f"(u_hat, per target)", flush=True)
    out = {est: _summary(sq[f"{est}_now"], sq[f"{est}_next"]) for est in ("dgnn", "ekf")}
    tracked = {}
    for kind in ("now", "next"):
        ok = (sq[f"dgnn_{kind}"] < LOST_M**2) & (sq[f"ekf_{kind}"] < LOST_M**2)
        tracked[kind] = float(ok.mean())
        for est in ("dgnn", "ekf"):
            out[est][f"rmse_{kind}_m_tracked"] = float(np.sqrt(np.mean(sq[f"{est}_{kind}"][ok])))
    diff = np.asarray(out["dgnn"]["rmse_per_episode_m"]) - np.asarray(out["ekf"]["rmse_per_episode_m"])
    paired = {"mean_m": float(diff.mean()),
              "ci95_m": float(1.96 * diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan"),
              "dgnn_better_episodes": int(np.sum(diff < 0)), "ekf_better_episodes": int(np.sum(diff > 0)),
              "episodes": len(diff)}
    ms = 1e3 * np.asarray(times)
    return {
        "checkpoint": str(checkpoint), "targets": targets, "episodes": episodes, "blocks": blocks, "seed": seed,
        "fidelity": fidelity, "driver": driver, "closed_loop": closed_loop,
        "reference": "the DGNN CU's own EKF anchor" if closed_loop else "a standalone EKF on the same measurements",
        "dgnn": out["dgnn"], "ekf": out["ekf"], "paired_rmse_now_difference": paired,
        "tracked_fraction": tracked,
        "beam_top1": top1 / max(total, 1), "beam_top2": top2 / max(total, 1),
        "dgnn_ms_p50": float(np.percentile(ms, 50)), "dgnn_ms_p99": float(np.percentile(ms, 99)),
        "pretrain_wall_time_s": metrics.get("wall_time_s"),
        "pretrain_best": {k: metrics.get("best", {}).get(k) for k in ("epoch", "round", "val_rmse_m",
                                                                      "val_rmse_next_m", "anchor_rmse_m")},
        "pretrain_best_is_untrained": metrics.get("best_is_untrained"),
        "pretrain_data": metrics.get("data", "open_loop"),
        "pretrain_samples": metrics.get("num_train_samples"),
        "pretrain_fidelity": configs["scenario"].fidelity,
        "git_revision": git_revision(),
        "note": "RMSE per target over targets, blocks 1..Q and episodes; same measurement sequences for both "
                "estimators; paired: per-episode RMSE difference dgnn - reference (negative = the DGNN helps)",
    }


def write_report(data: dict, path: str) -> None:
    from rl_isac.evaluation.harness import write_json_atomic

    write_json_atomic(data, path)


__all__ = ["SELF_DRIVERS", "dgnn_report", "write_report"]
