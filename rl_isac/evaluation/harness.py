"""The evaluation harness: runs any CU on fixed evaluation seeds with the same world.

Seeds: episode ``e`` of an evaluation with seed ``s`` resets the world with
``EVAL_SEED_BASE + 1000 * s + e``. Training code draws its episode seeds below
``EVAL_SEED_BASE`` (:mod:`rl_isac.seeds`), so
evaluation episodes are never trained on.

Metrics (all RMSEs are per target: the root of the mean over targets, blocks and
episodes of the squared 2-D position error ``||u_{i,q} - u_hat_{i,q}||^2``, the
scale of the paper's Table 1):

* ``rmse_m`` and ``rmse_per_block_m`` (a list of Q values, mean over targets and episodes);
* ``pcrb_rmse_m``: the posterior CRB for the associations and beams actually used
  (:func:`rl_isac.evaluation.bounds.position_pcrb`: known speed, heading random
  walk, linearised along the true trajectory, detection assumed), same averaging;
* ``violations``: actions that break (5c)-(5f) — a violation stops the run with an
  error, so a written result always has 0;
* ``missed_fraction``: assigned pairs without a detection;
* ``lost_fraction``: target-blocks whose position error exceeds ``LOST_M`` (a lost track: at
  the signal level two targets within one range cell of a BS can make a track lock onto
  its neighbour, and a track whose beams miss its target is not re-acquired), and
  ``rmse_per_episode_m`` (a lost track dominates its episode's RMSE);
* ``decision_ms_p50`` / ``decision_ms_p99``: wall time of the CU's decision per block.

Track-holding metrics (issue 7), all against the truth:

* ``track_losses``: runs of consecutive lost blocks of one target (error > ``LOST_M``);
  ``reacquire_blocks_mean`` / ``reacquire_blocks_max``: lengths of the runs that ended before the
  episode did (re-acquired; ``null`` when none), ``never_reacquired``: runs still open at the end;
* ``track_swaps``: tracks that end the episode lost and nearer another target than their own
  (a track that ends on another target);
* ``acquisition_ambiguous_targets``: targets whose q = 0 acquisition already favours a wrong labelling
  (:func:`acquisition_label_errors`: the most likely assignment of the noisy acquisitions to the true
  positions is not the identity, so even a tracker that knew every true position could only guess the
  labels, and would take the likelier, wrong one); ``lost_fraction_unambiguous``: ``lost_fraction`` over
  the other targets only (the part of the loss a tracker can be blamed for);
* identity-free figures (as OSPA/GOSPA separate localisation from labelling): each block the estimates are
  matched to the true positions by the assignment of least squared error (whatever their labels), and
  ``rmse_unlabelled_m`` / ``lost_fraction_unlabelled`` / ``rmse_unlabelled_per_episode_m`` are ``rmse_m`` /
  ``lost_fraction`` / ``rmse_per_episode_m`` of that matching.
  ``lost_fraction - lost_fraction_unlabelled`` is the part of the loss that is a swap of identities (every
  target still has a track on it), the rest targets no track follows;
* NIS calibration: ``meas_nis_outside_fraction``, the fraction of valid peaks whose normalised
  error against the nearest true target (``(z - h(u_i))^T R^-1 (z - h(u_i))`` with the reported
  covariance ``R``) exceeds ``NIS_GATE`` (the 99.9 % point: nominal 0.001); and
  ``pred_nis_outside_fraction``, the same for the CU's one-block prediction against the truth with its
  predicted position covariance (when the CU has an estimator that reports one; ``null`` otherwise), and
  ``pred_nis_outside_fraction_tracked``, the same over the target-blocks whose track held at the block before
  (its estimate within ``LOST_M`` of its target; block 0 always): the motion model's calibration on the tracks
  it follows, where the plain fraction also counts every block of a lost or swapped track (whose prediction
  is off by metres whatever the model).

The JSON is written atomically, only when the whole evaluation succeeded.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from rl_isac.controllers import make_controller
from rl_isac.controllers.base import Controller
from rl_isac.errors import ConfigError
from rl_isac.evaluation.bounds import position_pcrb
from rl_isac.io import write_json_atomic  # noqa: F401  (re-exported: callers import it from here)
from rl_isac.network import CellFreeNetwork, check_action
from rl_isac.scenario import ScenarioConfig
from rl_isac.seeds import evaluation_seeds
from rl_isac.tracking.data_association import CHI2_GATE_999, collect_peaks, innovation_matrix

LOST_M = 5.0
"""Position error above which a target-block counts as lost (``lost_fraction``), metres."""
NIS_GATE = CHI2_GATE_999
"""99.9 % point of chi-square with 2 degrees of freedom: the gate of the NIS calibration metrics."""


def git_revision() -> str:
    """Current git revision of the package checkout, or ``"unknown"`` outside a checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5, check=False)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def blas_kernel() -> str:
    """The BLAS libraries this process has loaded and their kernels, e.g. ``"openblas:Haswell"``.

    The package pins OpenBLAS's kernel on x86-64 (:data:`rl_isac.OPENBLAS_CORETYPE`: closed-loop numbers
    depend on its round-off in knife-edge episodes); a result made with another kernel is reproducible only on
    a CPU that picks the same one. ``"unknown"`` where none is reported.
    """
    from threadpoolctl import threadpool_info

    kernels = {f"{i['internal_api']}:{i.get('architecture') or '?'}" for i in threadpool_info()
               if i.get("user_api") == "blas"}
    return ",".join(sorted(kernels)) or "unknown"


