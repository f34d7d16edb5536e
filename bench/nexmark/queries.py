"""Nexmark queries q0–q5, q7, q8 as raystream jobs — on rows and, where the query allows, on
columns — and a plain-Python reference of each, so every run's results are checked.

Every query builds its job from the event tables (:mod:`generator`) and ends in a
:class:`Summary` sink, which keeps a count and a checksum of the results (q4 keeps the last
average per category). ``reference(query, events)`` computes the same summary in plain Python.

| query | rows | columns |
|---|---|---|
| q0 pass-through of bids | source → sink | source → sink |
| q1 price × 0.908 | map | vectorized projection |
| q2 ``auction % 123 == 0`` | filter + map | vectorized filter |
| q3 auctions of category 10 ⋈ sellers in OR/ID/CA | filters, connect, keyed co-process (state) | — |
| q4 average winning bid per category | keyed co-process (timer at expiry) → running average | — |
| q5 hot items, 10 s windows sliding 2 s | window count (``agg.count``) → top per window | window count columnar → to_rows → top per window |
| q7 highest bid per 10 s window | keyed process per window | — |
| q8 new persons selling in the same 10 s window | window co-group | — |
"""

from __future__ import annotations

import math
import pickle
from collections import defaultdict
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray

from raystream import (
    KeyedCoProcessFunction,
    KeyedProcessFunction,
    ListStateDescriptor,
    MapStateDescriptor,
    SlidingEventTimeWindows,
    TumblingEventTimeWindows,
    ValueStateDescriptor,
    WatermarkStrategy,
    agg,
)
from raystream.api.columnar import transform_columns
from raystream.operators import Boundedness, Sink, SinkWriter, Source, SplitReader
from raystream.operators.columnar.convert import KEEP
from raystream.runtime.elements import ColumnBatch

BOUND_MS = 4000  # Nexmark: watermark = dateTime - 4 s
ROW_QUERIES = ("q0", "q1", "q2", "q3", "q4", "q5", "q7", "q8")
COLUMN_QUERIES = ("q0", "q1", "q2", "q5")
Q3_STATES = ("OR", "ID", "CA")


# --- sources ------------------------------------------------------------------------------------


class _ChunkReader(SplitReader):
    def __init__(self, chunks: list, offset: int | None):
        self.chunks = chunks
        self.offset = offset or 0

    def read(self, max_records: int) -> list | None:
        if self.offset >= len(self.chunks):
            return None
        rows = pickle.loads(ray.get(self.chunks[self.offset]))
        self.offset += 1
        return rows


class RowSource(Source):
    """The rows (dicts) of a table from the object store, pickled in chunks before timing;
    subtask ``i`` of ``p`` reads every ``p``-th chunk (all subtasks move through event time
    together, as topic partitions would)."""

    boundedness = Boundedness.BOUNDED

    def __init__(self, table: pa.Table, parallelism: int, chunk: int = 8192):
        rows = table.to_pylist()
        chunks = [
            ray.put(pickle.dumps(rows[j : j + chunk], protocol=5))
            for j in range(0, len(rows), chunk)
        ]
        self.shares = [chunks[i::parallelism] for i in range(parallelism)]

    def create_splits(self, parallelism: int) -> list[int]:
        if len(self.shares) != parallelism:
            raise ValueError(f"prepared for parallelism {len(self.shares)}, not {parallelism}")
        return list(range(parallelism))

    def open_split(self, split: int, offset: Any) -> SplitReader:
        return _ChunkReader(self.shares[split], offset)


def date_time(record: dict) -> int:
    return record["dateTime"]


ROW_WATERMARKS = WatermarkStrategy.for_bounded_out_of_orderness(BOUND_MS).with_timestamp_assigner(
    date_time
)
COLUMN_WATERMARKS = WatermarkStrategy.for_bounded_out_of_orderness(BOUND_MS).with_timestamp_column(
    "dateTime"
)


def row_stream(env: Any, table: pa.Table, name: str, parallelism: int) -> Any:
    return env.from_source(RowSource(table, parallelism), ROW_WATERMARKS, name)


def column_stream(env: Any, table: pa.Table, name: str) -> Any:
    return env.from_arrow(table, COLUMN_WATERMARKS, source_name=name)


# --- the summary sink ---------------------------------------------------------------------------


def summarize(query: str, records: list) -> tuple:
    """``(count, checksum)`` of result records (q4: its last average per category)."""
    if query == "q4":
        last: dict = {}
        for category, average in records:
            last[category] = average
        return tuple(sorted(last.items()))
    return (len(records), sum(checksum(query, r) for r in records))


