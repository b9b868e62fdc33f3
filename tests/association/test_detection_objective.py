"""The objective that counts detection: exact expectation over detection outcomes + a price per chain.

Every solver reads it; the MILP stays exact on it (MILP == exhaustive == brute force).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rl_isac.association import (
    ConvexSolver,
    ExhaustiveSolver,
    GreedySolver,
    MilpSolver,
    check_association,
    expected_association_cost,
    expected_subset_costs,
    make_solver,
    subset_costs,
    swap_refine,
    trace_inv_2x2,
)
from rl_isac.errors import ConfigError, RlIsacError


def random_detection(rng, num_bs, num_targets):
    """Detection probabilities mixing hopeless (< 0.05), unreliable and reliable pairs."""
    kind = rng.integers(0, 3, (num_bs, num_targets))
    return np.choose(kind, [rng.uniform(0.0, 0.05, kind.shape), rng.uniform(0.3, 0.9, kind.shape),
                            rng.uniform(0.95, 1.0, kind.shape)])


def brute_expected_cost(a, info, prior, p, price):
    """Independent reference: enumerate the detection outcomes of every target's BS set."""
    total = 0.0
    for i in range(a.shape[1]):
        bss = np.flatnonzero(a[:, i])
        expected = 0.0
        for outcome in itertools.product([False, True], repeat=len(bss)):
            weight = np.prod([p[m, i] if d else 1 - p[m, i] for m, d in zip(bss, outcome)])
            fim = prior[i] + sum((info[m, i] for m, d in zip(bss, outcome) if d), np.zeros((2, 2)))
            expected += weight * np.trace(np.linalg.inv(fim))
        total += expected * (1 + price) ** len(bss)
    return total


def brute_force_optimum(info, prior, p, price, num_rf):
    """Least objective over every 0/1 matrix with at most min(num_rf, I) targets per BS, all covered."""
    num_bs, num_targets = info.shape[:2]
    per_bs = min(num_rf, num_targets)
    best = np.inf
    for bits in itertools.product([False, True], repeat=num_bs * num_targets):
        a = np.array(bits).reshape(num_bs, num_targets)
        if (a.sum(axis=1) <= per_bs).all() and a.any(axis=0).all():
            best = min(best, brute_expected_cost(a, info, prior, p, price))
    return best


def test_expected_table_equals_the_enumeration_over_detection_outcomes(make_instance):
    rng = np.random.default_rng(40)
    for num_bs, num_targets in [(1, 1), (3, 2), (4, 3), (5, 2)]:
        info, prior = make_instance(rng, num_bs, num_targets)
        p = random_detection(rng, num_bs, num_targets)
        table = expected_subset_costs(info, prior, p, chain_price=0.1)
        for mask in range(1 << num_bs):
            a = np.array([[(mask >> m) & 1 for _ in range(num_targets)] for m in range(num_bs)], dtype=bool)
            want = brute_expected_cost(a, info, prior, p, 0.1)
            assert table[:, mask].sum() == pytest.approx(want, rel=1e-10)


def test_detection_one_and_no_price_is_the_plain_table(make_instance):
    info, prior = make_instance(np.random.default_rng(41), 4, 3)
    np.testing.assert_allclose(expected_subset_costs(info, prior, np.ones((4, 3))), subset_costs(info, prior),
                               rtol=1e-13)
    np.testing.assert_array_equal(expected_subset_costs(info, prior), subset_costs(info, prior))


def test_a_pair_never_detected_adds_nothing(make_instance):
    info, prior = make_instance(np.random.default_rng(42), 3, 2)
    p = np.ones((3, 2))
    p[1, 0] = 0.0
    table = expected_subset_costs(info, prior, p)
    np.testing.assert_allclose(table[0, 0b010], trace_inv_2x2(prior[0, 0, 0], prior[0, 0, 1], prior[0, 1, 1]))
    np.testing.assert_allclose(table[0, 0b011], table[0, 0b001])  # BS 1 joins without effect


def test_expectation_is_above_the_expected_information_form(make_instance):
    """Jensen: tr(inv(.)) is convex, so trace(inv(prior + sum p J)) <= E[cost] (why the exact form is used)."""
    rng = np.random.default_rng(43)
    info, prior = make_instance(rng, 4, 3)
    p = random_detection(rng, 4, 3)
    exact = expected_subset_costs(info, prior, p)
    optimistic = subset_costs(info * p[..., None, None], prior)
    assert np.all(exact >= optimistic * (1 - 1e-12))
    assert np.any(exact > optimistic * 1.01)


