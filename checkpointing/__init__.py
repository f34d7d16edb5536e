"""Checkpointing: state backends, snapshots, storage and recovery."""

from raystream.checkpointing.backends.factory import HashMapStateBackend, LmdbStateBackend
from raystream.checkpointing.backends.lmdb import LmdbKeyedStateBackend
from raystream.checkpointing.backends.memory import MemoryKeyedStateBackend
from raystream.checkpointing.snapshot import StateMappingError
from raystream.checkpointing.storage import (
    CheckpointStore,
    CorruptCheckpointError,
    FsCheckpointStore,
    LmdbCheckpointStore,
)

__all__ = [
    "CheckpointStore",
    "CorruptCheckpointError",
    "FsCheckpointStore",
    "LmdbCheckpointStore",
    "StateMappingError",
    "HashMapStateBackend",
    "LmdbKeyedStateBackend",
    "LmdbStateBackend",
    "MemoryKeyedStateBackend",
]