def checksum(query: str, r: Any) -> int:
    if query in ("q0", "q2", "q7"):
        return r["price"] + r["auction"]
    if query == "q1":
        return math.floor(r["price"] * 1000) + r["auction"]
    if query == "q3":
        return r[3] + len(r[0])
    if query == "q5":
        return r[0] // 1000 + r[1] * r[2]
    if query == "q8":
        return r[0] + r[2] // 1000
    raise ValueError(query)


class _SummaryWriter(SinkWriter):
    def __init__(self, query: str):
        self.query = query
        self.count = 0
        self.total = 0
        self.last: dict = {}

    def write(self, batch: Any) -> None:
        if type(batch) is ColumnBatch:  # columnar results: the checksum vectorized
            rb = batch.values
            self.count += rb.num_rows
            if self.query == "q1":
                price = pc.floor(pc.multiply(rb.column("price"), 1000)).cast(pa.int64())
                self.total += pc.sum(pc.add(price, rb.column("auction"))).as_py() or 0
            else:
                self.total += pc.sum(pc.add(rb.column("price"), rb.column("auction"))).as_py() or 0
            return
        if self.query == "q4":
            for category, average in batch.values:
                self.last[category] = average
            return
        self.count += len(batch.values)
        self.total += sum(checksum(self.query, r) for r in batch.values)

    def result(self) -> Any:
        return self.last if self.query == "q4" else (self.count, self.total)


class Summary(Sink):
    accepts_columns = True

    def __init__(self, query: str):
        self.query = query

    def create_writer(self, context: Any) -> SinkWriter:
        return _SummaryWriter(self.query)


def combine(query: str, parts: list) -> tuple:
    if query == "q4":
        merged: dict = {}
        for part in parts:
            merged.update(part)
        return tuple(sorted(merged.items()))
    return (sum(p[0] for p in parts), sum(p[1] for p in parts))


# --- row queries --------------------------------------------------------------------------------


def q1_convert(bid: dict) -> dict:
    return {
        "auction": bid["auction"],
        "bidder": bid["bidder"],
        "price": bid["price"] * 0.908,
        "dateTime": bid["dateTime"],
    }


def q2_keep(bid: dict) -> bool:
    return bid["auction"] % 123 == 0


def q2_project(bid: dict) -> dict:
    return {"auction": bid["auction"], "price": bid["price"]}


def q3_person(person: dict) -> bool:
    return person["state"] in Q3_STATES


def q3_auction(auction: dict) -> bool:
    return auction["category"] == 10


def person_id(person: dict) -> int:
    return person["id"]


def seller_of(auction: dict) -> int:
    return auction["seller"]


def auction_id(auction: dict) -> int:
    return auction["id"]


def auction_of(bid: dict) -> int:
    return bid["auction"]


class Q3Join(KeyedCoProcessFunction):
    """Incremental join person ⋈ auction on ``person.id = auction.seller``: the person is
    kept, auctions that come before their seller wait for it."""

    def open(self, ctx: Any) -> None:
        self.person = ctx.get_state(ValueStateDescriptor("person"))
        self.waiting = ctx.get_list_state(ListStateDescriptor("waiting"))

    def process_element1(self, person: dict, ctx: Any):
        self.person.update((person["name"], person["city"], person["state"]))
        for auction in self.waiting.get() or []:
            yield (person["name"], person["city"], person["state"], auction)
        self.waiting.clear()

    def process_element2(self, auction: dict, ctx: Any):
        p = self.person.value()
        if p is None:
            self.waiting.add(auction["id"])
        else:
            yield (*p, auction["id"])


class Q4WinningBid(KeyedCoProcessFunction):
    """Per auction: the highest bid between its opening and its expiry, emitted as
    ``(category, price)`` when the watermark passes the expiry (bids that come before their
    auction wait for it)."""

    def open(self, ctx: Any) -> None:
        self.auction = ctx.get_state(ValueStateDescriptor("auction"))
        self.best = ctx.get_state(ValueStateDescriptor("best"))
        self.early = ctx.get_list_state(ListStateDescriptor("early"))

    def _offer(self, a: tuple, bid: tuple) -> None:
        opened, expires, _ = a
        price, when = bid
        if opened <= when <= expires:
            best = self.best.value()
            if best is None or price > best:
                self.best.update(price)

    def process_element1(self, auction: dict, ctx: Any):
        a = (auction["dateTime"], auction["expires"], auction["category"])
        self.auction.update(a)
        for bid in self.early.get() or []:
            self._offer(a, bid)
        self.early.clear()
        ctx.timer_service().register_event_time_timer(auction["expires"])
        return []

    def process_element2(self, bid: dict, ctx: Any):
        a = self.auction.value()
        b = (bid["price"], bid["dateTime"])
        if a is None:
            self.early.add(b)
        else:
            self._offer(a, b)
        return []

    def on_timer(self, timestamp: int, ctx: Any):
        a, best = self.auction.value(), self.best.value()
        if a is not None and best is not None:
            yield (a[2], best)
        self.auction.clear()
        self.best.clear()
        self.early.clear()