def run_episode(cu: Controller, cfg: ScenarioConfig, world_seed: int, blocks: int, on_block=None) -> dict:
    """One episode: returns squared errors ``(Q, I)``, PCRB traces ``(Q, I)``, miss counts, decision times."""
    net = CellFreeNetwork(cfg)
    acq = net.reset(world_seed)
    ambiguous = acquisition_label_errors(acq, net.positions_m)
    action = cu.reset(acq)
    sq_err = np.zeros((blocks, cfg.num_targets))
    sq_unlabelled = np.zeros((blocks, cfg.num_targets))
    meas_info = np.zeros((blocks, cfg.num_targets, 2, 2))
    headings = np.zeros((blocks, cfg.num_targets))
    decision_s = np.zeros(blocks)
    assigned = detected = 0
    peaks_total = peaks_outside = 0
    pred_nis, pred_held = [], []  # per block with a predicted covariance: (I,) NIS, (I,) track held before
    held = np.ones(cfg.num_targets, bool)  # the track of each target within LOST_M of it after the last block
    pred_cov = _predicted_cov(cu)
    for q in range(blocks):
        check_action(action.association, action.beams, cfg.num_rf, cfg.codebook_size, cfg.num_tracking_symbols,
                     (cfg.num_bs, cfg.num_targets))
        headings[q] = net.headings_rad
        meas = net.step(action.association, action.beams, predicted_positions_m=action.prediction_m)
        info = net.expected_information(net.positions_m, action.beams)
        meas_info[q] = np.einsum("mi,mixy->ixy", action.association, info)
        assigned += int(meas.assigned.sum())
        detected += int(meas.detected.sum())
        n_peaks, n_out = measurement_nis_outside(meas, net.bs_positions_m, net.positions_m)
        peaks_total += n_peaks
        peaks_outside += n_out
        if pred_cov is not None:
            pred_nis.append(_nees(net.positions_m - np.asarray(action.prediction_m), pred_cov))  # (I,)
            pred_held.append(held)
        t0 = time.perf_counter()
        action = cu.act(meas)
        decision_s[q] = time.perf_counter() - t0
        est = np.asarray(action.estimate_m)
        if est.shape != (cfg.num_targets, 2) or not np.all(np.isfinite(est)):
            raise ValueError(f"{cu.name}: estimate must be finite with shape {(cfg.num_targets, 2)}, "
                             f"got shape {est.shape}")
        sq_err[q] = np.sum((net.positions_m - est) ** 2, axis=1)
        sq_unlabelled[q] = unlabelled_squared_errors(net.positions_m, est)
        held = sq_err[q] <= LOST_M**2
        final_truth, final_est = net.positions_m.copy(), est.copy()
        pred_cov = _predicted_cov(cu)
        if on_block is not None:
            on_block()
    pcrb = position_pcrb(cfg, headings, meas_info)
    return {"sq_err": sq_err, "sq_unlabelled": sq_unlabelled, "pcrb": pcrb, "assigned": assigned,
            "detected": detected, "decision_s": decision_s,
            "peaks": peaks_total, "peaks_outside": peaks_outside,
            "pred_nis": np.concatenate(pred_nis) if pred_nis else None,
            "pred_held": np.concatenate(pred_held) if pred_held else None,
            "swaps": track_swaps(final_truth, final_est), "ambiguous": ambiguous}


