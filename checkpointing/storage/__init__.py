"""Durable storage of completed checkpoints and savepoints: LMDB or any ``pyarrow.fs`` filesystem.

Barrier path: each task's snapshot arrives at the job master as bytes, which writes it here as one
blob per task (``write_blob``), then — once every task has acknowledged — the checkpoint's
metadata record (``commit``), last and atomically. A checkpoint exists only once its metadata
does; recovery reads it back with ``latest_valid()``.

Every blob's size, SHA-256 and HMAC-SHA256 go into the metadata (as a :class:`BlobHandle`), and
the metadata carries the SHA-256 and the HMAC of its own canonical JSON, so a torn write, a
flipped byte, a missing blob or a change by someone without the state key
(:mod:`raystream.checkpointing.state_key`) is found on read, before anything is unpickled.
``commit`` reads the record back and checks every blob it names, so a checkpoint whose store
vanished or lost data fails instead of completing. An incomplete or corrupt checkpoint is never
returned for a restore: ``newest_valid()`` skips it and says why.

Apart from checkpoints, a store keeps one *committed mark* per job (``record_committed``): the
newest checkpoint whose completion was announced to the job's tasks, so that a recovery can tell
when falling back to an older checkpoint would repeat effects sinks already committed.

Two layouts:

* :class:`FsCheckpointStore` — ``<root>/chk-<id>/<name>`` and ``<root>/chk-<id>/_metadata`` on a
  local disk, S3, GCS, ... (marks: ``<root>/_committed.<job id>``). Locally every file is written
  to a temporary name (mode 0600, directories 0700), fsynced and renamed, and its directory
  fsynced; on object stores a single PUT (or a completed multipart upload) is atomic by itself.
  The default disk store.
* :class:`LmdbCheckpointStore` — an LMDB environment in a local directory, blobs under
  ``blob/<id:020d>/<name>``, metadata under ``meta/<id:020d>``, marks under ``mark/<job id>``;
  each write is its own durable transaction, so the metadata's commit is atomic and ordered after
  the blobs'. Opened only after a child process read it whole (see ``lmdb_store``).

The metadata record is JSON, so a savepoint can be read by people and tools::

    {"checkpoint_id": 7, "checksum": "<sha256 of the canonical metadata>",
     "mac": "<hmac-sha256 of the id and the canonical metadata>",
     "format": "raystream-checkpoint-v2", "metadata": {...}}

A :class:`BlobHandle` inside the metadata is stored as ``{"__blob__": {"key", "size",
"checksum", "mac"}}`` and read back as a ``BlobHandle``. As in any JSON, tuples come back as
lists; mapping keys must be strings.
"""

from __future__ import annotations

import os
import re

from raystream.checkpointing.storage.base import (
    BlobHandle,
    CheckpointStore,
    CheckpointStoreError,
    CorruptCheckpointError,
    _has_scheme,
)
from raystream.checkpointing.storage.fs_store import METADATA_FILE, FsCheckpointStore
from raystream.checkpointing.storage.lmdb_store import DATA_FILE, LmdbCheckpointStore

__all__ = [
    "BlobHandle",
    "CheckpointStore",
    "CheckpointStoreError",
    "CorruptCheckpointError",
    "FsCheckpointStore",
    "LmdbCheckpointStore",
    "open_restore_source",
    "open_savepoint_store",
    "open_store",
]

_CHECKPOINT_SEGMENT = re.compile(r"chk-(\d+)")


def _lmdb_path(location: str) -> str:
    path = location[len("lmdb://") :]
    if not path.startswith("/"):
        raise ValueError(f"an lmdb location needs an absolute path (lmdb:///dir), got {location!r}")
    return path


def open_store(location: str, key: bytes | None = None) -> CheckpointStore:
    """The checkpoint store at ``location``, signing and verifying under ``key`` (None: the
    resolved state key).

    ``lmdb:///abs/dir``, or a local directory that already holds an LMDB environment, opens an
    :class:`LmdbCheckpointStore`; any other local directory or URI (``file://``, ``s3://``,
    ``gs://``, ...) an :class:`FsCheckpointStore`.
    """
    if location.startswith("lmdb://"):
        return LmdbCheckpointStore(_lmdb_path(location), key=key)
    if not _has_scheme(location) and os.path.isfile(os.path.join(location, DATA_FILE)):
        return LmdbCheckpointStore(location, key=key)
    return FsCheckpointStore(location, key=key)


def open_savepoint_store(path_or_uri: str, key: bytes | None = None) -> FsCheckpointStore:
    """The store of a savepoint directory: always plain files, even for a local path."""
    return FsCheckpointStore(path_or_uri, key=key)


def open_restore_source(
    path_or_uri: str, key: bytes | None = None
) -> tuple[CheckpointStore, int | None]:
    """What ``execute(savepoint_path=...)`` restores from: a store and the checkpoint id the
    path names (None: the newest valid one in the store).

    Accepted: a savepoint directory, a checkpoint store's directory or URI (files or LMDB,
    ``lmdb:///dir`` too), or one checkpoint of a file store (``.../chk-<id>``).
    """
    location = str(path_or_uri)
    if location.startswith("lmdb://"):
        return LmdbCheckpointStore(_lmdb_path(location), key=key), None
    if not _has_scheme(location):
        path = os.path.abspath(location)
        if os.path.isfile(os.path.join(path, DATA_FILE)):
            return LmdbCheckpointStore(path, key=key), None
        match = _CHECKPOINT_SEGMENT.fullmatch(os.path.basename(path))
        if match and os.path.isfile(os.path.join(path, METADATA_FILE)):
            return FsCheckpointStore(os.path.dirname(path), key=key), int(match.group(1))
        return FsCheckpointStore(path, key=key), None
    head, sep, query = location.partition("?")
    parent, _, last = head.rstrip("/").rpartition("/")
    match = _CHECKPOINT_SEGMENT.fullmatch(last)
    if match and "://" in parent:
        store = FsCheckpointStore(parent + (sep + query if sep else ""), key=key)
        if int(match.group(1)) in store.completed():
            return store, int(match.group(1))
    return FsCheckpointStore(location, key=key), None