def category_of(pair: tuple) -> int:
    return pair[0]


class RunningAverage(KeyedProcessFunction):
    def open(self, ctx: Any) -> None:
        self.sum = ctx.get_state(ValueStateDescriptor("sum"))
        self.n = ctx.get_state(ValueStateDescriptor("n"))

    def process_element(self, pair: tuple, ctx: Any):
        total = (self.sum.value() or 0) + pair[1]
        n = (self.n.value() or 0) + 1
        self.sum.update(total)
        self.n.update(n)
        yield (pair[0], total / n)


def window_start_of(result: Any) -> int:
    return result["window_start"]


class HotItems(KeyedProcessFunction):
    """Per window: the auctions with the most bids, once every count of the window is in
    (a timer at the window's ``end − 1``, the timestamp of its counts)."""

    def open(self, ctx: Any) -> None:
        self.counts = ctx.get_map_state(MapStateDescriptor("counts"))

    def process_element(self, result: Any, ctx: Any):
        self.counts.put(result["auction"], result["count"])
        ctx.timer_service().register_event_time_timer(result["window_end"] - 1)
        return []

    def on_timer(self, timestamp: int, ctx: Any):
        items = list(self.counts.items())
        top = max(n for _, n in items)
        start = ctx.get_current_key()
        for auction, n in sorted(items):
            if n == top:
                yield (start, auction, n)
        self.counts.clear()


def ten_second_window(bid: dict) -> int:
    return bid["dateTime"] - bid["dateTime"] % 10_000


class HighestBid(KeyedProcessFunction):
    """Per 10 s window (the key): the bids with the highest price, at the window's end."""

    def open(self, ctx: Any) -> None:
        self.top = ctx.get_state(ValueStateDescriptor("top"))
        self.bids = ctx.get_list_state(ListStateDescriptor("bids"))

    def process_element(self, bid: dict, ctx: Any):
        top = self.top.value()
        price = bid["price"]
        if top is None or price > top:
            self.top.update(price)
            self.bids.update([bid])
            if top is None:
                ctx.timer_service().register_event_time_timer(ctx.get_current_key() + 9_999)
        elif price == top:
            self.bids.add(bid)
        return []

    def on_timer(self, timestamp: int, ctx: Any):
        yield from self.bids.get() or []
        self.top.clear()
        self.bids.clear()


def q8_new_sellers(persons: Any, auctions: Any):
    if persons and auctions:
        seen = set()
        for p in persons:
            if p["id"] not in seen:
                seen.add(p["id"])
                yield (p["id"], p["name"], ten_second_window(p))


def build_rows(query: str, env: Any, events: Any, parallelism: int) -> Any:
    if query in ("q0", "q1", "q2", "q5", "q7"):
        bids = row_stream(env, events.bids, "bids", parallelism)
        if query == "q0":
            return bids
        if query == "q1":
            return bids.map(q1_convert)
        if query == "q2":
            return bids.filter(q2_keep).map(q2_project)
        if query == "q5":
            counts = (
                bids.key_by(auction_of)
                .window(SlidingEventTimeWindows.of(10_000, 2_000))
                .aggregate(agg.count().alias("count"))
            )
            return counts.map(_q5_row).key_by(window_start_of).process(HotItems())
        return bids.key_by(ten_second_window).process(HighestBid())
    persons = row_stream(env, events.persons, "persons", parallelism)
    auctions = row_stream(env, events.auctions, "auctions", parallelism)
    if query == "q3":
        people = persons.filter(q3_person)
        return (
            people.connect(auctions.filter(q3_auction))
            .key_by(person_id, seller_of)
            .process(Q3Join())
        )
    if query == "q4":
        bids = row_stream(env, events.bids, "bids", parallelism)
        winning = auctions.connect(bids).key_by(auction_id, auction_of).process(Q4WinningBid())
        return winning.key_by(category_of).process(RunningAverage())
    if query == "q8":
        return (
            persons.co_group(auctions)
            .where(person_id)
            .equal_to(seller_of)
            .window(TumblingEventTimeWindows.of(10_000))
            .apply(q8_new_sellers)
        )
    raise ValueError(query)


