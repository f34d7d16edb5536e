"""Operator (non-keyed) state: list state with even-split or union redistribution (SEMANTICS §3.2).

A function that keeps operator state implements ``initialize_state(context)`` (and, for
checkpoints, ``snapshot_state(context)``); ``context.get_operator_state_store()`` hands out
named list states. On a restore with another parallelism the old subtasks' lists are
redistributed: even-split state is cut into near-equal contiguous parts, union state goes whole
to every subtask. The redistribution functions are plain and deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

EVEN_SPLIT = "even_split"
UNION = "union"


class OperatorListState:
    """A list owned by one subtask (``get``, ``add``, ``add_all``, ``update``, ``clear``)."""

    def __init__(self, values: list | None = None):
        self._values = list(values or [])

    def get(self) -> list:
        return list(self._values)

    def add(self, value: Any) -> None:
        if value is None:
            raise ValueError("cannot add None to operator list state")
        self._values.append(value)

    def add_all(self, values: Iterable[Any]) -> None:
        for v in values:
            self.add(v)

    def update(self, values: Iterable[Any]) -> None:
        self._values = []
        self.add_all(values)

    def clear(self) -> None:
        self._values = []


class OperatorStateStore:
    """Named operator list states of one subtask; ``restored`` holds what a restore handed it."""

    def __init__(self, restored: dict[str, tuple[str, list]] | None = None):
        self._restored = restored or {}
        self._states: dict[str, tuple[str, OperatorListState]] = {}

    @property
    def is_restored(self) -> bool:
        return bool(self._restored)

    def _get(self, name: str, mode: str) -> OperatorListState:
        known = self._states.get(name)
        if known is not None:
            if known[0] != mode:
                raise ValueError(
                    f"operator state {name!r} is already registered as {known[0]} state"
                )
            return known[1]
        restored_mode, values = self._restored.get(name, (mode, []))
        if restored_mode != mode:
            raise ValueError(
                f"operator state {name!r} was written as {restored_mode} state, not {mode}"
            )
        state = OperatorListState(values)
        self._states[name] = (mode, state)
        return state

    def get_list_state(self, descriptor: Any) -> OperatorListState:
        return self._get(getattr(descriptor, "name", descriptor), EVEN_SPLIT)

    def get_union_list_state(self, descriptor: Any) -> OperatorListState:
        return self._get(getattr(descriptor, "name", descriptor), UNION)

    def snapshot(self) -> dict[str, tuple[str, list]]:
        return {name: (mode, state.get()) for name, (mode, state) in self._states.items()}


def redistribute(
    old: list[dict[str, tuple[str, list]]], new_parallelism: int
) -> list[dict[str, tuple[str, list]]]:
    """Old subtasks' snapshots (by subtask index) → what each of ``new_parallelism`` subtasks gets.

    Even-split: the old lists are concatenated in subtask order and cut into contiguous parts of
    ``total // p`` entries, ``total % p`` of them one longer; the subtasks that get the longer
    parts rotate from one state name to the next, so extras spread out. Unchanged parallelism
    gives every subtask its own list back. Union: every subtask gets the whole concatenation.
    """
    p = new_parallelism
    out: list[dict[str, tuple[str, list]]] = [{} for _ in range(p)]
    names = sorted({name for snap in old for name in snap})
    rotate = 0
    for name in names:
        modes = {snap[name][0] for snap in old if name in snap}
        if len(modes) != 1:
            raise ValueError(
                f"operator state {name!r} has mixed redistribution modes {sorted(modes)}"
            )
        mode = modes.pop()
        parts = [snap[name][1] if name in snap else [] for snap in old]
        if mode == UNION:
            whole = [v for part in parts for v in part]
            for i in range(p):
                out[i][name] = (UNION, list(whole))
            continue
        if len(parts) == p:
            for i in range(p):
                out[i][name] = (EVEN_SPLIT, list(parts[i]))
            continue
        whole = [v for part in parts for v in part]
        base, rem = divmod(len(whole), p)
        pos = 0
        for i in range(p):
            n = base + (1 if (i - rotate) % p < rem else 0)
            out[i][name] = (EVEN_SPLIT, whole[pos : pos + n])
            pos += n
        rotate = (rotate + rem) % p
    return out
