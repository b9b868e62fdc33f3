"""dgnn-ppo's CU re-acquires like every DGNN CU: searching targets sweep K beams instead of the head's beams."""

from __future__ import annotations

import numpy as np

from rl_isac.controllers.composed import sweep_beams
from rl_isac.network import CellFreeNetwork
from rl_isac.physics.channel import geometry
from rl_isac.scenario import ScenarioConfig
from rl_isac.tracking.window import MeasurementWindow


def test_searching_target_sweeps_and_the_others_keep_the_head_beams(module4, monkeypatch):
    from rl_isac.rllib.controller import PPOController

    cfg = ScenarioConfig.paper(4, fidelity="surrogate", num_blocks=6)
    net = CellFreeNetwork(cfg)
    acq = net.reset(12345)
    ctrls = {w: PPOController(cfg, module4, widen=w) for w in (False, True)}
    acts = {w: c.reset(acq) for w, c in ctrls.items()}
    meas = net.step(acts[False].association, acts[False].beams, predicted_positions_m=acts[False].prediction_m)
    quiet = {w: c.act(meas) for w, c in ctrls.items()}
    # a well-tracked start: nothing is wide, the sweep changes nothing
    assert not ctrls[True].geometric.wide_pairs(*geometry(ctrls[True].geometric.bs_positions_m,
                                                          quiet[True].prediction_m), ctrls[True]).any()
    assert np.array_equal(quiet[True].beams, quiet[False].beams)
    # the anchor searches for target 2: its pairs (every BS) sweep around the prediction, the others do not move
    searching = np.array([False, False, True, False])
    monkeypatch.setattr(MeasurementWindow, "searching", property(lambda self: searching))
    acts = {w: c.act(meas) for w, c in ctrls.items()}
    head, swept = acts[False].beams, acts[True].beams
    _, angle = geometry(np.asarray(cfg.bs_positions_m, float), acts[True].prediction_m)
    expect = sweep_beams(np.cos(angle[:, 2]), cfg.codebook_size, cfg.num_tracking_symbols)
    assert np.array_equal(swept[:, 2], expect) and not np.array_equal(head[:, 2], expect)
    keep = np.ones(cfg.num_targets, bool)
    keep[2] = False
    assert np.array_equal(swept[:, keep], head[:, keep])
    assert np.array_equal(acts[True].association, acts[False].association)  # beams only, the pairs are the policy's
