"""Internal: the shared event buffer of the CEP operator (Flink's SharedBuffer idea).

Every event a partial match takes is stored once per key (``events``: ``(key, event id) ->
[event, timestamp, references]``). A take adds a *node* (``nodes``: ``(key, node id) -> [event
id, stage, previous node id, references]``) that points to the node of the partial match's
previous event, so partial matches that share a prefix share its nodes: a partial match is one
pointer. References count the nodes and partial matches that point at a node, and the nodes that
point at an event; what drops to zero is removed at once, so the buffer holds exactly the events
some live partial match can still use.

Both tables are raw keyed-state tables of the operator's backend (memory or LMDB), namespaced by
the id, so checkpoints, restore and rescaling by key groups cover them like any keyed state.
"""

from __future__ import annotations

from typing import Any


class SharedBuffer:
    """The events and nodes of the current key; ``key`` is set by the operator per key."""

    __slots__ = ("events", "nodes", "key")

    def __init__(self, events: Any, nodes: Any):
        self.events = events
        self.nodes = nodes
        self.key: Any = None

    def add(self, eid: int, event: Any, ts: int, stage: int, prev: int | None, nid: int) -> None:
        """Stores node ``nid`` (not yet referenced) for event ``eid`` taken into ``stage``."""
        key = self.key
        entry = self.events.get((key, eid))
        if entry is None:
            entry = [event, ts, 1]
        else:
            entry[2] += 1
        self.events.put((key, eid), entry)
        if prev is not None:
            self.retain(prev)
        self.nodes.put((key, nid), [eid, stage, prev, 0])

    def retain(self, nid: int) -> None:
        node = self.nodes.get((self.key, nid))
        node[3] += 1
        self.nodes.put((self.key, nid), node)

    def release(self, nid: int | None) -> None:
        """Drops one reference to ``nid``; removes what is no longer referenced."""
        key = self.key
        while nid is not None:
            node = self.nodes.get((key, nid))
            node[3] -= 1
            if node[3] > 0:
                self.nodes.put((key, nid), node)
                return
            self.nodes.remove((key, nid))
            eid = node[0]
            entry = self.events.get((key, eid))
            entry[2] -= 1
            if entry[2] > 0:
                self.events.put((key, eid), entry)
            else:
                self.events.remove((key, eid))
            nid = node[2]

    def chain(self, nid: int | None) -> list[tuple[int, int, Any, int]]:
        """``(stage, event id, event, timestamp)`` of the partial match ending at ``nid``, first
        event first."""
        key = self.key
        out = []
        while nid is not None:
            eid, stage, prev, _refs = self.nodes.get((key, nid))
            event, ts, _ = self.events.get((key, eid))
            out.append((stage, eid, event, ts))
            nid = prev
        out.reverse()
        return out

    def events_of_stage(self, nid: int | None, stage: int) -> list:
        key = self.key
        out = []
        while nid is not None:
            eid, st, prev, _refs = self.nodes.get((key, nid))
            if st == stage:
                out.append(self.events.get((key, eid))[0])
            elif st < stage:
                break  # stages only grow along a match
            nid = prev
        out.reverse()
        return out


class DictTable:
    """A plain dict with the raw-table interface (for tests and tools without a backend)."""

    def __init__(self) -> None:
        self.data: dict = {}

    def get(self, key: Any, default: Any = None) -> Any:
        return self.data.get(key, default)

    def put(self, key: Any, value: Any) -> None:
        self.data[key] = value

    def remove(self, key: Any) -> None:
        self.data.pop(key, None)
