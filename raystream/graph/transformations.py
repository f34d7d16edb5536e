"""Internal: the logical graph — one node per API call, nothing runs yet.

Physical nodes (sources, operators, sinks) carry an operator factory. Virtual nodes only shape
the edges of their consumers: a partitioning (``rebalance()``, ``key_by``), a side-output
selection, or a union of several streams.

Every stream has a shape: ``rows`` (Python records) or ``columns`` (Arrow record batches). A
node says what it emits (``shape``, ``side_shapes`` for side outputs that are not rows) and what
it takes (``accepts``); the plan refuses an edge whose shapes do not match (see
``DataStream.to_rows`` / ``to_columns``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raystream.graph.partitioners import Partitioner

_ids = itertools.count(1)

PHYSICAL = ("source", "operator", "sink")

ROWS = "rows"
COLUMNS = "columns"
#: ``accepts`` of a node that takes either shape (the collect sink, print)
ANY_SHAPE = "any"


@dataclass(eq=False)
class Transformation:
    name: str
    kind: str  # "source" | "operator" | "sink" | "partition" | "side_output" | "union"
    inputs: list[tuple[Transformation, int]] = field(default_factory=list)
    operator_factory: Callable[[str], Any] | None = None
    parallelism: int | None = None
    keyed: bool = False
    source: Any = None
    partitioner: Partitioner | None = None
    tag_id: str | None = None
    uid: str | None = None
    resources: dict[str, Any] = field(default_factory=dict)
    chaining: str = "default"  # "default" | "never" | "head"
    #: take the parallelism of the (first) producer instead of the job default (collect, print)
    inherit_parallelism: bool = False
    #: ``set_error_policy(...)`` of this operator (None: the job's default)
    error_policy: Any = None
    #: the declared type of the records this node produces (``output_type=``, ``type_info=``,
    #: a side output's tag), None when undeclared; see :func:`declared_type`
    output_type: Any = None
    #: a sink whose input passes through its declared type first, as values going from
    #: PyFlink's Python worker to a Java sink do (all sinks but print, which formats the type)
    converts_input: bool = False
    #: what the main output carries: ``ROWS`` or ``COLUMNS`` (virtual nodes: what they pass on)
    shape: str = ROWS
    #: side outputs (by tag id) that carry columns; every other side output carries rows
    side_shapes: dict[str, str] = field(default_factory=dict)
    #: what the node takes on its inputs: ``ROWS``, ``COLUMNS`` or ``ANY_SHAPE``
    accepts: str = ROWS
    id: int = field(default_factory=lambda: next(_ids))

    @property
    def is_physical(self) -> bool:
        return self.kind in PHYSICAL


def declared_type(t: Transformation) -> Any:
    """The declared type of the stream ``t`` produces: its own, or for a partitioning or union
    the type of (the first of) its inputs, as in Flink where a union's inputs share one type."""
    while t.output_type is None and t.kind in ("partition", "union") and t.inputs:
        t = t.inputs[0][0]
    return t.output_type


def output_shape(t: Transformation, tag_id: str | None = None) -> str:
    """The shape of what ``t`` emits on its main output (``tag_id`` None) or a side output."""
    if tag_id is None:
        return t.shape
    return t.side_shapes.get(tag_id, ROWS)


def with_upstream(nodes: list[Transformation]) -> list[Transformation]:
    """``nodes`` and every node they read from, directly or through virtual nodes, in creation
    order. A job built after an earlier ``execute()`` consumed the graph holds only the new
    nodes; the streams they extend (defined before) come back in here, as in PyFlink, where
    the next job's graph is generated from its sinks' inputs."""
    seen: dict[int, Transformation] = {}
    todo = list(nodes)
    while todo:
        t = todo.pop()
        if t.id in seen:
            continue
        seen[t.id] = t
        todo.extend(upstream for upstream, _ in t.inputs)
    return sorted(seen.values(), key=lambda t: t.id)