@pytest.mark.parametrize("price", [0.0, 0.02, 0.3])
def test_milp_equals_exhaustive_equals_brute_force_on_the_new_objective(price, make_instance):
    rng = np.random.default_rng({0.0: 44, 0.02: 45, 0.3: 46}[price])
    for num_bs, num_targets, num_rf in [(3, 3, 2), (2, 4, 2), (3, 2, 1), (2, 2, 3), (4, 3, 1), (3, 4, 2)]:
        info, prior = make_instance(rng, num_bs, num_targets)
        p = random_detection(rng, num_bs, num_targets)
        best = brute_force_optimum(info, prior, p, price, num_rf)
        for solver in (ExhaustiveSolver(chain_price=price), MilpSolver(chain_price=price)):
            a = solver.solve(info, prior, num_rf, detection_prob=p)
            check_association(a, num_rf)
            assert expected_association_cost(a, info, prior, p, price) == pytest.approx(best, rel=1e-9)
            assert brute_expected_cost(a, info, prior, p, price) == pytest.approx(best, rel=1e-9)


def test_milp_equals_exhaustive_with_idle_chains_on_every_path(make_instance):
    """M = 6, N_RF = 2, I = 3, 4 and instances with a fractional LP (M = 4, 5): the LP, DP and
    MILP-fallback paths all agree with exhaustive search."""
    rng = np.random.default_rng(47)
    price = 0.05
    exhaustive = ExhaustiveSolver(chain_price=price)
    milp, slow_dp, fallback = (MilpSolver(chain_price=price) for _ in range(3))
    slow_dp.dp_initial_gap = 1e-12
    fallback.dp_max_entries = 0
    fallback.restricted_columns = 1
    shapes = [(6, 4), (6, 3), (4, 5), (5, 5), (5, 4)]
    paths, idle, fractional = set(), 0, 0
    for step in range(600):
        num_bs, num_targets = shapes[step % len(shapes)]
        info, prior = make_instance(rng, num_bs, num_targets)
        prior = prior * 10.0 ** rng.uniform(-2, 2)  # vary the prior against the pair information
        p = random_detection(rng, num_bs, num_targets)
        a = milp.solve(info, prior, 2, detection_prob=p)
        is_fractional = not milp.last_stats["lp_integral"]
        if step >= 20 and not is_fractional:
            continue
        fractional += is_fractional
        a_exh = exhaustive.solve(info, prior, 2, detection_prob=p)
        best = expected_association_cost(a_exh, info, prior, p, price)
        idle += int((a_exh.sum(axis=1) < 2).sum())
        for solver in (milp, slow_dp, fallback):
            if solver is not milp:
                a = solver.solve(info, prior, 2, detection_prob=p)
            check_association(a, 2)
            paths.add(solver.last_stats["path"])
            assert expected_association_cost(a, info, prior, p, price) == pytest.approx(best, rel=1e-9)
        if fractional >= 3:
            break
    assert idle > 0, "no instance left a chain idle: the test does not exercise (5c) as an inequality"
    assert fractional >= 1 and {"lp", "dp", "milp"} <= paths, (fractional, paths)


def test_reduced_cost_dp_with_idle_chains_is_exact_for_any_prices(make_instance):
    """The DP on arbitrary (not LP) prices, slacks included, equals a brute force over feasible x."""
    from rl_isac.association.solvers import _reduced_cost_search, _SubsetShape

    rng = np.random.default_rng(48)
    num_bs, num_targets, per_bs = 3, 3, 2
    shape = _SubsetShape(num_bs, num_targets, per_bs, s_max=3, idle=True)
    for _ in range(20):
        reduced = rng.normal(size=(num_targets, shape.num_sets))
        slack = rng.normal(size=num_bs)
        best = np.inf
        for ks in itertools.product(range(shape.num_sets), repeat=num_targets):
            chosen = np.zeros((num_targets, shape.num_sets), dtype=bool)
            chosen[np.arange(num_targets), ks] = True
            if shape.is_feasible(chosen):
                best = min(best, reduced[chosen].sum() + shape.slack_value(slack, chosen))
        found, _, _ = _reduced_cost_search(reduced, shape, -np.inf, 1e-12, 1 << 20, slack)
        chosen = np.zeros_like(reduced, dtype=bool)
        chosen[np.arange(num_targets), found] = True
        assert shape.is_feasible(chosen)
        assert reduced[chosen].sum() + shape.slack_value(slack, chosen) == pytest.approx(best, abs=1e-12)


