"""How unequal the interference is across the K tracking symbols of a pair (issue 7, the next CFAR lever).

``ekf-milp`` in closed loop on development worlds (``training_world_seed(7, 2, 1000 + e)``), I = 8, the ``paper``
preset, signal level. For every pair the estimator sees, the floor of each symbol is the median of its range
profile over the whole unambiguous range (noise units, at least 1; the median of one complex Gaussian's power is
``ln 2`` times its mean). The CFAR's Gamma(K) statistic assumes the K floors equal; with the other RF chain's beams
changing from symbol to symbol, its leak (white in range) is not.

    python results/tracks/symbol_floors.py --episodes 6 > results/tracks/symbol_floors.txt
"""

from __future__ import annotations

import argparse
import subprocess

import rl_isac  # noqa: F401 (first: it pins OpenBLAS's kernel before numpy loads, rl_isac/__init__.py)
import numpy as np
import scipy.fft

import rl_isac.physics.estimation as estimation
from rl_isac.association import DEFAULT_CHAIN_PRICE, make_solver
from rl_isac.controllers.composed import ComposedCU
from rl_isac.controllers.estimators import EKFCUEstimator
from rl_isac.network import CellFreeNetwork
from rl_isac.scenario import ScenarioConfig
from rl_isac.seeds import training_world_seed
from rl_isac.tracking import EKFSettings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--episodes", type=int, default=6)
    ap.add_argument("--targets", type=int, default=8)
    a = ap.parse_args()
    if a.targets < 1 or a.episodes < 1:
        ap.error(f"--targets {a.targets} and --episodes {a.episodes} must both be at least 1")
    cfg = ScenarioConfig.preset("paper", num_targets=a.targets, fidelity="signal").replace(num_blocks=100)
    ratio, mean = [], []
    original = estimation.PairEstimator.estimate_peaks

    def observed(self, z, *args, **kwargs):
        n = self._profile_bins
        spec = scipy.fft.ifft(z, n=n, axis=-1)
        power = np.square(spec.real) + np.square(spec.imag)  # (P, K, n)
        floors = np.median(power, axis=2) * (n * n / (len(self.lc) * self.cfg.noise_power_w * np.log(2)))
        floors = np.maximum(floors, 1.0)
        ratio.extend((floors.max(axis=1) / floors.min(axis=1)).tolist())
        mean.extend(floors.mean(axis=1).tolist())
        return original(self, z, *args, **kwargs)

    estimation.PairEstimator.estimate_peaks = observed
    try:
        for e in range(a.episodes):
            cu = ComposedCU(cfg, EKFCUEstimator(cfg, EKFSettings()),
                            make_solver("milp", chain_price=DEFAULT_CHAIN_PRICE), name="ekf-milp")
            net = CellFreeNetwork(cfg)
            action = cu.reset(net.reset(training_world_seed(7, 2, 1000 + e)))
            for _ in range(cfg.num_blocks):
                m = net.step(action.association, action.beams, predicted_positions_m=action.prediction_m)
                action = cu.act(m)
    finally:
        estimation.PairEstimator.estimate_peaks = original
    ratio, mean = np.array(ratio), np.array(mean)
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"# I = {a.targets}, {a.episodes} episodes x 100 blocks, git {rev}: {len(ratio)} pair-blocks")
    print("| mean floor over the K symbols (noise units) | share of pair-blocks | max / min over symbols, median "
          "| > 2x | > 10x |")
    print("|---|---|---|---|---|")
    for lo, hi in [(1, 1.5), (1.5, 3), (3, 10), (10, np.inf)]:
        s = (mean >= lo) & (mean < hi)
        if s.any():
            print(f"| [{lo}, {hi}) | {s.mean():.3f} | {np.median(ratio[s]):.2f} | {np.mean(ratio[s] > 2):.3f} | "
                  f"{np.mean(ratio[s] > 10):.3f} |")


if __name__ == "__main__":
    main()
