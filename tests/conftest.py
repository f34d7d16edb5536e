"""Shared fixtures: one real local Ray for the whole session.

Test modules are importable on Ray workers (the repository root is put on their PYTHONPATH), so
functions and record classes defined in tests travel by reference like any user module.
"""

from __future__ import annotations

import os
import pathlib
import sys

import pytest
import ray

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # examples/ and tests/ importable by name, as on the workers
    sys.path.insert(0, str(ROOT))


def _worker_env() -> dict:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {"env_vars": {"PYTHONPATH": path}}


@pytest.fixture(scope="session")
def ray_session():
    if not ray.is_initialized():
        ray.init(
            num_cpus=4,
            resources={"special": 4},
            include_dashboard=False,
            log_to_driver=False,
            runtime_env=_worker_env(),
            configure_logging=False,
        )
    yield
    ray.shutdown()


def _broker_fixture(start):  # noqa: ANN001, ANN202
    try:
        broker = start()
    except FileNotFoundError as exc:
        if os.environ.get("RAYSTREAM_ALLOW_MISSING_BROKERS") == "1":
            pytest.skip(str(exc))
        raise
    return broker


@pytest.fixture(scope="module")
def kafka_broker():
    """A Tansu broker (Kafka protocol) on a free loopback port, for one test module."""
    from tests.brokers import start_kafka

    broker = _broker_fixture(start_kafka)
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def redis_server():
    """A redis-server on a free loopback port, no persistence, for one test module."""
    from tests.brokers import start_redis

    server = _broker_fixture(start_redis)
    yield server
    server.stop()
