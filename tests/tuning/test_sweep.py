"""tuning/sweep.py without Ray running: resources from RLlib's own request, concurrency, placement errors."""

from __future__ import annotations

import pytest

from rl_isac.errors import ConfigError
from tuning import sweep


def test_bundles_come_from_rllibs_resource_request():
    small = sweep.TrialResources(env_runners=1, cpus_per_env_runner=0.5, learner_cpus=0.5, main_cpus=0.5)
    assert small.bundles() == [{"CPU": 0.5}, {"CPU": 0.5}]
    gpu = sweep.TrialResources(env_runners=4, cpus_per_env_runner=1, learner_cpus=1, learner_gpus=1, main_cpus=1)
    bundles = gpu.bundles()
    assert {"CPU": 1.0, "GPU": 1.0} in bundles and sum(b["CPU"] for b in bundles) == 6


def test_max_concurrent_trials_is_derived_from_the_nodes():
    half = [{"CPU": 0.5}, {"CPU": 0.5}]
    assert sweep.max_concurrent_trials(half, [{"CPU": 2.0}]) == 2  # this 2-core machine
    assert sweep.max_concurrent_trials(half, [{"CPU": 2.0}], cap=1) == 1
    # A cluster: 16-CPU rollout nodes and one GPU node; each GPU trial needs the GPU bundle.
    gpu_trial = [{"CPU": 1.0}] * 4 + [{"CPU": 1.0, "GPU": 1.0}]
    nodes = [{"CPU": 6.0}, {"CPU": 16.0}, {"CPU": 16.0}, {"CPU": 4.0, "GPU": 1.0}]
    assert sweep.max_concurrent_trials(gpu_trial, nodes) == 1
    assert sweep.max_concurrent_trials([{"CPU": 1.0}] * 5, nodes) == 8  # 42 CPUs / 5, packed node by node


def test_a_trial_that_cannot_be_placed_is_an_error_saying_what_was_asked_and_what_exists():
    with pytest.raises(sweep.PlacementError) as err:
        sweep.max_concurrent_trials([{"CPU": 1.0, "GPU": 1.0}], [{"CPU": 2.0}])
    text = str(err.value)
    assert "'GPU': 1.0" in text and "{'CPU': 2.0}" in text and "wait forever" in text
    # Enough CPUs in total, but no node holds the 3-CPU bundle.
    with pytest.raises(sweep.PlacementError):
        sweep.max_concurrent_trials([{"CPU": 3.0}], [{"CPU": 2.0}, {"CPU": 2.0}])


def test_concurrency_flags():
    res = sweep.TrialResources(env_runners=1, cpus_per_env_runner=0.5, learner_cpus=0.5, main_cpus=0.5)
    # Default: one trial at a time (ASHA's stops then never depend on the order of concurrent reports) ...
    args = sweep.build_parser().parse_args(["--trials", "3"])
    assert sweep.resolve_concurrency(args, res, [{"CPU": 8.0}]) == 1
    with pytest.raises(sweep.PlacementError):  # ... and still checked against the nodes
        sweep.resolve_concurrency(args, res, [{"CPU": 0.5}])
    # --parallel: as many as fit, capped by the number of trials
    args = sweep.build_parser().parse_args(["--trials", "3", "--parallel"])
    assert sweep.resolve_concurrency(args, res, [{"CPU": 8.0}]) == 3
    assert sweep.resolve_concurrency(args, res, [{"CPU": 2.0}]) == 2
    args = sweep.build_parser().parse_args(["--max-concurrent", "8", "--assume-autoscaling"])
    assert sweep.resolve_concurrency(args, res, [{"CPU": 0.0}]) == 8
    args = sweep.build_parser().parse_args(["--assume-autoscaling"])
    with pytest.raises(ConfigError, match="needs --max-concurrent"):
        sweep.resolve_concurrency(args, res, [{"CPU": 8.0}])
    with pytest.raises(ConfigError, match="fixed grid"):
        sweep.check_args(sweep.build_parser().parse_args(["--targets", "5"]))
    with pytest.raises(ConfigError, match="--bc-episodes"):
        sweep.check_args(sweep.build_parser().parse_args(["--bc-episodes", "1"]))
    with pytest.raises(ConfigError, match="cpus_per_env_runner"):
        sweep.TrialResources(cpus_per_env_runner=0)


