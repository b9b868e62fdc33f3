"""Our errors survive copy and pickle (Ray copies exceptions between processes and inside trials)."""

import copy
import pickle

import pytest

from rl_isac.errors import ConfigError, ConstraintViolation, MeasurementError


@pytest.mark.parametrize("err", [
    ConfigError("train.lr", -1.0, "must be > 0"),
    ConstraintViolation("(5c)", "BS 0 tracks 3 targets"),
    MeasurementError("a detected range is <= 0 m"),
])
def test_errors_keep_type_message_and_fields_through_copy_and_pickle(err):
    for clone in (copy.copy(err), copy.deepcopy(err), pickle.loads(pickle.dumps(err))):
        assert type(clone) is type(err)
        assert str(clone) == str(err)
        assert vars(clone) == vars(err)
