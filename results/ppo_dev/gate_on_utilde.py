"""The dgnn-ppo CU gating and aiming on the DGNN's one-block prediction instead of the window's EKF anchor (issue 9).

A development study (training-side worlds ``training_world_seed(7, 2, e)`` only), signal level, 100 blocks, the
committed ``results/checkpoints/ppo-I{I}``. ``anchor``: the CU as shipped (range gates and beam sweeps around the
window anchor's ``anchor_next``, the env's rule). ``utilde``: the same policy and pairs, with the gates and the
sweeps around the DGNN's ``u_tilde``, as the ``dgnn-milp`` CU does. The env (training) is not changed, so the
variant is not what the policy was trained with.

    python results/ppo_dev/gate_on_utilde.py I EPISODES anchor|utilde [FIRST] >> results/ppo_dev/gate_on_utilde.txt
"""
import sys
import time

import rl_isac  # noqa: F401 (first: it pins OpenBLAS's kernel before numpy loads, rl_isac/__init__.py)
import numpy as np

from rl_isac.association.constraints import check_association, sub_actions_to_association
from rl_isac.controllers.base import CUAction
from rl_isac.network import CellFreeNetwork
from rl_isac.rllib.controller import PPOController, load_module
from rl_isac.scenario import ScenarioConfig
from rl_isac.seeds import training_world_seed

I, N, variant = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
first = int(sys.argv[4]) if len(sys.argv) > 4 else 0
if variant not in ("anchor", "utilde"):
    raise SystemExit(f"variant must be anchor or utilde, got {variant!r}")
cfg = ScenarioConfig.paper(I, fidelity="signal").replace(num_blocks=100)
module = load_module(f"results/checkpoints/ppo-I{I}")
last: dict = {}
encode = module._encode_numpy


def encode_and_keep(obs):
    out = encode(obs)
    last["u_tilde"] = np.asarray(out["u_tilde"][0], float)
    return out


module._encode_numpy = encode_and_keep


class UTildeCU(PPOController):
    def _decide(self):
        if variant == "anchor":
            return super()._decide()
        obs = self.builder.build(self.window, self.block, self.cfg.num_blocks)
        pairs, beams_flat, estimate_flat = self.module.decide(obs)
        assoc = check_association(sub_actions_to_association(pairs, self.cfg.num_bs, self.cfg.num_targets),
                                  self.cfg.num_rf, shape=(self.cfg.num_bs, self.cfg.num_targets))
        pred = last["u_tilde"]
        beams = self._widened(np.asarray(beams_flat).reshape(self.beam_shape).astype(np.int64), pred)
        return CUAction(association=assoc, beams=beams, estimate_m=np.asarray(estimate_flat, float).reshape(-1, 2),
                        prediction_m=pred)


t0 = time.time()
sq = []
for e in range(first, first + N):
    cu = UTildeCU(cfg, module)
    net = CellFreeNetwork(cfg)
    a = cu.reset(net.reset(training_world_seed(7, 2, e)))
    err = []
    for _ in range(cfg.num_blocks):
        a = cu.act(net.step(a.association, a.beams, predicted_positions_m=a.prediction_m))
        err.append(np.sum((np.asarray(a.estimate_m) - net.positions_m) ** 2, axis=1))
    sq.append(err)
sq = np.asarray(sq)
ep = np.sqrt(sq.mean(axis=(1, 2)))
print(f"{variant} I={I} worlds {first}-{first + N - 1}: RMSE {np.sqrt(sq.mean()):.3f} m, median episode "
      f"{np.median(ep):.3f}, lost {np.mean(sq > 25.0):.4f}; per-episode RMSE {np.round(ep, 3).tolist()} "
      f"({time.time() - t0:.0f} s)")
