"""The ``rl-isac`` command line.

Verbs:
    simulate    run the world with a simple baseline CU and print per-target RMSE
    evaluate    run any registered method on the fixed evaluation seeds (the one harness)
    crb-check   Monte Carlo of the BS-local estimators against the CRB
    bench       throughput of the world and solver / decision latencies
    pretrain    phase-1 supervised pre-training of the DGNN estimator and beam head
    train       phase-2 PPO of the dgnn-ppo policy (RLlib)
    ppo-ablation  the PPO levers (paper recipe vs shipped, each lever alone), trained and evaluated
    reproduce   the paper's Table 1 and figures (profiles tiny / quick / full), resumable

Every verb that writes ``--json PATH`` writes it atomically and only on success.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rl_isac.errors import RlIsacError
from rl_isac.scenario import FIDELITIES, PRESETS


def _int_at_least(minimum: int):
    """argparse type: an integer >= ``minimum`` (the error names the value and the rule)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from exc
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be >= {minimum}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _run_args(p: argparse.ArgumentParser, episodes: bool = True, blocks: int = 100) -> None:
    p.add_argument("--targets", type=_positive_int, default=4, help="number of targets I (default 4)")
    if episodes:
        p.add_argument("--episodes", type=_positive_int, default=10, help="evaluation episodes (default 10)")
    p.add_argument("--blocks", type=_positive_int, default=blocks, help=f"blocks Q per episode (default {blocks})")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="seed (default 0)")
    p.add_argument("--fidelity", choices=FIDELITIES, default="signal", help="world fidelity (default signal)")
    p.add_argument("--preset", choices=PRESETS, default="paper", help="scenario preset (default paper)")
    p.add_argument("--json", metavar="PATH", help="write the result as JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rl-isac", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="verb", required=True)

    p = sub.add_parser("simulate", help="run the world with a simple baseline CU (least squares, nearest BS)")
    _run_args(p, episodes=False)
    p.add_argument("--method", default="ls-nearest", help="CU to drive the world (default ls-nearest)")

    p = sub.add_parser("evaluate", help="evaluate a method on the fixed evaluation seeds")
    p.add_argument("--method", required=True, help="method name, e.g. ekf-milp (see --list)")
    p.add_argument("--checkpoint", help="checkpoint directory of a learned method")
    p.add_argument("--clusters", type=_positive_int, default=1,
                   help="CU clusters: C > 1 runs the method as one sub-CU per cluster with handover "
                        "(clustered-<method>; rl_isac.controllers.clustered); 1 = one CU (default)")
    _run_args(p)

    p = sub.add_parser("methods", help="list the registered methods")

    p = sub.add_parser("compare", help="several methods x target counts through the harness (JSON + Markdown)")
    p.add_argument("--methods", nargs="+", required=True, help="method names")
    p.add_argument("--targets", nargs="+", type=_positive_int, default=[4, 6, 8])
    p.add_argument("--episodes", type=_positive_int, default=10)
    p.add_argument("--blocks", type=_positive_int, default=100)
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument("--fidelity", choices=FIDELITIES, default="signal")
    p.add_argument("--checkpoint", action="append", default=[], metavar="METHOD=DIR",
                   help="checkpoint of a learned method; '{I}' in DIR is replaced by the target count")
    p.add_argument("--json", metavar="PATH", required=True, help="results JSON (a .md table is written beside it)")

    p = sub.add_parser("crb-check", help="estimator RMSE vs CRB at 30/60/100/150 m, broadside and 45 deg")
    p.add_argument("--trials", type=_positive_int, default=400, help="signal-level trials per case (default 400)")
    p.add_argument("--surrogate-trials", type=_positive_int, default=4000, help="surrogate trials per case")
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument("--json", metavar="PATH")

    p = sub.add_parser("bench", help="world blocks/s, solver and decision latencies (one core)")
    p.add_argument("--blocks", type=_positive_int, default=300, help="world blocks per measurement (default 300)")
    p.add_argument("--solver-trials", type=_positive_int, default=30, help="solver calls per size (default 30)")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (for smoke tests)")
    p.add_argument("--ppo", action=argparse.BooleanOptionalAction, default=True,
                   help="also the RLlib PPO figures (starts a local Ray; default on)")
    p.add_argument("--only-ppo", action="store_true", help="only the RLlib PPO figures (rl_isac.rllib.bench)")
    p.add_argument("--ppo-config", help="YAML of PPOTrainConfig fields for the PPO figures (e.g. a reference "
                                        "checkpoint's recipe; default: the PPOTrainConfig defaults)")
    p.add_argument("--clusters", action="store_true",
                   help="only the multi-cluster figures on the large preset (rl_isac.rllib.bench_clusters): env "
                        "steps/s, decision latency and clustered vs whole-network ekf-milp RMSE at 1, 2, 4 clusters; "
                        "--json defaults to results/clusters.json (.md beside it)")
    p.add_argument("--cluster-episodes", type=_positive_int, default=8, help="evaluation episodes per C (default 8)")
    p.add_argument("--cluster-blocks", type=_positive_int, default=100, help="blocks per episode (default 100)")
    p.add_argument("--cluster-targets", type=_positive_int, nargs="+", default=[24, 12],
                   help="target counts of the --clusters evaluation (default 24 12; the env throughput at the first)")
    p.add_argument("--cluster-fidelity", choices=FIDELITIES, default="surrogate",
                   help="evaluation fidelity of --clusters (default surrogate)")
    p.add_argument("--cluster-seed", type=_non_negative_int, default=0,
                   help="evaluation seed of --clusters / --cluster-ppo: the worlds of "
                        "rl_isac.seeds.evaluation_seeds(seed, episodes) (default 0)")
    p.add_argument("--cluster-ppo", metavar="DIR",
                   help="with --clusters: instead, the trained clustered dgnn-ppo in DIR (rl-isac train --preset large "
                        "--clusters C) vs clustered and whole-network ekf-milp on the same evaluation worlds, at the "
                        "first --cluster-targets; --json defaults to results/clusters_ppo.json (.md beside it)")
    p.add_argument("--json", metavar="PATH")

    p = sub.add_parser("dgnn-report", help="DGNN vs EKF on identical measurement sequences, beam accuracy, timing")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--targets", type=_positive_int, default=4)
    p.add_argument("--episodes", type=_positive_int, default=5)
    p.add_argument("--blocks", type=_positive_int, default=100)
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument("--fidelity", choices=FIDELITIES, default="signal")
    p.add_argument("--driver", default="ekf-milp",
                   help="CU that drives the world (default ekf-milp); 'self': this checkpoint's dgnn-milp in closed "
                        "loop, compared with its own EKF anchor")
    p.add_argument("--json", metavar="PATH")

    p = sub.add_parser("pretrain", help="phase-1 supervised pre-training of the DGNN estimator + beam head")
    p.add_argument("--targets", type=_positive_int, default=4)
    p.add_argument("--config", help="YAML with optional sections scenario/dgnn/train overriding the defaults")
    p.add_argument("--out", required=True, help="checkpoint directory")
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")

    p = sub.add_parser("train-l2o", help="train the dgnn-l2o association head (Benchmark II) on MILP labels")
    p.add_argument("--checkpoint", required=True, help="phase-1 DGNN checkpoint directory (the DGNN stays frozen)")
    p.add_argument("--out", help="where l2o.pt etc. go (default: the checkpoint directory)")
    p.add_argument("--episodes", type=_positive_int, default=128, help="training episodes (default 128)")
    p.add_argument("--val-episodes", type=_positive_int, default=16, help="validation episodes (default 16)")
    p.add_argument("--blocks", type=_positive_int, default=50, help="blocks per episode (default 50)")
    p.add_argument("--epochs", type=_positive_int, default=20, help="epochs (default 20)")
    p.add_argument("--lr", type=float, default=2e-3, help="learning rate (default 2e-3)")
    p.add_argument("--loss", choices=("sequential", "bce"), default="sequential",
                   help="listwise decoding loss or per-pair BCE (default sequential)")
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument("--fidelity", choices=FIDELITIES, default="surrogate", help="world fidelity (default surrogate)")
    p.add_argument("--objective-features", action="store_true",
                   help="ablation: also feed the objective's per-pair information to the head (not the paper's)")
    _add_reproduce_parser(sub)
    _add_train_parser(sub)
    _add_ppo_ablation_parser(sub)
    return parser


