"""raystream — Apache Flink's DataStream model as a Python library whose runtime is Ray.

Reading guide (the record path and the barrier path, file by file):

- ``api/environment.py``, ``api/datastream.py``: the user builds a logical graph
  (``graph/transformations.py``); nothing runs yet.
- ``graph/plan.py``: ``execute`` turns it into an execution plan — operator chaining, one task per
  (chain, subtask), channels per edge with a partitioner (``graph/partitioners.py``).
- ``runtime/jobmaster.py``: one actor per job creates a task actor per subtask
  (``runtime/deploy.py``), wires them, starts them and watches them — a thin shell over
  decision objects without Ray: ``runtime/failover.py`` (restart or fail),
  ``checkpointing/coordinator.py`` (checkpoints; ``runtime/checkpoint_runner.py`` carries its
  decisions out) and ``runtime/collect_buffer.py`` (what reaches ``execute_and_collect``).
- ``runtime/task.py``: a task runs its chain (``operators/``). Source tasks poll a split reader
  (``operators/sources.py``); other tasks take messages from their input gate
  (``runtime/gate.py``), which hands out each channel's messages in sequence order.
- ``runtime/channels.py``: the last operator's output is routed onto channels, batched, and
  pushed to the consumer task with bounded credit (back-pressure).
- ``runtime/elements.py``: the wire protocol (batches of rows or of columns, watermarks,
  barriers, end of input); ``runtime/columns.py``: columns as Arrow IPC on the wire.
- Barriers: ``checkpointing/coordinator.py`` decides a checkpoint, the runner triggers the
  sources, ``runtime/barriers.py`` aligns them at each task, ``runtime/task.py`` snapshots and
  acknowledges, the runner writes the store (``checkpointing/storage/``) and tells the tasks
  once the coordinator completed it.
- ``runtime/client.py``: the driver's ``JobClient`` and the ``execute_and_collect`` iterator;
  ``JobClient.attach`` and ``list_jobs`` reach a cluster's jobs from any process
  (``runtime/jobs.py``), as the ``raystream`` command line does (``cli.py``).
"""

from raystream import agg
from raystream.api.async_data_stream import AsyncDataStream
from raystream.api.async_functions import (
    AsyncFunction,
    AsyncRetryStrategies,
    AsyncRetryStrategy,
    RetryPredicates,
)
from raystream.api.columnar import ColumnarKeyedStream, ColumnarWindowedStream
from raystream.api.connected import BroadcastConnectedStream, BroadcastStream, ConnectedStreams
from raystream.api.context import RuntimeContext
from raystream.api.datastream import DataStream, DataStreamSink, KeyedStream
from raystream.api.duration import Duration
from raystream.api.environment import StreamExecutionEnvironment
from raystream.api.error_policy import DeadLetter, ErrorPolicy
from raystream.api.functions import (
    AggregateFunction,
    AllWindowFunction,
    BaseBroadcastProcessFunction,
    BroadcastProcessFunction,
    CheckpointedFunction,
    CoFlatMapFunction,
    CoMapFunction,
    CoProcessFunction,
    FilterFunction,
    FlatMapFunction,
    Function,
    KeyedBroadcastProcessFunction,
    KeyedCoProcessFunction,
    KeyedProcessFunction,
    KeySelector,
    MapFunction,
    OutputTag,
    Partitioner,
    ProcessAllWindowFunction,
    ProcessFunction,
    ProcessWindowFunction,
    ReduceFunction,
    SinkFunction,
    WindowFunction,
)
from raystream.api.joins import CoGroupFunction, FlatJoinFunction, JoinFunction, ProcessJoinFunction
from raystream.api.runtime_mode import RuntimeExecutionMode
from raystream.api.typeinfo import TypeInformation, Types
from raystream.api.windowing import AllWindowedStream, WindowedStream
from raystream.checkpoint_config import (
    CheckpointConfig,
    CheckpointingMode,
    ExternalizedCheckpointRetention,
    RestartStrategies,
    RestartStrategy,
)
from raystream.checkpointing.backends.factory import HashMapStateBackend, LmdbStateBackend
from raystream.config import ExecutionConfig
from raystream.core.row import Row, RowKind
from raystream.core.time import MAX_TS, MIN_TS, Time
from raystream.core.watermarks import (
    TimestampAssigner,
    WatermarkGenerator,
    WatermarkOutput,
    WatermarkStrategy,
)
from raystream.errors import (
    ChannelError,
    GraphError,
    InvalidKeyError,
    JobExecutionError,
    RaystreamError,
    SerializationError,
    TaskError,
    UserFunctionError,
)
from raystream.operators.columnar.schema import ColumnError
from raystream.operators.file_sink import FileSink
from raystream.operators.files import FileSource
from raystream.operators.process import TimeDomain
from raystream.operators.sources import Boundedness, Source, SplitReader
from raystream.operators.split_source import (
    DiscoveringSplitEnumerator,
    ReaderContext,
    SourceReader,
    SplitEnumerator,
    SplitEnumeratorContext,
    SplitRecords,
    SplitSource,
)
from raystream.operators.windows import (
    ContinuousEventTimeTrigger,
    ContinuousProcessingTimeTrigger,
    CountEvictor,
    CountTrigger,
    CountWindow,
    DeltaEvictor,
    DeltaTrigger,
    EventTimeSessionWindows,
    EventTimeTrigger,
    Evictor,
    GlobalWindow,
    GlobalWindows,
    NeverTrigger,
    ProcessingTimeSessionWindows,
    ProcessingTimeTrigger,
    PurgingTrigger,
    SessionWindowTimeGapExtractor,
    SlidingEventTimeWindows,
    SlidingProcessingTimeWindows,
    TimeEvictor,
    TimeWindow,
    Trigger,
    TriggerResult,
    TumblingEventTimeWindows,
    TumblingProcessingTimeWindows,
    WindowAssigner,
)
from raystream.runtime.client import (
    DetachedJobExecutionResult,
    JobClient,
    JobExecutionResult,
    JobStatus,
    JobStatusMessage,
    list_jobs,
)
from raystream.runtime.jobs import ClusterUnreachableError, JobNotFoundError
from raystream.state.api import (
    AggregatingState,
    ListState,
    MapState,
    ReducingState,
    ValueState,
)
from raystream.state.descriptors import (
    AggregatingStateDescriptor,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    ValueStateDescriptor,
)
from raystream.state.ttl import StateTtlConfig

