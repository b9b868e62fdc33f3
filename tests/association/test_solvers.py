"""Association solvers: feasibility, exactness (MILP == exhaustive == brute force), refusal, import hygiene."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest

from rl_isac.association import (
    SOLVERS,
    AssociationSolver,
    ConvexSolver,
    ExhaustiveSearchTooLarge,
    ExhaustiveSolver,
    GreedySolver,
    MilpSolver,
    association_cost,
    check_association,
    exhaustive_candidate_count,
    make_solver,
    swap_refine,
    uses_all_chains,
)
from rl_isac.errors import ConfigError, RlIsacError

SIZES = [(1, 1, 2), (1, 2, 2), (3, 1, 2), (2, 3, 3), (4, 3, 2), (6, 4, 2), (6, 6, 2), (6, 8, 2), (6, 12, 2),
         (5, 5, 1), (4, 9, 3), (3, 7, 3)]  # (M, I, num_rf), I <= M * num_rf


def brute_force_optimum(info, prior_info, num_rf):
    """Minimum cost over every 0/1 matrix with min(num_rf, I) targets per BS and every target covered."""
    num_bs, num_targets = info.shape[:2]
    per_bs = min(num_rf, num_targets)
    best = np.inf
    for bits in itertools.product([False, True], repeat=num_bs * num_targets):
        a = np.array(bits).reshape(num_bs, num_targets)
        if (a.sum(axis=1) == per_bs).all() and a.any(axis=0).all():
            best = min(best, association_cost(a, info, prior_info))
    return best


def assert_full_feasible(a, num_bs, num_targets, num_rf):
    assert a.shape == (num_bs, num_targets) and a.dtype == np.bool_
    check_association(a, num_rf)
    assert uses_all_chains(a, num_rf)
    np.testing.assert_array_equal(a.sum(axis=1), min(num_rf, num_targets))


@pytest.mark.parametrize("name", ["greedy", "convex", "milp"])
def test_solver_always_returns_a_feasible_association_using_every_chain(name, make_instance):
    rng = np.random.default_rng(10)
    solver = make_solver(name)
    for num_bs, num_targets, num_rf in SIZES:
        for _ in range(2):
            info, prior = make_instance(rng, num_bs, num_targets)
            a = solver.solve(info, prior, num_rf)
            assert_full_feasible(a, num_bs, num_targets, num_rf)


def test_greedy_handles_degenerate_information(make_instance):
    rng = np.random.default_rng(11)
    _, prior = make_instance(rng, 4, 6)
    for info in (np.zeros((4, 6, 2, 2)), np.tile(np.diag([1.0, 0.0]), (4, 6, 1, 1))):
        for name in ("greedy", "convex", "milp"):
            assert_full_feasible(make_solver(name).solve(info, prior, 2), 4, 6, 2)


def test_milp_and_exhaustive_agree_on_the_optimum(make_instance):
    rng = np.random.default_rng(12)
    milp, exhaustive = MilpSolver(), ExhaustiveSolver()
    for _ in range(40):
        num_bs, num_targets = int(rng.integers(4, 7)), int(rng.integers(3, 6))
        num_rf = 2
        info, prior = make_instance(rng, num_bs, num_targets)
        a_milp = milp.solve(info, prior, num_rf)
        a_exh = exhaustive.solve(info, prior, num_rf)
        assert_full_feasible(a_exh, num_bs, num_targets, num_rf)
        cost_milp, cost_exh = association_cost(a_milp, info, prior), association_cost(a_exh, info, prior)
        assert cost_milp == pytest.approx(cost_exh, rel=1e-9, abs=0)
        # and both are at least as good as the heuristics
        for heuristic in (GreedySolver(),):
            assert cost_exh <= association_cost(heuristic.solve(info, prior, num_rf), info, prior) * (1 + 1e-12)


def test_milp_branch_and_bound_path_agrees_with_exhaustive(make_instance):
    """Instances whose LP relaxation is fractional go through reduced-cost fixing and the MILP."""
    rng = np.random.default_rng(0)
    milp, exhaustive = MilpSolver(), ExhaustiveSolver()
    found = 0
    for _ in range(400):
        num_bs, num_rf = int(rng.integers(2, 7)), int(rng.integers(1, 4))
        num_targets = int(rng.integers(1, min(6, num_bs * num_rf) + 1))
        if exhaustive_candidate_count(num_bs, num_targets, num_rf) > 2_000_000:
            continue
        info, prior = make_instance(rng, num_bs, num_targets)
        a_milp = milp.solve(info, prior, num_rf)
        if milp.last_stats["lp_integral"]:
            continue
        found += 1
        a_exh = exhaustive.solve(info, prior, num_rf)
        assert association_cost(a_milp, info, prior) == pytest.approx(association_cost(a_exh, info, prior), rel=1e-9)
        # a tiny restricted MILP leaves survivors outside it: the final MILP on the survivors must still be exact
        tiny = MilpSolver()
        tiny.restricted_columns = 1
        a_tiny = tiny.solve(info, prior, num_rf)
        assert association_cost(a_tiny, info, prior) == pytest.approx(association_cost(a_exh, info, prior), rel=1e-9)
        if found == 2:
            break
    assert found >= 1, "no instance with a fractional LP relaxation was drawn"


def test_milp_column_generation_matches_the_full_lp(make_instance):
    """Above ``full_lp_columns`` the LP is built by column generation; the optimum must not change."""
    rng = np.random.default_rng(20)
    for _ in range(3):
        info, prior = make_instance(rng, 7, 6)  # 6 * 127 = 762 columns
        reference = MilpSolver()
        generated = MilpSolver()
        generated.full_lp_columns = 10
        a_ref, a_gen = reference.solve(info, prior, 2), generated.solve(info, prior, 2)
        assert association_cost(a_gen, info, prior) == pytest.approx(association_cost(a_ref, info, prior), rel=1e-9)


def test_exhaustive_and_milp_match_an_independent_brute_force(make_instance):
    rng = np.random.default_rng(13)
    for num_bs, num_targets, num_rf in [(3, 3, 2), (2, 4, 2), (3, 2, 1), (2, 2, 3), (4, 3, 1)]:
        info, prior = make_instance(rng, num_bs, num_targets)
        best = brute_force_optimum(info, prior, num_rf)
        for solver in (ExhaustiveSolver(), MilpSolver()):
            assert association_cost(solver.solve(info, prior, num_rf), info, prior) == pytest.approx(best, rel=1e-12)


def test_exhaustive_search_chunks_give_the_same_answer(make_instance):
    rng = np.random.default_rng(14)
    info, prior = make_instance(rng, 5, 4)
    reference = ExhaustiveSolver().solve(info, prior, 2)
    for block in (1, 7, 100, 5000):
        np.testing.assert_array_equal(ExhaustiveSolver(block_entries=block).solve(info, prior, 2), reference)


def test_exhaustive_refuses_the_paper_I8_case_with_the_count_and_memory_in_the_message(make_instance):
    info, prior = make_instance(np.random.default_rng(15), 6, 8)
    with pytest.raises(ExhaustiveSearchTooLarge) as err:
        ExhaustiveSolver().solve(info, prior, 2)
    assert err.value.count == 28 ** 6 == exhaustive_candidate_count(6, 8, 2)
    msg = str(err.value)
    assert str(28 ** 6) in msg and "bytes" in msg and str(28 ** 6 * 8 * 8) in msg
    assert isinstance(err.value, RlIsacError)


def test_exhaustive_budget_is_configurable(make_instance):
    info, prior = make_instance(np.random.default_rng(16), 6, 4)
    with pytest.raises(ExhaustiveSearchTooLarge, match="46656"):
        ExhaustiveSolver(max_candidates=1000).solve(info, prior, 2)
    assert_full_feasible(ExhaustiveSolver(max_candidates=46656).solve(info, prior, 2), 6, 4, 2)


def test_convex_relaxation_is_fractional_feasible_and_rounding_feasible(make_instance):
    rng = np.random.default_rng(17)
    solver = ConvexSolver()
    info, prior = make_instance(rng, 6, 6)
    frac = solver.relaxed(info, prior, 2)
    assert frac.shape == (6, 6) and (frac >= 0).all() and (frac <= 1).all()
    np.testing.assert_allclose(frac.sum(axis=1), 2, atol=1e-5)
    assert (frac.sum(axis=0) >= 1 - 1e-5).all()
    assert_full_feasible(solver.solve(info, prior, 2), 6, 6, 2)


def test_swap_refinement_keeps_feasibility_and_never_increases_the_cost(make_instance):
    rng = np.random.default_rng(21)
    plain, refined = ConvexSolver(), ConvexSolver(local_search=True)
    for num_bs, num_targets, num_rf in [(6, 6, 2), (6, 8, 2), (4, 2, 3), (5, 5, 1)]:
        info, prior = make_instance(rng, num_bs, num_targets)
        a_plain, a_refined = plain.solve(info, prior, num_rf), refined.solve(info, prior, num_rf)
        assert_full_feasible(a_refined, num_bs, num_targets, num_rf)
        assert association_cost(a_refined, info, prior) <= association_cost(a_plain, info, prior) * (1 + 1e-12)
        greedy = GreedySolver().solve(info, prior, num_rf)
        a_swapped = swap_refine(greedy, info, prior)
        assert_full_feasible(a_swapped, num_bs, num_targets, num_rf)
        assert association_cost(a_swapped, info, prior) <= association_cost(greedy, info, prior) * (1 + 1e-12)


def test_exchange_move_fixes_a_crossed_one_to_one_association():
    # 2 BSs, 2 targets, 1 chain each: every target has exactly one BS, so only an exchange can help.
    info = np.zeros((2, 2, 2, 2))
    info[0, 1] = info[1, 0] = 100.0 * np.eye(2)  # BS 0 sees target 1 well, BS 1 sees target 0 well
    info[0, 0] = info[1, 1] = 0.01 * np.eye(2)
    prior = np.tile(0.1 * np.eye(2), (2, 1, 1))
    crossed = np.eye(2, dtype=bool)
    np.testing.assert_array_equal(swap_refine(crossed, info, prior), ~crossed)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_infeasible_sizes_raise_a_config_error(name, make_instance):
    info, prior = make_instance(np.random.default_rng(18), 2, 5)
    with pytest.raises(ConfigError, match="num_targets"):
        make_solver(name).solve(info, prior, 2)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_solvers_are_deterministic(name, make_instance):
    info, prior = make_instance(np.random.default_rng(19), 4, 5)
    np.testing.assert_array_equal(make_solver(name).solve(info, prior, 2), make_solver(name).solve(info, prior, 2))


def test_registry_and_factory():
    assert set(SOLVERS) == {"greedy", "convex", "exhaustive", "milp"}
    for name, cls in SOLVERS.items():
        assert issubclass(cls, AssociationSolver) and cls.name == name
    assert isinstance(make_solver("exhaustive", max_candidates=10), ExhaustiveSolver)
    with pytest.raises(ConfigError, match="solver"):
        make_solver("annealing")
    with pytest.raises(ConfigError, match="max_candidates"):
        ExhaustiveSolver(max_candidates=0)


def test_association_package_imports_neither_torch_nor_ray():
    code = ("import sys, rl_isac.association; import rl_isac.association.solvers; "
            "rl_isac.association.ConvexSolver(); "
            "assert 'torch' not in sys.modules and 'ray' not in sys.modules, "
            "[m for m in ('torch', 'ray') if m in sys.modules]")
    subprocess.run([sys.executable, "-c", code], check=True)


def _fractional_instances(make_instance, rng, count, shapes=((4, 6, 2), (5, 6, 2), (5, 5, 2))):
    """Instances whose LP relaxation is fractional (found with a fresh MilpSolver)."""
    found = []
    probe = MilpSolver()
    for draw in range(3000):
        num_bs, num_targets, num_rf = shapes[draw % len(shapes)]
        info, prior = make_instance(rng, num_bs, num_targets)
        probe.solve(info, prior, num_rf)
        if not probe.last_stats["lp_integral"]:
            found.append((info, prior, num_rf))
            if len(found) == count:
                break
    assert found, "no instance with a fractional LP relaxation was drawn"
    return found


def test_milp_dp_and_milp_fallback_agree_with_exhaustive_on_fractional_lps(make_instance):
    """Fractional LPs go through the reduced-cost DP; with the DP disabled, through the MILP fallback."""
    instances = _fractional_instances(make_instance, np.random.default_rng(30), 4)
    exhaustive = ExhaustiveSolver()
    dp, slow_dp, fallback = MilpSolver(), MilpSolver(), MilpSolver()
    slow_dp.dp_initial_gap = 1e-12  # first thresholds far too low: the DP must grow T and retry
    fallback.dp_max_entries = 0
    fallback.restricted_columns = 1  # survivors outside the restricted set: the final MILP runs
    rounds = []
    for info, prior, num_rf in instances:
        best = association_cost(exhaustive.solve(info, prior, num_rf), info, prior)
        for solver, path in ((dp, "dp"), (slow_dp, "dp"), (fallback, "milp")):
            a = solver.solve(info, prior, num_rf)
            assert solver.last_stats["path"] == path
            assert_full_feasible(a, *info.shape[:2], num_rf)
            assert association_cost(a, info, prior) == pytest.approx(best, rel=1e-9)
        rounds.append(slow_dp.last_stats["dp_rounds"])
    assert max(rounds) > 1


def test_milp_warm_start_on_perturbed_sequences_matches_exhaustive(make_instance):
    """One solver over a slowly changing sequence (warm LP basis each block) stays exact every block."""
    rng = np.random.default_rng(31)
    milp, exhaustive = MilpSolver(), ExhaustiveSolver()
    num_bs, num_targets, num_rf = 5, 5, 2
    info, prior = make_instance(rng, num_bs, num_targets)
    paths = set()
    for block in range(60):
        if block % 20 == 19:  # a new episode: unrelated costs
            info, prior = make_instance(rng, num_bs, num_targets)
        else:
            scale = np.exp(0.3 * rng.standard_normal((num_bs, num_targets)))
            info = info * scale[..., None, None]
            prior = prior * np.exp(0.1 * rng.standard_normal(num_targets))[:, None, None]
        a = milp.solve(info, prior, num_rf)
        paths.add(milp.last_stats["path"])
        best = association_cost(exhaustive.solve(info, prior, num_rf), info, prior)
        assert association_cost(a, info, prior) == pytest.approx(best, rel=1e-9)
    assert "lp" in paths


def test_milp_reused_across_shapes_and_lp_modes_stays_exact(make_instance):
    """Persistent LP models are per shape; switching shapes (and full LP vs column generation) is exact."""
    rng = np.random.default_rng(32)
    milp, exhaustive = MilpSolver(), ExhaustiveSolver()
    shapes = [(4, 3, 2), (5, 5, 2), (3, 4, 2), (5, 4, 1), (6, 4, 2), (2, 1, 3)]
    for step in range(36):
        num_bs, num_targets, num_rf = shapes[step % len(shapes)]
        milp.full_lp_columns = 10 if step % 4 == 3 else MilpSolver.full_lp_columns  # column generation sometimes
        info, prior = make_instance(rng, num_bs, num_targets)
        a = milp.solve(info, prior, num_rf)
        assert_full_feasible(a, num_bs, num_targets, num_rf)
        best = association_cost(exhaustive.solve(info, prior, num_rf), info, prior)
        assert association_cost(a, info, prior) == pytest.approx(best, rel=1e-9)
    assert len(milp._models) <= MilpSolver.max_cached_models


def test_milp_column_generation_pool_persists_and_stays_exact(make_instance):
    """Generated columns stay in the model between calls; results match the full LP on a sequence."""
    rng = np.random.default_rng(33)
    full, generated = MilpSolver(), MilpSolver()
    generated.full_lp_columns = 10
    info, prior = make_instance(rng, 7, 6)
    pools = []
    for _ in range(8):
        info = info * np.exp(0.3 * rng.standard_normal((7, 6)))[..., None, None]
        a_full, a_gen = full.solve(info, prior, 2), generated.solve(info, prior, 2)
        assert association_cost(a_gen, info, prior) == pytest.approx(association_cost(a_full, info, prior), rel=1e-9)
        assert generated.last_stats["lp_columns"] < generated.last_stats["columns"] == 6 * 127
        pools.append(generated.last_stats["lp_columns"])
    assert pools == sorted(pools)  # the pool only grows


def test_milp_solver_pickles_without_its_highs_models(make_instance):
    import pickle

    info, prior = make_instance(np.random.default_rng(34), 5, 6)
    solver = MilpSolver()
    a = solver.solve(info, prior, 2)
    clone = pickle.loads(pickle.dumps(solver))
    assert clone._models == {}
    np.testing.assert_array_equal(clone.solve(info, prior, 2), a)


def test_subset_dp_matches_brute_force_over_the_kept_columns():
    """The DP core: least reduced cost over kept columns with exact per-BS loads, if <= the threshold."""
    from rl_isac.association.solvers import _subset_dp, _SubsetShape

    rng = np.random.default_rng(35)
    for num_bs, num_targets, per_bs, s_max in [(3, 4, 2, 3), (4, 3, 1, 2), (3, 3, 3, 3), (4, 4, 2, 3), (2, 1, 1, 2)]:
        shape = _SubsetShape(num_bs, num_targets, per_bs, s_max)
        combos = np.indices((shape.num_sets,) * num_targets).reshape(num_targets, -1).T  # (K^I, I) set per target
        feasible = np.all(shape.member_int[:, combos].sum(axis=2) == per_bs, axis=0)  # exact loads (5c)
        targets = np.arange(num_targets)
        for _ in range(25):
            reduced = rng.exponential(1.0, (num_targets, shape.num_sets)) - 0.05
            keep = rng.random(reduced.shape) < 0.7
            threshold = float(rng.uniform(0.0, 3.0))
            ok = feasible & keep[targets, combos].all(axis=1)
            values = np.where(ok, reduced[targets, combos].sum(axis=1), np.inf)
            got = _subset_dp(reduced, keep, shape, threshold, 1 << 20)
            if values.min() <= threshold:
                assert got is not False and got is not None
                assert keep[targets, got].all() and feasible[np.flatnonzero((combos == got).all(axis=1))[0]]
                assert reduced[targets, got].sum() == pytest.approx(values.min(), rel=1e-12, abs=1e-12)
            else:
                assert got is False
        assert _subset_dp(reduced, np.ones_like(keep), shape, np.inf, 0) is None  # over budget


def test_milp_finds_an_optimum_that_needs_a_column_of_large_reduced_cost():
    """Fractional LPs from a tiny first DP threshold: many filter rounds, each must keep the optimum's columns."""
    rng = np.random.default_rng(36)
    solver, exhaustive = MilpSolver(), ExhaustiveSolver()
    solver.dp_initial_gap = 1e-12
    num_bs, num_targets, num_rf = 4, 6, 2
    checked = 0
    for _ in range(800):
        direction = rng.normal(size=(num_bs, num_targets, 2))  # rank-1 pair information: one BS cannot localise
        info = np.einsum("...i,...j->...ij", direction, direction)
        info *= 10.0 ** rng.uniform(0, 2, (num_bs, num_targets))[..., None, None]
        prior = np.tile(np.eye(2) * 1e-2, (num_targets, 1, 1))
        a = solver.solve(info, prior, num_rf)
        if solver.last_stats["path"] != "dp":
            continue
        checked += 1
        best = association_cost(exhaustive.solve(info, prior, num_rf), info, prior)
        assert association_cost(a, info, prior) == pytest.approx(best, rel=1e-9)
    assert checked >= 10