def _add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="phase-2 PPO of the dgnn-ppo policy (RLlib; starts a local Ray)")
    p.add_argument("--targets", type=_positive_int, help="number of targets I (default 4; 24 with --preset large)")
    p.add_argument("--preset", choices=PRESETS, default="paper", help="scenario preset (default paper)")
    p.add_argument("--clusters", type=_positive_int, default=1,
                   help="CU clusters C: C agents cu_c, one per cluster of M / C BSs, one shared policy module "
                        "(rl_isac.clusters; default 1)")
    p.add_argument("--pretrained", required=True, help="phase-1 DGNN checkpoint for this I (frozen encoder)")
    p.add_argument("--out", required=True, help="run directory (checkpoint/, tb/, learning_curve.*)")
    p.add_argument("--fidelity", choices=FIDELITIES, help="training world fidelity (default surrogate)")
    p.add_argument("--num-env-runners", type=_non_negative_int, help="remote env runners (default 1)")
    p.add_argument("--envs-per-runner", type=_positive_int, help="vectorised envs per runner (default 8)")
    stop = p.add_mutually_exclusive_group(required=True)
    stop.add_argument("--iterations", type=_positive_int, help="stop after this many iterations in total")
    stop.add_argument("--time-budget-s", type=float, help="stop after this wall time (seconds)")
    p.add_argument("--config", help="YAML mapping of PPOTrainConfig fields (rl_isac.rllib.config)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="training seed (default 0)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")


def _cmd_train(args) -> int:
    from rl_isac.training.ppo import train

    targets = args.targets or (24 if args.preset == "large" else 4)
    extra = {} if args.preset == "paper" and args.clusters == 1 else {"preset": args.preset, "clusters": args.clusters}
    train(targets, args.pretrained, args.out, iterations=args.iterations, time_budget_s=args.time_budget_s,
          fidelity=args.fidelity, num_env_runners=args.num_env_runners, envs_per_runner=args.envs_per_runner,
          config=args.config, resume=args.resume, seed=args.seed, **extra)
    return 0


def _add_ppo_ablation_parser(sub) -> None:
    from rl_isac.training.ablation import VARIANTS

    p = sub.add_parser("ppo-ablation", help="PPO levers: the paper's recipe vs the shipped one, each lever alone")
    p.add_argument("--targets", type=_positive_int, default=4)
    p.add_argument("--pretrained", required=True, help="phase-1 DGNN checkpoint for this I")
    p.add_argument("--out", required=True, help="directory of the variants' runs (reused by a rerun)")
    p.add_argument("--json", default="results/ppo_ablation.json", help="results JSON (.md beside it)")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), help="default: all")
    p.add_argument("--references", nargs="*", default=["dgnn-milp", "ekf-convex"])
    p.add_argument("--iterations", type=_positive_int, default=3, help="PPO iterations per variant (default 3)")
    p.add_argument("--train-batch", type=_positive_int, default=1000, help="env steps per iteration (default 1000)")
    p.add_argument("--episodes", type=_positive_int, default=20)
    p.add_argument("--blocks", type=_positive_int, default=100)
    p.add_argument("--fidelity", choices=FIDELITIES, default="surrogate", help="evaluation fidelity")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="training seed (default 0)")


