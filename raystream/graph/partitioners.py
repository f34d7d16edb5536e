"""Internal: how an edge spreads a producer's batches over its consumer subtasks.

A partitioner is a picklable description. ``targets(i, p_up, p_down)`` says which consumer
subtasks producer subtask ``i`` is connected to (the channels of the edge); ``router(...)`` builds
the per-producer object whose ``route(batch, senders)`` appends records to the channel senders
(``senders[k]`` belongs to the ``k``-th target). No Ray here: tests drive routers with lists.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from raystream.core.keys import KeyGroupAssigner
from raystream.errors import InvalidKeyError, UserFunctionError, record_repr
from raystream.runtime.elements import Batch


class Sender(Protocol):
    def add(self, values: list, timestamps: list | None) -> None: ...


class Router(Protocol):
    def route(self, batch: Batch, senders: Sequence[Sender]) -> None: ...


class Partitioner:
    """Base: all-to-all connectivity."""

    name = "partitioner"
    #: each producer talks to one consumer with the same index (chainable when parallelism equal)
    is_forward = False

    def targets(self, producer: int, p_up: int, p_down: int) -> list[int]:
        return list(range(p_down))

    def router(
        self, producer: int, num_targets: int, max_parallelism: int, edge_name: str
    ) -> Router:
        raise TypeError(f"{type(self).__name__} has no router")

    def __repr__(self) -> str:
        return self.name.upper()


class _ToFirst:
    def route(self, batch: Batch, senders: Sequence[Sender]) -> None:
        senders[0].add(batch.values, batch.timestamps)


class ForwardPartitioner(Partitioner):
    name = "forward"
    is_forward = True

    def targets(self, producer: int, p_up: int, p_down: int) -> list[int]:
        return [producer]

    def router(self, producer, num_targets, max_parallelism, edge_name) -> Router:
        return _ToFirst()


class GlobalPartitioner(Partitioner):
    """Everything to consumer subtask 0."""

    name = "global"

    def targets(self, producer: int, p_up: int, p_down: int) -> list[int]:
        return [0]

    def router(self, producer, num_targets, max_parallelism, edge_name) -> Router:
        return _ToFirst()


class _RoundRobin:
    """Record-by-record round robin, done with strided slices (no per-record Python work)."""

    def __init__(self, start: int, n: int):
        self.next = start % n
        self.n = n

    def route(self, batch: Batch, senders: Sequence[Sender]) -> None:
        n = self.n
        values, stamps = batch.values, batch.timestamps
        if n == 1:
            senders[0].add(values, stamps)
            return
        size = len(values)
        start = self.next
        for j in range(min(n, size)):
            target = (start + j) % n
            senders[target].add(values[j::n], stamps[j::n] if stamps is not None else None)
        self.next = (start + size) % n


class RebalancePartitioner(Partitioner):
    """Round robin over all consumer subtasks."""

    name = "rebalance"

    def router(self, producer, num_targets, max_parallelism, edge_name) -> Router:
        return _RoundRobin(producer, num_targets)


class RescalePartitioner(Partitioner):
    """Round robin over a local subset of consumers (pointwise connectivity, as Flink)."""

    name = "rescale"

    def targets(self, producer: int, p_up: int, p_down: int) -> list[int]:
        return rescale_targets(producer, p_up, p_down)

    def router(self, producer, num_targets, max_parallelism, edge_name) -> Router:
        return _RoundRobin(0, num_targets)


def rescale_targets(producer: int, p_up: int, p_down: int) -> list[int]:
    if p_down >= p_up:
        return list(range(producer * p_down // p_up, (producer + 1) * p_down // p_up))
    return [producer * p_down // p_up]


class _Broadcast:
    def route(self, batch: Batch, senders: Sequence[Sender]) -> None:
        for s in senders:
            s.add(batch.values, batch.timestamps)


class BroadcastPartitioner(Partitioner):
    name = "broadcast"

    def router(self, producer, num_targets, max_parallelism, edge_name) -> Router:
        return _Broadcast()


class _PerRecord:
    """Routes each record to ``choose(record)``."""

    def __init__(self, choose: Callable[[Any], int], num_targets: int, edge_name: str, what: str):
        self.choose = choose
        self.n = num_targets
        self.edge_name = edge_name
        self.what = what

    def route(self, batch: Batch, senders: Sequence[Sender]) -> None:
        n = self.n
        choose = self.choose
        vals: list[list] = [[] for _ in range(n)]
        appends = [b.append for b in vals]
        v = None
        try:
            if batch.timestamps is None:
                for v in batch.values:
                    appends[choose(v)](v)
                for k in range(n):
                    if vals[k]:
                        senders[k].add(vals[k], None)
                return
            stamps: list[list] = [[] for _ in range(n)]
            for v, t in zip(batch.values, batch.timestamps):
                k = choose(v)
                appends[k](v)
                stamps[k].append(t)
        except InvalidKeyError as exc:
            raise InvalidKeyError(f"{self.what} of {self.edge_name!r}: {exc}") from None
        except Exception as exc:
            raise _routing_error(exc, v, self.what, self.edge_name) from exc
        for k in range(n):
            if vals[k]:
                senders[k].add(vals[k], stamps[k])


def _routing_error(exc: BaseException, record: Any, what: str, edge_name: str) -> UserFunctionError:
    import traceback

    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    rec = record_repr(record)
    return UserFunctionError(
        f"{type(exc).__name__} in the {what} of {edge_name!r} on record {rec}: {exc}\n"
        f"--- original traceback ---\n{tb}",
        operator=edge_name,
        record=rec,
        cause_type=type(exc).__name__,
    )


class ShufflePartitioner(Partitioner):
    """Uniformly random consumer per record (seeded per producer, so runs repeat)."""

    name = "shuffle"

    def router(self, producer, num_targets, max_parallelism, edge_name) -> Router:
        rng = random.Random(producer)
        return _PerRecord(lambda v: rng.randrange(num_targets), num_targets, edge_name, "shuffle")


class _ByKey:
    """Routes each record by its key, with a per-process cache from key to target channel
    (the stable hash runs once per distinct key; the cache is dropped whole when it is full)."""

    def __init__(
        self,
        key_selector: Callable[[Any], Any],
        num_targets: int,
        max_parallelism: int,
        edge_name: str,
        cache_size: int = 1 << 17,
    ):
        self.key_selector = key_selector
        self.n = num_targets
        self.key_group = KeyGroupAssigner(max_parallelism, cache_size=1)
        self.owner = [kg * num_targets // max_parallelism for kg in range(max_parallelism)]
        self.cache: dict = {}
        self.cache_size = cache_size
        self.edge_name = edge_name
        #: records whose key selector raises go to the first target (the consumer has an
        #: error policy) instead of failing here
        self.pass_bad_keys = False

    def _target(self, key: Any) -> int:
        target = self.owner[self.key_group(key)]
        if len(self.cache) >= self.cache_size:
            self.cache.clear()
        self.cache[key] = target
        return target

    def route(self, batch: Batch, senders: Sequence[Sender]) -> None:
        n = self.n
        ks = self.key_selector
        cached = self.cache.get
        slow = self._target
        vals: list[list] = [[] for _ in range(n)]
        appends = [b.append for b in vals]
        stamps_in = batch.timestamps
        stamps: list[list] = [[] for _ in range(n)] if stamps_in is not None else []
        v = None
        try:
            if stamps_in is None:
                for v in batch.values:
                    k = ks(v)
                    c = cached(k)
                    if c is None:
                        c = slow(k)
                    appends[c](v)
            else:
                for v, t in zip(batch.values, stamps_in):
                    k = ks(v)
                    c = cached(k)
                    if c is None:
                        c = slow(k)
                    appends[c](v)
                    stamps[c].append(t)
        except InvalidKeyError as exc:
            raise InvalidKeyError(f"key selector of {self.edge_name!r}: {exc}") from None
        except TypeError as exc:
            if "unhashable" in str(exc):
                raise InvalidKeyError(
                    f"key selector of {self.edge_name!r}: key of record {record_repr(v)} is not "
                    f"hashable: {exc}"
                ) from None
            if not self.pass_bad_keys:
                raise _routing_error(exc, v, "key selector", self.edge_name) from exc
            vals, stamps = self._route_slowly(batch)
        except Exception as exc:
            if not self.pass_bad_keys:
                raise _routing_error(exc, v, "key selector", self.edge_name) from exc
            vals, stamps = self._route_slowly(batch)
        for c in range(n):
            if vals[c]:
                senders[c].add(vals[c], stamps[c] if stamps_in is not None else None)

    def _route_slowly(self, batch: Batch) -> tuple[list[list], list[list]]:
        """The batch again, record by record: a record whose key selector raises goes to the
        first target, whose operator applies its error policy to it (nothing was sent yet)."""
        n = self.n
        vals: list[list] = [[] for _ in range(n)]
        stamps: list[list] = [[] for _ in range(n)]
        ks = self.key_selector
        stamps_in = batch.timestamps
        for i, v in enumerate(batch.values):
            try:
                k = ks(v)
            except Exception:
                c = 0
            else:
                try:
                    cached = self.cache.get(k)
                    c = cached if cached is not None else self._target(k)
                except (InvalidKeyError, TypeError) as exc:
                    raise InvalidKeyError(
                        f"key selector of {self.edge_name!r}: key of record {record_repr(v)}: {exc}"
                    ) from None
            vals[c].append(v)
            if stamps_in is not None:
                stamps[c].append(stamps_in[i])
        return vals, stamps


class KeyGroupPartitioner(Partitioner):
    """``key_by``: record → key → key group → the consumer subtask owning that key group."""

    name = "hash"

    def __init__(self, key_selector: Callable[[Any], Any], pass_bad_keys: bool = False):
        self.key_selector = key_selector
        #: the consumer has an error policy: see ``_ByKey.pass_bad_keys``
        self.pass_bad_keys = pass_bad_keys

    def passing_bad_keys(self) -> KeyGroupPartitioner:
        return KeyGroupPartitioner(self.key_selector, pass_bad_keys=True)

    def router(self, producer, num_targets, max_parallelism, edge_name) -> Router:
        router = _ByKey(self.key_selector, num_targets, max_parallelism, edge_name)
        router.pass_bad_keys = self.pass_bad_keys
        return router


class CustomPartitioner(Partitioner):
    """``partition_custom(partitioner, key_selector)``: the user picks the consumer."""

    name = "custom"

    def __init__(self, partition: Callable[[Any, int], int], key_selector: Callable[[Any], Any]):
        self.partition = partition
        self.key_selector = key_selector

    def router(self, producer, num_targets, max_parallelism, edge_name) -> Router:
        part, ks = self.partition, self.key_selector

        def choose(v: Any) -> int:
            k = part(ks(v), num_targets)
            if type(k) is not int or not 0 <= k < num_targets:
                raise ValueError(
                    f"custom partitioner returned {k!r}, expected 0..{num_targets - 1}"
                )
            return k

        return _PerRecord(choose, num_targets, edge_name, "custom partitioner")
