"""Bad input and wrong API use: clear errors naming operator, subtask and record; no hangs."""

from __future__ import annotations

import threading

import pytest

from raystream import (
    GraphError,
    JobExecutionError,
    SerializationError,
    StreamExecutionEnvironment,
)

pytestmark = pytest.mark.usefixtures("ray_session")


def env_with(p: int = 2) -> StreamExecutionEnvironment:
    env = StreamExecutionEnvironment()
    env.set_parallelism(p)
    return env


def explode_on_13(x):
    if x == 13:
        return 1 // 0
    return x


def test_user_function_error_names_operator_subtask_record_and_traceback():
    env = env_with(2)
    env.from_sequence(0, 100).map(explode_on_13).name("divider").add_sink(lambda v: None)
    with pytest.raises(JobExecutionError) as info:
        env.execute("failing")
    msg = str(info.value)
    assert "ZeroDivisionError" in msg
    assert "'divider'" in msg
    assert "subtask 0" in msg  # 0..50 is the first split
    assert "record 13" in msg
    assert "explode_on_13" in msg  # the original traceback
    assert info.value.root_cause is not None


def test_error_in_a_later_task_of_the_pipeline_also_fails_the_job():
    env = env_with(2)
    (
        env.from_sequence(0, 1000)
        .key_by(lambda x: x % 4)
        .map(lambda x: {"v": x}["missing"] if x == 777 else x)
        .name("lookup")
        .add_sink(lambda v: None)
    )
    with pytest.raises(JobExecutionError) as info:
        env.execute()
    assert (
        "KeyError" in str(info.value) and "'lookup'" in str(info.value) and "777" in str(info.value)
    )


def test_error_surfaces_through_execute_and_collect():
    env = env_with(1)
    it = (
        env.from_collection([1, 2, 0, 4])
        .map(lambda x: 10 // x)
        .name("inverse")
        .execute_and_collect()
    )
    with pytest.raises(JobExecutionError, match="inverse"):
        list(it)


def test_non_serializable_function_fails_before_anything_runs():
    lock = threading.Lock()
    env = env_with(1)
    env.from_collection([1]).map(lambda x: (lock, x)[1]).name("holds-a-lock").add_sink(
        lambda v: None
    )
    with pytest.raises(SerializationError, match="holds-a-lock"):
        env.execute()


def test_non_serializable_record_names_the_record():
    env = env_with(1)
    (
        env.from_collection([1, 2])
        .map(lambda x: threading.Lock() if x == 2 else x)
        .add_sink(lambda v: None)
        .disable_chaining()
    )
    with pytest.raises(JobExecutionError) as info:
        env.execute()
    assert "cannot be serialized" in str(info.value) and "lock" in str(info.value).lower()


class _Holder:
    def __init__(self, n):
        self.n = n
        self.lock = threading.Lock() if n == 2 else None

    def __repr__(self):
        return f"Holder({self.n})"


def test_non_serializable_collected_record_is_named_in_a_short_error():
    env = env_with(1)
    stream = env.from_collection([1, 2, 3]).map(_Holder)
    with pytest.raises(JobExecutionError) as info:
        list(stream.execute_and_collect())
    cause = str(info.value.root_cause)
    assert "Holder(2)" in cause and "cannot be serialized" in cause
    assert "execute_and_collect" in cause
    assert len(str(info.value)) < 20_000  # the record and the traceback, not Ray's dump


def test_unhashable_key_names_the_key_selector_and_record():
    env = env_with(2)
    env.from_collection([[1, 2], [3]]).key_by(lambda r: r).reduce(lambda a, b: a).add_sink(
        lambda v: None
    )
    with pytest.raises(JobExecutionError) as info:
        env.execute()
    assert "not hashable" in str(info.value) and "[1, 2]" in str(info.value)


def test_unsupported_key_type_is_explained():
    class Opaque:
        pass

    env = env_with(1)
    env.from_collection([1]).key_by(lambda r: Opaque()).reduce(lambda a, b: a).add_sink(
        lambda v: None
    )
    with pytest.raises(JobExecutionError, match="no stable hash"):
        env.execute()


@pytest.mark.parametrize("method", ["reduce", "sum", "min", "max", "min_by", "max_by"])
def test_keyed_operations_on_a_non_keyed_stream(method):
    env = env_with(1)
    ds = env.from_collection([1])
    with pytest.raises(GraphError, match="key_by"):
        getattr(ds, method)(lambda a, b: a) if method == "reduce" else getattr(ds, method)(0)


def test_parallelism_above_max_parallelism():
    env = env_with(1)
    env.set_max_parallelism(4)
    env.from_collection([1]).map(str).set_parallelism(8).add_sink(lambda v: None)
    with pytest.raises(GraphError, match="max parallelism"):
        env.execute()


def test_forward_between_different_parallelism():
    env = env_with(2)
    env.from_sequence(0, 9).forward().map(str).set_parallelism(3).add_sink(lambda v: None)
    with pytest.raises(GraphError, match="forward"):
        env.execute()


def test_bad_arguments_are_rejected_when_the_graph_is_built():
    env = env_with(1)
    ds = env.from_collection([1])
    with pytest.raises(TypeError, match="map expects"):
        ds.map(42)
    with pytest.raises(GraphError):
        ds.set_parallelism(0)
    with pytest.raises(GraphError):
        env.set_parallelism(-1)
    with pytest.raises(GraphError):
        env.set_max_parallelism(0)
    with pytest.raises(GraphError, match="no operators"):
        StreamExecutionEnvironment().execute()
    with pytest.raises(GraphError, match="unique"):
        env2 = env_with(1)
        env2.from_collection([1]).uid("a").map(str).uid("a")
        env2.execute()


@pytest.mark.parametrize("method", ["window", "count_window"])
def test_window_on_a_non_keyed_stream_points_to_key_by_and_window_all(method):
    from raystream import TumblingEventTimeWindows

    ds = env_with(1).from_collection([1])
    arg = TumblingEventTimeWindows.of(10) if method == "window" else 3
    with pytest.raises(GraphError, match=r"key_by\(\.\.\.\)\..*_all\(") as info:
        getattr(ds, method)(arg)
    assert f"{method}()" in str(info.value)


def test_user_frames_in_a_task_traceback_keep_their_file_and_line():
    def fails_on_7(x):  # defined here, so it travels by value, not by module reference
        if x == 7:
            raise ValueError("seven")
        return x

    raise_line = fails_on_7.__code__.co_firstlineno + 2
    env = env_with(1)
    env.from_sequence(0, 20).map(fails_on_7).name("sevens").add_sink(lambda v: None)
    with pytest.raises(JobExecutionError) as info:
        env.execute("traceback")
    msg = str(info.value)
    assert "<dynamic-code>" not in msg
    assert f'File "{__file__}", line {raise_line}, in fails_on_7' in msg
