"""Failures that end, with the cause in view: bounded default restarts, deterministic failures
detected, a structured failure history (issue 9 §3a)."""

from __future__ import annotations

import pathlib
import threading

import pytest

from raystream import (
    JobExecutionError,
    KeyedProcessFunction,
    MapFunction,
    RestartStrategies,
    StreamExecutionEnvironment,
    ValueStateDescriptor,
)
from raystream.checkpoint_config import (
    DEFAULT_RESTART_ATTEMPTS,
    ExponentialDelayRestart,
    default_restart_strategy,
)
from raystream.checkpointing import HashMapStateBackend, LmdbStateBackend
from raystream.errors import TaskError, UserFunctionError
from raystream.runtime.failures import FailureEntry, FailureHistory, describe_failure
from tests.chaos_jobs import PacedEvents

# -- pure logic ------------------------------------------------------------------------------


def user_error(record: str, message: str = "division by zero", subtask: int = 0):
    return UserFunctionError(
        f"ZeroDivisionError in operator 'div', subtask {subtask} while processing record "
        f"{record}: {message}\n--- original traceback ---\n...",
        operator="div",
        subtask=subtask,
        record=record,
        cause_type="ZeroDivisionError",
    )


def test_describe_failure_takes_operator_subtask_record_and_the_users_exception():
    entry = describe_failure(user_error("42"), attempt=3, now_ms=1000)
    assert entry == FailureEntry(
        3, 1000, "ZeroDivisionError", "division by zero", "div", 0, "42", "user"
    )
    assert "ZeroDivisionError in operator 'div', subtask 0 on record 42" in entry.summary()
    other = describe_failure(TaskError("task lost\nmore", "chain", 1), attempt=0, now_ms=5)
    assert other == FailureEntry(0, 5, "TaskError", "task lost", "chain", 1, None)
    assert other.signature() is None


def test_the_same_error_on_the_same_record_on_consecutive_attempts_is_deterministic():
    h = FailureHistory(repeats=3)
    for attempt in range(2):
        h.add(describe_failure(user_error("42"), attempt, attempt))
        assert not h.is_deterministic()
    h.add(describe_failure(user_error("42"), 2, 2))
    assert h.consecutive_repeats() == 3 and h.is_deterministic()


@pytest.mark.parametrize(
    "second",
    [
        user_error("43"),  # another record
        user_error("42", "other message"),  # another error
        user_error("42", subtask=1),  # another subtask
        TaskError("actor died", "div", 0),  # not tied to a record
    ],
)
def test_a_different_failure_in_between_breaks_the_streak(second):
    h = FailureHistory(repeats=2)
    h.add(describe_failure(user_error("42"), 0, 0))
    h.add(describe_failure(second, 1, 1))
    assert not h.is_deterministic()
    h.add(describe_failure(user_error("42"), 2, 2))
    assert h.consecutive_repeats() == 1 and not h.is_deterministic()


def test_detection_off_with_zero_repeats():
    h = FailureHistory(repeats=0)
    for attempt in range(5):
        h.add(describe_failure(user_error("42"), attempt, attempt))
    assert h.consecutive_repeats() == 5 and not h.is_deterministic()


def test_default_restart_strategy_is_bounded():
    strategy = default_restart_strategy(checkpointing=True)
    assert isinstance(strategy, ExponentialDelayRestart)
    delays = [strategy.next_delay_ms(i) for i in range(DEFAULT_RESTART_ATTEMPTS + 1)]
    assert all(d is not None for d in delays[:-1])
    assert delays[-1] is None
    assert default_restart_strategy(checkpointing=False).next_delay_ms(0) is None


# -- on Ray ----------------------------------------------------------------------------------


class FailOn(MapFunction):
    def __init__(self, bad: int):
        self.bad = bad

    def map(self, value):
        if value == self.bad:
            raise ValueError(f"cannot take {value}")
        return value


class FailOnceOn(MapFunction):
    """Fails on ``bad`` the first time any attempt reaches it (a marker file remembers)."""

    def __init__(self, bad: int, marker: str):
        self.bad = bad
        self.marker = marker

    def map(self, value):
        if value == self.bad:
            path = pathlib.Path(self.marker)
            if not path.exists():
                path.write_text("failed once")
                raise ConnectionError(f"transient failure on {value}")
        return value


