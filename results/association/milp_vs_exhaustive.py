"""MILP vs exhaustive search on the detection-counting objective, on closed-loop instances.

The ekf-milp CU (I = 4, both fidelities, 2 episodes x 100 blocks, world seeds 300-301, below the evaluation range)
records every problem it solves; each is solved again by the MILP and by exhaustive search (idle chains
included: 11^6 = 1.8e6 candidates each).

Usage: OMP_NUM_THREADS=1 python results/association/milp_vs_exhaustive.py > results/association/milp_vs_exhaustive.json
"""

from __future__ import annotations

import json

from rl_isac.association import DEFAULT_CHAIN_PRICE, ExhaustiveSolver, MilpSolver, expected_association_cost
from rl_isac.controllers import make_controller
from rl_isac.network import CellFreeNetwork
from rl_isac.scenario import ScenarioConfig


def recorder(solve, store):
    def rec(info, prior, num_rf, detection_prob=None):
        store.append((info, prior, detection_prob))
        return solve(info, prior, num_rf, detection_prob)

    return rec


def main() -> dict:
    out = {}
    for fidelity in ("surrogate", "signal"):
        cfg = ScenarioConfig.paper(4, fidelity=fidelity).replace(num_blocks=100)
        inst: list = []
        for ep in range(2):
            net = CellFreeNetwork(cfg)
            cu = make_controller("ekf-milp", cfg)
            cu.associator.solve = recorder(cu.associator.solve, inst)
            action = cu.reset(net.reset(300 + ep))
            for _ in range(100):
                action = cu.act(net.step(action.association, action.beams, predicted_positions_m=action.prediction_m))
        milp = MilpSolver(chain_price=DEFAULT_CHAIN_PRICE)
        exhaustive = ExhaustiveSolver(chain_price=DEFAULT_CHAIN_PRICE)
        worst, identical, idle = 0.0, 0, 0
        for info, prior, p in inst:
            a, b = milp.solve(info, prior, cfg.num_rf, p), exhaustive.solve(info, prior, cfg.num_rf, p)
            ca, cb = (expected_association_cost(x, info, prior, p, DEFAULT_CHAIN_PRICE) for x in (a, b))
            worst = max(worst, abs(ca / cb - 1.0))
            identical += bool((a == b).all())
            idle += int(cfg.num_pairs - b.sum())
        out[fidelity] = {"instances": len(inst), "identical_associations": identical, "max_rel_cost_diff": worst,
                         "mean_idle_chains": idle / len(inst), "chains": cfg.num_pairs}
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
