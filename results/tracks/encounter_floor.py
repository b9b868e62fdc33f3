"""The encounter floor of the world (issue 7): lost fraction of an oracle tracker that sees every target's true
position exactly, except while two or more targets are closer than ``d_res`` metres to each other (unresolved:
it then sees only their group, no individual positions), and that labels what it sees by global nearest
neighbour on constant-velocity predictions (velocities from its own last two resolved positions; merged tracks
coast on them). Starts with the true labels (the acquisition floor is results/tracks/acquisition_floor.py), so
every loss here comes from an encounter whose motion the model cannot carry through: targets that turn while
unresolved, or leave side by side. A track counts lost in every block its position is more than 5 m from its
own target. Monte Carlo over the paper preset's motion (mobility only).
Run: python results/tracks/encounter_floor.py 2000 > results/tracks/encounter_floor.txt  (optional 2nd argument: d_res list, e.g. 2,3)
"""
import sys

import rl_isac  # noqa: F401 (first: it pins OpenBLAS's kernel before numpy loads, rl_isac/__init__.py)
import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import connected_components

from rl_isac.physics import mobility
from rl_isac.scenario import ScenarioConfig

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
LOST_M = 5.0
D_RES = tuple(float(x) for x in sys.argv[2].split(",")) if len(sys.argv) > 2 else (2.0, 3.0, 4.0, 5.0)
for d_res in D_RES:
    rng = np.random.default_rng(321)
    for num in (4, 6, 8):
        cfg = ScenarioConfig.preset("paper", num_targets=num, fidelity="surrogate")
        dt = cfg.block_duration_s
        lost = 0
        episodes_lost = 0
        for _ in range(N):
            pos, head = mobility.initial_state(cfg, rng=rng)
            est, vel = pos.copy(), mobility.velocities(cfg, head)  # the oracle starts on the truth
            was_resolved = np.ones(num, bool)
            ep_lost = 0
            for _q in range(cfg.num_blocks):
                pos, head = mobility.step(cfg, pos, head, rng=rng)
                pred = est + vel * dt
                d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
                _, group = connected_components(d < d_res, directed=False)
                single = np.bincount(group)[group] == 1
                # what the oracle sees: resolved targets' positions, one centroid per unresolved group
                obs = np.array([pos[group == g].mean(axis=0) for g in group])  # per target slot, (I, 2)
                cost = np.sum((pred[:, None] - obs[None]) ** 2, axis=-1)
                _, slot = linear_sum_assignment(cost)  # track k takes the observation of slot[k]
                resolved = single[slot]
                new_est = np.where(resolved[:, None], obs[slot], pred)
                # velocity from two consecutive resolved positions; a merged or just-separated track keeps its own
                vel = np.where((resolved & was_resolved)[:, None], (new_est - est) / dt, vel)
                est, was_resolved = new_est, resolved
                bad = int(np.sum(np.linalg.norm(est - pos, axis=1) > LOST_M))
                ep_lost += bad
            lost += ep_lost
            episodes_lost += ep_lost > 0
        print(f"d_res {d_res} m, I={num}: episodes with a loss {episodes_lost / N:.4f}; "
              f"floor lost fraction {lost / (N * num * cfg.num_blocks):.5f}", flush=True)
