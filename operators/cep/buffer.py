"""Internal: the shared event buffer of the CEP operator (Flink's SharedBuffer idea).

Every event a partial match takes becomes a *node* ``(stage, event id, event, timestamp,
previous node)`` that points to the node of the partial match's previous event. Partial matches
that share a prefix share its nodes, and an event taken by several partial matches is one object
that their nodes point to: a partial match is one pointer, and no event list is ever copied. A
node lives as long as some live partial match (or a match being emitted) reaches it; Python's
reference counting frees it then, so the buffer holds exactly what live partial matches can still
use.

Nodes stay Python objects while the operator runs. The serialized form — written when a state
backend stores a key's state (a snapshot, or a non-memory backend) — is flat and keeps the
sharing: :func:`flatten` numbers the nodes reachable from the partial matches (each event once,
by id), :func:`unflatten` rebuilds the same graph. Both walk iteratively, so a long match (a loop
over thousands of events) needs no deep recursion.
"""

from __future__ import annotations

from typing import Any

# the fields of a node tuple
STAGE, EID, EVENT, TS, PREV = range(5)

Node = tuple  # (stage, event id, event, timestamp, previous node or None)


def chain(node: Node | None) -> list[Node]:
    """The nodes of the partial match ending at ``node``, first event first."""
    out = []
    while node is not None:
        out.append(node)
        node = node[PREV]
    out.reverse()
    return out


def events_of_stage(node: Node | None, stage: int) -> list:
    """The events taken into ``stage`` by the partial match ending at ``node``, in order."""
    out = []
    while node is not None:
        st = node[STAGE]
        if st == stage:
            out.append(node[EVENT])
        elif st < stage:
            break  # stages only grow along a match
        node = node[PREV]
    out.reverse()
    return out


def flatten(heads: list[Node]) -> tuple[list[tuple[int, int, int, int]], dict[int, Any], list[int]]:
    """The nodes reachable from ``heads`` as ``(nodes, events, head indexes)``: ``nodes`` lists
    ``(stage, event id, timestamp, index of the previous node or -1)``, every node after its
    previous one; ``events`` maps event id to event (each event once)."""
    index: dict[int, int] = {}  # id(node) -> position in ``nodes``
    nodes: list[tuple[int, int, int, int]] = []
    events: dict[int, Any] = {}
    out = []
    for head in heads:
        todo = []
        node: Node | None = head
        while node is not None and id(node) not in index:
            todo.append(node)
            node = node[PREV]
        for n in reversed(todo):
            prev = n[PREV]
            index[id(n)] = len(nodes)
            nodes.append((n[STAGE], n[EID], n[TS], -1 if prev is None else index[id(prev)]))
            events[n[EID]] = n[EVENT]
        out.append(index[id(head)])
    return nodes, events, out


def unflatten(nodes: list[tuple[int, int, int, int]], events: dict[int, Any]) -> list[Node]:
    """The node objects of a :func:`flatten` result, in the same positions."""
    built: list[Node] = []
    for stage, eid, ts, prev in nodes:
        built.append((stage, eid, events[eid], ts, None if prev < 0 else built[prev]))
    return built
