"""Issue 9's reward levers: eq. (5a), the Fisher objective of the chosen pairs, their mix, running normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from rl_isac.association.objective import association_cost
from rl_isac.errors import ConfigError
from rl_isac.rllib.env import ISACMultiAgentEnv, RunningReturnStd
from tests.rllib.test_env import good_action


def _rollout(config: dict, steps: int = 5):
    env = ISACMultiAgentEnv({"targets": 4, "blocks": 8, **config})
    env.reset(seed=3)
    out = []
    for _ in range(steps):
        # the Fisher term from the observation the action answers (the CU's view of block q)
        prior, info = env._obs_builder.last_prior_info.copy(), env._obs_builder.last_info.copy()
        action = good_action(env)
        assoc = env.check_action(action)[0]
        _, rew, _, _, infos = env.step({"cu_0": action})
        out.append((rew["cu_0"], infos["cu_0"], float(association_cost(assoc, info, prior))))
    return out


def test_fisher_and_mix_rewards_follow_their_definitions():
    mse, fisher, mix = _rollout({}), _rollout({"reward": "fisher"}), _rollout({"reward": "mix", "reward_mix": 0.25,
                                                                              "reward_scale": 2.0})
    for (r_m, i_m, f_m), (r_f, i_f, f_f), (r_x, i_x, _) in zip(mse, fisher, mix):
        assert i_m["fisher_m2"] == pytest.approx(f_m) and f_m > 0  # same world, same actions: same terms
        assert r_m == pytest.approx(-i_m["sq_err_m2"])              # eq. (5a) stays the default
        assert r_f == pytest.approx(-f_f) and i_f["sq_err_m2"] == pytest.approx(i_m["sq_err_m2"])
        assert r_x == pytest.approx(-2.0 * (0.75 * i_x["sq_err_m2"] + 0.25 * i_x["fisher_m2"]))
    # the Fisher reward does not see the realised noise: it is scored from block 0 on, eq. (5a) from block 1
    assert mse[0][0] == 0.0 and fisher[0][0] < 0


def test_running_return_normalisation():
    rng = np.random.default_rng(0)
    norm = RunningReturnStd(gamma=0.9, min_count=10)
    raw = -50.0 * rng.random(2000)
    scaled = [norm.scale(float(r), done=(t % 100 == 99)) for t, r in enumerate(raw)]
    assert scaled[:10] == pytest.approx(list(raw[:10]))  # unscaled until min_count steps
    # the discounted return of the scaled rewards has about unit spread (the scale is the raw return's std)
    rets, g = [], 0.0
    for t, r in enumerate(scaled[500:], start=500):
        g = 0.9 * g + r
        rets.append(g)
        if t % 100 == 99:
            g = 0.0
    assert 0.5 < np.std(rets) < 2.0
    env_rewards = [r for r, _, _ in _rollout({"reward_normalize": True}, steps=3)]
    assert env_rewards == pytest.approx([r for r, _, _ in _rollout({}, steps=3)])  # below min_count: unchanged


@pytest.mark.parametrize("key, value", [("reward", "pcrb"), ("reward_mix", 1.5), ("reward_mix", True),
                                        ("reward_normalize", 1)])
def test_bad_reward_settings_are_refused(key, value):
    with pytest.raises(ConfigError, match=key):
        ISACMultiAgentEnv({"targets": 4, "blocks": 3, key: value})


def test_train_config_carries_the_reward_levers_into_the_env_config():
    from rl_isac.rllib.config import PPOTrainConfig, env_config_for

    cfg = PPOTrainConfig(reward="mix", reward_mix=0.3, reward_normalize=True)
    env_cfg = env_config_for(cfg, 4, seed=1)
    assert (env_cfg["reward"], env_cfg["reward_mix"], env_cfg["reward_normalize"]) == ("mix", 0.3, True)
    assert ISACMultiAgentEnv({**env_cfg, "blocks": 3}).fisher_weight == 0.3
    for bad in ({"reward": "pcrb"}, {"reward_mix": -0.1}, {"reward_normalize": "yes"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            PPOTrainConfig(**bad)


def test_resume_accepts_a_run_stored_before_the_reward_levers(dgnn_i4, tmp_path):
    """A train_config.json written before the levers existed had their defaults: --resume continues it, and a
    changed lever is still refused."""
    import json

    from rl_isac.training.ppo import CHECKPOINT, TRAIN_CONFIG, prepare

    run = prepare(4, str(dgnn_i4), str(tmp_path))
    old = json.loads(json.dumps(run))
    for key in ("reward", "reward_mix", "reward_normalize", "dagger_rounds"):
        old["train"].pop(key)
    for key in ("reward", "reward_mix", "reward_normalize"):
        old["env_config"].pop(key)
    (tmp_path / CHECKPOINT).mkdir()
    (tmp_path / TRAIN_CONFIG).write_text(json.dumps(old))
    assert prepare(4, str(dgnn_i4), str(tmp_path), resume=True)["train"]["reward"] == "mse"
    with pytest.raises(ConfigError, match="differs from the stored run"):
        prepare(4, str(dgnn_i4), str(tmp_path), resume=True, reward="fisher")
