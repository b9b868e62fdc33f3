"""The identity floor of the world (issue 7): lost fraction of a tracker that knew every true position but had to
label them from the q = 0 acquisition alone (the maximum-likelihood labelling, as harness.acquisition_label_errors).
Monte Carlo over the spawn and acquisition model of the paper preset; a mislabelled target counts lost while the
mislabelled position is more than 5 m from its own.  Run: python results/tracks/acquisition_floor.py 20000
"""
import sys, itertools, numpy as np
from rl_isac.scenario import ScenarioConfig
from rl_isac.physics import mobility
N = int(sys.argv[1]) if len(sys.argv) > 1 else 4000
rng = np.random.default_rng(123)
for I in (4, 6, 8):
    cfg = ScenarioConfig.preset("paper", num_targets=I, fidelity="surrogate")
    sig = cfg.acquisition_std_m; lost = 0; ev = 0
    for _ in range(N):
        pos, head = mobility.initial_state(cfg, rng=rng)
        acq = pos + sig * rng.standard_normal(pos.shape)
        # MAP labelling = min-cost assignment acq -> true positions (squared distance)
        from scipy.optimize import linear_sum_assignment
        c = ((acq[:, None] - pos[None]) ** 2).sum(-1)
        _, perm = linear_sum_assignment(c)
        wrong = np.flatnonzero(perm != np.arange(I))
        if wrong.size == 0:
            continue
        ev += 1
        # trajectories: blocks where the MAP-labelled position is > 5 m off
        p, h = pos.copy(), head.copy()
        for q in range(cfg.num_blocks):
            p, h = mobility.step(cfg, p, h, rng=rng)
            lost += (np.linalg.norm(p[perm] - p, axis=1) > 5).sum()
    print(f"I={I}: episodes with a MAP label error {ev/N:.4f}; floor lost fraction {lost/(N*I*cfg.num_blocks):.5f}", flush=True)
