"""The DGNN CU's beams: head beams, and the re-acquisition sweep where the anchor searches or is uncertain."""

from __future__ import annotations

import numpy as np
import torch

from rl_isac.controllers.composed import sweep_beams
from rl_isac.controllers.learned import DGNNEstimator, HeadBeams
from rl_isac.network import CellFreeNetwork
from rl_isac.physics.channel import geometry
from rl_isac.scenario import ScenarioConfig
from rl_isac.tracking.dgnn import DGNN, DGNNConfig

CFG = ScenarioConfig.paper(num_targets=3, fidelity="surrogate", window=4)


def _estimator_after_one_block() -> tuple[DGNNEstimator, np.ndarray]:
    torch.manual_seed(0)
    est = DGNNEstimator(CFG, DGNN(DGNNConfig(hidden_dim=16, ff_dim=32, tam_heads=2)).eval())
    net = CellFreeNetwork(CFG)
    acq = net.reset(seed=5)
    est.reset(acq)
    assoc = net.nearest_association(acq)
    _, prediction = est.update(net.step(assoc, net.beams_toward(acq), predicted_positions_m=acq))
    return est, prediction


def test_head_beams_sweep_for_a_searching_target_only() -> None:
    est, prediction = _estimator_after_one_block()
    head = np.asarray(est.last["beams"])
    assert est.searching is not None and not est.searching.any()
    beams = HeadBeams(CFG).select(prediction, est)
    wide = HeadBeams(CFG).geometric.wide_pairs(*geometry(np.asarray(CFG.bs_positions_m), prediction), est)
    np.testing.assert_array_equal(beams[~wide], head[~wide])
    est.window._ekf.missed[1] = 1000  # the anchor lost target 1: it searches
    assert est.searching.tolist() == [False, True, False]
    beams = HeadBeams(CFG).select(prediction, est)
    _, angle = geometry(np.asarray(CFG.bs_positions_m), prediction)
    np.testing.assert_array_equal(beams[:, 1], sweep_beams(np.cos(angle[:, 1]), CFG.codebook_size,
                                                           CFG.num_tracking_symbols))
    assert not np.array_equal(beams[:, 1], head[:, 1])
    np.testing.assert_array_equal(HeadBeams(CFG, widen=False).select(prediction, est), head)
