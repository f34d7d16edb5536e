"""Checkpointing: state backends, snapshots, storage and recovery."""

from raystream.checkpointing.backends.factory import HashMapStateBackend, LmdbStateBackend
from raystream.checkpointing.backends.lmdb import LmdbKeyedStateBackend
from raystream.checkpointing.backends.memory import MemoryKeyedStateBackend

__all__ = [
    "HashMapStateBackend",
    "LmdbKeyedStateBackend",
    "LmdbStateBackend",
    "MemoryKeyedStateBackend",
]