__version__ = "0.1.0"

__all__ = [
    "AsyncDataStream",
    "AsyncFunction",
    "AsyncRetryStrategies",
    "AsyncRetryStrategy",
    "RetryPredicates",
    "agg",
    "ColumnError",
    "ColumnarKeyedStream",
    "ColumnarWindowedStream",
    "DeadLetter",
    "ErrorPolicy",
    "BaseBroadcastProcessFunction",
    "CountWindow",
    "Duration",
    "FileSink",
    "FileSource",
    "Boundedness",
    "DiscoveringSplitEnumerator",
    "ReaderContext",
    "Source",
    "SourceReader",
    "SplitEnumerator",
    "SplitEnumeratorContext",
    "SplitReader",
    "SplitRecords",
    "SplitSource",
    "HashMapStateBackend",
    "LmdbStateBackend",
    "Row",
    "RowKind",
    "RuntimeExecutionMode",
    "SessionWindowTimeGapExtractor",
    "TypeInformation",
    "Types",
    "AggregateFunction",
    "AggregatingState",
    "AggregatingStateDescriptor",
    "AllWindowFunction",
    "AllWindowedStream",
    "BroadcastConnectedStream",
    "BroadcastProcessFunction",
    "BroadcastStream",
    "CheckpointedFunction",
    "ChannelError",
    "CoFlatMapFunction",
    "CoGroupFunction",
    "CoMapFunction",
    "CoProcessFunction",
    "ConnectedStreams",
    "ContinuousEventTimeTrigger",
    "ContinuousProcessingTimeTrigger",
    "CountEvictor",
    "CountTrigger",
    "DataStream",
    "DataStreamSink",
    "DeltaEvictor",
    "DeltaTrigger",
    "EventTimeSessionWindows",
    "EventTimeTrigger",
    "Evictor",
    "ExecutionConfig",
    "CheckpointConfig",
    "CheckpointingMode",
    "ExternalizedCheckpointRetention",
    "RestartStrategies",
    "RestartStrategy",
    "FilterFunction",
    "FlatJoinFunction",
    "FlatMapFunction",
    "Function",
    "GlobalWindow",
    "GlobalWindows",
    "GraphError",
    "InvalidKeyError",
    "JobClient",
    "DetachedJobExecutionResult",
    "JobStatusMessage",
    "list_jobs",
    "ClusterUnreachableError",
    "JobNotFoundError",
    "JobExecutionError",
    "JobExecutionResult",
    "JobStatus",
    "JoinFunction",
    "KeySelector",
    "KeyedBroadcastProcessFunction",
    "KeyedCoProcessFunction",
    "KeyedProcessFunction",
    "KeyedStream",
    "ListState",
    "ListStateDescriptor",
    "MAX_TS",
    "MIN_TS",
    "MapFunction",
    "MapState",
    "MapStateDescriptor",
    "NeverTrigger",
    "OutputTag",
    "Partitioner",
    "ProcessAllWindowFunction",
    "ProcessFunction",
    "ProcessJoinFunction",
    "ProcessWindowFunction",
    "ProcessingTimeSessionWindows",
    "ProcessingTimeTrigger",
    "PurgingTrigger",
    "RaystreamError",
    "ReduceFunction",
    "ReducingState",
    "ReducingStateDescriptor",
    "RuntimeContext",
    "SerializationError",
    "SinkFunction",
    "SlidingEventTimeWindows",
    "SlidingProcessingTimeWindows",
    "StateTtlConfig",
    "StreamExecutionEnvironment",
    "TaskError",
    "Time",
    "TimeDomain",
    "TimeEvictor",
    "TimeWindow",
    "TimestampAssigner",
    "Trigger",
    "TriggerResult",
    "TumblingEventTimeWindows",
    "TumblingProcessingTimeWindows",
    "UserFunctionError",
    "ValueState",
    "ValueStateDescriptor",
    "WatermarkGenerator",
    "WatermarkOutput",
    "WatermarkStrategy",
    "WindowAssigner",
    "WindowFunction",
    "WindowedStream",
]
