"""Async I/O user functions and retry strategies, named as in Flink and PyFlink.

An :class:`AsyncFunction` calls an external service (a database, an HTTP API, a Ray Serve
deployment) for each record without blocking its task: ``async_invoke`` is an ``async def`` that
runs on the task actor's event loop, many records at a time. ``AsyncDataStream.unordered_wait`` /
``ordered_wait`` (``raystream.api.async_data_stream``) apply one to a stream.

Retries follow Flink's ``AsyncRetryStrategies``: a strategy says whether another attempt may be
made (``can_retry(current_attempts)``, counted from 1 for the first call, so ``max_attempts``
allows that many retries after the first call, as in Flink), how long to wait before it, and on
what: results matching a result predicate (e.g. an empty result) and exceptions matching an
exception predicate. Without a predicate nothing is retried.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from raystream.api.functions import Function
from raystream.core.time import Duration, to_millis

__all__ = [
    "AsyncFunction",
    "AsyncRetryStrategy",
    "AsyncRetryStrategies",
    "RetryPredicates",
]


class AsyncFunction(Function, ABC):
    """Asynchronous per-record work (Flink's ``AsyncFunction``).

    ``async_invoke(value)`` returns the record's results: a list of zero or more output
    records (Flink completes a ``ResultFuture`` with a collection; here the coroutine returns
    it). ``timeout(value)`` is called when no result came within the operator's timeout,
    retries included: return the results to use instead, or raise; by default it raises
    :class:`TimeoutError`. ``open``/``close`` run once per subtask, as for every function.

    A plain ``async def fn(value)`` may be passed instead of an ``AsyncFunction``; it returns
    one output record per input (like ``map``).

    Example::

        class Lookup(AsyncFunction):
            async def async_invoke(self, user_id):
                profile = await client.get_profile(user_id)
                return [(user_id, profile["country"])] if profile else []
    """

    @abstractmethod
    async def async_invoke(self, value: Any) -> list:
        """The results for ``value`` (a list; empty to emit nothing)."""

    def timeout(self, value: Any) -> list:
        """No result for ``value`` within the timeout: the results to emit instead, or raise."""
        raise TimeoutError("the async request did not complete within the timeout")


def overrides_timeout(fn: Any) -> bool:
    """Whether ``fn`` is an :class:`AsyncFunction` with its own ``timeout`` hook."""
    return isinstance(fn, AsyncFunction) and type(fn).timeout is not AsyncFunction.timeout


def check_async_function(fn: Any, what: str) -> None:
    """Validates ``fn`` when the graph is built: an ``AsyncFunction`` whose ``async_invoke`` is
    an ``async def``, or a callable (whose calls must return awaitables)."""
    if isinstance(fn, AsyncFunction):
        if not inspect.iscoroutinefunction(fn.async_invoke):
            raise TypeError(
                f"{what}: {type(fn).__name__}.async_invoke must be declared 'async def' (it runs "
                "on the task's event loop; for blocking work use map)"
            )
        return
    if isinstance(fn, type) or not callable(fn):
        raise TypeError(f"{what} expects an AsyncFunction or an 'async def' callable, got {fn!r}")


class AsyncRetryStrategy(ABC):
    """When and how often an async request is tried again (Flink's ``AsyncRetryStrategy``)."""

    @abstractmethod
    def can_retry(self, current_attempts: int) -> bool:
        """Whether another attempt may follow attempt number ``current_attempts`` (from 1)."""

    @abstractmethod
    def backoff_ms(self, current_attempts: int) -> int:
        """Milliseconds to wait after attempt ``current_attempts`` before the next one."""

    def retry_on_result(self, results: list) -> bool:
        """Whether ``results`` call for another attempt (no predicate: never)."""
        return False

    def retry_on_exception(self, error: BaseException) -> bool:
        """Whether ``error`` calls for another attempt (no predicate: never)."""
        return False


class _PredicatedStrategy(AsyncRetryStrategy):
    def __init__(
        self,
        max_attempts: int,
        result_predicate: Callable[[list], bool] | None,
        exception_predicate: Callable[[BaseException], bool] | None,
    ):
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"max_attempts must be an int >= 1, got {max_attempts!r}")
        self.max_attempts = max_attempts
        self.result_predicate = result_predicate
        self.exception_predicate = exception_predicate

    def can_retry(self, current_attempts: int) -> bool:
        return current_attempts <= self.max_attempts

    def retry_on_result(self, results: list) -> bool:
        pred = self.result_predicate
        return pred is not None and bool(pred(results))

    def retry_on_exception(self, error: BaseException) -> bool:
        pred = self.exception_predicate
        return pred is not None and bool(pred(error))


class NoRetryStrategy(AsyncRetryStrategy):
    """Every request is tried once."""

    def can_retry(self, current_attempts: int) -> bool:
        return False

    def backoff_ms(self, current_attempts: int) -> int:
        return 0

    def __repr__(self) -> str:
        return "AsyncRetryStrategies.NO_RETRY_STRATEGY"


class FixedDelayRetryStrategy(_PredicatedStrategy):
    """Up to ``max_attempts`` retries, ``backoff_time_ms`` apart."""

    def __init__(
        self,
        max_attempts: int,
        backoff_time_ms: int,
        result_predicate: Callable[[list], bool] | None = None,
        exception_predicate: Callable[[BaseException], bool] | None = None,
    ):
        super().__init__(max_attempts, result_predicate, exception_predicate)
        if backoff_time_ms < 0:
            raise ValueError(f"backoff time must be >= 0 ms, got {backoff_time_ms}")
        self.backoff_time_ms = backoff_time_ms

    def backoff_ms(self, current_attempts: int) -> int:
        return self.backoff_time_ms

    def __repr__(self) -> str:
        return f"FixedDelayRetryStrategy({self.max_attempts}, {self.backoff_time_ms} ms)"


class ExponentialBackoffDelayRetryStrategy(_PredicatedStrategy):
    """Up to ``max_attempts`` retries; the first after ``initial_delay_ms``, each next one
    ``multiplier`` times later than the previous, at most ``max_retry_delay_ms``."""

    def __init__(
        self,
        max_attempts: int,
        initial_delay_ms: int,
        max_retry_delay_ms: int,
        multiplier: float,
        result_predicate: Callable[[list], bool] | None = None,
        exception_predicate: Callable[[BaseException], bool] | None = None,
    ):
        super().__init__(max_attempts, result_predicate, exception_predicate)
        if initial_delay_ms < 0 or max_retry_delay_ms < initial_delay_ms:
            raise ValueError(
                "delays must satisfy 0 <= initial_delay_ms <= max_retry_delay_ms, got "
                f"{initial_delay_ms} and {max_retry_delay_ms}"
            )
        if multiplier < 1.0:
            raise ValueError(f"the multiplier must be >= 1, got {multiplier}")
        self.initial_delay_ms = initial_delay_ms
        self.max_retry_delay_ms = max_retry_delay_ms
        self.multiplier = multiplier

    def backoff_ms(self, current_attempts: int) -> int:
        delay = self.initial_delay_ms * self.multiplier ** max(0, current_attempts - 1)
        return int(min(delay, self.max_retry_delay_ms))

    def __repr__(self) -> str:
        return (
            f"ExponentialBackoffDelayRetryStrategy({self.max_attempts}, "
            f"{self.initial_delay_ms}..{self.max_retry_delay_ms} ms x{self.multiplier})"
        )


class _Builder:
    def __init__(self, max_attempts: int):
        self._max_attempts = max_attempts
        self._result: Callable[[list], bool] | None = None
        self._exception: Callable[[BaseException], bool] | None = None

    def if_result(self, predicate: Callable[[list], bool]) -> Any:
        """Retry when ``predicate(results)`` is true (e.g. ``RetryPredicates.EMPTY_RESULT_PREDICATE``)."""
        if not callable(predicate):
            raise TypeError(f"if_result expects a callable(results), got {predicate!r}")
        self._result = predicate
        return self

    def if_exception(self, predicate: Callable[[BaseException], bool]) -> Any:
        """Retry when ``predicate(exception)`` is true (e.g.
        ``RetryPredicates.HAS_EXCEPTION_PREDICATE``)."""
        if not callable(predicate):
            raise TypeError(f"if_exception expects a callable(exception), got {predicate!r}")
        self._exception = predicate
        return self


class FixedDelayRetryStrategyBuilder(_Builder):
    def __init__(self, max_attempts: int, backoff_time: Duration):
        super().__init__(max_attempts)
        self._backoff_ms = to_millis(backoff_time, "backoff time")

    def build(self) -> FixedDelayRetryStrategy:
        return FixedDelayRetryStrategy(
            self._max_attempts, self._backoff_ms, self._result, self._exception
        )


class ExponentialBackoffDelayRetryStrategyBuilder(_Builder):
    def __init__(
        self,
        max_attempts: int,
        initial_delay: Duration,
        max_retry_delay: Duration,
        multiplier: float,
    ):
        super().__init__(max_attempts)
        self._initial_ms = to_millis(initial_delay, "initial delay")
        self._max_ms = to_millis(max_retry_delay, "max retry delay")
        self._multiplier = multiplier

    def build(self) -> ExponentialBackoffDelayRetryStrategy:
        return ExponentialBackoffDelayRetryStrategy(
            self._max_attempts,
            self._initial_ms,
            self._max_ms,
            self._multiplier,
            self._result,
            self._exception,
        )


class AsyncRetryStrategies:
    """Flink's ``AsyncRetryStrategies``::

    strategy = (
        AsyncRetryStrategies.FixedDelayRetryStrategyBuilder(3, 100)  # 3 retries, 100 ms apart
        .if_exception(RetryPredicates.HAS_EXCEPTION_PREDICATE)
        .build()
    )
    """

    NO_RETRY_STRATEGY: AsyncRetryStrategy = NoRetryStrategy()
    FixedDelayRetryStrategyBuilder = FixedDelayRetryStrategyBuilder
    ExponentialBackoffDelayRetryStrategyBuilder = ExponentialBackoffDelayRetryStrategyBuilder


def _empty_result(results: list) -> bool:
    return results is None or len(results) == 0


def _has_exception(error: BaseException | None) -> bool:
    return error is not None


class _ExceptionTypePredicate:
    """Picklable ``isinstance(error, types)``."""

    def __init__(self, types: type[BaseException] | tuple[type[BaseException], ...]):
        self.types = types

    def __call__(self, error: BaseException) -> bool:
        return isinstance(error, self.types)

    def __repr__(self) -> str:
        return f"RetryPredicates.create_exception_type_predicate({self.types!r})"


class RetryPredicates:
    """Flink's ``RetryPredicates``: ready-made result and exception predicates."""

    #: retry when the results are empty
    EMPTY_RESULT_PREDICATE = _empty_result
    #: retry on any exception
    HAS_EXCEPTION_PREDICATE = _has_exception

    @staticmethod
    def create_exception_type_predicate(
        types: type[BaseException] | tuple[type[BaseException], ...],
    ) -> Callable[[BaseException], bool]:
        """Retry on exceptions of these types (and their subclasses)."""
        return _ExceptionTypePredicate(types)
