"""Ray Data in and out, and the README's example run on an already initialised Ray."""

from __future__ import annotations

import contextlib
import io
import pathlib

import pytest
import ray

from raystream import StreamExecutionEnvironment
from raystream.operators import RayDatasetSink

pytestmark = pytest.mark.usefixtures("ray_session")

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_ray_dataset_in_and_out_round_trip():
    ds = ray.data.from_items([{"id": i, "group": i % 4} for i in range(1000)]).repartition(5)
    env = StreamExecutionEnvironment()
    env.set_parallelism(2)
    (
        env.from_ray_dataset(ds)
        .map(lambda r: {"id": r["id"], "group": r["group"], "square": r["id"] ** 2})
        .sink_to(RayDatasetSink())
        .name("to-ray")
    )
    result = env.execute("ray-data")
    out = result.get_ray_dataset("to-ray")
    rows = sorted(out.take_all(), key=lambda r: r["id"])
    assert rows == [{"id": i, "group": i % 4, "square": i * i} for i in range(1000)]
    # a downstream Ray Data step consumes it like any dataset
    assert out.filter(lambda r: r["group"] == 0).count() == 250


def test_ray_dataset_sink_of_scalars_uses_a_value_column():
    env = StreamExecutionEnvironment()
    env.from_sequence(1, 100).map(lambda x: x * 1.5).sink_to(RayDatasetSink()).name("scalars")
    out = env.execute().get_ray_dataset("scalars")
    assert sorted(r["value"] for r in out.take_all()) == [x * 1.5 for x in range(1, 101)]


def test_readme_example_runs_in_a_session_that_initialised_ray_itself():
    text = (ROOT / "README.md").read_text()
    code = text.split("```python", 1)[1].split("```", 1)[0]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    lines = sorted(stdout.getvalue().split("\n")[:-1])
    assert lines == ["ann 1", "ann 2", "bob 1"]