def unlabelled_squared_errors(truth_m: np.ndarray, estimate_m: np.ndarray) -> np.ndarray:
    """``(I,)`` squared errors of the estimates matched to the true positions by the assignment of least total
    squared error, ignoring the labels (``scipy.optimize.linear_sum_assignment``); in the order of the truth.

    ``truth_m``, ``estimate_m``: ``(I, 2)`` metres. Equal to the labelled errors when no two tracks are swapped.
    """
    cost = np.sum((np.asarray(truth_m, float)[:, None, :] - np.asarray(estimate_m, float)[None, :, :]) ** 2, axis=-1)
    rows, cols = linear_sum_assignment(cost)
    out = np.empty(len(rows))
    out[rows] = cost[rows, cols]
    return out


def acquisition_label_errors(acquisition_m: np.ndarray, truth_m: np.ndarray) -> np.ndarray:
    """``(I,)`` bool: targets the maximum-likelihood labelling of the acquisition gets wrong.

    The CU learns the targets' identities only from the q = 0 acquisition ``a_k = u_k + n_k`` (i.i.d.
    isotropic Gaussian noise). Given the true positions (unlabelled), the likeliest labelling is the
    assignment ``k -> pi(k)`` minimising ``sum_k ||a_k - u_pi(k)||^2``
    (``scipy.optimize.linear_sum_assignment``); where it is not the identity, the acquisition itself points
    the wrong way, and those targets are flagged.

    Args:
        acquisition_m: ``(I, 2)`` acquired positions; truth_m: ``(I, 2)`` true positions at q = 0, metres.
    """

    a, u = np.asarray(acquisition_m, float), np.asarray(truth_m, float)
    _, perm = linear_sum_assignment(np.sum((a[:, None, :] - u[None, :, :]) ** 2, axis=-1))
    return perm != np.arange(len(a))


def measurement_nis_outside(meas, bs_positions_m: np.ndarray, positions_m: np.ndarray) -> tuple[int, int]:
    """Valid peaks of a block and how many are outside ``NIS_GATE`` against every true target.

    A peak's NIS against target ``i`` is ``(z - h(u_i))^T R^-1 (z - h(u_i))`` with its reported covariance
    ``R`` (the truth carries no uncertainty); the peak belongs to whichever target explains it best.
    """
    peaks = collect_peaks(meas, max_angle_std_rad=None)
    if len(peaks) == 0:
        return 0, 0
    truth = np.zeros((len(positions_m), 4))
    truth[:, :2] = positions_m
    nis, _ = innovation_matrix(truth, np.zeros((len(positions_m), 4, 4)), peaks, bs_positions_m)
    return len(peaks), int(np.sum(nis.min(axis=1) > NIS_GATE))


def _lost_unambiguous(sq: np.ndarray, ambiguous: np.ndarray) -> float:
    """``lost_fraction`` over the target-blocks of targets not in :func:`acquisition_label_errors`:
    ``sq (E, Q, I)`` squared errors, ``ambiguous (E, I)`` bool."""
    keep = np.broadcast_to(~ambiguous[:, None, :], sq.shape)
    return float(np.mean(sq[keep] > LOST_M**2)) if keep.any() else 0.0


def _predicted_cov(cu: Controller) -> np.ndarray | None:
    """The CU's predicted position covariance ``(I, 2, 2)`` for the next block, if it has one."""
    estimator = getattr(cu, "estimator", None)
    if estimator is None or not hasattr(estimator, "predicted_position_covariance"):
        return None
    cov = estimator.predicted_position_covariance()
    return None if cov is None else np.asarray(cov, float).copy()


