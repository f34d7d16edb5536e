"""Mirror of ``pyflink.datastream``: ``from pyflink.datastream import X`` becomes
``from raystream.datastream import X`` (or ``from raystream import X``; see docs/pyflink.md)."""

from raystream.api.connected import BroadcastConnectedStream, BroadcastStream, ConnectedStreams
from raystream.api.context import RuntimeContext
from raystream.api.datastream import DataStream, DataStreamSink, KeyedStream
from raystream.api.environment import StreamExecutionEnvironment
from raystream.api.functions import (
    AggregateFunction,
    AllWindowFunction,
    BroadcastProcessFunction,
    CoFlatMapFunction,
    CoMapFunction,
    CoProcessFunction,
    FilterFunction,
    FlatMapFunction,
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
from raystream.api.runtime_mode import RuntimeExecutionMode
from raystream.api.windowing import AllWindowedStream, WindowedStream
from raystream.checkpoint_config import (
    CheckpointConfig,
    CheckpointingMode,
    ExternalizedCheckpointRetention,
)
from raystream.checkpointing.backends.factory import HashMapStateBackend, LmdbStateBackend
from raystream.operators.process import TimeDomain
from raystream.operators.windows.assigners import (
    CountWindow,
    GlobalWindow,
    TimeWindow,
    WindowAssigner,
)
from raystream.operators.windows.triggers import Trigger, TriggerResult

__all__ = [
    "AggregateFunction",
    "AllWindowFunction",
    "AllWindowedStream",
    "BroadcastConnectedStream",
    "BroadcastProcessFunction",
    "BroadcastStream",
    "CheckpointConfig",
    "CheckpointingMode",
    "CoFlatMapFunction",
    "CoMapFunction",
    "CoProcessFunction",
    "ConnectedStreams",
    "CountWindow",
    "DataStream",
    "DataStreamSink",
    "ExternalizedCheckpointRetention",
    "FilterFunction",
    "FlatMapFunction",
    "GlobalWindow",
    "HashMapStateBackend",
    "KeySelector",
    "KeyedBroadcastProcessFunction",
    "KeyedCoProcessFunction",
    "KeyedProcessFunction",
    "KeyedStream",
    "LmdbStateBackend",
    "MapFunction",
    "OutputTag",
    "Partitioner",
    "ProcessAllWindowFunction",
    "ProcessFunction",
    "ProcessWindowFunction",
    "ReduceFunction",
    "RuntimeContext",
    "RuntimeExecutionMode",
    "SinkFunction",
    "StreamExecutionEnvironment",
    "TimeDomain",
    "TimeWindow",
    "Trigger",
    "TriggerResult",
    "WindowAssigner",
    "WindowFunction",
    "WindowedStream",
]
