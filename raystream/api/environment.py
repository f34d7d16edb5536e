"""StreamExecutionEnvironment: where a job is defined, configured and submitted."""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterable
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from raystream.api.datastream import DataStream
from raystream.api.runtime_mode import RuntimeExecutionMode
from raystream.api.typed_values import crossing_converter
from raystream.api.typeinfo import row_converter
from raystream.checkpoint_config import (
    CheckpointConfig,
    CheckpointingMode,
    RestartStrategy,
    default_restart_strategy,
)
from raystream.config import ExecutionConfig
from raystream.core.time import Duration
from raystream.core.watermarks import WatermarkStrategy
from raystream.errors import GraphError, SerializationError
from raystream.graph.plan import ExecutionPlan, build_plan
from raystream.graph.transformations import COLUMNS, Transformation, with_upstream
from raystream.observe.progress import progress_for
from raystream.operators.sources import (
    CollectionSource,
    NumberSequenceSource,
    Source,
    SourceOperator,
)
from raystream.operators.split_source import SplitSource, SplitSourceOperator
from raystream.runtime import serde
from raystream.runtime.client import (
    DetachedJobExecutionResult,
    JobClient,
    JobExecutionResult,
    JobMasterLease,
)
from raystream.runtime.deploy import DETACHED_NAMESPACE
from raystream.runtime.host import GuestRef
from raystream.runtime.job_tokens import new_token, save_token
from raystream.runtime.jobmaster import JobMaster
from raystream.runtime.jobs import job_master_name
from raystream.runtime.pool import get_pool

#: set by ``raystream run``: the settings a job script's ``execute`` picks up (see cli.py)
ENV_DETACHED = "RAYSTREAM_DETACHED"
ENV_SAVEPOINT_PATH = "RAYSTREAM_SAVEPOINT_PATH"
ENV_ALLOW_NON_RESTORED_STATE = "RAYSTREAM_ALLOW_NON_RESTORED_STATE"
#: a file ``execute_async`` appends one JSON line to per detached job it submits
ENV_SUBMITTED_JOBS_FILE = "RAYSTREAM_SUBMITTED_JOBS_FILE"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


