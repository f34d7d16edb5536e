"""Internal: how an edge of a columnar stream spreads a producer's column batches.

The same connectivity as the row partitioners (:mod:`raystream.graph.partitioners`), with
routers that hand whole :class:`ColumnBatch` es or vectorized slices of them to the senders
(``add_columns``), never rows. ``key_by("col", ...)`` routes each row to the subtask owning its
key group, computed by :class:`~raystream.core.column_keys.ColumnKeyGroups` (the same group as
the row path's for the same key). Rebalance and rescale deal out whole batches round robin.
Shuffle and custom partitioning have no columnar form (they decide per record). No Ray here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from raystream.core.column_keys import ColumnKeyGroups
from raystream.errors import GraphError
from raystream.graph.partitioners import (
    BroadcastPartitioner,
    ForwardPartitioner,
    GlobalPartitioner,
    Partitioner,
    RebalancePartitioner,
    RescalePartitioner,
    Router,
)
from raystream.runtime.elements import ColumnBatch


class ColumnSender(Protocol):
    def add_columns(self, part: ColumnBatch) -> None: ...


class _ToFirst:
    def route(self, batch: Any, senders: Sequence[Any]) -> None:
        senders[0].add_columns(batch)


class _Broadcast:
    def route(self, batch: Any, senders: Sequence[Any]) -> None:
        for s in senders:
            s.add_columns(batch)


class _RoundRobinBatches:
    """Whole batches round robin (a batch is the unit of work on a columnar stream)."""

    def __init__(self, start: int, n: int):
        self.next = start % n
        self.n = n

    def route(self, batch: Any, senders: Sequence[Any]) -> None:
        senders[self.next].add_columns(batch)
        self.next = (self.next + 1) % self.n


class _ByKeyGroup:
    """Rows to the subtask owning their key group; one ``take`` per target subtask."""

    def __init__(self, columns: tuple[str, ...], n: int, max_parallelism: int, edge_name: str):
        self.key_groups = ColumnKeyGroups(columns, max_parallelism)
        self.n = n
        self.owner: np.ndarray = np.arange(max_parallelism, dtype=np.int64) * n // max_parallelism
        self.edge_name = edge_name

    def route(self, batch: Any, senders: Sequence[Any]) -> None:
        n = self.n
        if not len(batch):
            return
        kgs = self.key_groups(batch.values, f"key_by of {self.edge_name!r}")
        if n == 1:
            senders[0].add_columns(batch)
            return
        targets = self.owner[kgs]
        if n <= 8:  # a pass per target beats a sort
            for k in range(n):
                rows = np.flatnonzero(targets == k)
                if len(rows) == len(targets):
                    senders[k].add_columns(batch)
                elif len(rows):
                    senders[k].add_columns(batch.take(rows))
            return
        # a stable sort of small ints is a radix sort: rows of a target keep their order
        order = np.argsort(targets.astype(np.uint16), kind="stable")
        counts = np.bincount(targets, minlength=n)
        start = 0
        for k in range(n):
            c = int(counts[k])
            if c:
                senders[k].add_columns(batch.take(order[start : start + c]))
                start += c


class ColumnKeyGroupPartitioner(Partitioner):
    """``key_by("col", ...)`` of a columnar stream: row → key (column values) → key group →
    the consumer subtask owning that key group."""

    name = "hash"

    def __init__(self, columns: Sequence[str]):
        self.columns = tuple(columns)

    def router(
        self, producer: int, num_targets: int, max_parallelism: int, edge_name: str
    ) -> Router:
        return _ByKeyGroup(self.columns, num_targets, max_parallelism, edge_name)  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"HASH({', '.join(self.columns)})"


class ColumnarPartitioner(Partitioner):
    """A row partitioner's connectivity with a columnar router (see :func:`for_columns`)."""

    def __init__(self, inner: Partitioner):
        self.inner = inner
        self.name = inner.name
        self.is_forward = inner.is_forward

    def targets(self, producer: int, p_up: int, p_down: int) -> list[int]:
        return self.inner.targets(producer, p_up, p_down)

    def router(
        self, producer: int, num_targets: int, max_parallelism: int, edge_name: str
    ) -> Router:
        inner = self.inner
        router: Any
        if isinstance(inner, (ForwardPartitioner, GlobalPartitioner)):
            router = _ToFirst()
        elif isinstance(inner, BroadcastPartitioner):
            router = _Broadcast()
        elif isinstance(inner, RescalePartitioner):
            router = _RoundRobinBatches(0, num_targets)
        else:
            router = _RoundRobinBatches(producer, num_targets)
        return router  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return repr(self.inner)


_COLUMNAR = (
    ForwardPartitioner,
    GlobalPartitioner,
    BroadcastPartitioner,
    RescalePartitioner,
    RebalancePartitioner,
)


def for_columns(partitioner: Partitioner, edge_name: str) -> Partitioner:
    """The partitioner an edge of a columnar stream uses in place of ``partitioner``."""
    if isinstance(partitioner, (ColumnKeyGroupPartitioner, ColumnarPartitioner)):
        return partitioner
    if type(partitioner) in _COLUMNAR:
        return ColumnarPartitioner(partitioner)
    what = type(partitioner).__name__
    hint = (
        "key a columnar stream by column name: key_by('col') or key_by('a', 'b')"
        if partitioner.name == "hash"
        else "call to_rows() first"
    )
    raise GraphError(f"edge {edge_name!r} carries columns, but {what} decides per record ({hint})")