def _cmd_ppo_ablation(args) -> int:
    import shlex

    from rl_isac.training.ablation import ablation

    ablation(args.targets, args.pretrained, args.out, args.json, variants=args.variants,
             references=tuple(args.references), iterations=args.iterations, train_batch=args.train_batch,
             episodes=args.episodes, blocks=args.blocks, fidelity=args.fidelity, seed=args.seed,
             command="rl-isac " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    return 0


def _add_reproduce_parser(sub) -> None:
    p = sub.add_parser("reproduce", help="the paper's Table 1, Fig. 3, Fig. 4 and the PPO curve (resumable pipeline)")
    p.add_argument("--profile", choices=("tiny", "quick", "full"), default="quick",
                   help="tiny (seconds, tests), quick (make run, I = 6), full (I = 4, 6, 8; default quick)")
    p.add_argument("--quick", dest="profile", action="store_const", const="quick", help="same as --profile quick")
    p.add_argument("--full", dest="profile", action="store_const", const="full", help="same as --profile full")
    p.add_argument("--out", help="output folder (default results/<profile>)")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="reuse finished cells and training runs in --out (default on)")
    p.add_argument("--dgnn-checkpoints", default="results/checkpoints/dgnn-I{I}",
                   help="phase-1 DGNN checkpoints; '{I}' is the target count (default results/checkpoints/dgnn-I{I})")
    p.add_argument("--ppo-checkpoint", help="evaluate this dgnn-ppo checkpoint ('{I}' allowed) instead of training")
    p.add_argument("--time-budget-s", type=float, default=None,
                   help="compute no further cell after this wall time (s); the rest is reported 'not computed' "
                        "and a rerun resumes there (exit status 4)")
    p.add_argument("--readme", metavar="PATH",
                   help="also copy the table into this README between its markers for <out>/table1.md "
                        "(see rl_isac.evaluation.reproduce.readme_markers)")


