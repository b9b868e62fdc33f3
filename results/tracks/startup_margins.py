"""Start-up identity evidence (issue 7): for every pair of targets spawned < 4 m apart on 200 development worlds
(training_world_seed(7, 2, e), ekf-milp, signal level), the retrodiction swap margin (rl_isac.tracking.identity.swap_margin,
-2 ln of the likelihood ratio swapped/kept; > 0 favours a swap) of the two tracks once they are 8 m apart, against anchors at
the posteriors of blocks 1, 2, 3 and at the q = 0 acquisition, beside whether the tracks really are swapped then.
Output: results/tracks/startup_margins.txt.  Run: python results/tracks/startup_margins.py > results/tracks/startup_margins.txt
"""

import rl_isac  # noqa: F401 (first: it pins OpenBLAS's kernel before numpy loads, rl_isac/__init__.py)
import numpy as np

from rl_isac.association import DEFAULT_CHAIN_PRICE, make_solver
from rl_isac.controllers.composed import ComposedCU
from rl_isac.controllers.estimators import EKFCUEstimator
from rl_isac.network import CellFreeNetwork
from rl_isac.scenario import ScenarioConfig
from rl_isac.seeds import training_world_seed
from rl_isac.tracking.identity import retrodiction_cost, swap_margin

for I in (6, 8):
    cfg = ScenarioConfig.preset("paper", num_targets=I, fidelity="signal").replace(num_blocks=100)
    hv = cfg.heading_step_rad**2 / 3.0
    for e in range(200):
        net = CellFreeNetwork(cfg)
        acq = net.reset(training_world_seed(7, 2, e))
        t0 = net.positions_m.copy()
        d0 = np.linalg.norm(t0[:, None] - t0[None], axis=-1)
        np.fill_diagonal(d0, np.inf)
        pairs = [(i, j) for i in range(I) for j in range(i + 1, I) if d0[i, j] < 4.0]
        if not pairs:
            continue
        cu = ComposedCU(cfg, EKFCUEstimator(cfg), make_solver("milp", chain_price=DEFAULT_CHAIN_PRICE), name="x")
        a = cu.reset(acq)
        hist = []
        truth = []
        for q in range(30):
            m = net.step(a.association, a.beams, predicted_positions_m=a.prediction_m)
            a = cu.act(m)
            ek = cu.estimator.ekf
            hist.append((ek.state.copy(), ek.covariance.copy()))
            truth.append(net.positions_m.copy())
        for i, j in pairs:
            # separation block: first q >= 8 with estimates > 8 m apart
            qs = next((q for q in range(7, 30) if np.linalg.norm(hist[q][0][i, :2] - hist[q][0][j, :2]) > 8), None)
            if qs is None:
                continue
            x, P = hist[qs]
            tq = truth[qs]
            swapped = np.linalg.norm(x[i, :2] - tq[j]) < np.linalg.norm(x[i, :2] - tq[i])
            out = []
            for k in (0, 1, 2):  # anchors: q=1.. posteriors (hist[k] = block k+1)
                ax, aP = hist[k]
                anc = ax[[i, j], :2]
                av = 0.5 * np.trace(aP[[i, j], :2, :2], axis1=1, axis2=2)
                c = retrodiction_cost(
                    x[[i, j]], P[[i, j]], anc, av, np.array([qs - k, qs - k]), cfg.block_duration_s, cfg.step_m, hv
                )
                out.append(round(swap_margin(c), 1))
            # acquisition anchor
            c = retrodiction_cost(
                x[[i, j]],
                P[[i, j]],
                acq[[i, j]],
                np.full(2, cfg.acquisition_std_m**2),
                np.array([qs + 1] * 2),
                cfg.block_duration_s,
                cfg.step_m,
                hv,
            )
            print(
                f"I={I} e{e} pair {i},{j} d0 {d0[i, j]:.1f} qs {qs + 1} swapped={swapped} margins q1,q2,q3 {out} acq {swap_margin(c):.1f}",
                flush=True,
            )
