"""Evaluate a training run's behaviour-cloned module (``warm_start.pt``: the warm start before PPO) in the harness.

``python -m rl_isac.training.bc_eval RUN_DIR FIDELITY OUT.json [EPISODES]``: builds the module of
``RUN_DIR/train_config.json`` with the warm start's weights and runs it as the ``dgnn-ppo`` CU on the
evaluation seeds of run 0 (100 blocks): what PPO adds after the warm start is the difference to
``rl-isac evaluate --method dgnn-ppo --checkpoint RUN_DIR``.

``python -m rl_isac.training.bc_eval decisions RUN_DIR DGNN_DIR OUT.json [EPISODES] [FIDELITY] [--warm]
[--no-widen]``: the policy's per-block decisions against ``dgnn-milp``'s on the same states
(:func:`decision_diagnosis`; training-side seeds, surrogate world by default).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def evaluate_warm_start(run_dir: str, fidelity: str, episodes: int = 20, blocks: int = 100) -> dict:
    from rl_isac.errors import ConfigError
    from rl_isac.evaluation.harness import evaluate
    from rl_isac.rllib.callbacks import MODULE_ID
    from rl_isac.rllib.config import PPOTrainConfig, module_spec
    from rl_isac.rllib.controller import PPOController
    from rl_isac.rllib.env import env_scenario
    from rl_isac.scenario import ScenarioConfig

    path = Path(run_dir) / "warm_start.pt"
    if not path.is_file():
        raise ConfigError("run_dir", run_dir, "has no warm_start.pt (trained without warm_start: true)")
    run = json.loads((Path(run_dir) / "train_config.json").read_text())
    cfg = env_scenario(run["env_config"])
    spec = module_spec(run["dgnn"], None, PPOTrainConfig.from_dict(run["train"]), cfg, init_state=str(path))
    module = spec.rl_module_specs[MODULE_ID].build()
    module.eval()
    ecfg = ScenarioConfig.preset("paper", num_targets=run["targets"], fidelity=fidelity).replace(num_blocks=blocks)
    res = evaluate("dgnn-ppo", cfg=ecfg, episodes=episodes, blocks=blocks, seed=0,
                   controller=PPOController(ecfg, module), progress=False)
    res.update(method="dgnn-bc (warm start only)", checkpoint=str(path))
    return res


def decision_diagnosis(run_dir: str, expert_checkpoint: str, episodes: int = 4, blocks: int = 100,
                       fidelity: str = "surrogate", seed: int = 0, warm_only: bool = False,
                       widen: bool = True) -> dict:
    """The policy's per-block decisions against the expert's (``dgnn-milp``) on the same states (issue 9, I = 8 gap).

    Closed loop on *training-side* world seeds (``training_world_seed(seed, split=3, e)``, never evaluation
    seeds): the world executes the policy's association (``dgnn-ppo`` CU, or the warm start alone with
    ``warm_only``); the expert CU is fed the same measurements and decides on the same state. Per block:
    both associations' value under the expert's own objective (expected posterior error over detection
    outcomes x chain price, :func:`~rl_isac.association.objective.expected_association_cost`, m^2, on the
    expert's prediction, covariance, beams and detection probabilities), the chains each uses, the targets each
    gives two or more BSs, the pair overlap, and the per-target error of both CUs' estimates against the truth.

    Returns the per-block rows and a summary (mean / median / p90 of the objective ratio policy / expert,
    the fraction of blocks with a ratio above 1.1, chains used, exact agreement, pair recall).
    """
    from rl_isac.association.constraints import check_association
    from rl_isac.association.objective import expected_association_cost
    from rl_isac.controllers import make_controller
    from rl_isac.network import CellFreeNetwork
    from rl_isac.physics.detection import credited_detection_probability
    from rl_isac.physics.fisher import expected_position_information
    from rl_isac.rllib.controller import PPOController, load_module
    from rl_isac.scenario import ScenarioConfig
    from rl_isac.seeds import training_world_seed

    run = json.loads((Path(run_dir) / "train_config.json").read_text())
    num = int(run["targets"])
    cfg = ScenarioConfig.preset("paper", num_targets=num, fidelity=fidelity).replace(num_blocks=blocks)
    if warm_only:
        from rl_isac.rllib.callbacks import MODULE_ID
        from rl_isac.rllib.config import PPOTrainConfig, module_spec
        from rl_isac.rllib.env import env_scenario

        spec = module_spec(run["dgnn"], None, PPOTrainConfig.from_dict(run["train"]), env_scenario(run["env_config"]),
                           init_state=str(Path(run_dir) / "warm_start.pt"))
        module = spec.rl_module_specs[MODULE_ID].build()
        module.eval()
    else:
        module = load_module(run_dir)
    rows = []
    for e in range(episodes):
        policy = PPOController(cfg, module, widen=widen)
        expert = make_controller("dgnn-milp", cfg, checkpoint=expert_checkpoint)
        net = CellFreeNetwork(cfg)
        acq = net.reset(training_world_seed(seed, 3, e))
        act_p, act_e = policy.reset(acq), expert.reset(acq)
        for q in range(cfg.num_blocks):
            a_p = check_association(act_p.association, cfg.num_rf, shape=(cfg.num_bs, cfg.num_targets))
            a_e = np.asarray(act_e.association, bool)
            info = expected_position_information(cfg, expert.codebook, expert.bs_positions_m, act_e.prediction_m,
                                                 act_e.beams)
            cov = expert.estimator.predicted_position_covariance()
            det = credited_detection_probability(cfg, act_e.prediction_m, act_e.beams, cov)
            price = float(getattr(expert.associator, "chain_price", 0.0))
            prior = np.linalg.inv(cov)
            c_p = expected_association_cost(a_p, info, prior, det, price)
            c_e = expected_association_cost(a_e, info, prior, det, price)
            # the same objective blind to detection (P_d = 1): what the policy's observation lets it see
            a_blind = np.asarray(expert.associator.solve(info, prior, cfg.num_rf, detection_prob=None), bool)
            truth = net.positions_m

            def err(estimate, truth=truth):
                return float(np.sqrt(np.mean(np.sum((np.asarray(estimate) - truth) ** 2, -1))))

            def lost(estimate, truth=truth):
                return int(np.sum(np.sqrt(np.sum((np.asarray(estimate) - truth) ** 2, -1)) > 5.0))

            rows.append({"episode": e, "block": q, "cost_policy_m2": c_p, "cost_expert_m2": c_e,
                         "chains_policy": int(a_p.sum()), "chains_expert": int(a_e.sum()),
                         "multi_bs_policy": int((a_p.sum(0) >= 2).sum()),
                         "multi_bs_expert": int((a_e.sum(0) >= 2).sum()),
                         "exact": bool(np.array_equal(a_p, a_e)),
                         "recall": float((a_p & a_e).sum() / max(1, a_e.sum())),
                         "err_policy_m": err(act_p.estimate_m),
                         "err_expert_m": err(act_e.estimate_m),
                         "lost_policy": lost(act_p.estimate_m), "lost_expert": lost(act_e.estimate_m),
                         "min_det_policy_pairs": float(det[a_p].min()) if a_p.any() else 1.0,
                         "min_det_expert_pairs": float(det[a_e].min()) if a_e.any() else 1.0,
                         "mean_det_policy_pairs": float(det[a_p].mean()) if a_p.any() else 1.0,
                         "mean_det_expert_pairs": float(det[a_e].mean()) if a_e.any() else 1.0,
                         "exact_blind": bool(np.array_equal(a_p, a_blind)),
                         "recall_blind": float((a_p & a_blind).sum() / max(1, a_blind.sum())),
                         "expert_equals_blind": bool(np.array_equal(a_e, a_blind)),
                         "cost_blind_m2": expected_association_cost(a_blind, info, prior, det, price)})
            meas = net.step(a_p, act_p.beams, predicted_positions_m=act_p.prediction_m)
            act_p, act_e = policy.act(meas), expert.act(meas)
    ratio = np.array([r["cost_policy_m2"] / max(r["cost_expert_m2"], 1e-12) for r in rows])
    col = {k: np.array([r[k] for r in rows], float) for k in rows[0] if k not in ("episode", "block")}
    summary = {"targets": num, "episodes": episodes, "blocks": blocks, "fidelity": fidelity,
               "policy": "warm start" if warm_only else "PPO", "widen": widen,
               "lost_target_blocks_policy": int(col["lost_policy"].sum()),
               "lost_target_blocks_expert_on_policy_states": int(col["lost_expert"].sum()),
               "ratio_mean": float(ratio.mean()),
               "ratio_median": float(np.median(ratio)), "ratio_p90": float(np.percentile(ratio, 90)),
               "blocks_ratio_above_1.1": float(np.mean(ratio > 1.1)),
               "exact": float(col["exact"].mean()), "recall": float(col["recall"].mean()),
               "chains_policy": float(col["chains_policy"].mean()), "chains_expert": float(col["chains_expert"].mean()),
               "multi_bs_policy": float(col["multi_bs_policy"].mean()),
               "multi_bs_expert": float(col["multi_bs_expert"].mean()),
               "rmse_policy_m": float(np.sqrt(np.mean(col["err_policy_m"] ** 2))),
               "rmse_expert_on_policy_states_m": float(np.sqrt(np.mean(col["err_expert_m"] ** 2))),
               "blocks_policy_pair_det_below_0.5": float(np.mean(col["min_det_policy_pairs"] < 0.5)),
               "blocks_expert_pair_det_below_0.5": float(np.mean(col["min_det_expert_pairs"] < 0.5)),
               "mean_det_policy_pairs": float(col["mean_det_policy_pairs"].mean()),
               "mean_det_expert_pairs": float(col["mean_det_expert_pairs"].mean()),
               "exact_vs_detection_blind_milp": float(col["exact_blind"].mean()),
               "recall_vs_detection_blind_milp": float(col["recall_blind"].mean()),
               "expert_equals_detection_blind_milp": float(col["expert_equals_blind"].mean()),
               "ratio_mean_detection_blind_milp": float(np.mean(col["cost_blind_m2"] /
                                                                np.maximum(col["cost_expert_m2"], 1e-12)))}
    return {"summary": summary, "rows": rows, "run_dir": str(run_dir), "expert_checkpoint": str(expert_checkpoint)}


if __name__ == "__main__":
    from rl_isac.evaluation.harness import write_json_atomic

    if sys.argv[1] == "decisions":
        # python -m rl_isac.training.bc_eval decisions RUN_DIR EXPERT_DGNN_DIR OUT.json [EPISODES] [FIDELITY]
        #     [--warm] [--no-widen]
        args = [a for a in sys.argv[2:] if not a.startswith("--")]
        result = decision_diagnosis(args[0], args[1], int(args[3]) if len(args) > 3 else 4,
                                    fidelity=args[4] if len(args) > 4 else "surrogate",
                                    warm_only="--warm" in sys.argv, widen="--no-widen" not in sys.argv)
        write_json_atomic(result, args[2])
        print(json.dumps(result["summary"], indent=1))
        sys.exit(0)
    result = evaluate_warm_start(sys.argv[1], sys.argv[2], int(sys.argv[4]) if len(sys.argv) > 4 else 20)
    write_json_atomic(result, sys.argv[3])
    print(f"{result['method']}: rmse {result['rmse_m']:.4f} m, lost {result['lost_fraction']:.4f}")
