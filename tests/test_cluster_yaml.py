"""Checks for the Ray cluster-launcher config ``cluster.yaml`` at the repository root.

Ray's own validation runs first (the JSON schema shipped with Ray, plus the defaults that
``ray up`` fills in), followed by the project's requirements: AWS, autoscaling CPU and GPU
workers that scale from zero, raystream installed on every node, and a dashboard bound to
localhost. Everything here is offline: no AWS credentials or network access are needed.

Needs ``pyyaml`` and ``jsonschema`` (both in the ``test`` extra): Ray's ``validate_config``
imports ``jsonschema`` itself.
"""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import (
    merge_setup_commands,
    prepare_config,
    validate_config,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO_ROOT / "cluster.yaml"


@pytest.fixture(scope="module")
def raw_config() -> dict:
    with CLUSTER_YAML.open() as f:
        config = yaml.safe_load(f)
    assert isinstance(config, dict)
    return config


@pytest.fixture
def config(raw_config) -> dict:
    return copy.deepcopy(raw_config)


@pytest.fixture
def prepared_config(raw_config) -> dict:
    # What `ray up` does before it talks to the cloud: merge with the provider's defaults.yaml,
    # prepend setup_commands to head/worker setup commands, fill per-type worker bounds.
    return prepare_config(copy.deepcopy(raw_config))


def _worker_types(config: dict) -> dict[str, dict]:
    head = config["head_node_type"]
    return {name: t for name, t in config["available_node_types"].items() if name != head}


def _pip_install_targets(commands: list[str]) -> list[str]:
    """Positional arguments of every `pip install` / `python -m pip install` command."""
    targets = []
    for command in commands:
        for part in re.split(r"&&|;|\|\|", command):
            argv = shlex.split(part)
            for i in range(len(argv) - 1):
                if argv[i] in ("pip", "pip3") and argv[i + 1] == "install":
                    targets.extend(a for a in argv[i + 2 :] if not a.startswith("-"))
                    break
    return targets


# ---------------------------------------------------------------------------------------------
# Ray's own validation


def test_file_passes_ray_schema_as_written(config):
    validate_config(config)


def test_config_after_ray_defaults_still_validates(prepared_config):
    validate_config(prepared_config)
    node_types = prepared_config["available_node_types"]
    assert node_types[prepared_config["head_node_type"]]["max_workers"] == 0
    for name, node_type in _worker_types(prepared_config).items():
        assert node_type["max_workers"] <= prepared_config["max_workers"], name


def test_our_setup_commands_replace_the_aws_defaults(prepared_config):
    # Ray's AWS defaults install a nightly Ray wheel; ours must win.
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert not any("ray-wheels" in c for c in prepared_config[key]), key
    # The head runs the AWS autoscaler, which needs boto3.
    assert any("boto3" in c for c in prepared_config["head_setup_commands"])


# ---------------------------------------------------------------------------------------------
# Provider and nodes


def test_provider_is_aws_with_region_and_zone(config):
    provider = config["provider"]
    assert provider["type"] == "aws"
    assert provider["region"] == "us-west-2"
    zones = provider["availability_zone"].split(",")
    assert zones and all(z.startswith(provider["region"]) for z in zones)
    assert config["auth"]["ssh_user"] == "ubuntu"
    assert config["cluster_name"] == "raystream"


def test_head_node_has_no_gpu(config):
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert not head["node_config"]["InstanceType"].startswith(("g", "p"))


def test_workers_scale_from_zero_within_global_limit(config):
    workers = _worker_types(config)
    assert len(workers) >= 2
    for name, node_type in workers.items():
        assert node_type.get("min_workers", 0) == 0, name
        assert node_type["max_workers"] >= 1, name
    assert sum(t["max_workers"] for t in workers.values()) <= config["max_workers"]
    assert config["idle_timeout_minutes"] > 0


def test_cpu_and_gpu_worker_types(config):
    workers = _worker_types(config)
    gpu_types = {n: t for n, t in workers.items() if t["resources"].get("GPU", 0) >= 1}
    cpu_types = {n: t for n, t in workers.items() if t["resources"].get("GPU", 0) == 0}
    assert gpu_types, "no worker type advertises GPU resources"
    assert cpu_types, "no CPU-only worker type"
    for name, node_type in gpu_types.items():
        # GPU resources must sit on a GPU instance family (g4dn, g5, g6, p4d, ...).
        assert node_type["node_config"]["InstanceType"].startswith(("g", "p")), name


def test_every_node_type_has_a_well_formed_ami(config):
    for name, node_type in config["available_node_types"].items():
        image = node_type["node_config"]["ImageId"]
        assert re.fullmatch(r"ami-([0-9a-f]{8}|[0-9a-f]{17})", image), (name, image)


# ---------------------------------------------------------------------------------------------
# Dashboard exposure


def test_dashboard_bound_to_localhost(config):
    head_commands = " ".join(config["head_start_ray_commands"])
    assert "ray start --head" in head_commands
    assert "--port=6379" in head_commands
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_commands
    hosts = re.findall(r"--dashboard-host[= ](\S+)", head_commands)
    assert hosts == ["127.0.0.1"]
    assert "0.0.0.0" not in head_commands


def test_workers_join_the_head(config):
    worker_commands = " ".join(config["worker_start_ray_commands"])
    assert "ray start --address=$RAY_HEAD_IP:6379" in worker_commands
    assert "--head" not in worker_commands


def test_no_security_group_rule_opens_the_dashboard_port(config):
    permissions = config["provider"].get("security_group", {}).get("IpPermissions", [])
    for rule in permissions:
        low, high = rule.get("FromPort", -1), rule.get("ToPort", -1)
        assert low != -1 and not (low <= 8265 <= high), rule
    for name, node_type in config["available_node_types"].items():
        assert "8265" not in str(node_type["node_config"]), name


# ---------------------------------------------------------------------------------------------
# raystream on every node


def test_repository_is_synced_to_every_node(config):
    mounts = config["file_mounts"]
    synced = {remote: (REPO_ROOT / local).resolve() for remote, local in mounts.items()}
    repo_mounts = [remote for remote, local in synced.items() if local == REPO_ROOT]
    assert repo_mounts, "the repository root is not in file_mounts"
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert re.search(r'^name = "raystream"$', pyproject, re.MULTILINE)


def test_ray_and_raystream_installed_on_head_and_workers(config):
    merged = merge_setup_commands(
        {
            "setup_commands": config.get("setup_commands", []),
            "head_setup_commands": config.get("head_setup_commands", []),
            "worker_setup_commands": config.get("worker_setup_commands", []),
        }
    )
    repo_mounts = {
        remote
        for remote, local in config["file_mounts"].items()
        if (REPO_ROOT / local).resolve() == REPO_ROOT
    }
    for key in ("head_setup_commands", "worker_setup_commands"):
        targets = _pip_install_targets(merged[key])
        assert any(t.startswith("ray[") and "default" in t for t in targets), (key, targets)
        assert any(t.rstrip("/") in repo_mounts for t in targets), (key, targets)