class StreamExecutionEnvironment:
    """Defines a job and runs it on Ray.

    Args:
        config: execution settings (defaults: :class:`ExecutionConfig`).
        address: Ray cluster address used if Ray is not initialised yet (``None``: start or join
            a local Ray; ``"auto"``: the cluster this machine belongs to).
        ray_init_kwargs: extra arguments for ``ray.init`` in that case.
    """

    def __init__(
        self,
        config: ExecutionConfig | None = None,
        *,
        address: str | None = None,
        ray_init_kwargs: dict[str, Any] | None = None,
    ):
        self._config = config or ExecutionConfig()
        self._address = address
        self._ray_init_kwargs = dict(ray_init_kwargs or {})
        self._transformations: list[Transformation] = []
        self._executed: list[str] = []  # names of the jobs built so far
        self._names: dict[str, int] = {}
        self._restore_path: str | None = None
        self._allow_non_restored = False

    @staticmethod
    def get_execution_environment(
        config: ExecutionConfig | None = None, **kwargs: Any
    ) -> StreamExecutionEnvironment:
        return StreamExecutionEnvironment(config, **kwargs)

    # -- configuration ---------------------------------------------------------------------------

    def get_config(self) -> ExecutionConfig:
        return self._config

    def set_parallelism(self, parallelism: int) -> StreamExecutionEnvironment:
        if not isinstance(parallelism, int) or parallelism < 1:
            raise GraphError(f"parallelism must be a positive int, got {parallelism!r}")
        self._config.parallelism = parallelism
        return self

    def get_parallelism(self) -> int:
        return self._config.parallelism

    def set_max_parallelism(self, max_parallelism: int) -> StreamExecutionEnvironment:
        if not isinstance(max_parallelism, int) or not 1 <= max_parallelism <= 32768:
            raise GraphError(
                f"max parallelism must be an int in [1, 32768], got {max_parallelism!r}"
            )
        self._config.max_parallelism = max_parallelism
        return self

    def get_max_parallelism(self) -> int:
        return self._config.max_parallelism or 128

    def set_buffer_timeout(self, timeout_ms: int) -> StreamExecutionEnvironment:
        self._config.set_buffer_timeout(timeout_ms)
        return self

    def set_placement(
        self,
        strategy: str | None,
        slot_num_cpus: float | None = None,
        timeout: Duration | None = None,
    ) -> StreamExecutionEnvironment:
        """Reserves the job's resources in one Ray placement group with a bundle per slot
        (slot ``i`` runs subtask ``i`` of every operator chain; a slot reserves what its
        subtasks ask for with ``set_resources``/``task_num_cpus``, at least ``slot_num_cpus``
        CPUs, default 1): ``"SPREAD"`` over nodes, ``"PACK"`` onto few, or ``"STRICT_PACK"`` /
        ``"STRICT_SPREAD"``. On an autoscaling cluster the reservation is demand that adds
        nodes; the job waits up to ``timeout`` (default 5 min) for it, then fails. None: no
        reservation (the default, which runs any parallelism on a laptop)."""
        from raystream.core.time import to_millis
        from raystream.runtime.placement import STRATEGIES

        if strategy is not None and strategy not in STRATEGIES:
            raise GraphError(
                f"placement strategy must be one of {STRATEGIES} or None, got {strategy!r}"
            )
        if slot_num_cpus is not None:
            if slot_num_cpus <= 0:
                raise GraphError(f"slot_num_cpus must be > 0, got {slot_num_cpus!r}")
            self._config.slot_num_cpus = float(slot_num_cpus)
        if timeout is not None:
            self._config.placement_timeout_ms = to_millis(timeout, "placement timeout")
        self._config.placement_strategy = strategy
        return self

    def set_state_backend(self, state_backend: Any) -> StreamExecutionEnvironment:
        """``HashMapStateBackend()`` (default, in memory) or ``LmdbStateBackend(directory)``."""
        if not callable(getattr(state_backend, "create", None)):
            raise GraphError(
                f"set_state_backend expects HashMapStateBackend or LmdbStateBackend, got {state_backend!r}"
            )
        self._config.state_backend = state_backend
        return self

    def get_state_backend(self) -> Any:
        from raystream.checkpointing.backends.factory import HashMapStateBackend

        return self._config.state_backend or HashMapStateBackend()

    def add_jars(self, *jars_path: str) -> StreamExecutionEnvironment:
        """Accepted for PyFlink programs; raystream runs no JVM, so jars are not used."""
        _notice_once("add_jars", jars_path)
        return self

    def add_classpaths(self, *classpaths: str) -> StreamExecutionEnvironment:
        """Accepted for PyFlink programs; raystream runs no JVM, so classpaths are not used."""
        _notice_once("add_classpaths", classpaths)
        return self

    def set_runtime_mode(
        self, execution_mode: RuntimeExecutionMode | str
    ) -> StreamExecutionEnvironment:
        """``RuntimeExecutionMode.STREAMING`` (default), ``BATCH`` or ``AUTOMATIC``; decided
        when the job is built (an unbounded source in BATCH fails there, naming it)."""
        self._config.set_runtime_mode(execution_mode)
        return self

    def get_runtime_mode(self) -> RuntimeExecutionMode:
        return self._config.get_runtime_mode()

    def disable_operator_chaining(self) -> StreamExecutionEnvironment:
        self._config.chaining_enabled = False
        return self

    def is_chaining_enabled(self) -> bool:
        return self._config.chaining_enabled

    # -- sources ---------------------------------------------------------------------------------

    def from_source(
        self,
        source: Source,
        watermark_strategy: WatermarkStrategy | None = None,
        source_name: str = "Source",
        type_info: Any = None,
    ) -> DataStream:
        """A stream from a :class:`Source`; with a ``WatermarkStrategy`` the source subtasks
        extract timestamps and generate watermarks themselves (preferred over a separate
        ``assign_timestamps_and_watermarks``). ``type_info`` declares the type of the records
        (as in PyFlink; e.g. how ``print()`` shows them), it does not convert them."""
        row_converter(type_info)  # a TypeInformation or None
        if not isinstance(source, Source):
            raise TypeError(f"from_source expects a raystream Source, got {type(source).__name__}")
        if watermark_strategy is not None and not isinstance(watermark_strategy, WatermarkStrategy):
            raise TypeError(
                f"from_source expects a WatermarkStrategy or None, got {watermark_strategy!r}"
            )
        t = Transformation(
            name=self._unique_name(source_name), kind="source", source=source, output_type=type_info
        )
        t.operator_factory = _SourceFactory(source, watermark_strategy)
        if getattr(source, "columnar", False):
            t.shape = COLUMNS
            if watermark_strategy is not None:
                if (
                    watermark_strategy.timestamp_column is None
                    and watermark_strategy.timestamp_assigner is not None
                ):
                    raise GraphError(
                        f"source {source_name!r} emits columns: take timestamps from a column "
                        "with WatermarkStrategy...with_timestamp_column(name), not a timestamp "
                        "assigner function"
                    )
                if watermark_strategy.invalid_timestamps_tag is not None:
                    t.side_shapes[watermark_strategy.invalid_timestamps_tag] = COLUMNS
        self._add(t)
        return DataStream(self, t)

    def from_collection(self, collection: Iterable[Any], type_info: Any = None) -> DataStream:
        """A stream of the items, of type ``type_info`` if given: with ``Types.ROW(...)`` (or
        ``ROW_NAMED``) tuples become ``Row`` s, and ``FLOAT`` fields are narrowed to 32 bits (as
        PyFlink's collection source hands them over through Java), here on the driver."""
        items = list(collection)
        converter = row_converter(type_info)
        if converter is not None:
            items = converter(items, "from_collection")
        narrow = crossing_converter(type_info)
        if narrow is not None:
            items = narrow(items)
        return self.from_source(
            CollectionSource(items), source_name="Collection Source", type_info=type_info
        )

    def from_arrow(
        self,
        data: Any,
        watermark_strategy: WatermarkStrategy | None = None,
        *,
        chunk_rows: int = 1 << 16,
        source_name: str = "Arrow Source",
    ) -> DataStream:
        """A columnar stream of a ``pyarrow.Table``, a ``pyarrow.RecordBatch`` or a list of them
        (one schema). The data is put into the Ray object store once, now (Ray is started if it
        is not running), in chunks of ``chunk_rows`` rows; source subtask ``i`` of ``p`` reads
        chunks ``i, i + p, ...``. Event time: ``watermark_strategy`` with
        ``with_timestamp_column(name)``."""
        from raystream.operators.columnar.sources import ArrowSource

        self._ensure_ray()
        return self.from_source(
            ArrowSource(data, chunk_rows, "from_arrow"), watermark_strategy, source_name
        )

    def from_pandas(
        self,
        df: Any,
        watermark_strategy: WatermarkStrategy | None = None,
        *,
        chunk_rows: int = 1 << 16,
        source_name: str = "Pandas Source",
    ) -> DataStream:
        """A columnar stream of a ``pandas.DataFrame`` (its index is dropped; string columns
        become Arrow ``string``, not ``large_string``; see :meth:`from_arrow`)."""
        import pyarrow as pa

        from raystream.operators.columnar.sources import ArrowSource

        try:
            table = pa.Table.from_pandas(df, preserve_index=False)
            # pandas' string columns arrive as large_string: make them plain strings, as the
            # file readers produce, so that streams of both can be unioned
            fields = [
                f.with_type(pa.string())
                if pa.types.is_large_string(f.type)
                else f.with_type(pa.binary())
                if pa.types.is_large_binary(f.type)
                else f
                for f in table.schema
            ]
            table = table.cast(pa.schema(fields, metadata=table.schema.metadata))
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise GraphError(f"from_pandas: cannot convert the DataFrame to Arrow: {exc}") from exc
        self._ensure_ray()
        return self.from_source(
            ArrowSource(table, chunk_rows, "from_pandas"), watermark_strategy, source_name
        )

    def from_sequence(self, start: int, end: int | None) -> DataStream:
        """The integers ``start..end`` inclusive, as a parallel source (unbounded if end is None)."""
        return self.from_source(NumberSequenceSource(start, end), source_name="Sequence Source")

    def read_text_file(self, file_path: str, charset_name: str = "UTF-8") -> DataStream:
        from raystream.operators.files import FileSource

        return self.from_source(
            FileSource.for_lines(file_path, encoding=charset_name), source_name="Text File"
        )

    def from_ray_dataset(
        self,
        dataset: Any,
        watermark_strategy: WatermarkStrategy | None = None,
        *,
        columnar: bool = False,
    ) -> DataStream:
        """The rows of a ``ray.data.Dataset`` (dicts), one split per block; ``columnar=True``:
        a columnar stream of the blocks' Arrow record batches."""
        from raystream.operators.raydata import RayDatasetSource

        return self.from_source(
            RayDatasetSource(dataset, columnar=columnar), watermark_strategy, "Ray Dataset"
        )

    # -- execution -------------------------------------------------------------------------------

    def get_execution_plan(self) -> str:
        return build_plan("plan", self._job_nodes(), self._config).describe()

    def _job_nodes(self) -> list[Transformation]:
        if not self._transformations and self._executed:
            raise GraphError(
                f"nothing to execute: the earlier execute() of job {self._executed[-1]!r} "
                "consumed the graph defined before it (as in PyFlink); streams defined earlier "
                "can still be extended — add a sink (or call execute_and_collect) before "
                "calling execute() again"
            )
        # streams defined before an earlier execute() come back through the new nodes' inputs
        return with_upstream(self._transformations)

    def _build(self, job_name: str, detached: bool = False) -> ExecutionPlan:
        nodes = self._job_nodes()
        plan = _with_splits(build_plan(job_name, nodes, self._config), nodes, detached)
        self._transformations = []  # a job is built once, as in Flink
        self._executed.append(job_name)
        return plan

    def execute_async(
        self,
        job_name: str | None = None,
        *,
        savepoint_path: str | None = None,
        allow_non_restored_state: bool = False,
        detached: bool | None = None,
    ) -> JobClient:
        """Submits the job and returns at once. ``savepoint_path``: start from that savepoint
        (or retained checkpoint), operators matched by uid; the parallelism may differ.
        ``allow_non_restored_state``: drop state of uids the job no longer has instead of
        failing.

        ``detached=True``: the job's actors are detached Ray actors (namespace ``raystream``),
        so the job runs on when this process exits; ``JobClient.attach`` reaches it from any
        process. It needs a Ray cluster that outlives this process (without an address, the one
        running on this machine); its driver-owned objects (a Ray Dataset source) are refused.
        ``None``: detached if ``RAYSTREAM_DETACHED`` is set (``raystream run --detached``).

        Without an explicit restore (this argument or ``set_savepoint_restore``), the job
        starts from ``RAYSTREAM_SAVEPOINT_PATH`` if set (``raystream run --from-savepoint``).
        """
        job_name = job_name or "raystream job"
        if detached is None:
            detached = _env_flag(ENV_DETACHED)
        allow_non_restored_state = allow_non_restored_state or self._allow_non_restored
        if savepoint_path is None and self._restore_path is None:
            savepoint_path = os.environ.get(ENV_SAVEPOINT_PATH) or None
            allow_non_restored_state = allow_non_restored_state or _env_flag(
                ENV_ALLOW_NON_RESTORED_STATE
            )
        savepoint_path = savepoint_path or self._restore_path
        self._ensure_ray(detached)  # before the plan: sources may put their data in the store
        plan = self._build(job_name, detached)
        job_id = uuid.uuid4().hex
        name = job_master_name(job_name, job_id)
        plan_bytes, refs = serde.dumps(plan)
        if detached and refs:
            raise GraphError(
                f"job {job_name!r} cannot run detached: its plan holds {len(refs)} Ray objects "
                "owned by this driver (e.g. the blocks of a Ray Dataset source), which Ray frees "
                "when the driver exits; read the data from storage in the job instead"
            )
        restore = None
        if savepoint_path is not None:
            restore = {
                "path": str(savepoint_path),
                "allow_non_restored_state": allow_non_restored_state,
            }
        opts: dict[str, Any] = {
            "name": name,
            "num_cpus": 0,
            "max_concurrency": 1000,
            # the job master lives where the driver runs: losing a worker node must not
            # take the job's coordinator with it (a soft affinity lets Ray move a zero-CPU
            # actor to a worker node, so it is hard)
            "scheduling_strategy": NodeAffinitySchedulingStrategy(
                ray.get_runtime_context().get_node_id(), soft=False
            ),
        }
        if detached:
            opts["lifetime"] = "detached"
            opts["namespace"] = DETACHED_NAMESPACE
            # Ray restarts a detached job's job master (it resumes the job from its latest
            # checkpoint) and retries the calls that were in flight on the new one. With its
            # checkpoints on a shared storage it may come back on another node if this one
            # died; the default directory is on this node's disk, so it stays pinned here
            opts["max_restarts"] = plan.config.job_master_max_restarts
            opts["max_task_retries"] = -1
            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                ray.get_runtime_context().get_node_id(),
                soft=plan.config.checkpoint.storage is not None,
            )
        args = (plan_bytes, refs, name, restore, detached)
        token = new_token()
        lease = None
        if plan.config.reuse_workers and not detached:
            # a warm worker of the driver's pool runs the job master (no process start-up);
            # the client gives it back when it is let go
            pool = get_pool()
            opts.pop("name")
            host_id, host = ray.get(pool.acquire_job_master.remote(job_id, opts))
            ray.get(host.host_job_master.remote(job_id, *args, pool, token))
            jm: Any = GuestRef(host, job_id)
            lease = JobMasterLease(pool, host_id)
        else:
            jm = ray.remote(JobMaster).options(**opts).remote(job_id, *args, None, token)
        ray.get(jm.start.remote())  # type: ignore[attr-defined]  # Ray types async methods without .remote
        if detached:
            save_token(job_id, token)  # for this user's CLI on this machine (0600)
            _record_submitted(job_id, job_name)
        return JobClient(job_id, job_name, jm, lease=lease, token=token)

    def execute(
        self,
        job_name: str | None = None,
        *,
        savepoint_path: str | None = None,
        allow_non_restored_state: bool = False,
    ) -> JobExecutionResult:
        """Runs the job and blocks until it ends; raises ``JobExecutionError`` if it fails.

        Under ``raystream run --detached`` (``RAYSTREAM_DETACHED`` set) it submits the job
        detached and returns a :class:`DetachedJobExecutionResult` at once, as Flink's
        ``execute()`` does in detached mode."""
        client = self.execute_async(
            job_name,
            savepoint_path=savepoint_path,
            allow_non_restored_state=allow_non_restored_state,
        )
        if _env_flag(ENV_DETACHED):
            return DetachedJobExecutionResult(client.job_id, client.job_name)
        progress = progress_for(client)  # on a terminal only
        try:
            return client.wait()
        finally:
            if progress is not None:
                progress.stop()

    # -- checkpointing and restarts ----------------------------------------------------------------

    def enable_checkpointing(
        self, interval: Duration, mode: CheckpointingMode | None = None
    ) -> StreamExecutionEnvironment:
        """Takes a checkpoint every ``interval`` (ms or a duration); exactly-once by default."""
        cc = self._config.checkpoint
        cc.set_checkpoint_interval(interval)
        if mode is not None:
            cc.set_checkpointing_mode(mode)
        return self

    def get_checkpoint_config(self) -> CheckpointConfig:
        return self._config.checkpoint

    def is_checkpointing_enabled(self) -> bool:
        return self._config.checkpoint.is_checkpointing_enabled()

    def set_restart_strategy(self, strategy: RestartStrategy) -> StreamExecutionEnvironment:
        if not isinstance(strategy, RestartStrategy):
            raise GraphError(
                f"set_restart_strategy expects one of RestartStrategies, got {strategy!r}"
            )
        self._config.restart_strategy = strategy
        return self

    def set_error_policy(self, policy: Any) -> StreamExecutionEnvironment:
        """Default error policy of every operator that supports one (see
        ``DataStream.set_error_policy``, which overrides it per operator)."""
        self._config.set_error_policy(policy)
        return self

    def get_restart_strategy(self) -> RestartStrategy:
        return self._config.restart_strategy or default_restart_strategy(
            self.is_checkpointing_enabled()
        )

    def set_savepoint_restore(
        self, path: str | None, allow_non_restored_state: bool = False
    ) -> StreamExecutionEnvironment:
        """The savepoint the next ``execute`` starts from (Flink's ``execution.savepoint.path``)."""
        self._restore_path = path
        self._allow_non_restored = allow_non_restored_state
        return self

    def _ensure_ray(self, detached: bool = False) -> None:
        if ray.is_initialized():
            return
        address = self._address
        if detached and address is None and os.environ.get("RAY_ADDRESS") in (None, "", "local"):
            # a Ray started by this process would end with it, and the job with it
            address = "auto"
        try:
            ray.init(address=address, **self._ray_init_kwargs)
        except ConnectionError as exc:
            if not detached:
                raise
            raise GraphError(
                f"a detached job needs a running Ray cluster to outlive this process: {exc}. "
                "Start one (ray start --head) or give its address (RAY_ADDRESS)"
            ) from exc

    def _detached_by_default(self) -> bool:
        return _env_flag(ENV_DETACHED)

    # -- graph bookkeeping -----------------------------------------------------------------------

    def _add(self, t: Transformation) -> None:
        self._transformations.append(t)

    def _unique_name(self, base: str) -> str:
        n = self._names.get(base, 0) + 1
        self._names[base] = n
        return base if n == 1 else f"{base}-{n}"


