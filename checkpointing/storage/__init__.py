"""Durable storage of completed checkpoints and savepoints: LMDB or any ``pyarrow.fs`` filesystem.

Barrier path: each task's snapshot arrives at the job master as bytes, which writes it here as one
blob per task (``write_blob``), then — once every task has acknowledged — the checkpoint's
metadata record (``commit``), last and atomically. A checkpoint exists only once its metadata
does; recovery reads it back with ``latest_valid()``.

Every blob's size and SHA-256 go into the metadata (as a :class:`BlobHandle`), and the metadata
carries the SHA-256 of its own canonical JSON, so a torn write, a flipped byte or a missing blob
is found on read. An incomplete or corrupt checkpoint is never returned for a restore:
``latest_valid()`` logs it and falls back to the previous complete one.

Two layouts:

* :class:`LmdbCheckpointStore` — an LMDB environment in a local directory, blobs under
  ``blob/<id:020d>/<name>`` and metadata under ``meta/<id:020d>``; each write is its own
  transaction, so the metadata's commit is atomic and ordered after the blobs'.
* :class:`FsCheckpointStore` — ``<root>/chk-<id>/<name>`` and ``<root>/chk-<id>/_metadata`` on a
  local disk, S3, GCS, ... Locally every file is written to a temporary name, fsynced and renamed;
  on object stores a single PUT (or a completed multipart upload) is atomic by itself.

The metadata record is JSON, so a savepoint can be read by people and tools::

    {"checkpoint_id": 7, "checksum": "<sha256 of the canonical metadata>",
     "format": "raystream-checkpoint-v1", "metadata": {...}}

A :class:`BlobHandle` inside the metadata is stored as ``{"__blob__": {"key", "size",
"checksum"}}`` and read back as a ``BlobHandle``. As in any JSON, tuples come back as lists;
mapping keys must be strings.
"""

from __future__ import annotations

from raystream.checkpointing.storage.base import (
    BlobHandle,
    CheckpointStore,
    CorruptCheckpointError,
    _has_scheme,
)
from raystream.checkpointing.storage.fs_store import FsCheckpointStore
from raystream.checkpointing.storage.lmdb_store import LmdbCheckpointStore

__all__ = [
    "BlobHandle",
    "CheckpointStore",
    "CorruptCheckpointError",
    "FsCheckpointStore",
    "LmdbCheckpointStore",
    "open_savepoint_store",
    "open_store",
]


def open_store(location: str) -> CheckpointStore:
    """The checkpoint store at ``location``.

    ``lmdb:///abs/dir`` or a plain local directory opens an :class:`LmdbCheckpointStore`; any
    other URI (``file://``, ``s3://``, ``gs://``, ...) an :class:`FsCheckpointStore`.
    """
    if location.startswith("lmdb://"):
        path = location[len("lmdb://") :]
        if not path.startswith("/"):
            raise ValueError(
                f"an lmdb location needs an absolute path (lmdb:///dir), got {location!r}"
            )
        return LmdbCheckpointStore(path)
    if _has_scheme(location):
        return FsCheckpointStore(location)
    return LmdbCheckpointStore(location)


def open_savepoint_store(path_or_uri: str) -> FsCheckpointStore:
    """The store of a savepoint directory: always plain files, even for a local path."""
    return FsCheckpointStore(path_or_uri)
