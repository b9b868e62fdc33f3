"""tuning/search_space.py: every range is well formed, sampled configs validate, bad ones are refused."""

from __future__ import annotations

import pytest

from rl_isac.errors import ConfigError
from tuning import search_space as ss


def test_every_param_has_a_reason_and_the_issue_list_is_covered():
    names = {p.name for p in ss.SEARCH_SPACE}
    assert names == {"lr", "entropy_coeff", "clip_param", "gamma", "lambda_", "minibatch_size", "num_epochs",
                     "hidden", "critic_hidden", "reward_scale", "warm_start", "dagger_rounds", "gain_prior", "reward",
                     "reward_normalize"}
    assert all(len(p.why) > 40 for p in ss.SEARCH_SPACE)
    assert ss.TARGETS_GRID == (4, 6, 8)
    assert "fixed grid" in ss.describe()


def test_samples_of_the_tune_space_validate():
    from ray.tune.search.sample import Domain

    space = ss.tune_space()
    assert set(space) == set(ss.PARAMS) and all(isinstance(v, Domain) for v in space.values())
    for i in range(50):
        config = {k: d.sample(random_state=i) for k, d in space.items()}
        config = {k: (v.item() if hasattr(v, "item") else v) for k, v in config.items()}
        assert ss.validate({**config, "targets": 6}) is not None
    # A training config without the warm_start / reward fields: those dimensions are held out.
    fields = set(ss.PARAMS) - {"warm_start", "dagger_rounds", "gain_prior", "reward", "reward_normalize"}
    assert set(ss.tune_space(fields)) == fields
    config = {k: d.sample(random_state=0) for k, d in ss.tune_space(fields).items()}
    assert ss.validate(config, available_fields=fields) is config


def _good():
    return {"lr": 3e-4, "entropy_coeff": 1e-3, "clip_param": 0.2, "gamma": 0.99, "lambda_": 0.95,
            "minibatch_size": 256, "num_epochs": 8, "hidden": 64, "critic_hidden": 128, "reward_scale": 1.0,
            "warm_start": True, "dagger_rounds": 1, "gain_prior": 8.0, "reward": "fisher",
            "reward_normalize": False}


@pytest.mark.parametrize("key,value,rule", [
    ("lr", 1e-2, r"\[1e-05, 0.001\]"), ("gamma", 1.0, "must lie in"), ("clip_param", float("nan"), "finite"),
    ("minibatch_size", 100, "one of"), ("reward", "5a", "one of"), ("targets", 5, "fixed grid"),
])
def test_out_of_range_values_name_the_key_value_and_rule(key, value, rule):
    with pytest.raises(ConfigError, match=rule) as err:
        ss.validate({**_good(), key: value})
    assert key in str(err.value)


def test_missing_keys_and_bad_param_definitions_are_refused():
    bad = _good()
    del bad["lr"]
    with pytest.raises(ConfigError, match="missing"):
        ss.validate(bad)
    with pytest.raises(ConfigError, match="low > 0"):
        ss.Param("x", "loguniform", why="", low=0.0, high=1.0)
    with pytest.raises(ConfigError, match="one of"):
        ss.validate({**_good(), "hidden": 100})