_log = logging.getLogger(__name__)
_noticed: set[str] = set()


def _notice_once(what: str, paths: tuple[str, ...]) -> None:
    if what not in _noticed:
        _noticed.add(what)
        _log.warning(
            "%s(%s) ignored: raystream runs no JVM, jars are not needed", what, ", ".join(paths)
        )


def _record_submitted(job_id: str, job_name: str) -> None:
    path = os.environ.get(ENV_SUBMITTED_JOBS_FILE)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"job_id": job_id, "job_name": job_name}) + "\n")


class _SourceFactory:
    """Builds the source operator of one subtask from the splits cut on the driver."""

    def __init__(self, source: Source, watermark_strategy: WatermarkStrategy | None = None):
        self.source = source
        self.watermark_strategy = watermark_strategy
        self.splits: list | None = None

    def __call__(self, name: str) -> SourceOperator:
        if isinstance(self.source, SplitSource):  # splits come from its enumerator
            return SplitSourceOperator(name, self.source, self.watermark_strategy)
        if self.splits is None:
            raise GraphError(f"source {name!r} was not prepared on the driver")
        return SourceOperator(name, self.source, self.splits, self.watermark_strategy)


def _with_splits(
    plan: ExecutionPlan, transformations: list[Transformation], detached: bool = False
) -> ExecutionPlan:
    """Every source cuts its splits on the driver, from the user's own source object; a
    collection's slices go into the object store (inline in a detached job's plan)."""
    by_id = {t.id: t for t in transformations}
    for chain in plan.chains:
        head = chain.head
        if head.kind != "source":
            continue
        factory = by_id[head.id].operator_factory
        assert isinstance(factory, _SourceFactory)
        if isinstance(factory.source, SplitSource):
            head.factory = factory
            continue
        try:
            factory.splits = list(factory.source.create_splits(chain.parallelism))
        except Exception as exc:
            raise GraphError(
                f"source {head.name!r} cannot create its splits: {type(exc).__name__}: {exc}"
            ) from exc
        if isinstance(factory.source, CollectionSource):
            _place_collection(factory.source, factory.splits, head.name, detached)
        head.factory = factory
    return plan


def _place_collection(source: CollectionSource, splits: list, name: str, detached: bool) -> None:
    if detached or not ray.is_initialized():
        source.keep_inline()
        return
    try:
        source.share(splits)
    except Exception as exc:
        raise SerializationError(
            f"source {name!r}: the collection's items cannot be put into the Ray object store: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