def _q5_row(result: Any) -> dict:
    """A window count (a ``Row``: key, window_start, window_end, count) as HotItems takes it."""
    return {
        "auction": result["key"],
        "window_start": result["window_start"],
        "window_end": result["window_end"],
        "count": result["count"],
    }


# --- columnar queries ---------------------------------------------------------------------------


def q1_columns(rb: pa.RecordBatch) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [
            rb.column("auction"),
            rb.column("bidder"),
            pc.multiply(rb.column("price"), 0.908),
            rb.column("dateTime"),
        ],
        names=["auction", "bidder", "price", "dateTime"],
    )


def q2_columns(rb: pa.RecordBatch) -> pa.RecordBatch:
    auction = rb.column("auction")
    keep = pa.array(auction.to_numpy() % 123 == 0)
    return pa.RecordBatch.from_arrays(
        [auction, rb.column("price"), keep], names=["auction", "price", KEEP]
    )


def build_columns(query: str, env: Any, events: Any, parallelism: int) -> Any:
    bids = column_stream(env, events.bids, "bids")
    if query == "q0":
        return bids
    if query == "q1":
        return transform_columns(bids, q1_columns, "Q1")
    if query == "q2":
        return transform_columns(bids, q2_columns, "Q2")
    if query == "q5":
        counts = (
            bids.key_by("auction")
            .window(SlidingEventTimeWindows.of(10_000, 2_000))
            .aggregate(agg.count().alias("count"))
        )
        return counts.to_rows().key_by(window_start_of).process(HotItems())
    raise ValueError(f"{query} has no columnar form here")


# --- plain-Python references --------------------------------------------------------------------


def reference(query: str, events: Any) -> tuple:
    bids = events.bids.to_pylist() if query in ("q0", "q1", "q2", "q4", "q5", "q7") else []
    if query == "q0":
        return summarize(query, bids)
    if query == "q1":
        return summarize(query, [q1_convert(b) for b in bids])
    if query == "q2":
        return summarize(query, [q2_project(b) for b in bids if q2_keep(b)])
    if query == "q3":
        persons = {p["id"]: p for p in events.persons.to_pylist() if q3_person(p)}
        out = [
            (
                persons[a["seller"]]["name"],
                persons[a["seller"]]["city"],
                persons[a["seller"]]["state"],
                a["id"],
            )
            for a in events.auctions.to_pylist()
            if q3_auction(a) and a["seller"] in persons
        ]
        return summarize(query, out)
    if query == "q4":
        auctions = {a["id"]: a for a in events.auctions.to_pylist()}
        best: dict = {}
        for b in bids:
            a = auctions.get(b["auction"])
            if a is not None and a["dateTime"] <= b["dateTime"] <= a["expires"]:
                best[a["id"]] = max(best.get(a["id"], b["price"]), b["price"])
        per: dict = defaultdict(lambda: [0, 0])
        ordered = sorted(best.items(), key=lambda kv: (auctions[kv[0]]["expires"], kv[0]))
        out = []
        for aid, price in ordered:
            c = per[auctions[aid]["category"]]
            c[0] += price
            c[1] += 1
            out.append((auctions[aid]["category"], c[0] / c[1]))
        return summarize(query, out)
    if query == "q5":
        counts: dict = defaultdict(int)
        for b in bids:
            t = b["dateTime"]
            start = t - t % 2000
            while start > t - 10_000:
                counts[(start, b["auction"])] += 1
                start -= 2000
        per_window: dict = defaultdict(list)
        for (start, auction), n in counts.items():
            per_window[start].append((auction, n))
        out = []
        for start, items in per_window.items():
            top = max(n for _, n in items)
            out.extend((start, a, n) for a, n in items if n == top)
        return summarize(query, out)
    if query == "q7":
        windows: dict = defaultdict(list)
        for b in bids:
            windows[ten_second_window(b)].append(b)
        out = []
        for items in windows.values():
            top = max(b["price"] for b in items)
            out.extend(b for b in items if b["price"] == top)
        return summarize(query, out)
    if query == "q8":
        sellers = {(ten_second_window(a), a["seller"]) for a in events.auctions.to_pylist()}
        out = [
            (p["id"], p["name"], ten_second_window(p))
            for p in events.persons.to_pylist()
            if (ten_second_window(p), p["id"]) in sellers
        ]
        return summarize(query, out)
    raise ValueError(query)
