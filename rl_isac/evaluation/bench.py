"""``rl-isac bench``: throughput of the world and latency of the association solvers and CUs.

Everything runs on one core: BLAS/OpenMP pools are limited to one thread with
threadpoolctl for the whole benchmark, and torch (when a learned method is timed)
is set to one thread. Machines here are shared and noisy: compare ratios measured
in one run rather than absolute numbers across runs.

Keys of the JSON:
    world_blocks_per_s[fidelity][I]: ``CellFreeNetwork.step`` calls per second with a
        fixed baseline association (nearest BS at the start) and beams toward the
        true positions, so every pair is really estimated;
    vector_world_blocks_per_s[fidelity][I]: the same per environment with
        :class:`~rl_isac.vector_network.VectorCellFreeNetwork` stepping ``num_envs`` worlds per call
        (16 at the signal level, 64 for the surrogate): the path RL rollouts use;
    milp_ms[size] / exhaustive_ms[size]: median solve time on the Fisher-information
        objective of random episodes' first blocks, sizes ``I4``, ``I6``, ``I8`` (paper,
        M = 6) and ``large-I24`` (M = 12); a refused exhaustive search stores its error;
    decision_ms[method][I]: p50/p99 of the per-block decision of each CU (surrogate world);
    dgnn_ms: with a reference checkpoint (``results/checkpoints/dgnn-I8``), the DGNN at I = 8 per block:
        ``forward`` (the model on one window, torch, one thread) and ``update`` (window push +
        featurisation incl. its EKF anchor + forward + beam decoding);
    ppo_env_steps_per_s, rllib_floor_env_steps_per_s, ppo_over_floor, ppo_decision_ms_p50/p99, and the
        details under ``ppo``: the RLlib pipeline at I = 8 (surrogate, shipped runner layout and PPO
        settings) against RLlib's own PPO on CartPole-v1 with the same layout and settings in the same
        run, the ``dgnn-ppo`` decision latency and where the time goes (:mod:`rl_isac.rllib.bench`);
        skipped (with the reason stored) without ray/torch or the dgnn-I8 checkpoint, or with ``ppo=False``.
"""

from __future__ import annotations

import time

import numpy as np
from threadpoolctl import threadpool_limits

from rl_isac.association import ExhaustiveSearchTooLarge, make_solver
from rl_isac.network import CellFreeNetwork
from rl_isac.physics.fisher import expected_position_information
from rl_isac.scenario import ScenarioConfig

PAPER_SIZES = (4, 6, 8)


def _timed_steps(world, assoc: np.ndarray, blocks: int, dt_s: float) -> float:
    """Seconds spent in ``world.step`` over ``blocks`` blocks (after a short warm-up), beams toward the
    truth and predictions one block ahead computed outside the timing. ``world`` is a
    :class:`CellFreeNetwork` or a :class:`~rl_isac.vector_network.VectorCellFreeNetwork`."""
    for _ in range(2):  # warm up caches and allocators
        world.step(assoc, world.beams_toward(world.positions_m), predicted_positions_m=world.positions_m)
    elapsed = 0.0
    for _ in range(blocks):
        beams = world.beams_toward(world.positions_m)
        pred = world.positions_m + world.velocities_mps * dt_s
        t0 = time.perf_counter()
        world.step(assoc, beams, predicted_positions_m=pred)
        elapsed += time.perf_counter() - t0
    return elapsed


def world_throughput(cfg: ScenarioConfig, blocks: int, seed: int = 0) -> float:
    """``step`` calls per second with a fixed association and beams toward the truth."""
    net = CellFreeNetwork(cfg)
    net.reset(seed)
    assoc = net.nearest_association(net.positions_m)
    return blocks / _timed_steps(net, assoc, blocks, cfg.block_duration_s)


