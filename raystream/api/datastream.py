"""DataStream, KeyedStream and DataStreamSink: the fluent API that builds the logical graph.

Nothing runs until ``env.execute()``; every call adds a node (see
:mod:`raystream.graph.transformations`).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from raystream.api.error_policy import ErrorPolicy
from raystream.api.functions import (
    FilterFunction,
    FlatMapFunction,
    KeyedProcessFunction,
    KeySelector,
    MapFunction,
    OutputTag,
    Partitioner,
    ProcessFunction,
    ReduceFunction,
    SinkFunction,
    resolve,
)
from raystream.api.map_batches import map_batches_node
from raystream.api.typeinfo import TypeInformation, Types, apply_output_type
from raystream.core.watermarks import WatermarkStrategy
from raystream.errors import GraphError
from raystream.graph.partitioners import (
    BroadcastPartitioner,
    CustomPartitioner,
    ForwardPartitioner,
    GlobalPartitioner,
    KeyGroupPartitioner,
    RebalancePartitioner,
    RescalePartitioner,
    ShufflePartitioner,
)
from raystream.graph.partitioners import (
    Partitioner as _EdgePartitioner,
)
from raystream.graph.plan import supports_error_policy
from raystream.graph.transformations import (
    ANY_SHAPE,
    COLUMNS,
    ROWS,
    Transformation,
    declared_type,
)
from raystream.observe.progress import progress_for
from raystream.operators.keyed import FieldAggregateOperator, ReduceOperator, aggregation
from raystream.operators.keyed_functions import (
    KeyedFilterOperator,
    KeyedFlatMapOperator,
    KeyedMapOperator,
    needs_current_key,
)
from raystream.operators.process import KeyedProcessOperator, ProcessOperator
from raystream.operators.raydata_stream import RayDataStream
from raystream.operators.sinks import (
    CollectSinkOperator,
    PrintSink,
    Sink,
    SinkFunctionOperator,
    SinkOperator,
)
from raystream.operators.stateless import FilterOperator, FlatMapOperator, MapOperator
from raystream.operators.transactional import TwoPhaseCommitSink, TwoPhaseCommitSinkOperator
from raystream.operators.watermarks import TimestampsAndWatermarksOperator

if TYPE_CHECKING:
    from raystream.api.environment import StreamExecutionEnvironment
    from raystream.api.windowing import AllWindowedStream, WindowedStream
    from raystream.runtime.client import CollectResultIterator


class DataStream:
    """A stream of records; every transformation returns a new stream.

    A stream carries rows (Python records) or columns (Arrow record batches, e.g. from
    ``env.from_arrow``); :attr:`is_columnar` says which. Operators that call a function per
    record take rows; ``to_rows()`` and ``to_columns()`` convert (see ``docs/columnar.md``).
    """

    def __init__(self, env: StreamExecutionEnvironment, transformation: Transformation):
        self._env = env
        self._t = transformation

    @property
    def is_columnar(self) -> bool:
        """Whether the stream carries Arrow record batches rather than Python records."""
        return self._t.shape == COLUMNS

    def _rows_only(self, what: str) -> None:
        """Refuses a per-record operation on a columnar stream, when the graph is built."""
        if self._t.shape == COLUMNS:
            raise GraphError(
                f"{what} calls a function per record, but this stream carries columns (Arrow "
                "record batches): convert it with to_rows() first (records become dicts), or "
                "stay columnar (key_by('col'), window(...).aggregate(agg...))"
            )

    # -- properties of the operator that produces this stream ----------------------------------

    def _physical(self, what: str) -> Transformation:
        if not self._t.is_physical:
            raise GraphError(
                f"{what} applies to an operator, but this stream is a {self._t.kind} of one; "
                "call it on the stream the operator returned"
            )
        return self._t

    def name(self, name: str) -> DataStream:
        self._physical("name()").name = name
        return self

    def get_name(self) -> str:
        return self._t.name

    def get_type(self) -> TypeInformation:
        """The declared type of the records (``output_type=``, ``type_info=``, kept by
        ``filter``, partitionings and ``reduce``), ``Types.PICKLED_BYTE_ARRAY()`` if none."""
        declared = declared_type(self._t)
        return Types.PICKLED_BYTE_ARRAY() if declared is None else declared

    def uid(self, uid: str) -> DataStream:
        self._physical("uid()").uid = uid
        return self

    def set_parallelism(self, parallelism: int) -> DataStream:
        if not isinstance(parallelism, int) or parallelism < 1:
            raise GraphError(f"parallelism must be a positive int, got {parallelism!r}")
        self._physical("set_parallelism()").parallelism = parallelism
        return self

    def get_parallelism(self) -> int:
        return self._t.parallelism or self._env.get_parallelism()

    def set_resources(
        self,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        memory: int | None = None,
        resources: dict[str, float] | None = None,
    ) -> DataStream:
        """Ray resources each subtask's actor asks for (e.g. ``num_gpus=1`` for inference)."""
        t = self._physical("set_resources()")
        for key, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus), ("memory", memory)):
            if value is not None:
                if value < 0:
                    raise GraphError(f"operator {t.name!r}: {key} must be >= 0, got {value}")
                t.resources[key] = value
        if resources:
            t.resources["resources"] = dict(resources)
        return self

    def disable_chaining(self) -> DataStream:
        self._physical("disable_chaining()").chaining = "never"
        return self

    def set_error_policy(self, policy: ErrorPolicy) -> DataStream:
        """What this operator does with a record its user code raises on:
        ``ErrorPolicy.fail()`` (the default), ``ErrorPolicy.skip()`` or
        ``ErrorPolicy.dead_letter(tag)`` (a :class:`DeadLetter` on ``get_side_output(tag)``).
        Overrides ``env.set_error_policy``. See :mod:`raystream.api.error_policy` for what is
        covered."""
        t = self._physical("set_error_policy()")
        if not isinstance(policy, ErrorPolicy):
            raise TypeError(f"set_error_policy expects an ErrorPolicy, got {policy!r}")
        if not supports_error_policy(t):
            raise GraphError(
                f"operator {t.name!r} does not take an error policy; policies apply to map, "
                "flat_map, filter, process, keyed reduce/aggregations, windows and "
                "assign_timestamps_and_watermarks"
            )
        t.error_policy = policy
        return self

    def start_new_chain(self) -> DataStream:
        self._physical("start_new_chain()").chaining = "head"
        return self

    # -- transformations -------------------------------------------------------------------------

    def _add(
        self,
        name: str,
        factory: Callable[[str], Any],
        keyed: bool = False,
        inputs: list[tuple[Transformation, int]] | None = None,
    ) -> Transformation:
        t = Transformation(
            name=self._env._unique_name(name),
            kind="operator",
            inputs=inputs if inputs is not None else [(self._t, 0)],
            operator_factory=factory,
            keyed=keyed,
        )
        self._env._add(t)
        return t

    def _same_type(self, t: Transformation) -> DataStream:
        """The stream of ``t``, an operator whose records have this stream's declared type."""
        t.output_type = declared_type(self._t)
        return DataStream(self._env, t)

    def to_rows(self) -> DataStream:
        """A columnar stream as a stream of dicts (column name → value), timestamps kept."""
        from raystream.api.columnar import to_rows

        return to_rows(self)

    def to_columns(self, schema: Any = None) -> DataStream:
        """A row stream as a columnar one: dict-like records (dicts, named Rows, namedtuples,
        dataclasses) by field name, or with a ``pyarrow.Schema`` also tuples by position. On a
        columnar stream (with a schema): every batch cast to ``schema``."""
        from raystream.api.columnar import to_columns

        return to_columns(self, schema)

    def map(self, func: MapFunction | Callable[[Any], Any], output_type: Any = None) -> DataStream:
        self._rows_only("map()")
        resolve(func, MapFunction, "map", "map")
        t = self._add("Map", functools.partial(MapOperator, fn=func))
        apply_output_type(t, output_type)
        return DataStream(self._env, t)

    def flat_map(
        self, func: FlatMapFunction | Callable[[Any], Any], output_type: Any = None
    ) -> DataStream:
        self._rows_only("flat_map()")
        resolve(func, FlatMapFunction, "flat_map", "flat_map")
        t = self._add("FlatMap", functools.partial(FlatMapOperator, fn=func))
        apply_output_type(t, output_type)
        return DataStream(self._env, t)

    def filter(self, func: FilterFunction | Callable[[Any], bool]) -> DataStream:
        self._rows_only("filter()")
        resolve(func, FilterFunction, "filter", "filter")
        return self._same_type(self._add("Filter", functools.partial(FilterOperator, fn=func)))

    def process(
        self, func: ProcessFunction | Callable[[Any, Any], Any], output_type: Any = None
    ) -> DataStream:
        self._rows_only("process()")
        if isinstance(func, KeyedProcessFunction):
            raise GraphError("a KeyedProcessFunction needs a keyed stream: call key_by() first")
        _check_callable(func, ProcessFunction, "process")
        t = self._add("Process", functools.partial(ProcessOperator, fn=func))
        apply_output_type(t, output_type)
        return DataStream(self._env, t)

    def map_batches(
        self,
        fn: Any,
        *,
        batch_size: int = 1024,
        batch_format: str = "numpy",
        max_wait_ms: Any = 100,
        fn_args: tuple = (),
        fn_kwargs: dict | None = None,
        fn_constructor_args: tuple = (),
        fn_constructor_kwargs: dict | None = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        concurrency: int | None = None,
        output_type: Any = None,
    ) -> DataStream:
        """Runs ``fn`` over batches of records, in Ray Data's convention (e.g. a model).

        ``fn`` is a function of a batch, or a callable class constructed once per subtask with
        ``fn_constructor_args``/``fn_constructor_kwargs`` (so a model loads once per actor).
        A batch is ``batch_size`` records, or fewer once the oldest has waited ``max_wait_ms``
        (None: no bound), before a watermark, and at the end of input. ``batch_format``:
        ``"numpy"`` (dict of arrays), ``"pandas"``, ``"pyarrow"`` or ``"rows"`` (a list);
        ``fn`` returns any of these, whose rows become the output records. ``num_cpus``,
        ``num_gpus`` (fractions too) and ``concurrency`` (parallelism) are shortcuts for
        ``set_resources`` and ``set_parallelism``. See docs/ml.md::

            class Embed:
                def __init__(self):
                    self.model = load_model()

                def __call__(self, batch):
                    return {"text": batch["item"], "vector": self.model.encode(list(batch["item"]))}

            vectors = texts.map_batches(Embed, batch_size=64, max_wait_ms=50, num_gpus=1)
        """
        t = map_batches_node(
            self,
            fn,
            batch_size=batch_size,
            batch_format=batch_format,
            max_wait_ms=max_wait_ms,
            fn_args=fn_args,
            fn_kwargs=fn_kwargs,
            fn_constructor_args=fn_constructor_args,
            fn_constructor_kwargs=fn_constructor_kwargs,
        )
        apply_output_type(t, output_type)
        out = DataStream(self._env, t)
        if num_cpus is not None or num_gpus is not None:
            out.set_resources(num_cpus=num_cpus, num_gpus=num_gpus)
        if concurrency is not None:
            out.set_parallelism(concurrency)
        return out

    def assign_timestamps_and_watermarks(self, watermark_strategy: WatermarkStrategy) -> DataStream:
        """Extracts event timestamps and generates watermarks here, replacing upstream ones."""
        if not isinstance(watermark_strategy, WatermarkStrategy):
            raise TypeError(f"expected a WatermarkStrategy, got {watermark_strategy!r}")
        columnar = self.is_columnar
        if (
            columnar
            and watermark_strategy.timestamp_column is None
            and (watermark_strategy.timestamp_assigner is not None)
        ):
            raise GraphError(
                "a timestamp assigner function cannot read a columnar stream: use "
                "WatermarkStrategy...with_timestamp_column(name)"
            )
        factory = functools.partial(TimestampsAndWatermarksOperator, strategy=watermark_strategy)
        t = self._add("Timestamps/Watermarks", factory)
        # as in Flink, the assigner runs at its input's parallelism (chained to a source): a
        # single-reader source keeps its order through it
        t.inherit_parallelism = True
        if columnar:
            t.shape = t.accepts = COLUMNS
            if watermark_strategy.invalid_timestamps_tag is not None:
                t.side_shapes[watermark_strategy.invalid_timestamps_tag] = COLUMNS
        return self._same_type(t)

    def key_by(
        self,
        key_selector: KeySelector | Callable[[Any], Any] | str,
        *args: Any,
        key_type: Any = None,
    ) -> KeyedStream:
        """Partitions the stream by key: a :class:`KeySelector` or function of the record, or
        one or more column names — ``key_by("k")``, ``key_by("a", "b")`` — whose values (a
        tuple for several) are the key: columns of a columnar stream, fields (dict keys,
        ``Row`` fields or attributes) of a row stream. A key has the same key group whichever
        shape of stream carries it. (``key_by(selector, key_type)``, PyFlink's form, is
        accepted; the type is metadata.)"""
        if isinstance(key_selector, str):
            from raystream.api.columnar import key_by_columns

            return key_by_columns(self, (key_selector, *args))
        if self.is_columnar:
            raise GraphError(
                "key_by with a function reads records one by one, but this stream carries "
                "columns: key it by column name, key_by('col') or key_by('a', 'b'), or call "
                "to_rows() first"
            )
        ks = resolve(key_selector, KeySelector, "get_key", "key_by")
        part = Transformation(
            name="KeyBy",
            kind="partition",
            inputs=[(self._t, 0)],
            partitioner=KeyGroupPartitioner(ks),
        )
        return KeyedStream(self._env, part, ks)

    def join(self, other: DataStream) -> Any:
        """Window join: ``join(other).where(k1).equal_to(k2).window(assigner).apply(fn)``."""
        from raystream.api.joins import JoinedStreams

        self._rows_only("join()")
        return JoinedStreams(self, other)

    def co_group(self, other: DataStream) -> Any:
        """``co_group(other).where(k1).equal_to(k2).window(assigner).apply(fn)``."""
        from raystream.api.joins import CoGroupedStreams

        self._rows_only("co_group()")
        return CoGroupedStreams(self, other)

    def window_all(self, window_assigner: Any) -> AllWindowedStream:
        """Windows over the whole (non-keyed) stream, evaluated at parallelism 1."""
        from raystream.api.windowing import AllWindowedStream

        self._rows_only("window_all()")
        return AllWindowedStream(self._global_keyed(), window_assigner, parallelism=1)

    def count_window_all(self, size: int, slide: int | None = None) -> AllWindowedStream:
        from raystream.api.windowing import AllWindowedStream, count_window

        self._rows_only("count_window_all()")
        ws = count_window(self._global_keyed(), size, slide)
        all_ws = AllWindowedStream(ws._keyed, ws._assigner, parallelism=1)
        all_ws._trigger, all_ws._evictor = ws._trigger, ws._evictor
        return all_ws

    def _global_keyed(self) -> KeyedStream:
        from raystream.api.windowing import _no_key

        part = Transformation(
            name="Global", kind="partition", inputs=[(self._t, 0)], partitioner=GlobalPartitioner()
        )
        return KeyedStream(self._env, part, _no_key)

    def union(self, *streams: DataStream) -> DataStream:
        if not streams:
            return self
        for s in streams:
            if s._env is not self._env:
                raise GraphError("union() of streams from different environments")
            if s._t.shape != self._t.shape:
                raise GraphError(
                    f"union() of a stream of {self._t.shape} and one of {s._t.shape}: convert "
                    "one of them with to_rows() or to_columns() first"
                )
        t = Transformation(
            name="Union",
            kind="union",
            inputs=[(self._t, 0)] + [(s._t, 0) for s in streams],
            shape=self._t.shape,
        )
        return DataStream(self._env, t)

    def get_side_output(self, output_tag: OutputTag) -> DataStream:
        if not isinstance(output_tag, OutputTag):
            raise TypeError(f"get_side_output expects an OutputTag, got {output_tag!r}")
        t = Transformation(
            name=f"SideOutput[{output_tag.tag_id}]",
            kind="side_output",
            inputs=[(self._t, 0)],
            tag_id=output_tag.tag_id,
            output_type=output_tag.type_info,
            shape=self._t.side_shapes.get(output_tag.tag_id, ROWS),
        )
        return DataStream(self._env, t)

    # -- keyed-only operations, with a clear error on a non-keyed stream ---------------------------

    def _needs_key(self, what: str) -> GraphError:
        return GraphError(f"{what} needs a keyed stream: call key_by(...) first, then {what}")

    def reduce(self, func: Any, output_type: Any = None) -> DataStream:
        raise self._needs_key("reduce()")

    def sum(self, field: int | str | None = None) -> DataStream:
        raise self._needs_key("sum()")

    def min(self, field: int | str | None = None) -> DataStream:
        raise self._needs_key("min()")

    def max(self, field: int | str | None = None) -> DataStream:
        raise self._needs_key("max()")

    def min_by(self, field: int | str | None = None) -> DataStream:
        raise self._needs_key("min_by()")

    def max_by(self, field: int | str | None = None) -> DataStream:
        raise self._needs_key("max_by()")

    def window(self, window_assigner: Any) -> Any:
        raise GraphError(
            "window() needs a keyed stream: use key_by(...).window(assigner) for windows per "
            "key, or window_all(assigner) for windows over the whole stream"
        )

    def count_window(self, size: int, slide: int | None = None) -> Any:
        raise GraphError(
            "count_window() needs a keyed stream: use key_by(...).count_window(size) for windows "
            "per key, or count_window_all(size) for windows over the whole stream"
        )

    # -- partitioning ----------------------------------------------------------------------------

    def _partition(self, partitioner: _EdgePartitioner) -> DataStream:
        t = Transformation(
            name=partitioner.name.capitalize(),
            kind="partition",
            inputs=[(self._t, 0)],
            partitioner=partitioner,
            shape=self._t.shape,
        )
        return DataStream(self._env, t)

    def forward(self) -> DataStream:
        return self._partition(ForwardPartitioner())

    def rebalance(self) -> DataStream:
        return self._partition(RebalancePartitioner())

    def shuffle(self) -> DataStream:
        self._rows_only("shuffle()")
        return self._partition(ShufflePartitioner())

    def broadcast(self, *broadcast_state_descriptors: Any) -> Any:
        """Without arguments: send every record to every consumer subtask. With
        ``MapStateDescriptor`` s: a broadcast stream for ``connect`` with broadcast state."""
        if not broadcast_state_descriptors:
            return self._partition(BroadcastPartitioner())
        self._rows_only("broadcast(descriptors)")
        from raystream.api.connected import BroadcastStream

        return BroadcastStream(self, broadcast_state_descriptors)

    def connect(self, other: Any) -> Any:
        """Connects two streams (``ConnectedStreams``) or a stream and a broadcast stream."""
        from raystream.api.connected import (
            BroadcastConnectedStream,
            BroadcastStream,
            ConnectedStreams,
        )

        self._rows_only("connect()")

        if isinstance(other, BroadcastStream):
            return BroadcastConnectedStream(self, other)
        if not isinstance(other, DataStream):
            raise TypeError(f"connect() expects a DataStream or a BroadcastStream, got {other!r}")
        return ConnectedStreams(self, other)

    def rescale(self) -> DataStream:
        return self._partition(RescalePartitioner())

    def global_(self) -> DataStream:
        return self._partition(GlobalPartitioner())

    def partition_custom(
        self,
        partitioner: Partitioner | Callable[[Any, int], int],
        key_selector: KeySelector | Callable[[Any], Any],
    ) -> DataStream:
        self._rows_only("partition_custom()")
        part = resolve(partitioner, Partitioner, "partition", "partition_custom")
        ks = resolve(key_selector, KeySelector, "get_key", "partition_custom")
        return self._partition(CustomPartitioner(part, ks))

    # -- sinks -----------------------------------------------------------------------------------

    def _add_sink(
        self,
        name: str,
        factory: Callable[[str], Any],
        inherit: bool = False,
        converts_input: bool = True,
        accepts: str = ROWS,
    ) -> DataStreamSink:
        t = Transformation(
            name=self._env._unique_name(name),
            kind="sink",
            inputs=[(self._t, 0)],
            operator_factory=factory,
            converts_input=converts_input,
            accepts=accepts,
        )
        t.inherit_parallelism = inherit
        self._env._add(t)
        return DataStreamSink(self._env, t)

    def sink_to(self, sink: Sink) -> DataStreamSink:
        if not isinstance(sink, Sink):
            raise TypeError(f"sink_to expects a raystream Sink, got {type(sink).__name__}")
        if self.is_columnar and not sink.accepts_columns:
            raise GraphError(
                f"sink {sink.describe()} writes records, but this stream carries columns: call "
                "to_rows() first (FileSink, RayDatasetSink and print() write columns as they are)"
            )
        factory: Callable[[str], SinkOperator]
        if isinstance(sink, TwoPhaseCommitSink):
            factory = functools.partial(TwoPhaseCommitSinkOperator, sink=sink)
        else:
            factory = functools.partial(SinkOperator, sink=sink)
        return self._add_sink(sink.describe(), factory, accepts=self._t.shape)

    def add_sink(self, sink_func: SinkFunction | Callable[[Any], None]) -> DataStreamSink:
        self._rows_only("add_sink()")
        if not (isinstance(sink_func, SinkFunction) or callable(sink_func)):
            raise TypeError(f"add_sink expects a SinkFunction or a callable, got {sink_func!r}")
        return self._add_sink("Sink", functools.partial(SinkFunctionOperator, fn=sink_func))

    def print(self, sink_identifier: str | None = None) -> DataStreamSink:
        """Prints every record: as PyFlink does, Python's ``str`` of a record without a declared
        type, the Java ``toString`` of a declared one (``(a,1)`` for ``Types.TUPLE``, ``+I[a,1]``
        for rows; see :mod:`raystream.api.typed_values`)."""
        sink = PrintSink(sink_identifier, type_info=declared_type(self._t))
        return self._add_sink(
            "Print",
            functools.partial(SinkOperator, sink=sink),
            inherit=True,
            converts_input=False,
            accepts=ANY_SHAPE,
        )

    def to_ray_data_stream(
        self, capacity_blocks: int = 16, rows_per_block: int = 1024, readers: int = 1
    ) -> RayDataStream:
        """Adds a sink whose records a Ray Data pipeline reads while the job runs: start the
        job (``env.execute_async``), then read ``handoff.dataset()``, a ``ray.data.Dataset``
        that ends when the job's input ended. Exactly-once with checkpointing (blocks are
        released when their checkpoint completes); see
        :mod:`raystream.operators.raydata_stream`."""
        self._env._ensure_ray()
        handoff = RayDataStream(capacity_blocks, rows_per_block, readers)
        self._add_sink("RayDataStream", handoff.operator_factory())
        return handoff

    def execute_and_collect(
        self,
        job_execution_name: str | None = None,
        limit: int | None = None,
        *,
        savepoint_path: str | None = None,
        allow_non_restored_state: bool = False,
    ) -> CollectResultIterator | list:
        """Runs the job and returns its records: an iterator (close it, or use ``with``, to stop
        an unbounded job), or with ``limit`` a list of at most that many records."""
        if self._env._detached_by_default():
            raise GraphError(
                "execute_and_collect cannot run detached (raystream run --detached): its "
                "records go to this program, which exits; write them to a sink (e.g. "
                "FileSink) instead, or run the program without --detached"
            )
        collect_id = uuid.uuid4().hex
        self._add_sink(
            "Collect",
            functools.partial(CollectSinkOperator, collect_id=collect_id),
            inherit=True,
            accepts=ANY_SHAPE,
        )
        client = self._env.execute_async(
            job_execution_name or "collect",
            savepoint_path=savepoint_path,
            allow_non_restored_state=allow_non_restored_state,
        )
        from raystream.runtime.client import CollectResultIterator

        it = CollectResultIterator(client, progress=progress_for(client))
        if limit is None:
            return it
        out = []
        with it:
            for value in it:
                out.append(value)
                if len(out) >= limit:
                    break
        return out


