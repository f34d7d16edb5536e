"""Internal: a job's execution plan as a graph of tasks (chains) and channels, and its layout for
drawing (no Ray).

A vertex is a chain — what one task actor runs, one per subtask — as in Flink's web UI, where
chained operators share a box. ``plan_graph`` is what the job master hands out (JSON-able);
``layout`` places the vertices in columns by their longest distance from a source, so every edge
points to the right, and orders each column by the mean row of its inputs (fewer crossings).
"""

from __future__ import annotations

from typing import Any

#: size of a vertex and the gaps between them, in the units the page draws in (CSS pixels)
NODE_W = 260
NODE_H = 64
GAP_X = 80
GAP_Y = 28
MARGIN = 16


def plan_graph(plan: Any) -> dict[str, Any]:
    """The vertices (chains with their operators and parallelism) and edges (partitioner, side
    output tag) of an ``ExecutionPlan``; for source chains also the number of records the
    source will produce, where the source knows it in advance (``Source.record_count``)."""
    nodes = []
    for chain in plan.chains:
        nodes.append(
            {
                "id": chain.id,
                "name": chain.name,
                "parallelism": chain.parallelism,
                "operators": [n.name for n in chain.nodes],
                "source": bool(chain.is_source),
                "expected_records": _expected_records(chain) if chain.is_source else None,
            }
        )
    edges = [
        {
            "id": e.id,
            "src": e.src_chain,
            "dst": e.dst_chain,
            "partitioner": repr(e.partitioner),
            "tag": e.tag_id,
        }
        for e in plan.edges
    ]
    return {"nodes": nodes, "edges": edges}


def _expected_records(chain: Any) -> int | None:
    source = getattr(chain.head.factory, "source", None)
    count = getattr(source, "record_count", None)
    if not callable(count):
        return None
    try:
        n = count()
    except Exception:  # a user's source: an estimate is not worth failing over
        return None
    return n if isinstance(n, int) and n >= 0 else None


def expected_records(graph: dict[str, Any]) -> int | None:
    """Records all sources of the job will read in all, if every source knows its count."""
    counts = [n["expected_records"] for n in graph["nodes"] if n["source"]]
    if not counts or any(c is None for c in counts):
        return None
    return sum(counts)


def layout(graph: dict[str, Any]) -> dict[str, Any]:
    """``graph`` with ``x``/``y`` (top-left corner) and ``w``/``h`` on every vertex, and the
    drawing's ``width``/``height``. Deterministic: equal graphs get equal layouts."""
    ids = [n["id"] for n in graph["nodes"]]
    inputs: dict[int, list[int]] = {i: [] for i in ids}
    for e in graph["edges"]:
        if e["src"] != e["dst"]:
            inputs[e["dst"]].append(e["src"])
    column: dict[int, int] = {}

    def col(i: int, seen: frozenset[int]) -> int:
        if i in column:
            return column[i]
        ups = [u for u in inputs[i] if u not in seen]  # a cycle (iterations) cannot recurse
        c = 0 if not ups else 1 + max(col(u, seen | {i}) for u in ups)
        column[i] = c
        return c

    for i in ids:
        col(i, frozenset())
    columns: dict[int, list[int]] = {}
    for i in ids:  # plan order within a column, then by the inputs' rows
        columns.setdefault(column[i], []).append(i)
    row: dict[int, float] = {}
    for c in sorted(columns):
        members = columns[c]
        if c > 0:
            members.sort(
                key=lambda i: (
                    sum(row[u] for u in inputs[i] if u in row) / max(1, len(inputs[i])),
                    ids.index(i),
                )
            )
        for r, i in enumerate(members):
            row[i] = r
    nodes = []
    for n in graph["nodes"]:
        placed = dict(n)
        placed.update(
            x=MARGIN + column[n["id"]] * (NODE_W + GAP_X),
            y=MARGIN + int(row[n["id"]]) * (NODE_H + GAP_Y),
            w=NODE_W,
            h=NODE_H,
        )
        nodes.append(placed)
    n_cols = max(columns, default=-1) + 1
    n_rows = max((len(m) for m in columns.values()), default=0)
    return {
        "nodes": nodes,
        "edges": [dict(e) for e in graph["edges"]],
        "width": 2 * MARGIN + max(0, n_cols * (NODE_W + GAP_X) - GAP_X),
        "height": 2 * MARGIN + max(0, n_rows * (NODE_H + GAP_Y) - GAP_Y),
    }
