"""``AsyncDataStream``: applies an :class:`~raystream.api.async_functions.AsyncFunction` (or an
``async def`` callable) to a stream, as Flink's ``AsyncDataStream``.

::

    async def lookup(user_id):
        return await profiles.get(user_id)  # one result per record

    enriched = AsyncDataStream.unordered_wait(users, lookup, timeout=Time.seconds(1), capacity=100)

The function runs on the task actor's event loop with up to ``capacity`` records in flight per
subtask; a full operator back-pressures its input. ``ordered_wait`` emits results in input
order; ``unordered_wait`` as they complete, but never across a watermark. Records in flight are
part of every checkpoint and are issued again after a restore, so results are exactly-once
under checkpointing. A record whose request fails after its retries (or times out) fails the
job with the operator, the record and the cause, unless the operator has an error policy
(``set_error_policy(ErrorPolicy.dead_letter(tag))`` or ``skip()``).
"""

from __future__ import annotations

import functools
from typing import Any

from raystream.api.async_functions import AsyncRetryStrategy, check_async_function
from raystream.api.datastream import DataStream
from raystream.api.typeinfo import apply_output_type
from raystream.core.time import Duration, to_millis
from raystream.errors import GraphError
from raystream.operators.async_wait import AsyncWaitOperator

__all__ = ["AsyncDataStream"]


class AsyncDataStream:
    """Static helpers that add an async I/O operator to a stream."""

    @staticmethod
    def unordered_wait(
        data_stream: DataStream,
        async_function: Any,
        timeout: Duration,
        capacity: int = 100,
        output_type: Any = None,
        *,
        retry_strategy: AsyncRetryStrategy | None = None,
    ) -> DataStream:
        """Results leave as their requests complete, but never across a watermark.

        Args:
            data_stream: the input stream.
            async_function: an :class:`AsyncFunction` (``async_invoke`` returns a list of
                results) or an ``async def fn(value)`` returning one result.
            timeout: per record, for all its attempts together (int ms, ``timedelta``,
                ``Time.seconds(1)``); 0 waits forever.
            capacity: records in flight (and completed but not yet emitted) per subtask.
            output_type: as for ``map``.
            retry_strategy: from ``AsyncRetryStrategies`` (default: no retries).
        """
        return _add(
            data_stream, async_function, timeout, capacity, output_type, False, retry_strategy
        )

    @staticmethod
    def ordered_wait(
        data_stream: DataStream,
        async_function: Any,
        timeout: Duration,
        capacity: int = 100,
        output_type: Any = None,
        *,
        retry_strategy: AsyncRetryStrategy | None = None,
    ) -> DataStream:
        """Results leave in the order of their input records (see :meth:`unordered_wait`)."""
        return _add(
            data_stream, async_function, timeout, capacity, output_type, True, retry_strategy
        )

    @staticmethod
    def unordered_wait_with_retry(
        data_stream: DataStream,
        async_function: Any,
        timeout: Duration,
        async_retry_strategy: AsyncRetryStrategy,
        capacity: int = 100,
        output_type: Any = None,
    ) -> DataStream:
        """Flink's ``unorderedWaitWithRetry``: :meth:`unordered_wait` with a retry strategy."""
        return _add(
            data_stream, async_function, timeout, capacity, output_type, False, async_retry_strategy
        )

    @staticmethod
    def ordered_wait_with_retry(
        data_stream: DataStream,
        async_function: Any,
        timeout: Duration,
        async_retry_strategy: AsyncRetryStrategy,
        capacity: int = 100,
        output_type: Any = None,
    ) -> DataStream:
        """Flink's ``orderedWaitWithRetry``: :meth:`ordered_wait` with a retry strategy."""
        return _add(
            data_stream, async_function, timeout, capacity, output_type, True, async_retry_strategy
        )


def _add(
    stream: DataStream,
    fn: Any,
    timeout: Duration,
    capacity: int,
    output_type: Any,
    ordered: bool,
    retry: AsyncRetryStrategy | None,
) -> DataStream:
    what = "ordered_wait" if ordered else "unordered_wait"
    if not isinstance(stream, DataStream):
        raise TypeError(f"{what} expects a DataStream first, got {stream!r}")
    check_async_function(fn, what)
    timeout_ms = to_millis(timeout, f"{what} timeout")
    if timeout_ms < 0:
        raise GraphError(f"{what}: the timeout must be >= 0 ms (0: none), got {timeout_ms}")
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        raise GraphError(f"{what}: capacity must be an int >= 1, got {capacity!r}")
    if retry is not None and not isinstance(retry, AsyncRetryStrategy):
        raise TypeError(
            f"{what}: retry_strategy must come from AsyncRetryStrategies, got {retry!r}"
        )
    factory = functools.partial(
        AsyncWaitOperator,
        fn=fn,
        timeout_ms=timeout_ms,
        capacity=capacity,
        ordered=ordered,
        retry_strategy=retry,
    )
    t = stream._add("AsyncWait", factory)
    apply_output_type(t, output_type)
    return DataStream(stream._env, t)
