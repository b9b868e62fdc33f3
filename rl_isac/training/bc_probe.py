"""Behaviour-cloning pair recall with and without the actor's detection features (issue 9, the imitation ceiling).

``python -m rl_isac.training.bc_probe --targets 8 --episodes 12 --val-episodes 4 --epochs 10 --out OUT.json``

Collects ``dgnn-milp``-driven episodes once on *training* world seeds (``training_world_seed(seed, 2, e)``, never
evaluation seeds; :func:`rl_isac.rllib.warm_start.collect`, observations with ``pair_detect``), then fits two
fresh modules of the same seed on the same data with the warm start's loss and optimiser
(:func:`rl_isac.rllib.warm_start._fit`): ``detection_features`` off (the shipped checkpoints' module), on, and
on with ``milp_features``.
Reports each one's greedy validation pair recall and exact-association rate against the expert after every epoch
(the figures the warm start logs), and the wall time. A module without an option ignores its key, so all
see exactly the same samples.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def probe(targets: int, pretrained: str, episodes: int = 12, val_episodes: int = 4, epochs: int = 10,
          seed: int = 0, hidden: int = 64, fidelity: str = "surrogate", blocks: int = 100, echo=print) -> dict:
    import numpy as np
    import torch

    from rl_isac.rllib.callbacks import MODULE_ID
    from rl_isac.rllib.config import PPOTrainConfig, module_spec
    from rl_isac.rllib.warm_start import _encode_all, _fit, collect
    from rl_isac.scenario import ScenarioConfig
    from rl_isac.training.pretrain import load_configs

    cfg = ScenarioConfig.paper(targets, fidelity=fidelity, num_blocks=blocks)
    dgnn = load_configs(Path(pretrained))["dgnn"].to_dict()
    t0 = time.perf_counter()
    train = collect(cfg, "dgnn-milp", pretrained, episodes, seed, 0.95, detection=True, milp=True)
    val = collect(cfg, "dgnn-milp", pretrained, val_episodes, seed, 0.95, first_episode=episodes, detection=True,
                  milp=True)
    collect_s = time.perf_counter() - t0
    echo(f"collected {len(train['pairs'])} + {len(val['pairs'])} samples in {collect_s:.0f} s")
    out = {"targets": targets, "pretrained": str(pretrained), "episodes": episodes, "val_episodes": val_episodes,
           "epochs": epochs, "seed": seed, "hidden": hidden, "fidelity": fidelity, "blocks": blocks,
           "world_seeds": "training_world_seed(seed, 2, e), e = 0 .. episodes + val_episodes - 1",
           "collect_s": collect_s, "variants": {}}
    for name, det, milp in (("plain", False, False), ("detection_features", True, False),
                            ("detection_features+milp_features", True, True)):
        t1 = time.perf_counter()
        torch.manual_seed(seed)
        tcfg = PPOTrainConfig(hidden=hidden, detection_features=det, milp_features=milp)
        module = module_spec(dgnn, str(Path(pretrained) / "model.pt"), tcfg, cfg).rl_module_specs[MODULE_ID].build()
        enc_val = _encode_all(module, val)
        params = [p for n, p in module.named_parameters() if p.requires_grad and not n.startswith("dgnn.")]
        opt = torch.optim.Adam(params, lr=1e-3)
        history = _fit(module, train, val, enc_val, opt, params, epochs, 128, seed, 0.5,
                       lambda s, name=name: echo(f"[{name}] {s}"), 0)
        recall = [h["pair_recall"] for h in history]
        out["variants"][name] = {"history": history, "final": history[-1],
                                 "best_pair_recall": float(np.max(recall)),
                                 "mean_last3_pair_recall": float(np.mean(recall[-3:])),
                                 "fit_s": time.perf_counter() - t1}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, required=True)
    ap.add_argument("--pretrained", default=None,
                    help="phase-1 checkpoint (default results/checkpoints/dgnn-I<targets>)")
    ap.add_argument("--episodes", type=int, default=12)
    ap.add_argument("--val-episodes", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    pre = a.pretrained or f"results/checkpoints/dgnn-I{a.targets}"
    res = probe(a.targets, pre, a.episodes, a.val_episodes, a.epochs, a.seed, a.hidden)
    res["command"] = ("python -m rl_isac.training.bc_probe " + " ".join(argv) if argv is not None else None)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    for k, v in res["variants"].items():
        print(f"{k}: final pair recall {v['final']['pair_recall']:.3f}, exact {v['final']['exact_association']:.3f}, "
              f"mean of last 3 epochs {v['mean_last3_pair_recall']:.3f}")


if __name__ == "__main__":
    main()
