"""Constraint checks (5c)-(5e) and the pair-list <-> matrix conversions."""

from __future__ import annotations

import numpy as np
import pytest

from rl_isac.association import association_to_pairs, check_association, pairs_to_association, uses_all_chains
from rl_isac.errors import ConstraintViolation, RlIsacError

FEASIBLE = np.array([[1, 1, 0, 0],
                     [0, 0, 1, 1],
                     [1, 0, 1, 0]])  # 3 BSs, 4 targets, num_rf = 2


@pytest.mark.parametrize("dtype", [bool, np.int64, np.float32])
def test_feasible_association_passes_and_comes_back_as_bool(dtype):
    out = check_association(FEASIBLE.astype(dtype), num_rf=2, shape=(3, 4))
    assert out.dtype == np.bool_
    np.testing.assert_array_equal(out, FEASIBLE.astype(bool))


def test_5c_violation_names_the_bs_and_its_load():
    a = FEASIBLE.copy()
    a[1, 0] = 1  # BS 1 now tracks 3 targets
    with pytest.raises(ConstraintViolation) as err:
        check_association(a, num_rf=2)
    assert err.value.constraint == "(5c)"
    msg = str(err.value)
    assert "(5c)" in msg and "BS 1" in msg and "3 targets" in msg and "num_rf = 2" in msg


def test_5d_violation_names_the_uncovered_targets():
    a = FEASIBLE.copy()
    a[:, 3] = 0
    a[:, 1] = 0
    with pytest.raises(ConstraintViolation) as err:
        check_association(a, num_rf=2)
    assert err.value.constraint == "(5d)"
    assert "2 of 4 targets" in str(err.value) and "1, 3" in str(err.value)


@pytest.mark.parametrize("bad", [
    FEASIBLE * 0.5,  # fractional
    FEASIBLE * 2,  # not binary
    np.where(FEASIBLE == 1, np.nan, 0.0),  # NaN
    FEASIBLE.ravel(),  # 1-D
    FEASIBLE.astype(complex),  # wrong dtype
])
def test_5e_violation_for_non_binary_or_misshapen_input(bad):
    with pytest.raises(ConstraintViolation) as err:
        check_association(bad, num_rf=2)
    assert err.value.constraint == "(5e)"


def test_5e_violation_for_unexpected_shape():
    with pytest.raises(ConstraintViolation, match=r"\(5e\).*expected .*\(4, 4\)"):
        check_association(FEASIBLE, num_rf=2, shape=(4, 4))


def test_5e_is_checked_before_5c():
    a = FEASIBLE * 2
    a[1, 0] = 1
    with pytest.raises(ConstraintViolation) as err:
        check_association(a, num_rf=2)
    assert err.value.constraint == "(5e)"


def test_constraint_violation_is_an_rl_isac_error():
    assert issubclass(ConstraintViolation, RlIsacError)


def test_pairs_round_trip_when_every_chain_is_used():
    pairs = association_to_pairs(FEASIBLE, num_rf=2)
    assert pairs.shape == (6, 2)  # J = M * num_rf
    assert (pairs >= 0).all()
    np.testing.assert_array_equal(pairs[:, 0], [0, 0, 1, 1, 2, 2])  # BS-major
    np.testing.assert_array_equal(pairs_to_association(pairs, 3, 4), FEASIBLE.astype(bool))
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(pairs)  # order of sub-actions does not matter for A, eq. (10)
    np.testing.assert_array_equal(pairs_to_association(shuffled, 3, 4), FEASIBLE.astype(bool))


def test_unused_chains_are_padded_with_minus_one_rows_at_the_end():
    a = np.array([[1, 0, 0], [0, 1, 1]])  # BS 0 uses 1 of 2 chains
    pairs = association_to_pairs(a, num_rf=2)
    np.testing.assert_array_equal(pairs, [[0, 0], [1, 1], [1, 2], [-1, -1]])
    np.testing.assert_array_equal(pairs_to_association(pairs, 2, 3), a.astype(bool))
    assert not uses_all_chains(a, 2)
    assert uses_all_chains(FEASIBLE, 2)


def test_association_to_pairs_refuses_too_many_targets_per_bs():
    with pytest.raises(ConstraintViolation, match=r"\(5c\)"):
        association_to_pairs(np.ones((2, 3)), num_rf=2)


def test_duplicate_pair_is_a_5e_violation():
    with pytest.raises(ConstraintViolation) as err:
        pairs_to_association([[0, 1], [1, 2], [0, 1]], 2, 3)
    assert err.value.constraint == "(5e)"
    assert "bs 0, target 1" in str(err.value)


@pytest.mark.parametrize("pairs", [[[0, 3]], [[2, 0]], [[-1, 0]], [[0, 0, 0]], [[0.5, 1]]])
def test_pairs_outside_the_matrix_or_malformed_are_refused(pairs):
    with pytest.raises(ConstraintViolation, match=r"\(5e\)"):
        pairs_to_association(pairs, 2, 3)


def test_empty_pair_list_gives_an_empty_association():
    np.testing.assert_array_equal(pairs_to_association(np.zeros((0, 2), int), 2, 3), np.zeros((2, 3), bool))
