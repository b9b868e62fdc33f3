"""The dgnn-ppo CU with and without the estimator's single-echo fit test (issue 7 / 9).

A development study (training-side worlds ``training_world_seed(7, 2, e)`` only, never an evaluation seed), signal
level, 100 blocks, the committed ``results/checkpoints/ppo-I{I}``. ``on``: the estimator as shipped
(``estimation.MISMATCH_PFA`` at its default); ``off``: the test switched off (``MISMATCH_PFA = None``), the
estimator of 44e97cd. Lost: target-blocks with an error above 5 m; free-lost: the same with estimates matched to
targets whatever their labels (swaps not counted); bad: episodes with an RMSE above 1 m.

    python results/ppo_dev/fit_test_ppo.py I FIRST N on|off [SETTINGS] >> results/ppo_dev/fit_test_ppo.txt

``SETTINGS``: a JSON object of :class:`rl_isac.tracking.EKFSettings` fields for the window's EKF anchor (default
``{}``: the shipped settings), e.g. ``'{"unexplained_is_miss": true}'``.
"""
import functools
import json
import sys
import time

import rl_isac  # noqa: F401 (first: it pins OpenBLAS's kernel before numpy loads, rl_isac/__init__.py)
import numpy as np

from rl_isac.evaluation.harness import git_revision, unlabelled_squared_errors
from rl_isac.network import CellFreeNetwork
from rl_isac.physics import estimation
from rl_isac.rllib.controller import PPOController, load_module
from rl_isac.scenario import ScenarioConfig
from rl_isac.seeds import training_world_seed
from rl_isac.tracking import EKFEstimator, EKFSettings, window

if len(sys.argv) not in (5, 6):
    raise SystemExit(f"usage: python results/ppo_dev/fit_test_ppo.py I FIRST N on|off [SETTINGS] (got {sys.argv[1:]})")
I, first, N, variant = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
settings = json.loads(sys.argv[5]) if len(sys.argv) == 6 else {}
if settings:  # the window builds its anchor as EKFEstimator(cfg): give it these settings
    window.EKFEstimator = functools.partial(EKFEstimator, settings=EKFSettings(**settings))
if variant not in ("on", "off"):
    raise SystemExit(f"variant must be on or off, got {variant!r}")
if variant == "off":
    estimation.MISMATCH_PFA = None
cfg = ScenarioConfig.paper(I, fidelity="signal").replace(num_blocks=100)
module = load_module(f"results/checkpoints/ppo-I{I}")
t0 = time.time()
sq, free = [], []
for e in range(first, first + N):
    cu = PPOController(cfg, module)
    net = CellFreeNetwork(cfg)
    a = cu.reset(net.reset(training_world_seed(7, 2, e)))
    err, err_free = [], []
    for _ in range(cfg.num_blocks):
        a = cu.act(net.step(a.association, a.beams, predicted_positions_m=a.prediction_m))
        est = np.asarray(a.estimate_m, float)
        err.append(np.sum((est - net.positions_m) ** 2, axis=1))
        err_free.append(unlabelled_squared_errors(net.positions_m, est))
    sq.append(err)
    free.append(err_free)
sq, free = np.asarray(sq), np.asarray(free)
ep = np.sqrt(sq.mean(axis=(1, 2)))
bad = {first + i: round(float(x), 2) for i, x in enumerate(ep) if x > 1.0}
tag = f"{variant} {json.dumps(settings)}" if settings else variant
print(f"{tag} I={I} worlds {first}-{first + N - 1}, git {git_revision()}: RMSE {np.sqrt(sq.mean()):.3f} m, "
      f"median episode {np.median(ep):.3f}, lost {np.mean(sq > 25.0):.4f}, free-lost {np.mean(free > 25.0):.4f}; "
      f"bad episodes {bad} ({time.time() - t0:.0f} s)")