class KeyedStream(DataStream):
    """A stream partitioned by key: running aggregates and keyed process functions with state."""

    def __init__(
        self,
        env: StreamExecutionEnvironment,
        transformation: Transformation,
        key_selector: Callable[[Any], Any],
    ):
        super().__init__(env, transformation)
        self._key_selector = key_selector
        #: ``key_by("a", ...)``: the key fields (they name the key in declarative results)
        self._key_fields: tuple[str, ...] | None = None

    def get_key_selector(self) -> Callable[[Any], Any]:
        return self._key_selector

    # map/flat_map/filter: keyed operators only when the function may use keyed state (it has
    # open/initialize_state); plain callables keep the stateless operators (no key per record)

    def map(self, func: MapFunction | Callable[[Any], Any], output_type: Any = None) -> DataStream:
        if not needs_current_key(func):
            return super().map(func, output_type)
        resolve(func, MapFunction, "map", "map")
        factory = functools.partial(KeyedMapOperator, fn=func, key_selector=self._key_selector)
        t = self._add("Map", factory, keyed=True)
        apply_output_type(t, output_type)
        return DataStream(self._env, t)

    def flat_map(
        self, func: FlatMapFunction | Callable[[Any], Any], output_type: Any = None
    ) -> DataStream:
        if not needs_current_key(func):
            return super().flat_map(func, output_type)
        resolve(func, FlatMapFunction, "flat_map", "flat_map")
        factory = functools.partial(KeyedFlatMapOperator, fn=func, key_selector=self._key_selector)
        t = self._add("FlatMap", factory, keyed=True)
        apply_output_type(t, output_type)
        return DataStream(self._env, t)

    def filter(self, func: FilterFunction | Callable[[Any], bool]) -> DataStream:
        if not needs_current_key(func):
            return super().filter(func)
        resolve(func, FilterFunction, "filter", "filter")
        factory = functools.partial(KeyedFilterOperator, fn=func, key_selector=self._key_selector)
        return self._same_type(self._add("Filter", factory, keyed=True))

    def reduce(
        self, func: ReduceFunction | Callable[[Any, Any], Any], output_type: Any = None
    ) -> DataStream:
        resolve(func, ReduceFunction, "reduce", "reduce")
        factory = functools.partial(ReduceOperator, fn=func, key_selector=self._key_selector)
        t = self._add("Reduce", factory, keyed=True)
        apply_output_type(t, declared_type(self._t) if output_type is None else output_type)
        return DataStream(self._env, t)

    def _aggregate(self, kind: str, field: int | str | None) -> DataStream:
        aggregation(kind, field)  # validates the field now
        factory = functools.partial(
            FieldAggregateOperator, kind=kind, field=field, key_selector=self._key_selector
        )
        label = kind.capitalize().replace("_b", "B") + (f"({field})" if field is not None else "")
        return self._same_type(self._add(label, factory, keyed=True))

    def sum(self, field: int | str | None = None) -> DataStream:
        return self._aggregate("sum", field)

    def min(self, field: int | str | None = None) -> DataStream:
        return self._aggregate("min", field)

    def max(self, field: int | str | None = None) -> DataStream:
        return self._aggregate("max", field)

    def min_by(self, field: int | str | None = None) -> DataStream:
        return self._aggregate("min_by", field)

    def max_by(self, field: int | str | None = None) -> DataStream:
        return self._aggregate("max_by", field)

    def process(
        self,
        func: KeyedProcessFunction | Callable[[Any, Any], Any],  # type: ignore[override]  # as in Flink
        output_type: Any = None,
    ) -> DataStream:
        if isinstance(func, ProcessFunction):
            raise GraphError("on a keyed stream use a KeyedProcessFunction, not a ProcessFunction")
        _check_callable(func, KeyedProcessFunction, "process")
        factory = functools.partial(KeyedProcessOperator, fn=func, key_selector=self._key_selector)
        t = self._add("KeyedProcess", factory, keyed=True)
        apply_output_type(t, output_type)
        return DataStream(self._env, t)

    def _physical(self, what: str) -> Transformation:
        raise GraphError(f"{what} applies to an operator; key_by() only partitions the stream")

    def interval_join(self, other: KeyedStream) -> Any:
        """Joins each record with the other keyed stream's records of the same key whose
        timestamps lie within ``between(lower, upper)`` of its own."""
        from raystream.api.joins import IntervalJoin

        return IntervalJoin(self, other)

    def window(self, window_assigner: Any) -> WindowedStream:
        """Cuts each key's records into windows (tumbling, sliding, session, global, ...)."""
        from raystream.api.windowing import WindowedStream

        return WindowedStream(self, window_assigner)

    def count_window(self, size: int, slide: int | None = None) -> WindowedStream:
        """Tumbling windows of ``size`` records per key, or sliding ones every ``slide`` records.

        As in Flink, a count window that never fills is not emitted, not even at end of input."""
        from raystream.api.windowing import count_window

        return count_window(self, size, slide)


class DataStreamSink:
    """Returned by sinks, to name them and set their parallelism."""

    def __init__(self, env: StreamExecutionEnvironment, transformation: Transformation):
        self._env = env
        self._t = transformation

    def name(self, name: str) -> DataStreamSink:
        self._t.name = name
        return self

    def uid(self, uid: str) -> DataStreamSink:
        self._t.uid = uid
        return self

    def set_parallelism(self, parallelism: int) -> DataStreamSink:
        if not isinstance(parallelism, int) or parallelism < 1:
            raise GraphError(f"parallelism must be a positive int, got {parallelism!r}")
        self._t.parallelism = parallelism
        return self

    def set_resources(self, **kwargs: Any) -> DataStreamSink:
        DataStream(self._env, self._t).set_resources(**kwargs)
        return self

    def disable_chaining(self) -> DataStreamSink:
        self._t.chaining = "never"
        return self


def _check_callable(func: Any, interface: type, what: str) -> None:
    if not (isinstance(func, interface) or callable(func)):
        raise TypeError(
            f"{what} expects a {interface.__name__} or a callable(value, ctx), got {func!r}"
        )
