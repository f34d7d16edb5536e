"""Timestamps a source's reader gives its records (as Kafka's reader does) are checked like an
assigner's: int milliseconds strictly inside the range of time. 2^63-1 is the end of time: a
record stamped with it used to end event time for everything behind it and then be dropped as
late, without a word. Both source kinds: a ``Source`` whose reader returns stamped batches, and a
``SplitSource`` whose reader returns ``SplitRecords`` with timestamps."""

from __future__ import annotations

from collections import Counter

import pytest

from raystream import (
    JobExecutionError,
    OutputTag,
    StreamExecutionEnvironment,
    TumblingEventTimeWindows,
    WatermarkStrategy,
)
from raystream.core.time import MAX_TS, MIN_TS
from raystream.operators import Source, SplitReader
from raystream.operators.split_source import (
    DiscoveringSplitEnumerator,
    SourceReader,
    SplitRecords,
    SplitSource,
)
from raystream.runtime.elements import Batch
from tests.test_event_time import CountAgg

pytestmark = pytest.mark.usefixtures("ray_session")


class _OnceReader(SplitReader):
    def __init__(self, values: list, stamps: list):
        self.batch: Batch | None = Batch(values, stamps)

    def read(self, max_records: int):
        batch, self.batch = self.batch, None
        return batch


class StampedSource(Source):
    """One split; its reader returns ``values`` stamped with ``stamps`` in one batch."""

    def __init__(self, values: list, stamps: list):
        self.values = values
        self.stamps = stamps

    def create_splits(self, parallelism: int) -> list:
        return ["only"]

    def open_split(self, split, offset) -> SplitReader:  # noqa: ANN001
        return _OnceReader(self.values, self.stamps)


class _OneSplit(DiscoveringSplitEnumerator):
    def discover(self) -> list:
        return ["only"]


class _StampedReader(SourceReader):
    def __init__(self, values: list, stamps: list):
        self.values = values
        self.stamps = stamps
        self.split: str | None = None

    def add_splits(self, splits) -> None:  # noqa: ANN001
        (self.split,) = splits

    def poll(self, max_records: int) -> list:
        if self.split is None:
            return []
        split, self.split = self.split, None
        return [SplitRecords(split, self.values, self.stamps, finished=True)]

    def snapshot_state(self, checkpoint_id: int) -> list:
        return [] if self.split is None else [self.split]


class StampedSplits(SplitSource):
    """The same through the split-source interface (enumerator and reader)."""

    def __init__(self, values: list, stamps: list):
        self.values = values
        self.stamps = stamps

    def create_enumerator(self, context, restored_state=None):  # noqa: ANN001, ANN201
        return _OneSplit(self, context, restored_state, None)

    def create_reader(self, context) -> SourceReader:  # noqa: ANN001
        return _StampedReader(self.values, self.stamps)

    def split_id(self, split) -> str:  # noqa: ANN001
        return str(split)


SOURCES = [StampedSource, StampedSplits]


def _window_counts(source: Source, strategy: WatermarkStrategy | None, bad: OutputTag | None):
    env = StreamExecutionEnvironment()
    env.set_parallelism(1)
    stream = env.from_source(source, strategy, "stamped")
    counts = (
        stream.key_by(lambda v: "all")
        .window(TumblingEventTimeWindows.of(10))
        .aggregate(CountAgg(), window_function=lambda k, ctx, it: [(ctx.window().start, next(iter(it)))])
    )
    if bad is not None:
        counts = counts.union(stream.get_side_output(bad).map(lambda v: ("bad", v)))
    return sorted(counts.execute_and_collect(), key=str)


@pytest.mark.parametrize("kind", SOURCES)
def test_record_timestamps_place_records_in_windows(kind):
    stamps = [1, 5, 12, 15.7, 29, MIN_TS + 1]
    values = list(range(len(stamps)))
    got = _window_counts(kind(values, stamps), WatermarkStrategy.for_monotonous_timestamps(), None)
    expected = Counter(int(t) - int(t) % 10 for t in stamps)
    assert sorted(got) == sorted(expected.items())


@pytest.mark.parametrize("kind", SOURCES)
@pytest.mark.parametrize("with_strategy", [True, False])
def test_a_record_at_the_end_of_time_fails_the_job_naming_the_record(kind, with_strategy):
    source = kind(["early", "at the end of time", "later"], [1, MAX_TS, 3])
    strategy = WatermarkStrategy.for_monotonous_timestamps() if with_strategy else None
    with pytest.raises(JobExecutionError) as info:
        _window_counts(source, strategy, None)
    text = str(info.value)
    assert "'stamped'" in text and "subtask 0" in text, text
    assert "'at the end of time'" in text and str(MAX_TS) in text, text


@pytest.mark.parametrize("kind", SOURCES)
def test_invalid_record_timestamps_can_go_to_a_side_output(kind):
    bad = OutputTag("bad")
    stamps = [1, MAX_TS, None, 12, float("inf"), MIN_TS]
    values = ["a", "end", "none", "b", "inf", "start"]
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_invalid_timestamps_to(bad)
    got = _window_counts(kind(values, stamps), strategy, bad)
    assert sorted(got, key=str) == sorted(
        [(0, 1), (10, 1), ("bad", "end"), ("bad", "none"), ("bad", "inf"), ("bad", "start")],
        key=str,
    )
