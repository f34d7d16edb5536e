"""Internal: the progress line ``execute()`` and ``execute_and_collect()`` show on a terminal.

    [#####.......]  45%  452,000/1,000,000 records  120k/s  watermark 12:00:03.250  lag 2.1s

Records read is what the sources read (of the total when every source knows it in advance,
e.g. ``from_collection`` or a bounded ``from_sequence``), the rate is over the last refresh, and
the watermark is the event time the last tasks of the job have reached (UTC), with its lag
behind the clock; what does not fit the terminal's width is left off from the right. It is drawn on stderr
when stderr is a terminal, and never in CI (``CI`` set) or on a dumb terminal;
``RAYSTREAM_PROGRESS=1`` / ``=0`` forces it on or off. :func:`render` and :func:`should_show`
are pure; :class:`ProgressLine` polls the job master from a daemon thread.
"""

from __future__ import annotations

import datetime
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from raystream.core.time import MAX_TS
from raystream.observe.graph import expected_records
from raystream.observe.samples import (
    JobSample,
    increase,
    job_watermark,
    parse,
    source_records_read,
    watermark_lag_ms,
)

ENV_PROGRESS = "RAYSTREAM_PROGRESS"
REFRESH_S = 0.5
BAR_WIDTH = 12


def should_show(stream: Any, environ: Mapping[str, str]) -> bool:
    """Whether to draw progress on ``stream``: ``RAYSTREAM_PROGRESS`` decides if set (``0``,
    ``false``, ``no``, ``off`` or empty: off; anything else: on); otherwise only on a terminal
    that is not dumb, and never under CI."""
    forced = environ.get(ENV_PROGRESS)
    if forced is not None:
        return forced.strip().lower() not in ("", "0", "false", "no", "off")
    if environ.get("CI") or environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed stream
        return False


def human_count(n: float) -> str:
    """1234 → '1,234'; large rates compactly: 1234567.0 → '1.23M'."""
    if n >= 10_000_000:
        return f"{n / 1e6:.1f}M"
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 100_000:
        return f"{n / 1e3:.0f}k"
    if n >= 10_000:
        return f"{n / 1e3:.1f}k"
    return f"{n:,.0f}"


def format_event_time(ts_ms: int, now_ms: int | None = None) -> str:
    """An event-time watermark in UTC: the time of day, with the date unless it is the date
    of ``now_ms``."""
    if ts_ms >= MAX_TS:
        return "end"
    utc = datetime.timezone.utc
    try:
        t = datetime.datetime.fromtimestamp(ts_ms / 1000, tz=utc)
    except (OverflowError, OSError, ValueError):
        return str(ts_ms)
    text = t.strftime("%H:%M:%S.") + f"{t.microsecond // 1000:03d}"
    if now_ms is None or datetime.datetime.fromtimestamp(now_ms / 1000, tz=utc).date() != t.date():
        text = t.strftime("%Y-%m-%d ") + text
    return text


def format_duration_ms(ms: float) -> str:
    s = ms / 1000
    if abs(s) < 60:
        return f"{s:.1f}s"
    if abs(s) < 3600:
        return f"{s / 60:.1f}min"
    if abs(s) < 86400 * 2:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.0f}d"


def render(
    read: int,
    total: int | None,
    rate: float | None,
    watermark: int | None,
    now_ms: int,
    width: int,
) -> str:
    """The progress line (at most ``width`` characters): a bar and percentage when the total
    is known, records read, the rate, the watermark and its lag."""
    parts = []
    if total:
        done = min(1.0, read / total)
        filled = int(done * BAR_WIDTH)
        parts.append("[" + "#" * filled + "." * (BAR_WIDTH - filled) + f"] {done * 100:3.0f}%")
        parts.append(f"{read:,}/{total:,} records")
    else:
        parts.append(f"{read:,} records")
    if rate is not None:
        parts.append(f"{human_count(rate)}/s")
    if watermark is not None:
        parts.append(f"watermark {format_event_time(watermark, now_ms)}")
        lag = watermark_lag_ms(watermark, now_ms)
        if lag is not None:
            parts.append(f"lag {format_duration_ms(lag)}")
    line = "  ".join(parts)
    while len(line) > width and len(parts) > 1:  # drop from the right: the count stays
        parts.pop()
        line = "  ".join(parts)
    return line[:width]


class ProgressState:
    """Turns successive samples of one job into the arguments of :func:`render`."""

    def __init__(self, graph: dict[str, Any]):
        self.total = expected_records(graph)
        self.sources = {n["id"] for n in graph["nodes"] if n["source"]}
        self.heads = {n["id"]: n["operators"][0] for n in graph["nodes"] if n["operators"]}
        srcs = {e["src"] for e in graph["edges"]}
        self.sinks = {n["id"] for n in graph["nodes"] if n["id"] not in srcs}
        self._prev: tuple[float, int] | None = None

    def line(self, sample: JobSample, width: int) -> str:
        read = source_records_read(sample, self.sources, self.heads)
        rate = None
        if self._prev is not None and sample.at_s > self._prev[0]:
            rate = increase(self._prev[1], read) / (sample.at_s - self._prev[0])
        self._prev = (sample.at_s, read)
        return render(
            read, self.total, rate, job_watermark(sample, self.sinks), sample.at_ms, width
        )


class ProgressLine:
    """Draws a job's progress on ``stream`` every ``refresh_s`` from a daemon thread until
    :meth:`stop`, which clears the line. ``client`` is a ``JobClient``."""

    def __init__(
        self,
        client: Any,
        stream: TextIO,
        refresh_s: float = REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ):
        self.client = client
        self.stream = stream
        self.refresh_s = refresh_s
        self.clock = clock
        self.wall_ms = wall_ms
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._drawn = 0

    def start(self) -> ProgressLine:
        self._thread = threading.Thread(target=self._run, name="raystream-progress", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._drawn:
            self._write("\r" + " " * self._drawn + "\r")
            self._drawn = 0

    def __enter__(self) -> ProgressLine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (ValueError, OSError):  # the stream went away: nothing to draw on
            self._stop.set()

    def _run(self) -> None:
        try:
            state = ProgressState(self.client.describe()["graph"])
        except Exception:  # no progress is better than a failing job run
            return
        while not self._stop.is_set():
            try:
                sample = parse(self.client.metrics(), self.clock(), self.wall_ms())
            except Exception:
                sample = None
            if self._stop.is_set():
                break
            if sample is not None:
                width = max(20, shutil.get_terminal_size((100, 20)).columns - 1)
                line = state.line(sample, width)
                self._write("\r" + line + " " * max(0, self._drawn - len(line)))
                self._drawn = len(line)
            self._stop.wait(self.refresh_s)


def progress_for(client: Any, stream: TextIO | None = None) -> ProgressLine | None:
    """A started :class:`ProgressLine` for ``client`` if progress is to be shown on ``stream``
    (stderr by default), else None."""
    import sys

    stream = stream if stream is not None else sys.stderr
    if not should_show(stream, os.environ):
        return None
    return ProgressLine(client, stream).start()