def checkpointed_env(tmp_path: pathlib.Path) -> StreamExecutionEnvironment:
    env = StreamExecutionEnvironment()
    env.set_parallelism(1)
    env.enable_checkpointing(100)
    env.get_checkpoint_config().set_checkpoint_storage(str(tmp_path / "c"))
    return env


@pytest.mark.usefixtures("ray_session")
@pytest.mark.timeout(120)
def test_deterministic_failure_with_the_default_strategy_ends_the_job_with_its_cause(tmp_path):
    env = checkpointed_env(tmp_path)  # no restart strategy set: the default one
    env.from_collection(list(range(100))).map(FailOn(42)).name("picky").add_sink(lambda v: None)
    client = env.execute_async("deterministic")
    with pytest.raises(JobExecutionError) as info:
        client.wait(100)
    text = str(info.value)
    assert "3 consecutive attempts" in text and "deterministic" in text
    assert "ValueError in operator 'picky', subtask 0 on record 42: cannot take 42" in text
    assert "ray::" not in text.splitlines()[0]
    assert isinstance(info.value.root_cause, UserFunctionError)
    expected = {
        "exception": "ValueError",
        "message": "cannot take 42",
        "operator": "picky",
        "subtask": 0,
        "record": "42",
    }
    history = client.get_failure_history()
    assert [e["attempt"] for e in history] == [0, 1, 2]
    for entry in history:
        assert {k: entry[k] for k in expected} == expected
    assert info.value.failure_history == history
    stats = client.get_checkpoint_stats()
    assert stats["restarts"] == 2 and stats["failures"] == history


@pytest.mark.usefixtures("ray_session")
@pytest.mark.timeout(120)
def test_a_transient_failure_still_recovers_and_is_in_the_history(tmp_path):
    env = checkpointed_env(tmp_path)  # the default restart strategy
    marker = str(tmp_path / "failed-once")
    out = env.from_collection(list(range(50))).map(FailOnceOn(17, marker)).name("flaky")
    with out.execute_and_collect("transient") as it:
        values = sorted(it)
        result = it.client.wait()
    assert values == list(range(50))  # exactly once through the restart
    assert pathlib.Path(marker).read_text() == "failed once"
    assert result.restarts == 1
    assert [
        (e["attempt"], e["operator"], e["record"], e["exception"]) for e in result.failures
    ] == [(0, "flaky", "17", "ConnectionError")]
    assert it.client.get_failure_history() == result.failures


# -- unserializable keyed state (§3b) ----------------------------------------------------------


class StashCallable(KeyedProcessFunction):
    """Keeps a lock (which cannot be pickled) in keyed state for key 'b'."""

    def open(self, ctx):
        self.holder = ctx.get_state(ValueStateDescriptor("holder"))

    def process_element(self, value, ctx):
        self.holder.update(threading.Lock() if value == "b" else value)
        yield value


@pytest.mark.usefixtures("ray_session")
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "backend", [HashMapStateBackend(), LmdbStateBackend()], ids=["memory", "lmdb"]
)
def test_unserializable_keyed_state_names_the_state_the_key_and_the_operator(tmp_path, backend):
    env = checkpointed_env(tmp_path)
    env.set_state_backend(backend)
    env.set_restart_strategy(RestartStrategies.no_restart())
    (
        env.from_source(PacedEvents(200, 400.0), source_name="events")
        .map(lambda e: "ab"[e[1] % 2])
        .key_by(lambda v: v)
        .process(StashCallable())
        .name("stash")
        .add_sink(lambda v: None)
    )
    with pytest.raises(JobExecutionError) as info:
        env.execute("unserializable")
    first = str(info.value).splitlines()[0]
    assert "StateSerializationError in operator 'stash', subtask 0 while processing" in first
    assert (
        "the value of keyed state 'holder' for key 'b' cannot be serialized (TypeError: cannot "
        "pickle '_thread.lock' object)"
    ) in first
    assert "None:" not in first
    if isinstance(backend, LmdbStateBackend):  # caught at the update, on the record
        assert "while processing record 'b'" in first
    else:  # caught by the first checkpoint that serializes it
        assert "while processing snapshot of checkpoint" in first