def _cmd_reproduce(args) -> int:
    from rl_isac.evaluation.reproduce import PROFILES, check_readme, embed_table_in_readme, reproduce, terminal_table

    table_key = str(Path(args.out or f"results/{args.profile}") / "table1.md")
    if args.readme:
        check_readme(args.readme, table_key)  # before any work
    res = reproduce(args.profile, out=args.out, resume=args.resume, dgnn_checkpoints=args.dgnn_checkpoints,
                    ppo_checkpoint=args.ppo_checkpoint, time_budget_s=args.time_budget_s)
    print()
    print(terminal_table(PROFILES[args.profile], res.rows))
    print()
    print(f"table: {res.out / 'table1.md'} and {res.out / 'table1.json'}")
    if args.readme:
        embed_table_in_readme(args.readme, res.out / "table1.md", table_key)
        print(f"table copied into {args.readme}")
    for name, path in res.figures.items():
        print(f"{name}: {path}")
    print(PROFILES[args.profile].summary)
    failed = {num: run["reason"] for num, run in res.training.items() if run.get("failed")}
    if failed:
        print(f"rl-isac reproduce: PPO training failed at I = {sorted(failed)} (dgnn-ppo reported not available): "
              f"{failed}", file=sys.stderr)
        return 3
    if res.cells_skipped:
        print(f"rl-isac reproduce: the time budget was spent before {len(res.cells_skipped)} cells "
              f"({', '.join(res.cells_skipped)}); rerun the same command to resume", file=sys.stderr)
        return 4
    return 0


def _cmd_simulate(args) -> int:
    from rl_isac.evaluation.harness import evaluate, summary_table, write_json_atomic

    result = evaluate(args.method, targets=args.targets, episodes=1, blocks=args.blocks, seed=args.seed,
                      fidelity=args.fidelity, preset=args.preset)
    result["verb"] = "simulate"
    print(summary_table([result]))
    if args.json:
        write_json_atomic(result, args.json)
    return 0


def _cmd_evaluate(args) -> int:
    from rl_isac.evaluation.harness import evaluate, summary_table, write_json_atomic

    controller = None
    if args.clusters > 1:
        from rl_isac.controllers import make_controller
        from rl_isac.scenario import ScenarioConfig

        cfg = ScenarioConfig.preset(args.preset, num_targets=args.targets, fidelity=args.fidelity,
                                    num_blocks=args.blocks)
        controller = make_controller(f"clustered-{args.method}", cfg, checkpoint=args.checkpoint,
                                     clusters=args.clusters)
    result = evaluate(args.method, targets=args.targets, episodes=args.episodes, blocks=args.blocks,
                      seed=args.seed, fidelity=args.fidelity, checkpoint=args.checkpoint, preset=args.preset,
                      controller=controller)
    result["clusters"] = args.clusters
    print(summary_table([result]))
    if args.json:
        write_json_atomic(result, args.json)
    return 0


