"""Where the signal-level peaks outside the 99.9 % gate come from (issue 7): ``ekf-milp`` in closed loop on
development worlds (``training_world_seed(7, 2, first + e)``, ``first`` 1000 or 2000; never an evaluation
seed), the ``paper`` preset.

Every valid peak of every block is compared with every true target by its NIS with the reported covariance
(as ``measurement_nis_outside`` of the harness does); a peak is outside when its smallest NIS exceeds the
99.9 % point of chi-square(2). Outside peaks are sorted into:

* ``p1 ghost``: a second peak whose nearest target is the same as its gate's first peak's (a residue of it);
* ``far range``: range error above 1.5 m (a false alarm or a sidelobe reported as a peak);
* ``angle`` / ``range``: the larger of the two normalised errors, ``+ neighbour`` when another target lies
  within two range cells and 8 deg of the nearest one from that BS.

    python results/tracks/nis_breakdown.py --targets 8 --episodes 32 >> results/tracks/nis_breakdown.txt

~5 s per episode at I = 8 on a quiet core.
"""

from __future__ import annotations

import argparse
import subprocess

import rl_isac  # noqa: F401 (first: it pins OpenBLAS's kernel before numpy loads, rl_isac/__init__.py)
import numpy as np

from rl_isac.association import DEFAULT_CHAIN_PRICE, make_solver
from rl_isac.controllers.composed import ComposedCU
from rl_isac.controllers.estimators import EKFCUEstimator
from rl_isac.evaluation.harness import NIS_GATE
from rl_isac.network import CellFreeNetwork
from rl_isac.scenario import ScenarioConfig
from rl_isac.seeds import training_world_seed
from rl_isac.tracking import EKFSettings
from rl_isac.tracking.ekf import range_angle


def breakdown(targets: int, episodes: int, first_world: int = 1000) -> dict:
    cfg = ScenarioConfig.preset("paper", num_targets=targets, fidelity="signal").replace(num_blocks=100)
    res = cfg.range_resolution_m
    total, counts, snr = 0, {}, {}
    per_episode = np.zeros((episodes, 2))  # peaks, peaks outside
    for e in range(episodes):
        cu = ComposedCU(cfg, EKFCUEstimator(cfg, EKFSettings()), make_solver("milp", chain_price=DEFAULT_CHAIN_PRICE),
                        name="ekf-milp")
        net = CellFreeNetwork(cfg)
        action = cu.reset(net.reset(training_world_seed(7, 2, first_world + e)))
        for _ in range(cfg.num_blocks):
            m = net.step(action.association, action.beams, predicted_positions_m=action.prediction_m)
            truth = np.c_[net.positions_m, np.zeros((targets, 2))]
            for b in range(cfg.num_bs):
                h = range_angle(truth, net.bs_positions_m[b])  # (I, 2)
                first = None
                for i in range(targets):
                    for p in range(m.num_peaks):
                        if not m.peak_valid[b, i, p]:
                            continue
                        total += 1
                        per_episode[e, 0] += 1
                        z = np.array([m.peak_range_m[b, i, p], m.peak_angle_rad[b, i, p]])
                        R = m.peak_cov[b, i, p]
                        y = z[None] - h
                        y[:, 1] = (y[:, 1] + np.pi) % (2 * np.pi) - np.pi
                        nis = np.einsum("ja,ab,jb->j", y, np.linalg.inv(R), y)
                        j = int(np.argmin(nis))
                        if p == 0:
                            first = j
                        if nis[j] <= NIS_GATE:
                            continue
                        per_episode[e, 1] += 1
                        dr = np.abs(h[:, 0] - h[j, 0])
                        da = np.abs((h[:, 1] - h[j, 1] + np.pi) % (2 * np.pi) - np.pi)
                        dr[j] = np.inf
                        crowd = bool(np.any((dr < 2 * res) & (da < np.radians(8))))
                        if p > 0 and first == j:
                            kind = "p1 ghost"
                        elif abs(y[j, 0]) > 1.5:
                            kind = "far range"
                        else:
                            ang = abs(y[j, 1]) / np.sqrt(R[1, 1]) > abs(y[j, 0]) / np.sqrt(R[0, 0])
                            kind = ("angle" if ang else "range") + (" + neighbour" if crowd else "")
                        counts[kind] = counts.get(kind, 0) + 1
                        snr.setdefault(kind, []).append(float(m.peak_snr_db[b, i, p]))
            action = cu.act(m)
    # 95 % percentile bootstrap over episodes of the fraction outside (episodes resampled whole)
    rng = np.random.default_rng(0)
    draws = rng.integers(0, episodes, (2000, episodes))
    sums = per_episode[draws].sum(axis=1)
    ci = np.percentile(sums[:, 1] / np.maximum(sums[:, 0], 1), [2.5, 97.5])
    return {"targets": targets, "episodes": episodes, "peaks": total, "counts": counts, "ci95": ci.tolist(),
            "snr_median_db": {k: float(np.median(v)) for k, v in snr.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", type=int, default=8)
    ap.add_argument("--episodes", type=int, default=16)
    ap.add_argument("--first", type=int, default=1000, help="first development world index (a second set: 2000)")
    a = ap.parse_args()
    if a.targets < 1 or a.episodes < 1 or a.first < 0:
        ap.error(f"--targets {a.targets} and --episodes {a.episodes} must both be at least 1, --first {a.first} >= 0")
    r = breakdown(a.targets, a.episodes, a.first)
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    out = sum(r["counts"].values())
    print(f"## I = {r['targets']}, {r['episodes']} episodes x 100 blocks from world {a.first}, git {rev}: "
          f"{out} of {r['peaks']} peaks "
          f"outside ({100 * out / max(r['peaks'], 1):.2f} %, 95 % interval over episodes "
          f"[{100 * r['ci95'][0]:.2f}, {100 * r['ci95'][1]:.2f}] %)")
    for k, v in sorted(r["counts"].items(), key=lambda kv: -kv[1]):
        print(f"- {k}: {v} ({100 * v / r['peaks']:.3f} % of the peaks; median SNR {r['snr_median_db'][k]:.0f} dB)")


if __name__ == "__main__":
    main()
