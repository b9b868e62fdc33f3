"""MILP and whole-decision latency of the ekf-milp CU on closed-loop instances (3 surrogate episodes x 100 blocks,
world seeds 100-102, below the evaluation range): wall and CPU time (``time.process_time``, immune to other jobs
on a shared machine) per decision and per MILP solve, and which path certified each optimum.

Usage: OMP_NUM_THREADS=1 python results/association/milp_latency.py [I] > results/association/milp_latency_I8.json
"""

from __future__ import annotations

import json
import sys
import time

import rl_isac  # noqa: F401 (first: it pins OpenBLAS's kernel before numpy loads, rl_isac/__init__.py)
import numpy as np
from threadpoolctl import threadpool_limits

from rl_isac.association import DEFAULT_CHAIN_PRICE, MilpSolver
from rl_isac.controllers import make_controller
from rl_isac.network import CellFreeNetwork
from rl_isac.scenario import ScenarioConfig


def recorder(solve, store):
    def rec(info, prior, num_rf, detection_prob=None):
        store.append((info.copy(), prior.copy(), detection_prob.copy()))
        return solve(info, prior, num_rf, detection_prob)

    return rec


def percentiles(ms: list[float], name: str) -> dict[str, float]:
    a = 1e3 * np.asarray(ms)
    return {f"{name}_p50": float(np.median(a)), f"{name}_p99": float(np.percentile(a, 99))}


def main(num_targets: int) -> dict:
    cfg = ScenarioConfig.paper(num_targets, fidelity="surrogate").replace(num_blocks=100)
    inst: list = []
    dec_wall, dec_cpu, wall, cpu, paths = [], [], [], [], {}
    with threadpool_limits(limits=1):
        for ep in range(3):
            net = CellFreeNetwork(cfg)
            cu = make_controller("ekf-milp", cfg)
            cu.associator.solve = recorder(cu.associator.solve, inst)
            action = cu.reset(net.reset(100 + ep))
            for _ in range(100):
                meas = net.step(action.association, action.beams, predicted_positions_m=action.prediction_m)
                t0, c0 = time.perf_counter(), time.process_time()
                action = cu.act(meas)  # the whole decision: EKF, data association, beams, P_d, MILP
                dec_wall.append(time.perf_counter() - t0)
                dec_cpu.append(time.process_time() - c0)
        solver = MilpSolver(chain_price=DEFAULT_CHAIN_PRICE)
        for info, prior, p in inst:  # in sequence: the warm LP basis as in closed loop
            t0, c0 = time.perf_counter(), time.process_time()
            solver.solve(info, prior, cfg.num_rf, p)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            path = solver.last_stats["path"]
            paths[path] = paths.get(path, 0) + 1
    return {"targets": num_targets, "solves": len(inst), **percentiles(dec_cpu, "decision_cpu_ms"),
            **percentiles(dec_wall, "decision_wall_ms"), **percentiles(cpu, "milp_cpu_ms"),
            **percentiles(wall, "milp_wall_ms"), "paths": paths}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8), indent=2))