def _nees(err: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """``e^T C^-1 e`` per target: ``err (I, 2)``, ``cov (I, 2, 2)`` -> ``(I,)``."""
    return np.einsum("ia,ia->i", err, np.linalg.solve(cov, err[..., None])[..., 0])


def track_swaps(truth_m: np.ndarray, estimate_m: np.ndarray) -> int:
    """Tracks that end lost (error > ``LOST_M``) and nearer another target than their own: ``(I, 2)`` each."""
    dist = np.linalg.norm(estimate_m[:, None, :] - truth_m[None, :, :], axis=-1)  # (track, target)
    own = np.diag(dist)
    return int(np.sum((own > LOST_M) & (dist.argmin(axis=1) != np.arange(len(own)))))


def loss_runs(lost: np.ndarray) -> tuple[list[int], int]:
    """Runs of consecutive lost blocks per target, ``lost (Q, I)`` bool: the lengths of the runs that ended
    before the last block (re-acquired) and the number still open at the end."""
    closed, still_open = [], 0
    for i in range(lost.shape[1]):
        col = np.concatenate([[False], lost[:, i], [False]]).astype(np.int8)
        edges = np.diff(col)
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        for a, b in zip(starts, ends):
            if b == lost.shape[0]:
                still_open += 1
            else:
                closed.append(int(b - a))
    return closed, still_open


def evaluate(method: str, targets: int = 4, episodes: int = 10, blocks: int = 100, seed: int = 0,
             fidelity: str = "signal", checkpoint: str | None = None, preset: str = "paper",
             cfg: ScenarioConfig | None = None, progress: bool = True, controller: Controller | None = None
             ) -> dict:
    """Evaluate one method on the fixed evaluation seeds.

    Args:
        method: a name from :data:`rl_isac.controllers.METHODS`.
        targets, episodes, blocks, seed, fidelity, preset: the run (``cfg`` overrides preset/targets/fidelity).
        checkpoint: directory of a learned method's checkpoint.
        controller: an already built CU (its ``name`` is reported instead of ``method``).
    Returns:
        the result dict (see the module docstring).
    """
    if episodes < 1 or blocks < 1:
        raise ConfigError("episodes/blocks", (episodes, blocks), "both must be >= 1")
    if cfg is None:
        cfg = ScenarioConfig.preset(preset, num_targets=targets, fidelity=fidelity)
    cfg = cfg.replace(num_blocks=blocks)
    cu = controller if controller is not None else make_controller(method, cfg, checkpoint=checkpoint)
    seeds = evaluation_seeds(seed, episodes)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=episodes * blocks, desc=f"{method} I={cfg.num_targets}", unit="block", file=sys.stderr,
                   leave=False)
    results = []
    try:
        for world_seed in seeds:
            results.append(run_episode(cu, cfg, world_seed, blocks, on_block=bar.update if bar else None))
    finally:
        if bar is not None:
            bar.close()
    sq = np.stack([r["sq_err"] for r in results])  # (E, Q, I)
    squ = np.stack([r["sq_unlabelled"] for r in results])  # (E, Q, I), identity-free matching
    pc = np.stack([r["pcrb"] for r in results])
    dec_ms = 1e3 * np.concatenate([r["decision_s"] for r in results])
    assigned = sum(r["assigned"] for r in results)
    detected = sum(r["detected"] for r in results)
    runs, still_open = [], 0
    for r in results:
        closed, open_ = loss_runs(r["sq_err"] > LOST_M**2)
        runs += closed
        still_open += open_
    pred = [r["pred_nis"] for r in results if r["pred_nis"] is not None]
    tracked = np.concatenate([r["pred_nis"][r["pred_held"]] for r in results if r["pred_nis"] is not None] or
                             [np.zeros(0)])  # predictions of the target-blocks whose track held the block before
    peaks = sum(r["peaks"] for r in results)
    return {
        "method": cu.name if controller is not None else method,
        "targets": cfg.num_targets,
        "episodes": episodes,
        "blocks": blocks,
        "seed": seed,
        "fidelity": cfg.fidelity,
        "preset": preset,
        "rmse_m": float(np.sqrt(sq.mean())),
        "rmse_per_block_m": np.sqrt(sq.mean(axis=(0, 2))).tolist(),
        "pcrb_rmse_m": float(np.sqrt(pc.mean())),
        "pcrb_per_block_m": np.sqrt(pc.mean(axis=(0, 2))).tolist(),
        "violations": 0,
        "missed_fraction": float(1 - detected / max(assigned, 1)),
        "lost_fraction": float(np.mean(sq > LOST_M**2)),
        "track_losses": len(runs) + still_open,
        "reacquire_blocks_mean": float(np.mean(runs)) if runs else None,
        "reacquire_blocks_max": int(max(runs)) if runs else None,
        "never_reacquired": still_open,
        "track_swaps": sum(r["swaps"] for r in results),
        "rmse_unlabelled_m": float(np.sqrt(squ.mean())),
        "lost_fraction_unlabelled": float(np.mean(squ > LOST_M**2)),
        "acquisition_ambiguous_targets": int(sum(int(r["ambiguous"].sum()) for r in results)),
        "lost_fraction_unambiguous": _lost_unambiguous(sq, np.stack([r["ambiguous"] for r in results])),
        "meas_nis_outside_fraction": float(sum(r["peaks_outside"] for r in results) / max(peaks, 1)),
        "pred_nis_outside_fraction": float(np.mean(np.concatenate(pred) > NIS_GATE)) if pred else None,
        "pred_nis_outside_fraction_tracked": float(np.mean(tracked > NIS_GATE)) if tracked.size else None,
        "rmse_per_episode_m": np.sqrt(sq.mean(axis=(1, 2))).tolist(),
        "rmse_unlabelled_per_episode_m": np.sqrt(squ.mean(axis=(1, 2))).tolist(),
        "decision_ms_p50": float(np.percentile(dec_ms, 50)),
        "decision_ms_p99": float(np.percentile(dec_ms, 99)),
        "world_seeds": seeds,
        "checkpoint": checkpoint,
        "scenario": cfg.to_dict(),
        "git_revision": git_revision(),
        "blas_kernel": blas_kernel(),
    }