def test_a_hopeless_pair_gets_no_chain_and_the_chain_stays_idle():
    # 2 BSs, 2 targets, 2 chains each. BS 1 sees target 1 well, target 0 never (p = 0.01).
    info = np.tile(100.0 * np.eye(2), (2, 2, 1, 1))
    prior = np.tile(0.1 * np.eye(2), (2, 1, 1))
    p = np.array([[1.0, 1.0], [0.01, 1.0]])
    for name in ("greedy", "convex", "exhaustive", "milp"):
        a = make_solver(name, chain_price=0.05).solve(info, prior, 2, detection_prob=p)
        assert not a[1, 0], name
        assert a[0, 0] and a[:, 1].any(), name
    # without a price every chain is used (adding a pair never hurts the expected error)
    a = make_solver("milp").solve(info, prior, 2, detection_prob=p)
    assert a.all()


def test_an_unreliable_single_bs_makes_a_second_bs_worth_its_chain():
    """Exact expectation: the chance that the strong BS misses (the track coasts) is charged at the prior."""
    info = np.stack([100.0 * np.eye(2), 2.0 * np.eye(2)])[:, None]  # 2 BSs (strong, weak), 1 target
    prior = np.array([0.01 * np.eye(2)])
    reliable = np.array([[1.0], [0.99]])  # the weak BS would cut the error by 2 %: not worth a chain
    unreliable = np.array([[0.7], [0.99]])  # ... but it covers the 30 % the strong one misses
    for name in ("milp", "exhaustive", "greedy"):
        solver = make_solver(name, chain_price=0.05)
        np.testing.assert_array_equal(solver.solve(info, prior, 1, detection_prob=reliable)[:, 0], [True, False])
        np.testing.assert_array_equal(solver.solve(info, prior, 1, detection_prob=unreliable)[:, 0], [True, True])
    # the expected-information form would not see it: 0.7 * 100 = 70 >> 2 (why the exact expectation is used)
    optimistic = MilpSolver(chain_price=0.05).solve(info * unreliable[..., None, None], prior, 1)
    np.testing.assert_array_equal(optimistic[:, 0], [True, False])


@pytest.mark.parametrize("name", ["greedy", "convex", "convex-ls"])
def test_heuristics_are_feasible_and_never_beat_the_exact_optimum(name, make_instance):
    rng = np.random.default_rng(49)
    solver = ConvexSolver(local_search=True, chain_price=0.05) if name == "convex-ls" else \
        make_solver(name, chain_price=0.05)
    exact = MilpSolver(chain_price=0.05)
    for num_bs, num_targets in [(6, 4), (6, 6), (6, 8), (4, 3)]:
        info, prior = make_instance(rng, num_bs, num_targets)
        p = random_detection(rng, num_bs, num_targets)
        a = solver.solve(info, prior, 2, detection_prob=p)
        check_association(a, 2)
        best = expected_association_cost(exact.solve(info, prior, 2, detection_prob=p), info, prior, p, 0.05)
        assert expected_association_cost(a, info, prior, p, 0.05) >= best * (1 - 1e-9)


def test_swap_refine_with_idle_moves_never_increases_the_objective(make_instance):
    rng = np.random.default_rng(50)
    for num_bs, num_targets in [(6, 4), (6, 8), (3, 3)]:
        info, prior = make_instance(rng, num_bs, num_targets)
        p = random_detection(rng, num_bs, num_targets)
        start = GreedySolver().solve(info, prior, 2, detection_prob=p)  # all chains used
        refined = swap_refine(start, info, prior, detection_prob=p, chain_price=0.2, num_rf=2)
        check_association(refined, 2)
        assert expected_association_cost(refined, info, prior, p, 0.2) <= \
            expected_association_cost(start, info, prior, p, 0.2) * (1 + 1e-12)


def test_bad_detection_probabilities_and_prices_are_refused(make_instance):
    info, prior = make_instance(np.random.default_rng(51), 2, 2)
    with pytest.raises(RlIsacError, match=r"detection_prob\[1, 0\] = 1.5"):
        MilpSolver().solve(info, prior, 2, detection_prob=np.array([[1.0, 1.0], [1.5, 0.2]]))
    with pytest.raises(RlIsacError, match="shape"):
        GreedySolver().solve(info, prior, 2, detection_prob=np.ones((2, 3)))
    with pytest.raises(ConfigError, match="chain_price"):
        MilpSolver(chain_price=-0.1)
    with pytest.raises(ConfigError, match="chain_price"):
        make_solver("greedy", chain_price=float("nan"))
