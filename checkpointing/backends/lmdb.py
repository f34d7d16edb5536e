"""Internal: the LMDB keyed state backend, for keyed state larger than memory.

One LMDB environment per backend (per operator subtask) in a fresh directory, removed on
``dispose()``; by default under ``<tmp>/raystream-<uid>/state``, with an owner file, so that the
next backend on the host removes it if its process died before disposing it
(:mod:`raystream.checkpointing.default_dirs`). It is a working store, not a durable one — checkpoints make state durable — so it
runs without fsync (``sync=False``, ``metasync=False``) and writes through the memory map.

Record keys sort by key group, so a key-group range is one contiguous scan::

    key group (2 bytes, big-endian) | state id (2 bytes) | part(encode_key(key))
        [| part(namespace)]            namespaced tables and all descriptor state
        [| sequence (8 bytes)]         list state: one record per element
        [| part(encode_key(map key))]  map state: one record per entry

``part(b)`` is one length byte and ``b`` (``b`` up to 160 bytes), else ``0xFF`` and the SHA-256
of ``b``, so parts are self-delimiting and keys stay under LMDB's 511-byte limit. Keys use the
canonical :func:`~raystream.core.keys.encode_key` (``1``, ``1.0`` and ``True`` are one entry, as
in a dict); namespaces too, or their pickle when ``encode_key`` does not know the type. Values
are pickles of ``(key, namespace, [map key,] value)`` — the objects a snapshot needs — behind an
8-byte stamp when the state has TTL, so cleanup reads stamps without unpickling.

All reads and writes go through one long-lived write transaction (reads see writes at once),
committed every ``commit_every`` writes and before a snapshot. A snapshot view is a read
transaction: LMDB keeps it consistent while the operator writes on, so serializing can happen later
or on another thread. Map keys must be encodable by ``encode_key`` (the memory backend takes any
hashable map key).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import shutil
import struct
import tempfile
import weakref
from collections.abc import Iterator
from typing import Any

import lmdb

from raystream.checkpointing import default_dirs
from raystream.core.keys import encode_key
from raystream.errors import InvalidKeyError, record_repr
from raystream.state.backend import (
    AbstractKeyedStateBackend,
    encode_key_group,
    state_serialization_error,
)
from raystream.state.handles import StateMeta
from raystream.state.ttl import TtlTimeProvider

__all__ = ["DEFAULT_MAP_SIZE", "LmdbKeyedStateBackend", "LmdbSnapshotView"]

DEFAULT_MAP_SIZE = 1 << 40  # 1 TiB of address space; the file is sparse and grows with the data
DEFAULT_COMMIT_EVERY = 8192

_H = struct.Struct(">H")
_HH = struct.Struct(">HH")
_Q = struct.Struct(">Q")
_STAMP = struct.Struct(">q")
_MAX_PART = 160
_HASHED = b"\xff"
_CACHE_SIZE = 1 << 15
_PICKLE = pickle.HIGHEST_PROTOCOL
_dumps = pickle.dumps
_loads = pickle.loads


def _part(encoded: bytes) -> bytes:
    if len(encoded) <= _MAX_PART:
        return bytes((len(encoded),)) + encoded
    return _HASHED + hashlib.sha256(encoded).digest()


def _part_end(record_key: bytes, pos: int) -> int:
    n = record_key[pos]
    return pos + 1 + (32 if n == 0xFF else n)


def _entry_prefix_len(record_key: bytes, namespaced: bool) -> int:
    end = _part_end(record_key, 4)
    return _part_end(record_key, end) if namespaced else end


def encode_namespace(namespace: Any) -> bytes:
    """Canonical bytes of a namespace: ``encode_key`` when it knows the type, else the pickle."""
    try:
        return encode_key(namespace)
    except InvalidKeyError:
        # tag 0x00 never starts an encode_key result; our window types pickle deterministically
        return b"\x00" + pickle.dumps(namespace, protocol=4)


# -- tables ----------------------------------------------------------------------------------------


class LmdbTable:
    """Single values per entry key (value, reducing, aggregating state and raw tables)."""

    __slots__ = ("_b", "_name", "_sid", "_ttl", "_namespaced", "_cache", "_clean_kg", "_clean_at")

    def __init__(self, backend: LmdbKeyedStateBackend, meta: StateMeta):
        self._b = backend
        self._name = meta.name
        self._sid = _H.pack(meta.state_id)
        self._ttl = meta.ttl_enabled
        self._namespaced = meta.namespaced
        self._cache: dict[Any, bytes] = {}
        self._clean_kg = backend.key_groups.start
        self._clean_at: bytes | None = None

    # -- record keys and values ----------------------------------------------------------------

    def _prefix(self, ek: Any) -> bytes:
        """Record key of an entry (the prefix of its records for list and map state)."""
        rk = self._cache.get(ek)
        if rk is not None:
            return rk
        b = self._b
        if self._namespaced:
            try:
                key, ns = ek
            except (TypeError, ValueError):
                raise TypeError(
                    f"namespaced state {self._name!r} is keyed by (key, namespace) tuples, "
                    f"got {record_repr(ek)}"
                ) from None
            rk = _H.pack(b._key_group(key)) + self._sid + _part(encode_key(key)) + b._ns_part(ns)
        else:
            rk = _H.pack(b._key_group(ek)) + self._sid + _part(encode_key(ek))
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[ek] = rk
        return rk

    def _encode(self, ek: Any, stored: Any) -> bytes:
        key, ns = ek if self._namespaced else (ek, None)
        try:
            if self._ttl:
                return _STAMP.pack(stored[1]) + _dumps((key, ns, stored[0]), _PICKLE)
            return _dumps((key, ns, stored), _PICKLE)
        except Exception as exc:
            value = stored[0] if self._ttl else stored
            raise state_serialization_error(self._name, key, ns, value, exc) from exc

    def _decode(self, raw: bytes) -> Any:
        """The stored form — the value, or ``(value, stamp)`` with TTL — of a record value."""
        if self._ttl:
            return (_loads(memoryview(raw)[8:])[-1], _STAMP.unpack_from(raw)[0])
        return _loads(raw)[-1]

    # -- single values -------------------------------------------------------------------------

    def get(self, ek: Any, default: Any = None) -> Any:
        raw = self._b._txn.get(self._cache.get(ek) or self._prefix(ek))
        if raw is None:
            return default
        if self._ttl:
            return (_loads(memoryview(raw)[8:])[-1], _STAMP.unpack_from(raw)[0])
        return _loads(raw)[-1]

    def put(self, ek: Any, stored: Any) -> None:
        b = self._b
        b._txn.put(self._cache.get(ek) or self._prefix(ek), self._encode(ek, stored))
        b._writes += 1
        if b._writes >= b._commit_every:
            b.commit()

    def remove(self, ek: Any) -> None:
        b = self._b
        b._txn.delete(self._cache.get(ek) or self._prefix(ek))
        b._wrote(1)

    # -- shared scans --------------------------------------------------------------------------

    def _scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        cur = self._b._txn.cursor()
        if cur.set_range(prefix):
            for k, v in cur:
                if not k.startswith(prefix):
                    break
                yield k, v

    def _delete_range(self, prefix: bytes) -> int:
        cur = self._b._txn.cursor()
        n = 0
        if cur.set_range(prefix):
            while cur.key().startswith(prefix):
                n += 1
                if not cur.delete():
                    break
        return n

    def ttl_cleanup(self, n: int, limit: int) -> None:
        """Checks about ``n`` records of this state (a seek counts as one), continuing where the
        previous call stopped and wrapping around the owned key groups."""
        b = self._b
        cur = b._txn.cursor()
        sid = self._sid
        first, stop = b.key_groups.start, b.key_groups.stop
        kg, start = self._clean_kg, self._clean_at
        budget = n
        deleted = 0
        wrapped = False
        while budget > 0:
            base = _H.pack(kg) + sid
            budget -= 1
            ok = cur.set_range(start if start is not None else base)
            start = None
            while ok:
                k = cur.key()
                if not k.startswith(base):
                    break
                if budget <= 0:
                    start = k
                    break
                budget -= 1
                if _STAMP.unpack_from(cur.value())[0] <= limit:
                    deleted += 1
                    ok = cur.delete()
                else:
                    ok = cur.next()
            if start is not None:
                break
            # on to the next key group that may hold records of this state
            k = cur.key() if ok else b""  # (a delete of the last record leaves no position)
            if k:
                next_kg = _H.unpack_from(k)[0]
                kg = next_kg if next_kg > kg and k[2:4] <= sid else next_kg + 1
            else:
                kg = stop
            if kg >= stop:
                kg = first
                if wrapped:
                    break
                wrapped = True
        self._clean_kg, self._clean_at = kg, start
        if deleted:
            b._wrote(deleted)


class LmdbListTable(LmdbTable):
    """List state: one record per element, in insertion order (8-byte sequence suffix)."""

    __slots__ = ()

    def list_get(self, ek: Any) -> list:
        decode = self._decode
        return [decode(v) for _, v in self._scan(self._prefix(ek))]

    def _next_seq(self, prefix: bytes) -> int:
        cur = self._b._txn.cursor()
        # position on the last record of this entry: step back from the first key after it
        found = cur.set_range(prefix + b"\xff" * 9)
        found = cur.prev() if found else cur.last()
        if found:
            k = cur.key()
            if k.startswith(prefix):
                return _Q.unpack_from(k, len(prefix))[0] + 1
        return 0

    def _put_elements(self, ek: Any, prefix: bytes, elements: list, seq: int) -> None:
        put = self._b._txn.put
        encode = self._encode
        for i, element in enumerate(elements, seq):
            put(prefix + _Q.pack(i), encode(ek, element))

    def list_add(self, ek: Any, elements: list) -> None:
        if not elements:
            return
        prefix = self._prefix(ek)
        self._put_elements(ek, prefix, elements, self._next_seq(prefix))
        self._b._wrote(len(elements))

    def list_set(self, ek: Any, elements: list) -> None:
        prefix = self._prefix(ek)
        n = self._delete_range(prefix)
        self._put_elements(ek, prefix, elements, 0)
        self._b._wrote(n + len(elements))

    def remove(self, ek: Any) -> None:
        self._b._wrote(self._delete_range(self._prefix(ek)))


class LmdbMapTable(LmdbTable):
    """Map state: one record per map entry, so a huge map is never loaded whole."""

    __slots__ = ()

    def _entry_key(self, prefix: bytes, key: Any) -> bytes:
        try:
            return prefix + _part(encode_key(key))
        except InvalidKeyError as exc:
            raise InvalidKeyError(
                f"map state {self._name!r}: the LMDB state backend needs map keys it can encode "
                f"canonically: {exc}"
            ) from None

    def _encode_entry(self, ek: Any, key: Any, stored: Any) -> bytes:
        k, ns = ek if self._namespaced else (ek, None)
        try:
            if self._ttl:
                return _STAMP.pack(stored[1]) + _dumps((k, ns, key, stored[0]), _PICKLE)
            return _dumps((k, ns, key, stored), _PICKLE)
        except Exception as exc:
            value = {key: stored[0] if self._ttl else stored}
            raise state_serialization_error(self._name, k, ns, value, exc) from exc

    def _decode_entry(self, raw: bytes) -> tuple[Any, Any]:
        if self._ttl:
            _, _, key, value = _loads(memoryview(raw)[8:])
            return key, (value, _STAMP.unpack_from(raw)[0])
        _, _, key, value = _loads(raw)
        return key, value

    def map_get(self, ek: Any, key: Any, default: Any = None) -> Any:
        raw = self._b._txn.get(self._entry_key(self._prefix(ek), key))
        return default if raw is None else self._decode(raw)

    def map_put(self, ek: Any, key: Any, stored: Any) -> None:
        self._b._txn.put(
            self._entry_key(self._prefix(ek), key), self._encode_entry(ek, key, stored)
        )
        self._b._wrote(1)

    def map_put_all(self, ek: Any, items: dict) -> None:
        prefix = self._prefix(ek)
        put = self._b._txn.put
        for key, stored in items.items():
            put(self._entry_key(prefix, key), self._encode_entry(ek, key, stored))
        self._b._wrote(len(items))

    def map_remove(self, ek: Any, key: Any) -> None:
        self._b._txn.delete(self._entry_key(self._prefix(ek), key))
        self._b._wrote(1)

    def map_items(self, ek: Any) -> list[tuple[Any, Any]]:
        decode = self._decode_entry
        return [decode(v) for _, v in self._scan(self._prefix(ek))]

    def map_is_empty(self, ek: Any) -> bool:
        for _ in self._scan(self._prefix(ek)):
            return False
        return True

    def remove(self, ek: Any) -> None:
        self._b._wrote(self._delete_range(self._prefix(ek)))


_TABLE_CLASS = {"list": LmdbListTable, "map": LmdbMapTable}


# -- snapshots -------------------------------------------------------------------------------------


class LmdbSnapshotView:
    """A read transaction over the backend's state at the moment the view was taken."""

    def __init__(
        self,
        txn: lmdb.Transaction[bytes] | None,
        states: dict[int, StateMeta],
        key_groups: range,
        expiry_limits: dict[str, int],
    ):
        self._empty = txn is None  # the view of a disposed backend
        self._txn = txn
        self._states = states
        self._key_groups = key_groups
        self._limits = expiry_limits

    def iter_serialized(self) -> Iterator[tuple[int, bytes]]:
        if self._empty:
            return
        if self._txn is None:
            raise ValueError("snapshot view is closed")
        cur = self._txn.cursor()
        stop = self._key_groups.stop
        if not cur.set_range(_H.pack(self._key_groups.start)):
            return
        kg = -1
        groups: dict[str, tuple[StateMeta, list]] = {}
        last_prefix = b""
        container: Any = None
        for k, v in cur:
            rkg, sid = _HH.unpack_from(k)
            if rkg != kg:
                if groups:
                    blob = encode_key_group(kg, groups, self._limits)
                    if blob is not None:
                        yield kg, blob
                if rkg >= stop:
                    return
                kg, groups, last_prefix = rkg, {}, b""
            meta = self._states[sid]
            entries = groups.get(meta.name)
            if entries is None:
                entries = groups[meta.name] = (meta, [])
            ttl = meta.ttl_enabled
            payload = _loads(memoryview(v)[8:] if ttl else v)
            kind = meta.kind
            if kind == "list" or kind == "map":
                prefix = k[: _entry_prefix_len(k, meta.namespaced)]
                if prefix != last_prefix:
                    last_prefix = prefix
                    container = [] if kind == "list" else {}
                    entries[1].append((payload[0], payload[1], container))
                value = (payload[-1], _STAMP.unpack_from(v)[0]) if ttl else payload[-1]
                if kind == "list":
                    container.append(value)
                else:
                    container[payload[2]] = value
            else:
                value = (payload[2], _STAMP.unpack_from(v)[0]) if ttl else payload[2]
                entries[1].append((payload[0], payload[1], value))
        if groups:
            blob = encode_key_group(kg, groups, self._limits)
            if blob is not None:
                yield kg, blob

    def serialize(self) -> dict[int, bytes]:
        return dict(self.iter_serialized())

    def close(self) -> None:
        if self._txn is not None:
            try:
                self._txn.abort()
            except lmdb.Error:
                pass  # the backend was disposed first; closing its environment ended the txn
            self._txn = None