def summary_table(rows: list[dict]) -> str:
    """A short fixed-width table of results (per-target RMSE, metres)."""
    head = (f"{'method':<18}{'I':>3}{'rmse_m':>10}{'pcrb_m':>10}{'missed':>8}{'lost':>7}{'swaps':>6}{'reacq':>10}"
            f"{'nis_z':>7}{'nis_p':>7}{'p50_ms':>9}{'p99_ms':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['method']:<18}{r['targets']:>3}{r['rmse_m']:>10.4f}{r['pcrb_rmse_m']:>10.4f}"
                     f"{r['missed_fraction']:>8.3f}{r['lost_fraction']:>7.3f}{r.get('track_swaps', 0):>6}"
                     f"{reacquire_text(r):>10}{_frac(r.get('meas_nis_outside_fraction')):>7}"
                     f"{_frac(r.get('pred_nis_outside_fraction')):>7}{r['decision_ms_p50']:>9.2f}"
                     f"{r['decision_ms_p99']:>9.2f}")
    lines.append("RMSE per target over targets, blocks and episodes; pcrb_m: posterior CRB of the associations used; "
                 f"lost: target-blocks with error > {LOST_M:g} m; swaps: tracks ending on another target; reacq: "
                 "mean/max blocks to re-acquire (+ never re-acquired); nis_z / nis_p: fraction of peaks / predictions "
                 "outside the 99.9 % gate against the truth (nominal 0.001).")
    return "\n".join(lines)


def reacquire_text(r: dict) -> str:
    """``mean/max`` blocks to re-acquire, ``+n`` never re-acquired; ``-`` without losses."""
    if not r.get("track_losses"):
        return "-"
    mean = r.get("reacquire_blocks_mean")
    text = "" if mean is None else f"{mean:.1f}/{r['reacquire_blocks_max']}"
    return text + (f"+{r['never_reacquired']}" if r.get("never_reacquired") else "")


def _frac(value) -> str:
    return "-" if value is None else f"{value:.4f}"
