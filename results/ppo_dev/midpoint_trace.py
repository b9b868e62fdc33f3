"""Where a drifting track sits between two targets (issue 9): evaluation world 1000000046 at I = 6, track 3.

    python results/ppo_dev/midpoint_trace.py METHOD CHECKPOINT >> results/ppo_dev/midpoint_trace.txt

Per block: the distance of track 3's reported estimate and (for ``dgnn-ppo``) of its window's EKF anchor
prediction ``anchor_next_m`` to targets 3 and 4 (spawned 0.9 m apart, parting), their separation, and the BSs
serving target 3. Equal distances to both while they part: the track fuses measurements of both targets.
Signal level, 100 blocks; the first 30 are printed.
"""
import sys

import rl_isac  # noqa: F401 (first: it pins OpenBLAS's kernel before numpy loads, rl_isac/__init__.py)
import numpy as np

from rl_isac.controllers import make_controller
from rl_isac.evaluation.harness import git_revision
from rl_isac.network import CellFreeNetwork
from rl_isac.scenario import ScenarioConfig

if len(sys.argv) != 3:
    raise SystemExit(f"usage: python results/ppo_dev/midpoint_trace.py METHOD CHECKPOINT (got {sys.argv[1:]})")
method, ck = sys.argv[1], sys.argv[2]
cfg = ScenarioConfig.paper(6, fidelity="signal").replace(num_blocks=100)
cu = make_controller(method, cfg, checkpoint=ck)
net = CellFreeNetwork(cfg)
a = cu.reset(net.reset(1000000046))
print(f"## {method} I=6 world 1000000046, git {git_revision()}: block, track 3 -> (target 3, target 4) m, "
      "anchor prediction -> (3, 4) m, separation m, BSs serving target 3")
for q in range(30):
    a = cu.act(net.step(a.association, a.beams, predicted_positions_m=a.prediction_m))
    pos = net.positions_m
    d = np.linalg.norm(np.asarray(a.estimate_m)[3][None] - pos, axis=1)
    anchor = "-"
    if hasattr(cu, "window") and cu.window.anchor_next_m is not None:
        da = np.linalg.norm(np.asarray(cu.window.anchor_next_m)[3][None] - pos, axis=1)
        anchor = f"({da[3]:.1f}, {da[4]:.1f})"
    print(f"{q}: ({d[3]:.1f}, {d[4]:.1f}) {anchor} {np.linalg.norm(pos[3] - pos[4]):.1f} "
          f"{np.flatnonzero(np.asarray(a.association)[:, 3]).tolist()}")