# -- the backend -----------------------------------------------------------------------------------


_ENV_PREFIX = "raystream-"


def _close_and_remove(env: lmdb.Environment, path: str) -> None:
    env.close()
    shutil.rmtree(path, ignore_errors=True)


class LmdbKeyedStateBackend(AbstractKeyedStateBackend):
    """Keyed state of one subtask in an LMDB environment (see the module docstring)."""

    def __init__(
        self,
        max_parallelism: int,
        key_groups: range | None = None,
        time_provider: TtlTimeProvider | None = None,
        *,
        directory: str | os.PathLike | None = None,
        name: str = "state",
        map_size: int = DEFAULT_MAP_SIZE,
        writemap: bool = True,
        commit_every: int = DEFAULT_COMMIT_EVERY,
    ):
        super().__init__(max_parallelism, key_groups, time_provider)
        if directory is None:
            root = default_dirs.state_root()
        else:
            root = os.fspath(directory)
            os.makedirs(root, mode=0o700, exist_ok=True)
        # environments of processes that died without disposing theirs (killed task actors)
        default_dirs.sweep_stale(root, prefix=_ENV_PREFIX)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60] or "state"
        self.path = tempfile.mkdtemp(prefix=f"{_ENV_PREFIX}{safe}-", dir=root)
        try:
            default_dirs.claim(self.path, safe)
            self._env = lmdb.open(
                self.path,
                map_size=map_size,
                subdir=True,
                writemap=writemap,
                sync=False,
                metasync=False,
                readahead=False,  # random access to state larger than memory
                meminit=False,
                max_dbs=0,
                mode=0o600,
            )
        except (lmdb.Error, OSError):
            shutil.rmtree(self.path, ignore_errors=True)
            raise
        self._finalizer = weakref.finalize(self, _close_and_remove, self._env, self.path)
        self._txn: lmdb.Transaction[bytes] = self._env.begin(write=True)
        self._writes = 0
        self._commit_every = max(1, commit_every)
        self._ns_cache: dict[Any, bytes] = {}
        self._disposed = False

    @property
    def map_size(self) -> int:
        """The most bytes the environment may hold."""
        return int(self._env.info()["map_size"])

    # -- transactions ----------------------------------------------------------------------------

    def _wrote(self, n: int) -> None:
        self._writes += n
        if self._writes >= self._commit_every:
            self.commit()

    def commit(self) -> None:
        """Commits the write transaction (not durable: the store is not synced to disk)."""
        self._txn.commit()
        self._txn = self._env.begin(write=True)
        self._writes = 0

    def _ns_part(self, namespace: Any) -> bytes:
        part = self._ns_cache.get(namespace)
        if part is None:
            part = _part(encode_namespace(namespace))
            if len(self._ns_cache) >= _CACHE_SIZE:
                self._ns_cache.clear()
            self._ns_cache[namespace] = part
        return part

    # -- storage ---------------------------------------------------------------------------------

    def _new_table(self, meta: StateMeta) -> LmdbTable:
        return _TABLE_CLASS.get(meta.kind, LmdbTable)(self, meta)

    def snapshot_view(self) -> LmdbSnapshotView:
        """A consistent view to serialize now or later (it holds an LMDB read transaction:
        close it, or the store cannot reuse pages freed since)."""
        if self._disposed:
            return LmdbSnapshotView(None, {}, self.key_groups, {})
        limits = self._snapshot_expiry_limits()
        self.commit()
        states = {m.state_id: m for m in self._states.values()}
        return LmdbSnapshotView(self._env.begin(), states, self.key_groups, limits)

    def _restore_entries(self, meta: StateMeta, entries: list[tuple[Any, Any, Any]]) -> None:
        table = meta.table
        kind, namespaced = meta.kind, meta.namespaced
        for key, ns, stored in entries:
            ek = (key, ns) if namespaced else key
            if kind == "list":
                table.list_set(ek, stored)
            elif kind == "map":
                table.remove(ek)
                table.map_put_all(ek, stored)
            else:
                table.put(ek, stored)

    def _entry_keys(self, meta: StateMeta) -> Iterator[Any]:
        table = meta.table
        multi = meta.kind == "list" or meta.kind == "map"
        sid = _H.pack(meta.state_id)
        last = b""
        for kg in self.key_groups:
            for k, v in table._scan(_H.pack(kg) + sid):
                if multi:
                    prefix = k[: _entry_prefix_len(k, meta.namespaced)]
                    if prefix == last:
                        continue
                    last = prefix
                key, ns = _loads(memoryview(v)[8:] if meta.ttl_enabled else v)[:2]
                yield (key, ns) if meta.namespaced else key

    def num_entries(self) -> int:
        if self._disposed:
            return 0
        states = {m.state_id: m for m in self._states.values()}
        count = 0
        last = b""
        for k in self._txn.cursor().iternext(keys=True, values=False):
            meta = states[_HH.unpack_from(k)[1]]
            if meta.kind == "list" or meta.kind == "map":
                prefix = k[: _entry_prefix_len(k, meta.namespaced)]
                if prefix == last:
                    continue
                last = prefix
            count += 1
        return count

    def dispose(self) -> None:
        """Closes the environment and deletes its directory."""
        if self._disposed:
            return
        self._disposed = True
        self._txn.abort()
        self._finalizer()
        self._states.clear()
        self._per_record = []