def test_best_preset_is_a_train_config_yaml_and_summary_lists_every_trial(tmp_path):
    pytest.importorskip("rl_isac.rllib.config")
    from rl_isac.rllib.config import load_train_config

    config = {"lr": 3e-4, "entropy_coeff": 1e-3, "clip_param": 0.2, "gamma": 0.99, "lambda_": 0.95,
              "minibatch_size": 256, "num_epochs": 8, "hidden": 64, "critic_hidden": 128, "reward_scale": 2.0,
              "warm_start": True, "dagger_rounds": 0, "gain_prior": 0.0, "reward": "fisher",
              "reward_normalize": True, "unrelated": 1}
    fields = sweep.train_fields()
    preset = sweep.best_preset(config, {"train_batch_size": 1000}, fields)
    assert "unrelated" not in preset and preset["train_batch_size"] == 1000
    sweep.write_preset(preset, tmp_path / "best-I4.yaml", ["best of 4 trials", "val_rmse_m = 0.25 m"])
    text = (tmp_path / "best-I4.yaml").read_text()
    assert text.startswith("# best of 4 trials\n# val_rmse_m = 0.25 m\n")
    # Exactly what `rl-isac train --config` loads.
    loaded = load_train_config(str(tmp_path / "best-I4.yaml"))
    assert loaded.lr == 3e-4 and loaded.critic_hidden == 128 and loaded.train_batch_size == 1000
    with pytest.raises(ConfigError):
        sweep.best_preset({**config, "lr": 1.0}, None, fields)
    rows = [{"targets": 4, "trial_id": t, "iterations": 2, "metric": m, "config": config}
            for t, m in (("a", 0.5), ("b", 0.3), ("c", None))]
    table = sweep.summary_table(rows).splitlines()
    assert len(table) == 5 and "| b |" in table[2] and "| c |" in table[4]
    # The header says what ran and how long, from the run itself: the command line, the revision, per I the
    # trial count, wall time and errors.
    rows[2]["error"] = "boom"
    args = sweep.build_parser().parse_args(["--targets", "4", "--trials", "3"])
    args.argv = ["--targets", "4", "--trials", "3"]
    head = sweep.summary_header(args, [{**r, "error": r.get("error")} for r in rows], {4: 12.3})
    assert "`tuning/sweep.py --targets 4 --trials 3`" in head and "I = 4: 3 trials in 12 s, 1 errored" in head
    assert "at revision " in head and head.endswith("\n\n")
    rows = [{**r, "error": r.get("error")} for r in rows]
    assert "One trial at a time (reproducible" in sweep.summary_header(args, rows, {4: 1.0}, concurrent=1)
    assert "2 concurrent trials" in sweep.summary_header(args, rows, {4: 1.0}, concurrent=2)


def test_every_value_the_space_can_sample_is_a_valid_train_config():
    pytest.importorskip("rl_isac.rllib.config")
    from rl_isac.rllib.config import PPOTrainConfig
    from tuning import search_space

    fields = sweep.train_fields()
    assert {"warm_start", "reward", "reward_normalize"} <= fields  # the levers are searched, not held out
    for p in search_space.searched(fields):
        for value in (p.choices if p.kind == "choice" else (p.low, p.high)):
            PPOTrainConfig.from_dict({p.name: value})


def test_restore_refuses_an_empty_searcher_state(tmp_path):
    """A sweep killed while Tune copied its files leaves searcher-state-*.pkl empty; restoring it would idle
    forever, so --restore stops with an error naming the file and what to do."""
    sweep.check_searcher_state(tmp_path)  # nothing there: nothing to refuse
    state = tmp_path / "searcher-state-2026-12-04_00-58-42.pkl"
    state.write_bytes(b"\x80\x05N.")  # a pickle
    sweep.check_searcher_state(tmp_path)
    state.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"--restore.*searcher-state-2026-12-04_00-58-42\.pkl.*empty.*without"):
        sweep.check_searcher_state(tmp_path)
    import pickle

    state.write_bytes(pickle.dumps({"a": list(range(100))})[:-5])  # a copy cut short
    with pytest.raises(ConfigError, match="cut short"):
        sweep.check_searcher_state(tmp_path)


def test_restore_refuses_an_empty_or_cut_experiment_state(tmp_path):
    """An experiment_state-*.json left empty (or cut) by the same kill makes Tune restart the experiment without
    its search space and fail: --restore refuses it with the file named."""
    state = tmp_path / "experiment_state-2026-12-04_04-26-15.json"
    state.write_text('{"trial_data": []}')
    sweep.check_searcher_state(tmp_path)
    state.write_text("")
    with pytest.raises(ConfigError, match=r"--restore.*experiment_state-2026-12-04_04-26-15\.json.*empty.*without"):
        sweep.check_searcher_state(tmp_path)
    state.write_text('{"trial_data": [1, 2')
    with pytest.raises(ConfigError, match="experiment state is cut short"):
        sweep.check_searcher_state(tmp_path)
