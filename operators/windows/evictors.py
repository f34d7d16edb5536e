"""Evictors: remove buffered elements of a window before or after its function runs (§2.8).

Elements are ``(value, timestamp)`` pairs in arrival order; an evictor returns the pairs to keep.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from raystream.core.time import Duration, to_millis


class Evictor(ABC):
    @abstractmethod
    def evict_before(
        self, elements: list[tuple[Any, int]], window: Any, ctx: Any
    ) -> list[tuple[Any, int]]: ...

    @abstractmethod
    def evict_after(
        self, elements: list[tuple[Any, int]], window: Any, ctx: Any
    ) -> list[tuple[Any, int]]: ...


class _BeforeOrAfter(Evictor):
    def __init__(self, do_evict_after: bool):
        self.do_evict_after = do_evict_after

    @abstractmethod
    def _evict(self, elements: list[tuple[Any, int]]) -> list[tuple[Any, int]]: ...

    def evict_before(
        self, elements: list[tuple[Any, int]], window: Any, ctx: Any
    ) -> list[tuple[Any, int]]:
        return elements if self.do_evict_after else self._evict(elements)

    def evict_after(
        self, elements: list[tuple[Any, int]], window: Any, ctx: Any
    ) -> list[tuple[Any, int]]:
        return self._evict(elements) if self.do_evict_after else elements


class CountEvictor(_BeforeOrAfter):
    """Keeps the last ``max_count`` elements."""

    def __init__(self, max_count: int, do_evict_after: bool = False):
        super().__init__(do_evict_after)
        if max_count <= 0:
            raise ValueError(f"count evictor needs max_count > 0, got {max_count}")
        self.max_count = max_count

    @staticmethod
    def of(max_count: int, do_evict_after: bool = False) -> CountEvictor:
        return CountEvictor(max_count, do_evict_after)

    def _evict(self, elements: list[tuple[Any, int]]) -> list[tuple[Any, int]]:
        return elements[-self.max_count :] if len(elements) > self.max_count else elements


class TimeEvictor(_BeforeOrAfter):
    """Keeps elements with ``timestamp >= max timestamp in the buffer − window_size``."""

    def __init__(self, window_size_ms: int, do_evict_after: bool = False):
        super().__init__(do_evict_after)
        self.window_size = window_size_ms

    @staticmethod
    def of(window_size: Duration, do_evict_after: bool = False) -> TimeEvictor:
        return TimeEvictor(to_millis(window_size, "evictor window size"), do_evict_after)

    def _evict(self, elements: list[tuple[Any, int]]) -> list[tuple[Any, int]]:
        if not elements:
            return elements
        cutoff = max(t for _, t in elements) - self.window_size
        return [e for e in elements if e[1] >= cutoff]


class DeltaEvictor(_BeforeOrAfter):
    """Removes elements whose ``delta(element, last element) >= threshold``."""

    def __init__(
        self, threshold: float, delta: Callable[[Any, Any], float], do_evict_after: bool = False
    ):
        super().__init__(do_evict_after)
        self.threshold = threshold
        self.delta = getattr(delta, "get_delta", delta)

    @staticmethod
    def of(threshold: float, delta_function: Any, do_evict_after: bool = False) -> DeltaEvictor:
        return DeltaEvictor(threshold, delta_function, do_evict_after)

    def _evict(self, elements: list[tuple[Any, int]]) -> list[tuple[Any, int]]:
        if not elements:
            return elements
        last = elements[-1][0]
        return [e for e in elements if self.delta(e[0], last) < self.threshold]
