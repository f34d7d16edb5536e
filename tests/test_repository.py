"""The repository keeps its promises: README commands, CI script, layout, public API."""

from __future__ import annotations

import pathlib

import raystream
import raystream.agg
import raystream.checkpointing
import raystream.operators

ROOT = pathlib.Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("```bash", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.strip().splitlines()]


def test_readme_starts_with_the_two_commands_and_ci_runs_the_test_one_verbatim():
    install_and_run, install_and_test = readme_commands()
    assert "examples/wordcount.py" in install_and_run
    assert "pytest" in install_and_test and ".[test,ml]" in install_and_test
    assert "torch==2.13.0" in install_and_test  # the CPU build, before the ml extra wants torch
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install_and_test in [line.strip() for line in ci]


def test_layout_fixed_by_the_users():
    for name in (
        "pyproject.toml",
        "raystream",
        "operators",
        "checkpointing",
        "examples",
        "cluster.yaml",
        "tests",
    ):
        assert (ROOT / name).exists(), name
    assert (ROOT / "raystream" / "py.typed").exists()


def test_mapped_packages_load_under_one_name_only():
    assert raystream.operators.__name__ == "raystream.operators"
    assert pathlib.Path(raystream.operators.__file__).parent == ROOT / "operators"
    assert pathlib.Path(raystream.checkpointing.__file__).parent == ROOT / "checkpointing"
    for py in (
        list((ROOT / "raystream").rglob("*.py"))
        + list((ROOT / "operators").rglob("*.py"))
        + list((ROOT / "checkpointing").rglob("*.py"))
    ):
        for line in py.read_text().splitlines():
            stripped = line.strip()
            assert not stripped.startswith(
                ("import operators", "from operators", "import checkpointing", "from checkpointing")
            ), f"{py}: {line}"


# An API change must be deliberate: update these lists together with the code.
PUBLIC_RAYSTREAM = [
    # async I/O (docs/ml.md)
    "AsyncDataStream",
    "AsyncFunction",
    "AsyncRetryStrategies",
    "AsyncRetryStrategy",
    "RetryPredicates",
    "agg",
    "ColumnError",
    "ColumnarKeyedStream",
    "ColumnarWindowedStream",
    # the split-source API (docs/sources.md)
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
    "DeadLetter",
    "ErrorPolicy",
    "CheckpointConfig",
    "CheckpointingMode",
    "ExternalizedCheckpointRetention",
    "RestartStrategies",
    "RestartStrategy",
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
    # PyFlink's names where a PyFlink user looks for them (issue 9, docs/pyflink.md)
    "BaseBroadcastProcessFunction",
    "CountWindow",
    "Duration",
    "FileSink",
    "FileSource",
    "HashMapStateBackend",
    "LmdbStateBackend",
    "Row",
    "RowKind",
    "RuntimeExecutionMode",
    "SessionWindowTimeGapExtractor",
    "TypeInformation",
    "Types",
]


PUBLIC_OPERATORS = [
    "ArrowSource",
    "TwoPhaseCommitSink",
    "Boundedness",
    "CollectionSource",
    "FileSink",
    "FileSource",
    "NumberSequenceSource",
    "PrintSink",
    "RayDataStream",
    "RayDatasetSink",
    "RayDatasetSource",
    "Sink",
    "SinkContext",
    "SinkWriter",
    "Source",
    "SplitReader",
]
PUBLIC_CHECKPOINTING = [
    "CheckpointStore",
    "CorruptCheckpointError",
    "FsCheckpointStore",
    "LmdbCheckpointStore",
    "StateMappingError",
    "HashMapStateBackend",
    "LmdbKeyedStateBackend",
    "LmdbStateBackend",
    "MemoryKeyedStateBackend",
]


PUBLIC_AGG = ["Aggregate", "count", "first", "last", "max", "mean", "min", "sum"]


def test_public_api_is_deliberate():
    assert sorted(raystream.agg.__all__) == sorted(PUBLIC_AGG)
    assert sorted(raystream.__all__) == sorted(PUBLIC_RAYSTREAM)
    assert sorted(raystream.operators.__all__) == sorted(PUBLIC_OPERATORS)
    assert sorted(raystream.checkpointing.__all__) == sorted(PUBLIC_CHECKPOINTING)
    for name in raystream.__all__:
        assert hasattr(raystream, name), name
    for module in (raystream.operators, raystream.checkpointing):
        for name in module.__all__:
            assert hasattr(module, name), name


def test_every_package_directory_is_in_the_distribution():
    """A subpackage missing from pyproject's package list works in an editable install and is
    absent from a wheel."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    dirs = {name: ROOT / path for name, path in config["package-dir"].items()}
    found = set()
    for name, base in dirs.items():
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base).parts
            found.add(".".join((name, *rel)))
    assert found <= listed, f"not in pyproject's packages: {sorted(found - listed)}"
