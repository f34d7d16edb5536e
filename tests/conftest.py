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
