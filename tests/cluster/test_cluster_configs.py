"""Every YAML under cluster/ validates offline against Ray's own schema and Ray's launcher rules."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
CONFIGS = sorted(CLUSTER.glob("*.yaml"))


def _schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_both_configs_exist():
    assert {p.name for p in CONFIGS} >= {"config.yaml", "local.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates_against_rays_schema_and_launcher_rules(path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _load(path)
    jsonschema.validate(config, _schema())
    # prepare_config merges the provider's defaults and applies the local provider's extra rules
    # (head_ip + worker_ips); validate_config re-checks the merged config (node types, max_workers).
    validate_config(prepare_config(copy.deepcopy(config)))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_nodes_install_the_project_as_the_readme_does(path):
    config = _load(path)
    assert config["file_mounts"] == {"~/rl_isac": "."}
    assert "cd ~/rl_isac && make install" in config["setup_commands"]
    assert ".venv" in config["rsync_exclude"]
    for cmd in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if "ray start" in cmd:
            assert "~/rl_isac/.venv/bin/ray start" in cmd and "--disable-usage-stats" in cmd


def test_cloud_config_has_head_cpu_rollout_and_gpu_learner_node_types():
    config = _load(CLUSTER / "config.yaml")
    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    assert config["head_node_type"] == "head"
    assert types["cpu_rollout"]["max_workers"] > types["cpu_rollout"]["min_workers"] == 0  # autoscaling
    assert types["gpu_learner"]["resources"]["GPU"] >= 1
    assert "GPU" not in types["cpu_rollout"]["resources"]


def test_local_config_never_stops_other_ray_processes():
    config = _load(CLUSTER / "local.yaml")
    assert config["provider"] == {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []}
    commands = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert not any("ray stop" in c for c in commands)
    assert all("6379" not in c for c in commands)  # not the default port of someone else's Ray


def test_a_broken_config_is_rejected():
    import click
    from ray.autoscaler._private.util import prepare_config

    local = _load(CLUSTER / "local.yaml")
    del local["provider"]["head_ip"]
    jsonschema.validate(local, _schema())  # the schema alone does not know the local provider's rule
    with pytest.raises(click.ClickException, match="head_ip"):  # Ray's launcher reports it via click
        prepare_config(local)
    cloud = _load(CLUSTER / "config.yaml")
    cloud["available_node_types"]["head"]["resources"] = "CPU: 6"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(cloud, _schema())
