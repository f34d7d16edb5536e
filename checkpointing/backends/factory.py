"""State backend choice: picklable settings that build one keyed state backend per subtask.

The job config carries one of these; each keyed operator subtask calls ``create(...)`` when it is
deployed (Flink's ``HashMapStateBackend`` / ``EmbeddedRocksDBStateBackend`` split, with LMDB in
RocksDB's place).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from raystream.checkpointing.backends.lmdb import (
    DEFAULT_COMMIT_EVERY,
    DEFAULT_MAP_SIZE,
    LmdbKeyedStateBackend,
)
from raystream.checkpointing.backends.memory import MemoryKeyedStateBackend
from raystream.state.ttl import TtlTimeProvider

__all__ = ["HashMapStateBackend", "LmdbStateBackend"]


@dataclass(frozen=True)
class HashMapStateBackend:
    """Keyed state as Python objects in memory (the default): fastest, bounded by memory."""

    def create(
        self,
        max_parallelism: int,
        key_groups: range,
        name: str,
        subtask: int,
        time_provider: TtlTimeProvider | None = None,
    ) -> MemoryKeyedStateBackend:
        return MemoryKeyedStateBackend(max_parallelism, key_groups, time_provider)


@dataclass(frozen=True)
class LmdbStateBackend:
    """Keyed state in one LMDB environment per subtask, for state larger than memory.

    Args:
        directory: where subtasks create their (temporary) environments; the system temp
            directory when None. Each environment is deleted when its subtask ends.
        map_size: the most bytes one environment may hold (address space; the file is sparse).
        writemap: write through the memory map (faster; needs a file system with sparse files).
        commit_every: writes between commits of the working transaction.
    """

    directory: str | None = None
    map_size: int = DEFAULT_MAP_SIZE
    writemap: bool = True
    commit_every: int = DEFAULT_COMMIT_EVERY

    def __post_init__(self) -> None:
        if self.directory is not None:
            object.__setattr__(self, "directory", os.fspath(self.directory))
        if self.map_size <= 0 or self.commit_every <= 0:
            raise ValueError(
                f"LmdbStateBackend: map_size and commit_every must be positive, got "
                f"{self.map_size} and {self.commit_every}"
            )

    def create(
        self,
        max_parallelism: int,
        key_groups: range,
        name: str,
        subtask: int,
        time_provider: TtlTimeProvider | None = None,
    ) -> LmdbKeyedStateBackend:
        return LmdbKeyedStateBackend(
            max_parallelism,
            key_groups,
            time_provider,
            directory=self.directory,
            name=f"{name}-{subtask}",
            map_size=self.map_size,
            writemap=self.writemap,
            commit_every=self.commit_every,
        )
