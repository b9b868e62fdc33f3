"""Speed paths of the env step give the same numbers: the PCRB's Fisher information of the chosen pairs only."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.parametrize("targets", [4, 8])
def test_pair_information_of_chosen_pairs_is_bit_identical(targets):
    """CellFreeNetwork.expected_information_pairs equals expected_information on the chosen pairs, bit for bit,
    and is zero elsewhere (random positions over the area, random beams, random pair sets)."""
    from rl_isac.network import CellFreeNetwork
    from rl_isac.scenario import ScenarioConfig

    cfg = ScenarioConfig.paper(targets)
    net = CellFreeNetwork(cfg)
    net.reset(1)
    rng = np.random.default_rng(targets)
    for _ in range(150):
        pos = rng.uniform([0.0, 0.0], cfg.area_size_m, size=(targets, 2))
        beams = rng.integers(0, cfg.codebook_size, size=(cfg.num_bs, targets, cfg.num_tracking_symbols, 2))
        pairs = rng.random((cfg.num_bs, targets)) < rng.uniform(0.05, 0.9)
        full = net.expected_information(pos, beams)
        part = net.expected_information_pairs(pos, beams, pairs)
        np.testing.assert_array_equal(part[pairs], full[pairs])
        assert np.all(part[~pairs] == 0.0)
    assert not net.expected_information_pairs(pos, beams, np.zeros_like(pairs)).any()


def test_env_pcrb_is_unchanged_by_the_chosen_pairs_path(monkeypatch):
    """A surrogate episode of the env with the PCRB step on every pair (the previous code) and on the chosen pairs:
    the same rewards, PCRB and infos, bit for bit."""
    from rl_isac.association.constraints import association_to_sub_actions
    from rl_isac.network import CellFreeNetwork
    from rl_isac.rllib.env import ISACMultiAgentEnv

    def episode():
        env = ISACMultiAgentEnv({"targets": 6, "blocks": 25, "fidelity": "surrogate"})
        env.reset(seed=4)
        rows = []
        for _ in range(25):
            assoc = env.world.nearest_association(env.window.anchor_next_m)
            M, I, K = env.cfg.num_bs, env.cfg.num_targets, env.cfg.num_tracking_symbols
            beams = np.random.default_rng(len(rows)).integers(0, env.cfg.codebook_size, size=(M, I, K, 2))
            act = {"pairs": association_to_sub_actions(assoc, env.cfg.num_rf), "beams": beams.reshape(-1),
                   "estimate": env.window.anchor_next_m.reshape(-1).astype(np.float32)}
            _, rew, _, _, infos = env.step({"cu_0": act})
            rows.append((rew["cu_0"], infos["cu_0"]["pcrb_m2"], env._pcrb_cov.copy()))
        return rows

    new = episode()
    monkeypatch.setattr(CellFreeNetwork, "expected_information_pairs",
                        lambda self, positions_m, beams, pairs: self.expected_information(positions_m, beams))
    old = episode()
    for (r_new, p_new, c_new), (r_old, p_old, c_old) in zip(new, old):
        assert r_new == r_old and p_new == p_old
        np.testing.assert_array_equal(c_new, c_old)
