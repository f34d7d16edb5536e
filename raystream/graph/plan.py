"""Internal: logical graph → execution plan (operator chaining, channels per edge).

1. Resolve virtual nodes into physical edges (producer, consumer, partitioner, side-output tag,
   input index). Without an explicit partitioning an edge is *forward* when both sides have the
   same parallelism and *rebalance* otherwise, as in Flink.
2. Chain: a forward edge between nodes of equal parallelism and resources, whose consumer has no
   other input, fuses consumer into producer (unless chaining is disabled for either).
3. Every chain becomes ``parallelism`` subtasks (one actor each); every non-chained edge becomes
   channels between the subtasks its partitioner connects.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from raystream.api.runtime_mode import RuntimeExecutionMode, apply_runtime_mode
from raystream.api.typed_values import crossing_converter
from raystream.config import ExecutionConfig
from raystream.core.keys import default_max_parallelism
from raystream.errors import GraphError, SerializationError
from raystream.graph.column_partitioners import for_columns
from raystream.graph.partitioners import (
    ForwardPartitioner,
    KeyGroupPartitioner,
    Partitioner,
    RebalancePartitioner,
    RescalePartitioner,
    ShufflePartitioner,
)
from raystream.graph.transformations import ANY_SHAPE, COLUMNS, Transformation, output_shape


@dataclass
class OutputSpec:
    """Where one output of a node goes: a chained node (``node_id``) or an edge (``edge_id``)."""

    tag_id: str | None
    node_id: int | None = None
    input_index: int = 0
    edge_id: int | None = None
    #: ``convert(values) -> values`` records go through here (a declared ``FLOAT``/``DOUBLE``
    #: type, :func:`~raystream.api.typed_values.crossing_converter`), or None
    convert: Any = None


@dataclass
class NodeSpec:
    id: int
    name: str
    uid: str  # state_uid(): the user's uid or one derived from the graph
    kind: str
    keyed: bool
    factory: Any  # ``factory(name) -> StreamOperator``; checked picklable when the plan is built
    outputs: list[OutputSpec] = field(default_factory=list)
    #: the operator's own error policy (None: the job's default, ``config.error_policy``)
    error_policy: Any = None


@dataclass
class EdgeSpec:
    id: int
    src_chain: int
    src_node: int
    dst_chain: int
    dst_node: int
    input_index: int
    partitioner: Partitioner
    tag_id: str | None
    p_up: int
    p_down: int
    name: str

    def targets(self, producer: int) -> list[int]:
        return self.partitioner.targets(producer, self.p_up, self.p_down)

    def sources_of(self, consumer: int) -> list[int]:
        return [i for i in range(self.p_up) if consumer in self.targets(i)]


@dataclass
class ChainSpec:
    id: int
    name: str
    parallelism: int
    nodes: list[NodeSpec]
    input_edges: list[int]
    resources: dict[str, Any]
    is_source: bool

    @property
    def head(self) -> NodeSpec:
        return self.nodes[0]


@dataclass
class ExecutionPlan:
    job_name: str
    chains: list[ChainSpec]
    edges: list[EdgeSpec]
    max_parallelism: int
    config: ExecutionConfig

    def chain(self, chain_id: int) -> ChainSpec:
        return next(c for c in self.chains if c.id == chain_id)

    def edge(self, edge_id: int) -> EdgeSpec:
        return next(e for e in self.edges if e.id == edge_id)

    def describe(self) -> str:
        batch = ", BATCH" if self.config.runtime_mode is RuntimeExecutionMode.BATCH else ""
        lines = [f"job {self.job_name!r} (max parallelism {self.max_parallelism}{batch})"]
        for c in self.chains:
            ops = " -> ".join(n.name for n in c.nodes)
            lines.append(f"  task {c.name!r} x{c.parallelism}: {ops}")
        for e in self.edges:
            lines.append(
                f"  edge {e.name}: {self.chain(e.src_chain).name} -[{e.partitioner!r}"
                f"{', tag ' + e.tag_id if e.tag_id else ''}]-> {self.chain(e.dst_chain).name}"
            )
        return "\n".join(lines)


@dataclass
class _PhysEdge:
    src: Transformation
    dst: Transformation
    partitioner: Partitioner | None
    tag_id: str | None
    input_index: int
    #: the declared type of a side output's records (the main output's is ``src.output_type``)
    side_type: Any = None

    def converter(self, chained: bool) -> Any:
        """What records go through on this edge: their declared type's conversion where they
        leave a chain, go to a side output or enter a sink that takes converted values (as in
        PyFlink, where they cross into Java there). Sources hand over converted values."""
        if self.src.kind == "source":
            return None
        if chained and self.tag_id is None and not self.dst.converts_input:
            return None
        return crossing_converter(self.side_type if self.tag_id else self.src.output_type)


def build_plan(
    job_name: str, nodes: list[Transformation], config: ExecutionConfig
) -> ExecutionPlan:
    config.validate()
    physical = [t for t in nodes if t.is_physical]
    if not physical:
        raise GraphError("the job has no operators: add a source and a sink before execute()")

    parallelism: dict[int, int] = {}
    single_readers = _single_reader_sources(physical, config)
    for t in sorted(physical, key=lambda t: t.id):  # producers are always created first
        if t.id in single_readers:
            parallelism[t.id] = 1
        elif t.parallelism is None and t.inherit_parallelism and t.inputs:
            first = _resolve(t.inputs[0][0], t, None, None, 0)[0].src
            parallelism[t.id] = parallelism[first.id]
        else:
            parallelism[t.id] = _parallelism_of(t, config)
    max_p = config.max_parallelism or default_max_parallelism(max(parallelism.values()))
    for t in physical:
        if parallelism[t.id] > max_p:
            raise GraphError(
                f"operator {t.name!r} has parallelism {parallelism[t.id]}, above the max "
                f"parallelism {max_p} (the number of key groups); raise set_max_parallelism()"
            )
    uids = [t.uid for t in physical if t.uid is not None]
    dup = {u for u in uids if uids.count(u) > 1}
    if dup:
        raise GraphError(
            f"uid(s) {sorted(dup)} used by more than one operator; uids must be unique"
        )

    edges: list[_PhysEdge] = []
    for t in physical:
        for upstream, input_index in t.inputs:
            edges.extend(_resolve(upstream, t, None, None, input_index))
    for e in edges:
        p_up, p_down = parallelism[e.src.id], parallelism[e.dst.id]
        if e.partitioner is None:
            e.partitioner = ForwardPartitioner() if p_up == p_down else RebalancePartitioner()
        if _check_shapes(e) == COLUMNS:
            e.partitioner = for_columns(e.partitioner, f"{e.src.name} -> {e.dst.name}")
        if e.partitioner.is_forward and p_up != p_down:
            raise GraphError(
                f"forward edge {e.src.name!r} -> {e.dst.name!r} needs equal parallelism, got "
                f"{p_up} and {p_down}; use rebalance() or rescale() instead"
            )
        elif isinstance(e.partitioner, KeyGroupPartitioner) and _tolerates_bad_records(
            e.dst, config
        ):
            # the consumer's error policy takes records whose key selector raises: the router
            # hands them to one consumer subtask, where the operator's own key selector raises
            # again and the policy applies (with the consumer's name on the dead letter)
            e.partitioner = e.partitioner.passing_bad_keys()

    in_edges: dict[int, list[_PhysEdge]] = {t.id: [] for t in physical}
    out_edges: dict[int, list[_PhysEdge]] = {t.id: [] for t in physical}
    for e in edges:
        in_edges[e.dst.id].append(e)
        out_edges[e.src.id].append(e)

    def chainable(e: _PhysEdge) -> bool:
        return (
            config.chaining_enabled
            and e.partitioner is not None
            and e.partitioner.is_forward
            and len(in_edges[e.dst.id]) == 1
            and parallelism[e.src.id] == parallelism[e.dst.id]
            and e.src.chaining != "never"
            and e.dst.chaining == "default"
            and e.src.resources == e.dst.resources
        )

    order = _topological(physical, in_edges)
    head_of: dict[int, Transformation] = {}
    for t in order:
        ins = in_edges[t.id]
        head_of[t.id] = head_of[ins[0].src.id] if len(ins) == 1 and chainable(ins[0]) else t

    chain_ids: dict[int, int] = {}
    chains: list[ChainSpec] = []
    members: dict[int, list[Transformation]] = {}
    for t in order:
        members.setdefault(head_of[t.id].id, []).append(t)
    node_specs: dict[int, NodeSpec] = {}
    for cid, (head_id, ts) in enumerate(members.items()):
        head = ts[0]
        specs = [_node_spec(t) for t in ts]
        for s in specs:
            node_specs[s.id] = s
        for t in ts:
            chain_ids[t.id] = cid
        name = head.name if len(ts) == 1 else " -> ".join(t.name for t in ts)
        chains.append(
            ChainSpec(
                id=cid,
                name=name,
                parallelism=parallelism[head_id],
                nodes=specs,
                input_edges=[],
                resources=dict(head.resources),
                is_source=head.kind == "source",
            )
        )

    edge_specs: list[EdgeSpec] = []
    for e in edges:
        spec = node_specs[e.src.id]
        if chain_ids[e.src.id] == chain_ids[e.dst.id]:
            spec.outputs.append(
                OutputSpec(
                    e.tag_id,
                    node_id=e.dst.id,
                    input_index=e.input_index,
                    convert=e.converter(chained=True),
                )
            )
            continue
        eid = len(edge_specs)
        edge_specs.append(
            EdgeSpec(
                id=eid,
                src_chain=chain_ids[e.src.id],
                src_node=e.src.id,
                dst_chain=chain_ids[e.dst.id],
                dst_node=e.dst.id,
                input_index=e.input_index,
                partitioner=e.partitioner,  # type: ignore[arg-type]
                tag_id=e.tag_id,
                p_up=parallelism[e.src.id],
                p_down=parallelism[e.dst.id],
                name=f"{e.src.name} -> {e.dst.name}",
            )
        )
        spec.outputs.append(OutputSpec(e.tag_id, edge_id=eid, convert=e.converter(chained=False)))
        chains[chain_ids[e.dst.id]].input_edges.append(eid)

    for edge in edge_specs:
        _check_picklable(edge.partitioner, f"the partitioning of edge {edge.name!r}")
    plan_config = config.copy()
    sources = [(t.name, t.source) for t in physical if t.kind == "source"]
    apply_runtime_mode(plan_config, sources, job_name)  # STREAMING or BATCH from here on
    return ExecutionPlan(job_name, chains, edge_specs, max_p, plan_config)


def _single_reader_sources(physical: list[Transformation], config: ExecutionConfig) -> set[int]:
    """Sources that read with one subtask although they could read in parallel slices.

    A source that says ``ordered_by_default`` (a collection) reads in parallel only where a single
    reader (Flink's non-parallel ``fromCollection``) would give no order that slices break: when
    every consumer takes it through a forward, rebalance, rescale or shuffle edge at a parallelism
    above 1. A keyed, broadcast, global or custom edge, or a consumer at parallelism 1, sees the
    collection's order with one reader (per key, for a keyed edge), so it gets one. A consumer
    that inherits its input's parallelism (``assign_timestamps_and_watermarks``, as in Flink)
    runs in the source's chain and passes the order on: its own consumers decide.
    """
    candidates = {
        t.id
        for t in physical
        if t.kind == "source"
        and t.parallelism is None
        and getattr(t.source, "ordered_by_default", False)
    }
    if not candidates:
        return set()
    consumers: dict[int, list[_PhysEdge]] = {}
    for t in physical:
        for upstream, input_index in t.inputs:
            for e in _resolve(upstream, t, None, None, input_index):
                consumers.setdefault(e.src.id, []).append(e)

    def sees_order(node_id: int, seen: frozenset[int]) -> bool:
        for e in consumers.get(node_id, []):
            t = e.dst
            passes_on = (
                t.parallelism is None
                and t.inherit_parallelism
                and (e.partitioner is None or e.partitioner.is_forward)
            )
            if passes_on:
                if t.id not in seen and sees_order(t.id, seen | {t.id}):
                    return True
                continue
            p = config.parallelism if t.parallelism is None else t.parallelism
            order_free = e.partitioner is None or isinstance(
                e.partitioner,
                (ForwardPartitioner, RebalancePartitioner, RescalePartitioner, ShufflePartitioner),
            )
            if not order_free or p <= 1:
                return True
        return False

    return {sid for sid in candidates if sees_order(sid, frozenset({sid}))}


def _check_shapes(e: _PhysEdge) -> str:
    """The shape the edge carries; refuses a consumer that does not take it."""
    shape = output_shape(e.src, e.tag_id)
    if e.dst.accepts not in (shape, ANY_SHAPE):
        what = f"side output {e.tag_id!r} of {e.src.name!r}" if e.tag_id else repr(e.src.name)
        hint = "to_rows()" if shape == COLUMNS else "to_columns()"
        raise GraphError(
            f"operator {e.dst.name!r} takes {e.dst.accepts}, but {what} emits {shape}: "
            f"convert the stream with {hint} first"
        )
    return shape


def _parallelism_of(t: Transformation, config: ExecutionConfig) -> int:
    if t.parallelism is not None:
        p = t.parallelism
    elif t.kind == "source" and getattr(t.source, "default_parallelism", None):
        p = t.source.default_parallelism
    else:
        p = config.parallelism
    if not isinstance(p, int) or p < 1:
        raise GraphError(f"operator {t.name!r}: parallelism must be a positive int, got {p!r}")
    return p


def _resolve(
    t: Transformation,
    consumer: Transformation,
    partitioner: Partitioner | None,
    tag_id: str | None,
    input_index: int,
) -> list[_PhysEdge]:
    if t.is_physical:
        return [_PhysEdge(t, consumer, partitioner, tag_id, input_index)]
    if t.kind == "partition":
        ((upstream, _),) = t.inputs
        return _resolve(upstream, consumer, partitioner or t.partitioner, tag_id, input_index)
    if t.kind == "side_output":
        ((upstream, _),) = t.inputs
        edges = _resolve(upstream, consumer, partitioner, t.tag_id, input_index)
        for e in edges:
            e.side_type = t.output_type
        return edges
    if t.kind == "union":
        out: list[_PhysEdge] = []
        for upstream, _ in t.inputs:
            out.extend(_resolve(upstream, consumer, partitioner, tag_id, input_index))
        return out
    raise GraphError(f"unknown transformation kind {t.kind!r}")


def _topological(
    nodes: list[Transformation], in_edges: dict[int, list[_PhysEdge]]
) -> list[Transformation]:
    done: set[int] = set()
    order: list[Transformation] = []
    pending = sorted(nodes, key=lambda t: t.id)
    while pending:
        progressed = False
        rest = []
        for t in pending:
            if all(e.src.id in done for e in in_edges[t.id]):
                done.add(t.id)
                order.append(t)
                progressed = True
            else:
                rest.append(t)
        if not progressed:
            raise GraphError("the job graph has a cycle; iterations are not supported")
        pending = rest
    return order


def state_uid(t: Transformation, memo: dict[int, str] | None = None) -> str:
    """The uid an operator's state is filed under in checkpoints and savepoints: the user's
    ``uid()``, else a digest of the operator's name and everything upstream of it (so the same
    program gets the same ids in every run, and a changed topology gets new ones)."""
    if t.uid is not None:
        return t.uid
    memo = {} if memo is None else memo
    known = memo.get(t.id)
    if known is None:
        parts = [t.kind, t.name] + [f"{state_uid(u, memo)}@{i}" for u, i in t.inputs]
        digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).hexdigest()
        known = memo[t.id] = f"{t.name}#{digest}"
    return known


def _node_spec(t: Transformation) -> NodeSpec:
    assert t.operator_factory is not None
    _check_picklable(t.operator_factory, f"operator {t.name!r}")
    return NodeSpec(
        id=t.id,
        name=t.name,
        uid=state_uid(t),
        kind=t.kind,
        keyed=t.keyed,
        factory=t.operator_factory,
        error_policy=t.error_policy,
    )


def supports_error_policy(t: Transformation) -> bool:
    """Whether the operator ``t`` builds hands user errors on records to its error policy."""
    cls = getattr(t.operator_factory, "func", t.operator_factory)
    return bool(getattr(cls, "supports_error_policy", False))


def _tolerates_bad_records(t: Transformation, config: ExecutionConfig) -> bool:
    policy = t.error_policy or config.error_policy
    return policy is not None and not policy.is_fail and supports_error_policy(t)


def _check_picklable(obj: Any, what: str) -> bytes:
    try:
        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise SerializationError(
            f"{what} cannot be serialized to ship it to the task actors: "
            f"{type(exc).__name__}: {exc}. Hint: user functions must not capture locks, open "
            "files, sockets or clients; create those in open() instead."
        ) from exc
