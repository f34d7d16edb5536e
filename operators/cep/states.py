"""Internal: the per-key NFA states of the CEP operator, in front of a keyed-state table.

The operator reads a key's :class:`~raystream.operators.cep.nfa.KeyState`, lets the NFA change
it in place, and hands it back. How that reaches the state backend depends on the backend:

- A backend that holds Python objects (the memory backend, ``holds_objects``) stores the live
  object: reading and writing are dict operations, and a key's state is serialized only when a
  snapshot is taken.
- Any other backend (LMDB) serializes on every write. There a bounded write-back cache keeps the
  states of the most recently used keys as objects (a key known to have no state as ``None``):
  a read of a cached key costs nothing, a changed state is written when it leaves the cache and
  at :meth:`NfaStates.flush`, which the operator calls before every snapshot, so a snapshot
  (and every restore or rescale from it) sees exactly the state of the cached objects.
"""

from __future__ import annotations

from typing import Any

from raystream.operators.cep.nfa import KeyState

#: keys whose states a non-memory backend keeps as objects, per operator subtask
DEFAULT_CACHED_KEYS = 16384

_ABSENT = object()


class NfaStates:
    """``get`` / ``put`` / ``remove`` of the key states in ``table`` (see the module docstring);
    ``capacity`` is the number of cached keys when ``holds_objects`` is false."""

    def __init__(self, table: Any, holds_objects: bool, capacity: int = DEFAULT_CACHED_KEYS):
        if capacity < 1:
            raise ValueError(f"the CEP state cache needs a capacity >= 1, got {capacity}")
        self.table = table
        self.cached = not holds_objects
        self.capacity = capacity
        self._cache: dict[Any, KeyState | None] = {}
        self._dirty: set[Any] = set()
        if holds_objects:  # no cache: the table itself
            self.get = table.get  # type: ignore[method-assign]
            self.put = table.put  # type: ignore[method-assign]
            self.remove = table.remove  # type: ignore[method-assign]

    def get(self, key: Any) -> KeyState | None:
        cache = self._cache
        found: Any = cache.pop(key, _ABSENT)
        if found is _ABSENT:
            found = self.table.get(key)
            if len(cache) >= self.capacity:
                self._evict()
        cache[key] = found  # (re)inserted last: the dict's order is the recency order
        return found  # type: ignore[no-any-return]

    def put(self, key: Any, state: KeyState) -> None:
        cache = self._cache
        if cache.pop(key, _ABSENT) is _ABSENT and len(cache) >= self.capacity:
            self._evict()
        cache[key] = state
        self._dirty.add(key)

    def remove(self, key: Any) -> None:
        cache = self._cache
        if cache.pop(key, _ABSENT) is _ABSENT and len(cache) >= self.capacity:
            self._evict()
        cache[key] = None
        self._dirty.add(key)

    def _evict(self) -> None:
        key = next(iter(self._cache))
        state = self._cache.pop(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self._write(key, state)

    def _write(self, key: Any, state: KeyState | None) -> None:
        if state is None:
            self.table.remove(key)
        else:
            self.table.put(key, state)

    def flush(self) -> None:
        """Writes every changed state to the table (before a snapshot)."""
        if self._dirty:
            cache = self._cache
            for key in self._dirty:
                self._write(key, cache[key])
            self._dirty = set()
