"""The dgnn-l2o feasibility repair never breaks (5c)-(5e) and is lossless on a perfect prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rl_isac.association import chains_per_bs, check_association, make_solver, uses_all_chains
from rl_isac.errors import ConfigError
from rl_isac.tracking.dgnn.l2o import L2OConfig, L2OHead, repair
from rl_isac.training.pretrain import random_association


def _sizes(rng: np.random.Generator):
    num_bs = int(rng.integers(2, 7))
    num_rf = int(rng.integers(1, 4))
    num_targets = int(rng.integers(num_rf, num_bs * num_rf + 1))
    return num_bs, num_targets, num_rf


def test_repair_is_always_feasible_uses_every_chain_and_covers_every_target() -> None:
    rng = np.random.default_rng(0)
    for trial in range(400):
        M, I, n = _sizes(rng)
        kind = trial % 4
        if kind == 0:
            scores = rng.standard_normal((M, I))
        elif kind == 1:  # heavy ties
            scores = rng.integers(0, 2, (M, I)).astype(float)
        elif kind == 2:  # one BS (or one target) dominates everything
            scores = rng.standard_normal((M, I))
            scores[rng.integers(M)] += 100.0
            scores[:, rng.integers(I)] += 50.0
        else:  # non-finite scores
            scores = rng.choice([np.nan, np.inf, -np.inf, 0.0, 1.0], size=(M, I))
        a = repair(scores, n)
        check_association(a, n, shape=(M, I))
        assert uses_all_chains(a, n)


def test_repair_of_an_optimum_returns_it_exactly() -> None:
    rng = np.random.default_rng(1)
    milp = make_solver("milp")
    for _ in range(150):
        M, I, n = _sizes(rng)
        target = random_association(M, I, n, rng=rng)
        np.testing.assert_array_equal(repair(target.astype(float), n), target)
        # any scores that rank A* above every other pair decode to A*
        noisy = np.where(target, 1.0 + rng.random((M, I)), rng.random((M, I)))
        np.testing.assert_array_equal(repair(noisy, n), target)
    for _ in range(20):
        M, I, n = _sizes(rng)
        info = np.einsum("mixy,mizy->mixz", *(2 * [rng.standard_normal((M, I, 2, 2))])) + 1e-3 * np.eye(2)
        prior = np.tile(0.1 * np.eye(2), (I, 1, 1))
        best = milp.solve(info, prior, n)
        np.testing.assert_array_equal(repair(best.astype(np.float32), n), best)


def test_repair_with_fewer_targets_than_chains_tracks_every_target_from_every_bs() -> None:
    a = repair(np.random.default_rng(2).standard_normal((4, 2)), num_rf=3)
    assert a.all() and chains_per_bs(2, 3) == 2


def test_repair_rejects_infeasible_sizes_and_bad_shapes() -> None:
    with pytest.raises(ConfigError):
        repair(np.zeros((2, 5)), num_rf=2)
    with pytest.raises(ConfigError):
        repair(np.zeros(6), num_rf=2)


def test_head_serves_any_target_count_and_permutes_with_the_targets() -> None:
    torch.manual_seed(0)
    head = L2OHead(L2OConfig(embedding_dim=8, hidden_dim=16))
    rng = np.random.default_rng(3)
    M, I = 6, 5
    dgnn_out = {"target_embedding": rng.standard_normal((I, 8)), "u_tilde": rng.uniform(0, 300, (I, 2))}
    obs = {"bs_positions": rng.uniform(0, 1, (M, 2)), "scales_m": np.array([300.0, 5.0, 424.0]),
           "anchor_log_std": rng.standard_normal(I), "anchor_age": rng.random(I)}
    s = head.scores(dgnn_out, obs)
    assert s.shape == (M, I) and np.isfinite(s).all()
    perm = rng.permutation(I)
    s_perm = head.scores({k: v[perm] for k, v in dgnn_out.items()},
                         {**obs, "anchor_log_std": obs["anchor_log_std"][perm], "anchor_age": obs["anchor_age"][perm]})
    np.testing.assert_allclose(s_perm, s[:, perm], rtol=1e-5, atol=1e-5)


def test_stop_token_repair_is_feasible_and_returns_an_idle_chain_optimum_exactly() -> None:
    rng = np.random.default_rng(5)
    milp = make_solver("milp", chain_price=0.05)
    idle_seen = 0
    for trial in range(200):
        M, I, n = _sizes(rng)
        scores = rng.choice([np.nan, np.inf, -np.inf, -1.0, 1.0], size=(M, I)) if trial % 5 == 0 else \
            rng.standard_normal((M, I))
        a = repair(scores, n, stop_score=0.0)
        check_association(a, n, shape=(M, I))  # (5c)-(5e), every target covered, chains may idle
        if trial % 4 == 0:  # an optimum of the detection-counting objective (idle chains): logits > 0 on A*
            info = np.einsum("mixy,mizy->mixz", *(2 * [rng.standard_normal((M, I, 2, 2))])) + 1e-3 * np.eye(2)
            prior = np.tile(0.1 * np.eye(2), (I, 1, 1))
            best = milp.solve(info, prior, n, detection_prob=rng.uniform(0, 1, (M, I)))
            idle_seen += int(not uses_all_chains(best, n))
            logits = np.where(best, 0.1 + rng.random((M, I)), -0.1 - rng.random((M, I)))
            np.testing.assert_array_equal(repair(logits, n, stop_score=0.0), best)
    assert idle_seen > 0
    # without a STOP score the decoding still fills every chain (heads trained on full-chain labels)
    assert uses_all_chains(repair(-np.ones((3, 4)), 2), 2)
    assert repair(-np.ones((3, 4)), 2, stop_score=0.0).sum() == 4  # cover (5d), then STOP
