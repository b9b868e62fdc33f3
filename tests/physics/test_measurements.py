"""Tests of rl_isac.physics.measurements: the fixed-shape measurement arrays and their validation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rl_isac.errors import MeasurementError
from rl_isac.physics.measurements import Measurements


def _one_detection() -> Measurements:
    """Two BSs, three targets; BS 0 assigned targets 0 and 1, detects target 0 only."""
    m = Measurements.empty(2, 3, block=4)
    assigned = m.assigned.copy()
    assigned[0, :2] = True
    assigned[1, 2] = True
    detected = np.zeros_like(assigned)
    detected[0, 0] = True
    range_m = m.range_m.copy()
    range_m[0, 0] = 50.0
    angle = m.angle_rad.copy()
    angle[0, 0] = np.pi / 2
    cov = m.cov.copy()
    cov[0, 0] = np.diag([0.01, 1e-6])
    return Measurements(assigned, detected, range_m, angle, m.snr_db, cov, m.block)


def test_empty_has_fixed_shapes_and_no_measurement():
    m = Measurements.empty(6, 4, block=2)
    assert (m.num_bs, m.num_targets, m.block) == (6, 4, 2)
    assert m.range_m.shape == m.angle_rad.shape == m.snr_db.shape == (6, 4)
    assert m.cov.shape == (6, 4, 2, 2)
    assert not m.assigned.any() and not m.detected.any()
    assert m.validate() is m


def test_validate_accepts_a_well_formed_block():
    _one_detection().validate()


def test_nan_in_a_detected_entry_raises_measurement_error():
    m = _one_detection()
    bad = m.range_m.copy()
    bad[0, 0] = np.nan
    with pytest.raises(MeasurementError, match="range_m"):
        dataclasses.replace(m, range_m=bad).validate()
    bad_cov = m.cov.copy()
    bad_cov[0, 0, 1, 1] = np.inf
    with pytest.raises(MeasurementError, match="cov"):
        dataclasses.replace(m, cov=bad_cov).validate()


def test_nan_anywhere_raises_measurement_error_since_a_miss_is_a_mask_not_nan():
    m = _one_detection()
    bad = m.angle_rad.copy()
    bad[1, 1] = np.nan  # not even assigned
    with pytest.raises(MeasurementError, match="angle_rad"):
        dataclasses.replace(m, angle_rad=bad).validate()


def test_detected_but_not_assigned_raises():
    m = _one_detection()
    det = m.detected.copy()
    det[1, 0] = True
    with pytest.raises(MeasurementError, match="not assigned"):
        dataclasses.replace(m, detected=det).validate()


def test_wrong_shapes_raise():
    m = _one_detection()
    with pytest.raises(MeasurementError, match="snr_db"):
        dataclasses.replace(m, snr_db=np.zeros((2, 2))).validate()
    with pytest.raises(MeasurementError, match="cov"):
        dataclasses.replace(m, cov=np.zeros((2, 3, 2))).validate()
    with pytest.raises(MeasurementError, match="assigned"):
        dataclasses.replace(m, assigned=np.zeros(3, bool)).validate()


def test_detected_pair_needs_positive_range_and_variances():
    m = _one_detection()
    r = m.range_m.copy()
    r[0, 0] = 0.0
    with pytest.raises(MeasurementError, match="range"):
        dataclasses.replace(m, range_m=r).validate()
    cov = m.cov.copy()
    cov[0, 0, 1, 1] = 0.0
    with pytest.raises(MeasurementError, match="variance"):
        dataclasses.replace(m, cov=cov).validate()


def test_positions_are_bs_plus_range_along_the_angle_and_zero_where_missed():
    m = _one_detection()
    bs = np.array([[150.0, 0.0], [0.0, 100.0]])
    pos = m.positions_m(bs)
    assert pos.shape == (2, 3, 2)
    np.testing.assert_allclose(pos[0, 0], [150.0, 50.0], atol=1e-12)
    assert np.all(pos[~m.detected] == 0)