def vector_world_throughput(cfg: ScenarioConfig, blocks: int, num_envs: int, seed: int = 0) -> float:
    """Environment-blocks per second of ``VectorCellFreeNetwork`` with fixed associations."""
    from rl_isac.vector_network import VectorCellFreeNetwork

    vec = VectorCellFreeNetwork(cfg, num_envs)
    assoc = vec.nearest_association(vec.reset(seeds=[seed + e for e in range(num_envs)]))
    return blocks * num_envs / _timed_steps(vec, assoc, blocks, cfg.block_duration_s)


def solver_instances(cfg: ScenarioConfig, count: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Objective instances ``(info, prior_info)`` from random initial scenes of ``cfg``."""
    net = CellFreeNetwork(cfg)
    out = []
    for k in range(count):
        net.reset(seed + k)
        pos = net.positions_m
        info = expected_position_information(cfg, net.codebook, net.bs_positions_m, pos, net.beams_toward(pos))
        prior = np.tile(np.eye(2) / (0.5**2), (cfg.num_targets, 1, 1))
        out.append((info, prior))
    return out


def solver_ms(name: str, instances, num_rf: int) -> dict:
    solver = make_solver(name)
    times = []
    try:
        for info, prior in instances:
            t0 = time.perf_counter()
            solver.solve(info, prior, num_rf)
            times.append(1e3 * (time.perf_counter() - t0))
    except ExhaustiveSearchTooLarge as exc:
        return {"refused": str(exc)}
    return {"median": float(np.median(times)), "p99": float(np.percentile(times, 99)), "calls": len(times)}


def decision_latency(method: str, targets: int, blocks: int) -> dict:
    from rl_isac.evaluation.harness import evaluate

    try:
        r = evaluate(method, targets=targets, episodes=1, blocks=blocks, seed=0, fidelity="surrogate", progress=False)
    except ExhaustiveSearchTooLarge as exc:
        return {"refused": str(exc)}
    return {"p50": r["decision_ms_p50"], "p99": r["decision_ms_p99"], "rmse_m": r["rmse_m"]}


def dgnn_latency(checkpoint: str, blocks: int) -> dict:
    """Per-block DGNN timings at the checkpoint's scenario (surrogate world for the inputs)."""
    import torch

    from rl_isac.controllers.learned import DGNNEstimator, load_dgnn
    from rl_isac.tracking.dgnn.model import to_tensors

    cfg = ScenarioConfig.paper(8, fidelity="surrogate")
    model, _, _ = load_dgnn(checkpoint, cfg)
    est = DGNNEstimator(cfg, model)
    net = CellFreeNetwork(cfg)
    acq = net.reset(0)
    est.reset(acq)
    assoc = net.nearest_association(acq)
    fwd, upd = [], []
    for _ in range(blocks):
        meas = net.step(assoc, net.beams_toward(net.positions_m), predicted_positions_m=net.positions_m)
        t0 = time.perf_counter()
        est.update(meas)
        upd.append(time.perf_counter() - t0)
        obs = to_tensors(est.window.as_arrays())
        with torch.no_grad():
            t0 = time.perf_counter()
            model(obs)
            fwd.append(time.perf_counter() - t0)
    return {"forward_p50": float(1e3 * np.median(fwd)), "forward_p99": float(1e3 * np.percentile(fwd, 99)),
            "update_p50": float(1e3 * np.median(upd)), "update_p99": float(1e3 * np.percentile(upd, 99)),
            "checkpoint": checkpoint}


def run_bench(blocks: int = 300, solver_trials: int = 30, quick: bool = False,
              methods=("ls-nearest", "ekf-nearest", "ekf-greedy", "ekf-convex", "ekf-convex-ls", "ekf-milp",
                       "ekf-exhaustive"),
              echo=print, ppo: bool = True) -> dict:
    """Run every benchmark on one core; print a line per figure and return the JSON dict."""
    if quick:
        blocks, solver_trials = min(blocks, 20), min(solver_trials, 3)
    out: dict = {"world_blocks_per_s": {}, "vector_world_blocks_per_s": {}, "milp_ms": {}, "exhaustive_ms": {},
                 "decision_ms": {},
                 "settings": {"blocks": blocks, "solver_trials": solver_trials, "threads": 1}}
    with threadpool_limits(limits=1):
        try:
            import torch

            torch.set_num_threads(1)
        except ImportError:
            pass
        for fidelity in ("signal", "surrogate"):
            out["world_blocks_per_s"][fidelity] = {}
            for num in PAPER_SIZES:
                cfg = ScenarioConfig.paper(num, fidelity=fidelity)
                n = blocks if fidelity == "signal" else blocks * 10
                rate = world_throughput(cfg, n)
                out["world_blocks_per_s"][fidelity][str(num)] = rate
                echo(f"world {fidelity:<9} I={num}: {rate:9.0f} blocks/s")
            out["vector_world_blocks_per_s"][fidelity] = {}
            envs = 16 if fidelity == "signal" else 64
            for num in PAPER_SIZES:
                cfg = ScenarioConfig.paper(num, fidelity=fidelity)
                rate = vector_world_throughput(cfg, max(2, (blocks if fidelity == "signal" else blocks * 10) // envs),
                                               envs)
                out["vector_world_blocks_per_s"][fidelity][str(num)] = rate
                echo(f"world {fidelity:<9} I={num}: {rate:9.0f} blocks/s per env ({envs} envs per call)")
        sizes = {f"I{n}": ScenarioConfig.paper(n) for n in PAPER_SIZES}
        sizes["large-I24"] = ScenarioConfig.large()
        for key, cfg in sizes.items():
            inst = solver_instances(cfg, solver_trials)
            out["milp_ms"][key] = solver_ms("milp", inst, cfg.num_rf)
            out["exhaustive_ms"][key] = solver_ms("exhaustive", inst[: max(1, min(3, solver_trials))], cfg.num_rf)
            echo(f"milp {key}: {out['milp_ms'][key]}  exhaustive {key}: "
                 f"{str(out['exhaustive_ms'][key])[:120]}")
        from pathlib import Path

        ckpt = Path(__file__).resolve().parents[2] / "results" / "checkpoints" / "dgnn-I8"
        if (ckpt / "model.pt").is_file():
            out["dgnn_ms"] = dgnn_latency(str(ckpt), 20 if quick else 200)
            echo(f"dgnn I=8: {out['dgnn_ms']}")
        dec_blocks = 10 if quick else 50
        for method in methods:
            out["decision_ms"][method] = {}
            for num in PAPER_SIZES:
                out["decision_ms"][method][str(num)] = decision_latency(method, num, dec_blocks)
                echo(f"decision {method:<15} I={num}: {str(out['decision_ms'][method][str(num)])[:100]}")
        if ppo:
            _ppo_entries(out, quick, echo)
    return out


def _ppo_entries(out: dict, quick: bool, echo) -> None:
    """The RLlib pipeline's figures (:func:`rl_isac.rllib.bench.ppo_bench`) as top-level keys + ``ppo``."""
    from pathlib import Path

    ckpt = Path(__file__).resolve().parents[2] / "results" / "checkpoints" / "dgnn-I8"
    try:
        from rl_isac.rllib.bench import ppo_bench
    except ModuleNotFoundError as exc:  # ray or torch not installed: say so in the JSON
        out["ppo"] = {"skipped": f"{exc.name} is not installed"}
        return
    if not (ckpt / "model.pt").is_file():
        out["ppo"] = {"skipped": f"no reference checkpoint {ckpt}"}
        return
    out["ppo"] = ppo_bench(targets=8, quick=quick, echo=echo)
    for key in ("ppo_env_steps_per_s", "rllib_floor_env_steps_per_s", "ppo_over_floor", "ppo_decision_ms_p50",
                "ppo_decision_ms_p99"):
        out[key] = out["ppo"][key]
