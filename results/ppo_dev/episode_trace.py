"""One evaluation episode of a CU, traced (issue 9): the worst-tracked target's error and its BSs, per block.

    python results/ppo_dev/episode_trace.py I WORLD_SEED METHOD CHECKPOINT

e.g. ``6 1000000046 dgnn-ppo results/checkpoints/ppo-I6`` against ``6 1000000046 dgnn-milp
results/checkpoints/dgnn-I6``: episode 46 of evaluation seed 0 (``results/full/cells/*-I6.json``, ``world_seeds``),
signal level, 100 blocks, the same world for both. Output: ``results/ppo_dev/episode_trace.txt``.
"""
import sys

import rl_isac  # noqa: F401 (first: it pins OpenBLAS's kernel before numpy loads, rl_isac/__init__.py)
import numpy as np

from rl_isac.controllers import make_controller
from rl_isac.network import CellFreeNetwork
from rl_isac.scenario import ScenarioConfig

I, seed, method, ck = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
cfg = ScenarioConfig.paper(I, fidelity="signal").replace(num_blocks=100)
cu = make_controller(method, cfg, checkpoint=ck)
net = CellFreeNetwork(cfg)
a = cu.reset(net.reset(seed))
err, served = [], []
for _ in range(cfg.num_blocks):
    m = net.step(a.association, a.beams, predicted_positions_m=a.prediction_m)
    a = cu.act(m)
    err.append(np.linalg.norm(np.asarray(a.estimate_m) - net.positions_m, axis=1))
    served.append(np.asarray(a.association).sum(0))
err, served = np.array(err), np.array(served)
t = int(err.max(0).argmax())
print(f"## {method} I={I} world {seed}: RMSE {np.sqrt((err ** 2).mean()):.3f} m; worst target {t}")
print("blocks with its error > 1 m:", np.flatnonzero(err[:, t] > 1).tolist())
print("its error (m), blocks 0-29:", err[:30, t].round(1).tolist())
print("BSs serving it, blocks 0-29:", served[:30, t].tolist())
