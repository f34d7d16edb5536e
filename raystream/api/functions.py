"""User function interfaces, named as in PyFlink.

Wherever an operator takes one of these objects it also takes a plain callable with the same
signature as the interface's single abstract method (``map(value)``, ``filter(value)``, …).
Functions that subclass :class:`Function` get ``open(runtime_context)`` before the first record
and ``close()`` at the end.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from raystream.api.context import RuntimeContext


IN = TypeVar("IN")
OUT = TypeVar("OUT")
KEY = TypeVar("KEY")
W = TypeVar("W")
W2 = TypeVar("W2")
IN1 = TypeVar("IN1")
IN2 = TypeVar("IN2")


class Function:
    """Base of every user function; ``open``/``close`` are lifecycle hooks with no-op defaults."""

    def open(self, runtime_context: RuntimeContext) -> None:  # noqa: B027 - optional hook
        pass

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class MapFunction(Function, ABC):
    @abstractmethod
    def map(self, value: Any) -> Any: ...


class FlatMapFunction(Function, ABC):
    @abstractmethod
    def flat_map(self, value: Any) -> Iterable[Any]: ...


class FilterFunction(Function, ABC):
    @abstractmethod
    def filter(self, value: Any) -> bool: ...


class ReduceFunction(Function, ABC):
    @abstractmethod
    def reduce(self, value1: Any, value2: Any) -> Any: ...


class KeySelector(Function, ABC):
    @abstractmethod
    def get_key(self, value: Any) -> Any: ...


class Partitioner(Function, ABC):
    """Chooses the partition (consumer subtask) of a key for ``partition_custom``."""

    @abstractmethod
    def partition(self, key: Any, num_partitions: int) -> int: ...


class ProcessFunction(Function, ABC):
    """Per-record logic on a non-keyed stream. ``process_element`` yields (or returns) outputs."""

    class Context(ABC):
        @abstractmethod
        def timestamp(self) -> int | None: ...

        @abstractmethod
        def output(self, output_tag: Any, value: Any) -> None: ...

    @abstractmethod
    def process_element(self, value: Any, ctx: ProcessFunction.Context) -> Iterable[Any] | None: ...


class KeyedProcessFunction(Function, ABC):
    """Per-record logic on a keyed stream, with keyed state through the runtime context."""

    class Context(ProcessFunction.Context, ABC):
        @abstractmethod
        def get_current_key(self) -> Any: ...

        @abstractmethod
        def timer_service(self) -> Any: ...

    class OnTimerContext(Context, ABC):
        """The ``ctx`` of ``on_timer``: also says which kind of timer fired."""

        @abstractmethod
        def time_domain(self) -> Any: ...

    @abstractmethod
    def process_element(
        self, value: Any, ctx: KeyedProcessFunction.Context
    ) -> Iterable[Any] | None: ...

    def on_timer(
        self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext
    ) -> Iterable[Any] | None:
        return None


class SinkFunction(Function, ABC):
    """Record-at-a-time sink for ``add_sink``; batch sinks implement ``operators.sinks.Sink``."""

    @abstractmethod
    def invoke(self, value: Any, context: Any) -> None: ...


def resolve(fn: Any, interface: type, method: str, what: str) -> Callable[..., Any]:
    """The callable to invoke for ``fn``: its interface method, or ``fn`` itself if callable."""
    if isinstance(fn, interface):
        return getattr(fn, method)
    if callable(fn):
        return fn  # type: ignore[no-any-return]
    raise TypeError(
        f"{what} expects a {interface.__name__} or a callable, got {type(fn).__name__}: {fn!r}"
    )


class OutputTag:
    """Names a side output: ``ctx.output(tag, value)`` in a process function, read back with
    ``stream.get_side_output(tag)``."""

    __slots__ = ("tag_id", "type_info")

    def __init__(self, tag_id: str, type_info: Any = None):
        if not isinstance(tag_id, str) or not tag_id:
            raise ValueError(f"OutputTag id must be a non-empty str, got {tag_id!r}")
        self.tag_id = tag_id
        self.type_info = type_info

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OutputTag) and other.tag_id == self.tag_id

    def __hash__(self) -> int:
        return hash(("OutputTag", self.tag_id))

    def __repr__(self) -> str:
        return f"OutputTag({self.tag_id!r})"

    def __reduce__(self):
        return (OutputTag, (self.tag_id, self.type_info))


class AggregateFunction(Function, ABC):
    """Incremental aggregation with an accumulator whose type may differ from input and output."""

    @abstractmethod
    def create_accumulator(self) -> Any: ...

    @abstractmethod
    def add(self, value: Any, accumulator: Any) -> Any: ...

    @abstractmethod
    def get_result(self, accumulator: Any) -> Any: ...

    # ``merge(acc_a, acc_b) -> acc`` is optional: define it to use session windows.


class _WindowContext(ABC, Generic[W2]):
    """The ``context`` of a process window function: the window, time and state."""

    @abstractmethod
    def window(self) -> W2: ...

    @abstractmethod
    def current_processing_time(self) -> int: ...

    @abstractmethod
    def current_watermark(self) -> int: ...

    @abstractmethod
    def window_state(self) -> Any: ...

    @abstractmethod
    def global_state(self) -> Any: ...

    @abstractmethod
    def output(self, output_tag: OutputTag, value: Any) -> None: ...


class ProcessWindowFunction(Function, Generic[IN, OUT, KEY, W], ABC):
    """Gets all elements of a window (or the one pre-aggregated value) plus the context.

    Subscriptable as in PyFlink: ``class F(ProcessWindowFunction[tuple, str, str, TimeWindow])``.
    """

    class Context(_WindowContext[W2], ABC):
        pass

    @abstractmethod
    def process(
        self, key: KEY, context: ProcessWindowFunction.Context, elements: Iterable[IN]
    ) -> Iterable[OUT]: ...

    def clear(self, context: ProcessWindowFunction.Context) -> None:  # noqa: B027 - optional hook
        """Called when the window is cleaned up: clear per-window state here."""


class WindowFunction(Function, Generic[IN, OUT, KEY, W], ABC):
    """Legacy ``apply``: key, window and elements, no context."""

    @abstractmethod
    def apply(self, key: KEY, window: W, inputs: Iterable[IN]) -> Iterable[OUT]: ...


class AllWindowFunction(WindowFunction[IN, OUT, Any, W], ABC):
    """``apply`` of ``window_all``: ``apply(window, inputs)``."""


class ProcessAllWindowFunction(ProcessWindowFunction[IN, OUT, Any, W], ABC):
    """``process`` of ``window_all``: ``process(context, elements)``."""

    class Context(_WindowContext[W2], ABC):
        pass


class CoMapFunction(Function, ABC):
    @abstractmethod
    def map1(self, value: Any) -> Any: ...

    @abstractmethod
    def map2(self, value: Any) -> Any: ...


class CoFlatMapFunction(Function, ABC):
    @abstractmethod
    def flat_map1(self, value: Any) -> Iterable[Any]: ...

    @abstractmethod
    def flat_map2(self, value: Any) -> Iterable[Any]: ...


class _CoContext(ABC):
    """What the ``ctx`` of a two-input process function offers (timestamp, side outputs)."""

    @abstractmethod
    def timestamp(self) -> int | None: ...

    @abstractmethod
    def output(self, output_tag: OutputTag, value: Any) -> None: ...


class _KeyedCoContext(_CoContext, ABC):
    @abstractmethod
    def get_current_key(self) -> Any: ...

    @abstractmethod
    def timer_service(self) -> Any: ...


class CoProcessFunction(Function, ABC):
    class Context(_CoContext, ABC):
        pass

    @abstractmethod
    def process_element1(
        self, value: Any, ctx: CoProcessFunction.Context
    ) -> Iterable[Any] | None: ...

    @abstractmethod
    def process_element2(
        self, value: Any, ctx: CoProcessFunction.Context
    ) -> Iterable[Any] | None: ...


class KeyedCoProcessFunction(CoProcessFunction, ABC):
    class Context(_KeyedCoContext, ABC):
        pass

    class OnTimerContext(Context, ABC):
        @abstractmethod
        def time_domain(self) -> Any: ...

    def on_timer(
        self, timestamp: int, ctx: KeyedCoProcessFunction.OnTimerContext
    ) -> Iterable[Any] | None:
        return None


class BaseBroadcastProcessFunction(Function, ABC):
    """Common base of the broadcast process functions, with the contexts they share."""

    class BaseContext(_CoContext, ABC):
        pass

    class Context(BaseContext, ABC):
        """``ctx`` of ``process_broadcast_element``: broadcast state read-write."""

        @abstractmethod
        def get_broadcast_state(self, state_descriptor: Any) -> Any: ...

    class ReadOnlyContext(BaseContext, ABC):
        """``ctx`` of ``process_element``: broadcast state read-only."""

        @abstractmethod
        def get_broadcast_state(self, state_descriptor: Any) -> Any: ...


class BroadcastProcessFunction(BaseBroadcastProcessFunction, Generic[IN1, IN2, OUT], ABC):
    class Context(BaseBroadcastProcessFunction.Context, ABC):
        pass

    class ReadOnlyContext(BaseBroadcastProcessFunction.ReadOnlyContext, ABC):
        pass

    @abstractmethod
    def process_element(
        self, value: IN1, ctx: BroadcastProcessFunction.ReadOnlyContext
    ) -> Iterable[OUT] | None: ...

    @abstractmethod
    def process_broadcast_element(
        self, value: IN2, ctx: BroadcastProcessFunction.Context
    ) -> Iterable[OUT] | None: ...


class KeyedBroadcastProcessFunction(
    BroadcastProcessFunction[IN1, IN2, OUT], Generic[KEY, IN1, IN2, OUT], ABC
):
    class Context(BaseBroadcastProcessFunction.Context, ABC):
        @abstractmethod
        def apply_to_keyed_state(self, state_descriptor: Any, function: Any) -> None: ...

    class ReadOnlyContext(BaseBroadcastProcessFunction.ReadOnlyContext, ABC):
        @abstractmethod
        def get_current_key(self) -> Any: ...

        @abstractmethod
        def timer_service(self) -> Any: ...

    class OnTimerContext(ReadOnlyContext, ABC):
        @abstractmethod
        def time_domain(self) -> Any: ...

    def on_timer(
        self, timestamp: int, ctx: KeyedBroadcastProcessFunction.OnTimerContext
    ) -> Iterable[Any] | None:
        return None


def register_contexts(cls: type, *interfaces: Any) -> None:
    """Declares that the runtime's context class ``cls`` is each of ``interfaces`` (so user code
    can check ``isinstance(ctx, KeyedProcessFunction.OnTimerContext)``) without inheriting their
    abstract methods one by one."""
    for interface in interfaces:
        interface.register(cls)


class CheckpointedFunction(ABC):
    """Mix into a function that keeps operator (non-keyed) state.

    ``initialize_state(context)`` runs before ``open``: ``context.get_operator_state_store()``
    gives named list states (``get_list_state`` — even-split on rescale — and
    ``get_union_list_state``), ``context.is_restored()`` tells a restore from a fresh start.
    ``snapshot_state(context)`` runs when a checkpoint is taken: bring the list states up to date.
    """

    @abstractmethod
    def initialize_state(self, context: Any) -> None: ...

    @abstractmethod
    def snapshot_state(self, context: Any) -> None: ...
