"""A complete custom connector on raystream's split-source API: a partitioned log on local disk.

It is also how the split-source runtime is tested without a broker (tests/test_split_sources.py).
A "topic" is a directory; each partition is a file ``p-<n>.log`` of JSON lines, appended to by
the test while the job runs (``LogWriter``). A split is ``(partition, position)`` with the
position in lines; the enumerator lists the directory (new files are new partitions); a reader
reads the lines appended since its position. Bounded mode stops every partition at the line
count it had when discovered.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from typing import Any

from raystream import (
    Boundedness,
    DiscoveringSplitEnumerator,
    ReaderContext,
    SourceReader,
    SplitRecords,
    SplitSource,
)


@dataclass(frozen=True)
class LogSplit:
    partition: int
    position: int = 0  # lines read
    stop: int | None = None  # bounded: read up to this many lines


class LogWriter:
    def __init__(self, directory: str):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)

    def close_partition(self, partition: int) -> None:
        self.append(partition, [{"end": True}])

    def close_topic(self) -> None:
        """No partition will be added any more."""
        open(os.path.join(self.directory, "CLOSED"), "w").close()

    def append(self, partition: int, records: list[dict]) -> None:
        path = os.path.join(self.directory, f"p-{partition}.log")
        tmp_lines = "".join(json.dumps(r) + "\n" for r in records)
        with open(path, "a") as f:
            f.write(tmp_lines)
            f.flush()


def _partitions(directory: str) -> list[int]:
    out = []
    for name in os.listdir(directory):
        if name.startswith("p-") and name.endswith(".log"):
            out.append(int(name[2:-4]))
    return sorted(out)


def _line_count(path: str) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.endswith(b"\n"))


class _Enumerator(DiscoveringSplitEnumerator):
    def discover(self) -> list[LogSplit]:
        src: LogSource = self.source  # type: ignore[assignment]
        splits = []
        for p in _partitions(src.directory):
            stop = None
            if src.bounded:
                stop = _line_count(os.path.join(src.directory, f"p-{p}.log"))
            splits.append(LogSplit(p, 0, stop))
        return splits

    def owner(self, split: Any, parallelism: int) -> int:
        return split.partition % parallelism

    def discovery_finished(self) -> bool:
        src: LogSource = self.source  # type: ignore[assignment]
        return src.bounded or os.path.exists(os.path.join(src.directory, "CLOSED"))


class _Reader(SourceReader):
    def __init__(self, source: LogSource, context: ReaderContext):
        self.source = source
        self.context = context
        self.splits: dict[str, LogSplit] = {}
        self.files: dict[str, Any] = {}
        self.partial: dict[str, bytes] = {}

    def add_splits(self, splits: list[Any]) -> None:
        for s in splits:
            sid = self.source.split_id(s)
            self.splits[sid] = s
            f = open(os.path.join(self.source.directory, f"p-{s.partition}.log"), "rb")  # noqa: SIM115
            for _ in range(s.position):
                f.readline()
            self.files[sid] = f
            self.partial[sid] = b""

    def poll(self, max_records: int) -> list[SplitRecords]:
        out = []
        budget = max_records
        for sid, split in list(self.splits.items()):
            if budget <= 0:
                break
            f = self.files[sid]
            values, stamps = [], []
            while budget > 0 and (split.stop is None or split.position < split.stop):
                line = f.readline()
                if not line:
                    break
                if not line.endswith(b"\n"):  # a line being written: read it again later
                    self.partial[sid] += line
                    break
                line = self.partial[sid] + line
                self.partial[sid] = b""
                rec = json.loads(line)
                split = replace(split, position=split.position + 1)
                if rec.get("end"):  # the writer closed this partition
                    split = replace(split, stop=split.position)
                    break
                values.append(rec)
                stamps.append(rec["ts"])
                budget -= 1
            self.splits[sid] = split
            finished = split.stop is not None and split.position >= split.stop
            if values or finished:
                out.append(SplitRecords(sid, values, stamps, finished))
            if finished:
                self.files.pop(sid).close()
                del self.splits[sid]
        return out

    def snapshot_state(self, checkpoint_id: int) -> list[Any]:
        return list(self.splits.values())

    def close(self) -> None:
        for f in self.files.values():
            f.close()


class LogSource(SplitSource):
    def __init__(self, directory: str, bounded: bool = False, discovery_interval_ms: int = 100):
        self.directory = directory
        self.bounded = bounded
        self.discovery_interval_ms = None if bounded else discovery_interval_ms
        self.boundedness = Boundedness.BOUNDED if bounded else Boundedness.CONTINUOUS_UNBOUNDED

    def create_enumerator(self, context: Any, restored_state: Any) -> _Enumerator:
        return _Enumerator(self, context, restored_state, self.discovery_interval_ms)

    def create_reader(self, context: ReaderContext) -> _Reader:
        return _Reader(self, context)

    def split_id(self, split: Any) -> str:
        return f"p-{split.partition}"


def main() -> None:
    """Three partitions, one far behind in event time; counts per partition and second."""
    import tempfile

    from raystream import (
        Duration,
        StreamExecutionEnvironment,
        TumblingEventTimeWindows,
        WatermarkStrategy,
    )

    directory = tempfile.mkdtemp(prefix="log-topic-")
    writer = LogWriter(directory)
    for p in range(3):
        writer.append(p, [{"p": p, "ts": (p * 10_000) + i * 10} for i in range(500)])
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(2)
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(100))
    counts = (
        env.from_source(LogSource(directory, bounded=True), strategy, "partitioned log")
        .map(lambda r: (r["p"], r["ts"] // 1000 * 1000, 1))
        .key_by(lambda t: (t[0], t[1]))
        .window(TumblingEventTimeWindows.of(Duration.of_seconds(1)))
        .reduce(lambda a, b: (a[0], a[1], a[2] + b[2]))
    )
    for partition, second, n in sorted(counts.execute_and_collect("partitioned-log")):
        print(f"partition {partition} second {second}: {n} records")


if __name__ == "__main__":
    main()
