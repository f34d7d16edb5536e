"""Checkpointing: state backends, snapshots, storage and recovery."""

from raystream.checkpointing.backends.memory import MemoryStateBackend

__all__ = ["MemoryStateBackend"]