def _cmd_compare(args) -> int:
    from rl_isac.errors import ConfigError
    from rl_isac.evaluation.compare import compare, write_compare

    ckpts = {}
    for item in args.checkpoint:
        if "=" not in item:
            raise ConfigError("--checkpoint", item, "must be METHOD=DIR")
        key, value = item.split("=", 1)
        ckpts[key] = value
    data = compare(args.methods, args.targets, args.episodes, args.blocks, args.seed, args.fidelity, ckpts)
    print(data["table_md"])
    write_compare(data, args.json)
    return 0


def _cmd_methods(args) -> int:
    from rl_isac.controllers.registry import METHODS, _load_learned

    _load_learned()
    for name in sorted(METHODS):
        print(name)
    return 0


def _cmd_crb_check(args) -> int:
    from rl_isac.evaluation.harness import write_json_atomic
    from rl_isac.physics.calibration import crb_check

    print(f"{'range':>6}{'angle':>6}{'snr_dB':>8}{'det':>6}{'r_rmse':>9}{'r_crb':>9}{'a_rmse':>9}{'a_crb':>9}"
          f"{'sur_r':>9}{'sur_a':>9}{'rmse/crb':>9}")

    def show(c):
        s = c["surrogate"]
        print(f"{c['range_m']:>6.0f}{c['angle_deg']:>6.0f}{c['snr_db']:>8.1f}{c['detected_fraction']:>6.2f}"
              f"{c['range_rmse_m']:>9.4f}{c['range_crb_m']:>9.4f}{c['angle_rmse_rad']:>9.5f}{c['angle_crb_rad']:>9.5f}"
              f"{s['range_rmse_m']:>9.4f}{s['angle_rmse_rad']:>9.5f}{c['checks']['rmse_over_crb']:>9.2f}",
              flush=True)

    result = crb_check(trials=args.trials, surrogate_trials=args.surrogate_trials, seed=args.seed, progress=show)
    applies = [c for c in result["cases"] if c["checks"]["rule_applies"]]
    ok = all(c["checks"]["efficient"] and c["checks"]["surrogate_within_20pct"] for c in applies)
    print(f"{len(applies)} cases with integrated SNR >= 15 dB: "
          f"{'all' if ok else 'NOT all'} within 1.5x CRB and surrogate within 20%")
    result["all_checks_pass"] = ok
    if args.json:
        write_json_atomic(result, args.json)
    return 0


def _cmd_bench(args) -> int:
    from rl_isac.evaluation.bench import run_bench
    from rl_isac.evaluation.harness import write_json_atomic

    if args.clusters and args.cluster_ppo:
        from rl_isac.rllib.bench_clusters import ppo_comparison, write_bench_clusters

        data = ppo_comparison(args.cluster_ppo, targets=args.cluster_targets[0], episodes=args.cluster_episodes,
                              blocks=args.cluster_blocks, seed=args.cluster_seed, fidelity=args.cluster_fidelity,
                              json_path=args.json or "results/clusters_ppo.json")
        print(data["table_md"])
        write_bench_clusters(data, data["json_path"])
        return 0
    if args.cluster_ppo:
        from rl_isac.errors import ConfigError

        raise ConfigError("--cluster-ppo", args.cluster_ppo, "needs --clusters")
    if args.clusters:
        from rl_isac.rllib.bench_clusters import bench_clusters, write_bench_clusters

        data = bench_clusters(targets=tuple(args.cluster_targets), episodes=args.cluster_episodes,
                              blocks=args.cluster_blocks, seed=args.cluster_seed,
                              env_episodes=1 if args.quick else 2, fidelity=args.cluster_fidelity,
                              policy_calls=5 if args.quick else 40, json_path=args.json or "results/clusters.json")
        print(data["table_md"])
        write_bench_clusters(data, data["protocol"]["json"])
        return 0
    if args.ppo_config is not None and not args.only_ppo:
        from rl_isac.errors import ConfigError

        raise ConfigError("--ppo-config", args.ppo_config, "applies to the PPO figures of --only-ppo only")
    if args.only_ppo:
        from rl_isac.rllib.bench import ppo_bench

        result = ppo_bench(quick=args.quick, config=args.ppo_config)
    else:
        result = run_bench(blocks=args.blocks, solver_trials=args.solver_trials, quick=args.quick, ppo=args.ppo)
    if args.json:
        write_json_atomic({**result, "provenance": _bench_provenance()}, args.json)
    return 0


