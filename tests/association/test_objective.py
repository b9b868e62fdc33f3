"""Myopic posterior-error objective: closed forms against plain numpy loops."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rl_isac.association import (
    association_cost,
    max_bs_per_target,
    subset_costs,
    subset_sizes,
    target_costs,
    trace_inv_2x2,
)
from rl_isac.errors import ConstraintViolation, RlIsacError


def brute_cost(association, info, prior_info):
    """sum_i trace(inv(prior_i + sum_m A[m, i] info[m, i])) with np.linalg.inv, one target at a time."""
    total = 0.0
    for i in range(prior_info.shape[0]):
        fim = prior_info[i] + sum(info[m, i] for m in range(info.shape[0]) if association[m, i])
        total += np.trace(np.linalg.inv(fim))
    return total


def test_association_cost_matches_brute_force(make_instance):
    rng = np.random.default_rng(0)
    for _ in range(20):
        num_bs, num_targets = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        info, prior = make_instance(rng, num_bs, num_targets)
        a = rng.random((num_bs, num_targets)) < 0.5
        assert association_cost(a, info, prior) == pytest.approx(brute_cost(a, info, prior), rel=1e-10)
        assert association_cost(a.astype(int), info, prior) == pytest.approx(brute_cost(a, info, prior), rel=1e-10)


def test_hand_computed_example():
    info = np.zeros((2, 1, 2, 2))
    info[0, 0] = np.diag([4.0, 0.0])  # BS 0: x information only
    info[1, 0] = np.diag([0.0, 9.0])  # BS 1: y information only
    prior = np.eye(2)[None]  # 1 m^2 prior variance each axis
    assert association_cost([[0], [0]], info, prior) == pytest.approx(2.0)
    assert association_cost([[1], [0]], info, prior) == pytest.approx(1 / 5 + 1)
    assert association_cost([[1], [1]], info, prior) == pytest.approx(1 / 5 + 1 / 10)


def test_batched_costs_equal_one_at_a_time(make_instance):
    rng = np.random.default_rng(1)
    info, prior = make_instance(rng, 3, 4)
    batch = rng.random((5, 2, 3, 4)) < 0.5
    costs = association_cost(batch, info, prior)
    assert costs.shape == (5, 2)
    for idx in np.ndindex(5, 2):
        assert costs[idx] == pytest.approx(brute_cost(batch[idx], info, prior), rel=1e-10)
    assert target_costs(batch, info, prior).shape == (5, 2, 4)


def test_adding_a_bs_never_increases_a_target_cost(make_instance):
    rng = np.random.default_rng(2)
    info, prior = make_instance(rng, 4, 3)
    table = subset_costs(info, prior)
    for s in range(1, 16):
        for m in range(4):
            assert np.all(table[:, s | (1 << m)] <= table[:, s] * (1 + 1e-12))


def test_subset_cost_table_matches_a_loop_over_bitmasks(make_instance):
    rng = np.random.default_rng(3)
    num_bs, num_targets = 5, 3
    info, prior = make_instance(rng, num_bs, num_targets)
    table = subset_costs(info, prior)
    assert table.shape == (num_targets, 2 ** num_bs)
    for mask in range(2 ** num_bs):
        a = np.array([[(mask >> m) & 1] * num_targets for m in range(num_bs)], dtype=bool)
        np.testing.assert_allclose(table[:, mask], target_costs(a, info, prior), rtol=1e-10)
    np.testing.assert_allclose(table[:, 0], [np.trace(np.linalg.inv(p)) for p in prior], rtol=1e-12)


def test_subsets_beyond_the_size_limit_are_skipped_as_inf(make_instance):
    rng = np.random.default_rng(4)
    info, prior = make_instance(rng, 4, 2)
    full = subset_costs(info, prior)
    limited = subset_costs(info, prior, max_subset_size=2)
    sizes = subset_sizes(4)
    assert np.isinf(limited[:, sizes > 2]).all()
    np.testing.assert_array_equal(limited[:, sizes <= 2], full[:, sizes <= 2])


def test_subset_sizes_are_popcounts():
    np.testing.assert_array_equal(subset_sizes(3), [bin(s).count("1") for s in range(8)])


@pytest.mark.parametrize(("num_bs", "num_targets", "num_rf", "expected"), [
    (6, 8, 2, 5), (6, 4, 2, 6), (12, 24, 2, 1), (6, 12, 2, 1), (3, 1, 2, 3), (4, 2, 3, 4),
])
def test_max_bs_per_target(num_bs, num_targets, num_rf, expected):
    assert max_bs_per_target(num_bs, num_targets, num_rf) == expected
    # brute force: largest column sum over associations of the solvers' form
    if num_bs <= 4:
        per_bs = min(num_rf, num_targets)
        combos = list(itertools.combinations(range(num_targets), per_bs))
        best = 0
        for pick in itertools.product(combos, repeat=num_bs):
            a = np.zeros((num_bs, num_targets), bool)
            for m, c in enumerate(pick):
                a[m, list(c)] = True
            if a.any(axis=0).all():
                best = max(best, int(a.sum(axis=0).max()))
        assert best == expected


def test_large_preset_table_is_fast_enough(make_instance):
    import time

    rng = np.random.default_rng(5)
    info, prior = make_instance(rng, 12, 24)
    start = time.perf_counter()
    table = subset_costs(info, prior, max_subset_size=1)
    assert time.perf_counter() - start < 0.5
    assert table.shape == (24, 4096) and np.isfinite(table[:, subset_sizes(12) == 1]).all()


def test_trace_inv_2x2_closed_form_and_singular_case():
    mat = np.array([[3.0, 1.0], [1.0, 2.0]])
    assert trace_inv_2x2(3.0, 1.0, 2.0) == pytest.approx(np.trace(np.linalg.inv(mat)))
    assert np.isinf(trace_inv_2x2(1.0, 1.0, 1.0))


def test_bad_inputs_are_refused(make_instance):
    rng = np.random.default_rng(6)
    info, prior = make_instance(rng, 2, 3)
    with pytest.raises(RlIsacError, match="shape"):
        subset_costs(info[..., 0], prior)
    with pytest.raises(RlIsacError, match="prior_info must have shape"):
        subset_costs(info, prior[:2])
    not_psd = info.copy()
    not_psd[1, 2] = np.diag([1.0, -1.0])
    with pytest.raises(RlIsacError, match=r"info\[1, 2\] is not positive semi-definite"):
        subset_costs(not_psd, prior)
    singular = prior.copy()
    singular[0] = np.diag([1.0, 0.0])
    with pytest.raises(RlIsacError, match=r"prior_info\[0\] must be positive definite"):
        association_cost(np.ones((2, 3)), info, singular)
    with pytest.raises(RlIsacError, match="non-finite"):
        subset_costs(np.full_like(info, np.nan), prior)
    with pytest.raises(ConstraintViolation, match=r"\(5e\)"):
        association_cost(np.ones((3, 3)), info, prior)
    with pytest.raises(ConstraintViolation, match=r"\(5e\)"):
        association_cost(np.full((2, 3), 0.5), info, prior)
