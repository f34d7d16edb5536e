"""Internal: stable key hashing and key-group arithmetic.

Placement of a key must be the same in every process, on every node and in every run, because a
restarted or rescaled task finds its keyed state by key group. Python's ``hash()`` of ``str`` and
``bytes`` is salted per process, so it never decides placement here. Instead a key is turned into a
canonical, type-tagged byte string (``1``, ``1.0`` and ``True`` encode alike because they are equal
dict keys), hashed with CRC-32 and mixed with MurmurHash3's 32-bit finaliser.

Key groups are Flink's: ``key_group = hash mod max_parallelism``; subtask ``i`` of ``p`` owns the
contiguous range ``[ceil(i*maxP/p), ceil((i+1)*maxP/p) - 1]`` and ``subtask(kg) = kg*p // maxP``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import uuid
import zlib
from collections.abc import Callable, Hashable

from raystream.core.row import Row
from raystream.errors import InvalidKeyError, record_repr

DEFAULT_MAX_PARALLELISM = 128
UPPER_MAX_PARALLELISM = 32768

_M32 = 0xFFFFFFFF


def fmix32(h: int) -> int:
    """MurmurHash3's finalisation mix: spreads every input bit over the whole word."""
    h &= _M32
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    h ^= h >> 16
    return h


def encode_key(key: object) -> bytes:
    """The canonical byte form of a key; equal keys (as dict keys) encode equally."""
    t = type(key)
    if t is str:
        return b"s" + key.encode("utf-8", "surrogatepass")  # type: ignore[attr-defined]
    if t is int or t is bool:
        return b"i%d" % key  # type: ignore[str-format]
    if key is None:
        return b"n"
    if t is float:
        f: float = key  # type: ignore[assignment]
        if f == f and f not in (float("inf"), float("-inf")) and f.is_integer():
            return b"i%d" % int(f)
        return b"f" + repr(f).encode()
    if t is bytes:
        return b"b" + key  # type: ignore[operator]
    if isinstance(key, tuple):  # also namedtuples
        parts = [encode_key(k) for k in key]
        return b"t%d:" % len(parts) + b"".join(b"%d:" % len(p) + p for p in parts)
    if isinstance(key, Row):
        names = key._fields
        if names is None:
            return b"r" + encode_key(tuple(key._values))
        # equal named rows may list their fields in different orders
        pairs = sorted(zip(names, key._values), key=lambda p: p[0])
        return b"R" + encode_key(tuple(x for p in pairs for x in p))
    # int and str subclasses (IntEnum, StrEnum, str-mixin enums) equal their plain values as
    # dict keys, so they must encode like them
    if isinstance(key, int):
        return b"i%d" % int(key)
    if isinstance(key, str):
        return b"s" + str.__str__(key).encode("utf-8", "surrogatepass")
    if isinstance(key, enum.Enum):
        return b"e" + type(key).__qualname__.encode() + b":" + encode_key(key.value)
    if isinstance(key, _dt.datetime) and key.utcoffset() is not None:
        # aware datetimes are equal when they denote the same instant
        return b"d" + key.astimezone(_dt.timezone.utc).isoformat().encode()
    if isinstance(key, _dt.time) and (offset := key.utcoffset()) is not None:
        return (
            b"d"
            + (_dt.datetime.combine(_dt.date(2000, 1, 1), key) - offset).time().isoformat().encode()
            + b"Z"
        )
    if isinstance(key, (_dt.datetime, _dt.date, _dt.time)):
        return b"d" + key.isoformat().encode()
    if isinstance(key, _dt.timedelta):
        return b"D%d" % (key // _dt.timedelta(microseconds=1))
    if isinstance(key, uuid.UUID):
        return b"u" + key.bytes
    if isinstance(key, frozenset):
        parts = sorted(encode_key(k) for k in key)
        return b"z%d:" % len(parts) + b"".join(b"%d:" % len(p) + p for p in parts)
    if dataclasses.is_dataclass(key) and not isinstance(key, type):
        _require_hashable(key)
        fields = tuple(getattr(key, f.name) for f in dataclasses.fields(key) if f.compare)
        return b"c" + type(key).__qualname__.encode() + b":" + encode_key(fields)
    raise InvalidKeyError(
        f"key {record_repr(key)} of type {type(key).__name__} has no stable hash; "
        "expected str, int, float, bool, bytes, None, tuple, Enum, date/time, UUID, frozenset "
        "or a frozen dataclass of those (hint: key by a tuple of the fields instead)"
    )


def _require_hashable(key: object) -> None:
    try:
        hash(key)
    except TypeError as exc:
        raise InvalidKeyError(f"key {record_repr(key)} is not hashable: {exc}") from None


def stable_hash(key: object) -> int:
    """A 32-bit hash of the key that is the same in every process and run."""
    return fmix32(zlib.crc32(encode_key(key)))


def key_group_of(key: object, max_parallelism: int) -> int:
    """The key group that owns ``key``."""
    return stable_hash(key) % max_parallelism


def subtask_of(key_group: int, parallelism: int, max_parallelism: int) -> int:
    """The subtask that owns a key group."""
    return key_group * parallelism // max_parallelism


def key_group_range(subtask: int, parallelism: int, max_parallelism: int) -> range:
    """The contiguous key groups owned by ``subtask`` (as a Python range, end exclusive)."""
    start = (subtask * max_parallelism + parallelism - 1) // parallelism
    end = ((subtask + 1) * max_parallelism - 1) // parallelism
    return range(start, end + 1)


def default_max_parallelism(parallelism: int) -> int:
    """Flink's rule: round 1.5 × p up to a power of two, within [128, 32768]."""
    target = parallelism + parallelism // 2
    p2 = 1
    while p2 < target:
        p2 <<= 1
    return min(max(p2, DEFAULT_MAX_PARALLELISM), UPPER_MAX_PARALLELISM)


class KeyGroupAssigner:
    """Maps keys to key groups with a bounded per-process cache in front of the stable hash.

    The cache is keyed by the key itself (Python's ``hash`` is fine for a cache local to one
    process); it is dropped whole when it grows past ``cache_size``.
    """

    __slots__ = ("max_parallelism", "_cache", "_cache_size")

    def __init__(self, max_parallelism: int, cache_size: int = 1 << 17):
        self.max_parallelism = max_parallelism
        self._cache: dict[Hashable, int] = {}
        self._cache_size = cache_size

    def __call__(self, key: Hashable) -> int:
        try:
            kg = self._cache.get(key)
        except TypeError:
            raise InvalidKeyError(f"key {record_repr(key)} is not hashable") from None
        if kg is None:
            kg = stable_hash(key) % self.max_parallelism
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[key] = kg
        return kg

    def __reduce__(self):
        return (KeyGroupAssigner, (self.max_parallelism, self._cache_size))


KeySelector = Callable[[object], Hashable]