def _bench_provenance() -> dict:
    """Where a benchmark ran: git revision, numpy's BLAS kernel, the CPU model and core count, the load and the UTC
    time. Timings of two machines differ by several times (the same code: dgnn-ppo's decision p50 3.8 ms on one
    2-core machine, 11.5 ms on another), so a figure is only read beside the machine it came from, and the ratios
    measured in one run (``ppo_over_floor``) are the ones to compare across runs."""
    import datetime
    import os
    from pathlib import Path

    from rl_isac.evaluation.harness import blas_kernel, git_revision

    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in (cpuinfo.read_text().splitlines() if cpuinfo.is_file() else [])
              if line.startswith("model name")]
    return {"git_revision": git_revision(), "blas_kernel": blas_kernel(), "cpu": models[0] if models else "unknown",
            "cores": os.cpu_count(), "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


def _cmd_dgnn_report(args) -> int:
    from rl_isac.evaluation.dgnn_report import dgnn_report
    from rl_isac.evaluation.harness import write_json_atomic

    r = dgnn_report(args.checkpoint, args.targets, args.episodes, args.blocks, args.seed, args.fidelity, args.driver)
    print(f"I={r['targets']} {r['fidelity']}: u_hat RMSE dgnn {r['dgnn']['rmse_now_m']:.4f} m vs ekf "
          f"{r['ekf']['rmse_now_m']:.4f} m; u_tilde dgnn {r['dgnn']['rmse_next_m']:.4f} m vs ekf "
          f"{r['ekf']['rmse_next_m']:.4f} m (per target); where neither is lost "
          f"({r['tracked_fraction']['now']:.3f} of target-blocks): u_hat dgnn {r['dgnn']['rmse_now_m_tracked']:.4f} vs "
          f"ekf {r['ekf']['rmse_now_m_tracked']:.4f}, u_tilde dgnn {r['dgnn']['rmse_next_m_tracked']:.4f} vs ekf "
          f"{r['ekf']['rmse_next_m_tracked']:.4f}; beam top1 {r['beam_top1']:.3f} top2 {r['beam_top2']:.3f}; "
          f"dgnn {r['dgnn_ms_p50']:.2f} ms/block p50 ({r['dgnn_ms_p99']:.2f} p99); pre-training "
          f"{r['pretrain_wall_time_s'] or float('nan'):.0f} s")
    if args.json:
        write_json_atomic(r, args.json)
    return 0


def _cmd_pretrain(args) -> int:
    from rl_isac.training.cli import pretrain_from_args

    return pretrain_from_args(args)


def _cmd_train_l2o(args) -> int:
    from rl_isac.tracking.dgnn.l2o import L2OConfig
    from rl_isac.training.l2o import train_l2o

    train_l2o(args.checkpoint, out_dir=args.out, episodes=args.episodes, val_episodes=args.val_episodes,
              blocks=args.blocks, epochs=args.epochs, lr=args.lr, seed=args.seed, fidelity=args.fidelity,
              progress=True, loss=args.loss, l2o_cfg=L2OConfig(objective_features=args.objective_features))
    return 0


COMMANDS = {"simulate": _cmd_simulate, "evaluate": _cmd_evaluate, "methods": _cmd_methods, "compare": _cmd_compare,
            "crb-check": _cmd_crb_check, "bench": _cmd_bench, "pretrain": _cmd_pretrain,
            "dgnn-report": _cmd_dgnn_report}

COMMANDS["train-l2o"] = _cmd_train_l2o
COMMANDS["reproduce"] = _cmd_reproduce
COMMANDS["train"] = _cmd_train
COMMANDS["ppo-ablation"] = _cmd_ppo_ablation


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.verb](args)
    except RlIsacError as exc:
        print(f"rl-isac {args.verb}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