def test_reduced_cost_search_is_exact_for_any_prices():
    """The filter + DP loop returns the exact optimum for arbitrary reduced costs, from any first threshold."""
    from rl_isac.association.solvers import _reduced_cost_search, _SubsetShape

    rng = np.random.default_rng(37)
    for num_bs, num_targets, per_bs, s_max in [(3, 4, 2, 3), (4, 3, 1, 2), (4, 4, 2, 3), (3, 5, 2, 2)]:
        shape = _SubsetShape(num_bs, num_targets, per_bs, s_max)
        combos = np.indices((shape.num_sets,) * num_targets).reshape(num_targets, -1).T
        feasible = np.all(shape.member_int[:, combos].sum(axis=2) == per_bs, axis=0)
        targets = np.arange(num_targets)
        for trial in range(30):
            reduced = rng.normal(size=(num_targets, shape.num_sets)) * 10.0 ** rng.uniform(-1, 1)
            best = np.where(feasible, reduced[targets, combos].sum(axis=1), np.inf).min()
            first = reduced.min(axis=1).sum() + (1e-9, 0.1, 1e9)[trial % 3]
            chosen, rounds, _ = _reduced_cost_search(reduced, shape, first, 1e-12, 1 << 20)
            assert chosen is not None and rounds >= 1
            assert feasible[np.flatnonzero((combos == chosen).all(axis=1))[0]]
            assert reduced[targets, chosen].sum() == pytest.approx(best, rel=1e-12, abs=1e-12)
