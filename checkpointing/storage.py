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

import hashlib
import json
import logging
import os
import re
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import lmdb
import pyarrow.fs as pafs

from raystream.checkpointing.backends.lmdb import DEFAULT_MAP_SIZE
from raystream.errors import RaystreamError

__all__ = [
    "BlobHandle",
    "CheckpointStore",
    "CorruptCheckpointError",
    "FsCheckpointStore",
    "LmdbCheckpointStore",
    "open_savepoint_store",
    "open_store",
]

logger = logging.getLogger(__name__)

METADATA_FORMAT = "raystream-checkpoint-v1"
_BLOB_TAG = "__blob__"
_HINT = "restore from an earlier checkpoint (latest_valid() skips corrupt ones)"


class CorruptCheckpointError(RaystreamError):
    """A checkpoint's metadata or one of its blobs is missing, truncated or fails its checksum."""

    def __init__(
        self,
        message: str,
        checkpoint_id: int | None = None,
        blob: str | None = None,
        location: str | None = None,
    ):
        super().__init__(message)
        self.checkpoint_id = checkpoint_id
        self.blob = blob
        self.location = location


@dataclass(frozen=True, slots=True)
class BlobHandle:
    """Where a written blob lives in its store, and what its bytes must hash to."""

    key: str  # relative to the store's location
    size: int
    checksum: str  # SHA-256 hex digest of the bytes


def checksum_of(data: bytes) -> str:
    """The checksum stores record for ``data`` (SHA-256, hex)."""
    return hashlib.sha256(data).hexdigest()


# -- the metadata record ---------------------------------------------------------------------------


def _to_json(value: Any, where: str) -> Any:
    """``value`` with every BlobHandle replaced by its tagged dict; rejects non-string keys."""
    if isinstance(value, BlobHandle):
        return {_BLOB_TAG: {"key": value.key, "size": value.size, "checksum": value.checksum}}
    if isinstance(value, dict):
        for k in value:
            if not isinstance(k, str):
                raise TypeError(f"{where}: metadata keys must be strings, got {k!r}")
        return {k: _to_json(v, where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v, where) for v in value]
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and _BLOB_TAG in value:
            fields = value[_BLOB_TAG]
            return BlobHandle(str(fields["key"]), int(fields["size"]), str(fields["checksum"]))
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def _canonical(body: Any) -> bytes:
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()


def encode_metadata(checkpoint_id: int, metadata: dict) -> bytes:
    """The JSON record ``commit`` stores: the metadata, its id, and its checksum."""
    where = f"checkpoint {checkpoint_id}"
    if not isinstance(metadata, dict):
        raise TypeError(f"{where}: metadata must be a dict, got {type(metadata).__name__}")
    body = _to_json(metadata, where)
    try:
        digest = checksum_of(_canonical(body))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{where}: metadata is not JSON-serializable: {exc}") from exc
    record = {
        "format": METADATA_FORMAT,
        "checkpoint_id": checkpoint_id,
        "checksum": digest,
        "metadata": body,
    }
    return json.dumps(record, indent=2, sort_keys=True, allow_nan=False).encode()


def decode_metadata(checkpoint_id: int, data: bytes, location: str) -> dict:
    """The metadata of a record written by :func:`encode_metadata`, verified.

    Raises:
        CorruptCheckpointError: the record does not parse, belongs to another checkpoint, or its
            metadata does not match its checksum.
    """

    def corrupt(problem: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(
            f"checkpoint {checkpoint_id} at {location}: metadata {problem}; {_HINT}",
            checkpoint_id,
            None,
            location,
        )

    try:
        record = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise corrupt(f"is not valid JSON ({len(data)} bytes, {exc})") from None
    if not isinstance(record, dict) or record.get("format") != METADATA_FORMAT:
        raise corrupt(f"is not a {METADATA_FORMAT} record")
    if record.get("checkpoint_id") != checkpoint_id:
        raise corrupt(f"names checkpoint {record.get('checkpoint_id')!r}")
    body = record.get("metadata")
    if not isinstance(body, dict):
        raise corrupt("has no metadata object")
    try:
        digest = checksum_of(_canonical(body))
    except ValueError:  # a flipped digit can overflow a float to infinity
        raise corrupt("holds a number JSON cannot represent") from None
    if digest != record.get("checksum"):
        raise corrupt(f"has checksum {digest}, expected {record.get('checksum')!r}")
    try:
        return _from_json(body)
    except (KeyError, TypeError, ValueError):
        raise corrupt("holds a malformed blob handle") from None


def _handles(value: Any) -> Iterator[BlobHandle]:
    if isinstance(value, BlobHandle):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _handles(v)
    elif isinstance(value, list):
        for v in value:
            yield from _handles(v)


def _check_id(checkpoint_id: int) -> None:
    if isinstance(checkpoint_id, bool) or not isinstance(checkpoint_id, int) or checkpoint_id < 0:
        raise ValueError(f"checkpoint ids are non-negative ints, got {checkpoint_id!r}")


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"blob names are non-empty strings, got {name!r}")


# -- the store interface ---------------------------------------------------------------------------


class CheckpointStore(ABC):
    """Durable checkpoints: blobs first, then the metadata that makes a checkpoint exist.

    Subclasses store bytes under keys; this class checks ids and names, builds and verifies
    handles and metadata records, and picks the checkpoint to restore.
    """

    location: str

    # -- what a layout provides ----------------------------------------------------------------

    @abstractmethod
    def _put_blob(self, checkpoint_id: int, name: str, data: bytes) -> str:
        """Store a blob; return its key."""

    @abstractmethod
    def _get_blob(self, key: str) -> bytes | None:
        """The bytes under a blob key, or None if there are none."""

    @abstractmethod
    def _name_of(self, key: str) -> str:
        """The name a blob key was written under."""

    @abstractmethod
    def _put_metadata(self, checkpoint_id: int, record: bytes) -> None:
        """Store a metadata record atomically."""

    @abstractmethod
    def _get_metadata(self, checkpoint_id: int) -> bytes | None:
        """The metadata record of a checkpoint, or None if there is none."""

    @abstractmethod
    def completed(self) -> list[int]:
        """Ids of the checkpoints that have a metadata record, ascending (not verified)."""

    @abstractmethod
    def discard(self, checkpoint_id: int) -> None:
        """Remove a checkpoint, metadata first and then its blobs; a no-op if it is gone."""

    @abstractmethod
    def discard_incomplete(self) -> None:
        """Remove the blobs of every checkpoint without metadata.

        Only call it while no checkpoint is being written (e.g. when a job starts or recovers):
        the blobs of an in-flight checkpoint have no metadata yet either.
        """

    @abstractmethod
    def close(self) -> None:
        """Release the store's resources; the data stays."""

    # -- the protocol --------------------------------------------------------------------------

    def write_blob(self, checkpoint_id: int, name: str, data: bytes) -> BlobHandle:
        """Store one task's snapshot for a checkpoint; put the handle into the metadata."""
        _check_id(checkpoint_id)
        _check_name(name)
        key = self._put_blob(checkpoint_id, name, data)
        return BlobHandle(key, len(data), checksum_of(data))

    def read_blob(self, checkpoint_id: int, handle: BlobHandle) -> bytes:
        """The bytes of a blob, verified against its handle.

        Raises:
            CorruptCheckpointError: the blob is missing, has another size, or fails its checksum.
        """
        data = self._get_blob(handle.key)
        if data is None:
            problem = "is missing"
        elif len(data) != handle.size:
            problem = f"has {len(data)} bytes, expected {handle.size}"
        elif (digest := checksum_of(data)) != handle.checksum:
            problem = f"has checksum {digest}, expected {handle.checksum}"
        else:
            return data
        raise CorruptCheckpointError(
            f"checkpoint {checkpoint_id} at {self.location}: blob {handle.key!r} {problem}; "
            f"{_HINT}",
            checkpoint_id,
            handle.key,
            self.location,
        )

    def commit(self, checkpoint_id: int, metadata: dict) -> None:
        """Write the metadata record, after every blob: from now on the checkpoint exists."""
        _check_id(checkpoint_id)
        self._put_metadata(checkpoint_id, encode_metadata(checkpoint_id, metadata))

    def read_metadata(self, checkpoint_id: int) -> dict:
        """The verified metadata of a checkpoint, blob handles as :class:`BlobHandle`.

        Raises:
            CorruptCheckpointError: there is no metadata record, or it fails its checks.
        """
        _check_id(checkpoint_id)
        record = self._get_metadata(checkpoint_id)
        if record is None:
            raise CorruptCheckpointError(
                f"checkpoint {checkpoint_id} at {self.location} has no metadata (never "
                f"committed, or discarded); completed checkpoints: {self.completed()}",
                checkpoint_id,
                None,
                self.location,
            )
        return decode_metadata(checkpoint_id, record, self.location)

    def load(self, checkpoint_id: int) -> tuple[dict, dict[str, bytes]]:
        """The metadata and every blob it references (by the name it was written under).

        Raises:
            CorruptCheckpointError: the metadata or any blob fails verification.
        """
        metadata = self.read_metadata(checkpoint_id)
        handles = {h.key: h for h in _handles(metadata)}.values()
        blobs = {self._name_of(h.key): self.read_blob(checkpoint_id, h) for h in handles}
        return metadata, blobs

    def latest_valid(self) -> tuple[int, dict, dict[str, bytes]] | None:
        """The newest checkpoint that verifies completely, as ``(id, metadata, blobs)``.

        Corrupt checkpoints are skipped with a warning; None if no checkpoint verifies.
        """
        for checkpoint_id in reversed(self.completed()):
            try:
                metadata, blobs = self.load(checkpoint_id)
            except CorruptCheckpointError as exc:
                logger.warning("skipping checkpoint %d: %s", checkpoint_id, exc)
                continue
            return checkpoint_id, metadata, blobs
        return None

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"


# -- LMDB ------------------------------------------------------------------------------------------

_BLOB_PREFIX = b"blob/"
_META_PREFIX = b"meta/"

# LMDB forbids opening one environment twice in a process: stores on one path share it
_ENVS: dict[str, tuple[lmdb.Environment, int]] = {}
_ENVS_LOCK = threading.Lock()


def _acquire_env(path: str) -> lmdb.Environment:
    with _ENVS_LOCK:
        env, users = _ENVS.get(path, (None, 0))
        if env is None:
            os.makedirs(path, exist_ok=True)
            # writemap=False keeps the data file as large as the data, not the 1 TiB map; the
            # default sync=True makes every committed transaction durable
            env = lmdb.open(path, map_size=DEFAULT_MAP_SIZE, subdir=True, max_dbs=0)
            env.reader_check()  # free the read slots of crashed processes (they pin old pages)
        _ENVS[path] = (env, users + 1)
        return env


def _release_env(path: str) -> None:
    with _ENVS_LOCK:
        env, users = _ENVS[path]
        if users > 1:
            _ENVS[path] = (env, users - 1)
        else:
            del _ENVS[path]
            env.close()


def _checkpoint_prefix(prefix: bytes, checkpoint_id: int) -> bytes:
    return prefix + b"%020d" % checkpoint_id


def _scan(txn: lmdb.Transaction[bytes], prefix: bytes) -> Iterator[bytes]:
    cursor = txn.cursor()
    if cursor.set_range(prefix):
        for key in cursor.iternext(keys=True, values=False):
            if not key.startswith(prefix):
                break
            yield key


def _delete_prefix(txn: lmdb.Transaction[bytes], prefix: bytes) -> None:
    cursor = txn.cursor()
    if cursor.set_range(prefix):
        while cursor.key().startswith(prefix) and cursor.delete():
            pass


class LmdbCheckpointStore(CheckpointStore):
    """Checkpoints in an LMDB environment in a local directory.

    Other processes (a recovering job master, another actor) may open the same directory at the
    same time; LMDB's lock file coordinates them. In one process, stores on one directory share
    an environment, closed when the last of them closes.
    """

    def __init__(self, path: str):
        self.path = os.path.realpath(path)
        self.location = f"lmdb://{self.path}"
        self._env: lmdb.Environment | None = _acquire_env(self.path)
        self._max_key = self._env.max_key_size()

    def _environment(self) -> lmdb.Environment:
        if self._env is None:
            raise ValueError(f"checkpoint store {self.location} is closed")
        return self._env

    def _blob_key(self, checkpoint_id: int, name: str) -> bytes:
        key = _checkpoint_prefix(_BLOB_PREFIX, checkpoint_id) + b"/" + name.encode()
        if len(key) > self._max_key:
            raise ValueError(
                f"blob name {name!r} of checkpoint {checkpoint_id} is too long for LMDB: the key "
                f"has {len(key)} bytes, at most {self._max_key} fit; use a shorter name"
            )
        return key

    def _put_blob(self, checkpoint_id: int, name: str, data: bytes) -> str:
        key = self._blob_key(checkpoint_id, name)
        with self._environment().begin(write=True) as txn:
            txn.put(key, data)
        return key.decode()

    def _get_blob(self, key: str) -> bytes | None:
        if not key.startswith(_BLOB_PREFIX.decode()):
            return None
        with self._environment().begin() as txn:
            return txn.get(key.encode())

    def _name_of(self, key: str) -> str:
        return key.split("/", 2)[2]

    def _put_metadata(self, checkpoint_id: int, record: bytes) -> None:
        with self._environment().begin(write=True) as txn:
            txn.put(_checkpoint_prefix(_META_PREFIX, checkpoint_id), record)

    def _get_metadata(self, checkpoint_id: int) -> bytes | None:
        with self._environment().begin() as txn:
            return txn.get(_checkpoint_prefix(_META_PREFIX, checkpoint_id))

    def completed(self) -> list[int]:
        with self._environment().begin() as txn:
            return [int(key[len(_META_PREFIX) :]) for key in _scan(txn, _META_PREFIX)]

    def discard(self, checkpoint_id: int) -> None:
        _check_id(checkpoint_id)
        # one transaction: the metadata and the blobs go together
        with self._environment().begin(write=True) as txn:
            txn.delete(_checkpoint_prefix(_META_PREFIX, checkpoint_id))
            _delete_prefix(txn, _checkpoint_prefix(_BLOB_PREFIX, checkpoint_id) + b"/")

    def discard_incomplete(self) -> None:
        with self._environment().begin(write=True) as txn:
            written = {int(key.split(b"/", 2)[1]) for key in _scan(txn, _BLOB_PREFIX)}
            committed = {int(key[len(_META_PREFIX) :]) for key in _scan(txn, _META_PREFIX)}
            for checkpoint_id in sorted(written - committed):
                _delete_prefix(txn, _checkpoint_prefix(_BLOB_PREFIX, checkpoint_id) + b"/")

    def close(self) -> None:
        if self._env is not None:
            self._env = None
            _release_env(self.path)

    def __reduce__(self):  # travels as its directory; the receiver opens it
        return (LmdbCheckpointStore, (self.path,))


# -- pyarrow filesystems ---------------------------------------------------------------------------

METADATA_FILE = "_metadata"
_CHECKPOINT_DIR = re.compile(r"chk-(\d+)")
_SCHEMES = {"local": "file", "gcs": "gs"}


def _file_name(name: str) -> str:
    """A blob name as one path segment, reversible with ``unquote``.

    A leading ``.`` or ``_`` is escaped too, so no blob is ``.``, ``..``, ``_metadata`` or one of
    our temporary files.
    """
    quoted = quote(name, safe="")
    if quoted[0] in "._":
        quoted = f"%{ord(quoted[0]):02X}{quoted[1:]}"
    return quoted


def _ignore_missing(action, path: str) -> None:
    try:
        action(path)
    except FileNotFoundError:
        pass


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_local_file(path: str, data: bytes) -> None:
    """Write ``path`` so that it appears whole or not at all, and survives a power loss."""
    directory, base = os.path.split(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, exist_ok=True)
        _fsync_dir(os.path.dirname(directory))
    tmp = f"{directory}/.{base}.{uuid.uuid4().hex}.tmp"  # no blob's file name starts with "."
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        _ignore_missing(os.unlink, tmp)
        raise
    _fsync_dir(directory)


class FsCheckpointStore(CheckpointStore):
    """Checkpoints as files under a root directory of a ``pyarrow.fs`` filesystem.

    ``FsCheckpointStore("s3://bucket/job")`` resolves the filesystem from a URI (or takes a plain
    local path); ``FsCheckpointStore(filesystem, "bucket/job")`` uses a configured one, such as
    an ``S3FileSystem`` with an ``endpoint_override``.
    """

    def __init__(self, location: str | pafs.FileSystem, path: str | None = None):
        if isinstance(location, pafs.FileSystem):
            if path is None:
                raise TypeError("FsCheckpointStore(filesystem, path) needs the path")
            self.filesystem, root = location, path
        elif path is not None:
            raise TypeError("FsCheckpointStore(uri) takes no path; pass (filesystem, path)")
        elif _has_scheme(location):
            self.filesystem, root = pafs.FileSystem.from_uri(location)
        else:
            self.filesystem, root = pafs.LocalFileSystem(), os.path.abspath(location)
        self._local = isinstance(self.filesystem, pafs.LocalFileSystem)
        self.root = root.rstrip("/") or "/"
        type_name = self.filesystem.type_name
        scheme = _SCHEMES.get(type_name, type_name)
        self.location = f"{scheme}://{self.root}"

    def _dir(self, checkpoint_id: int) -> str:
        return f"{self.root}/chk-{checkpoint_id}"

    def _put(self, path: str, data: bytes) -> None:
        if self._local:
            _write_local_file(path, data)
            return
        # on an object store one PUT (or a completed multipart upload) appears atomically
        try:
            self._write(path, data)
        except FileNotFoundError:  # a filesystem with real directories
            self.filesystem.create_dir(path.rpartition("/")[0], recursive=True)
            self._write(path, data)

    def _write(self, path: str, data: bytes) -> None:
        with self.filesystem.open_output_stream(path) as out:
            out.write(data)

    def _get(self, path: str) -> bytes | None:
        try:
            with self.filesystem.open_input_stream(path) as stream:
                return stream.read()
        except FileNotFoundError:
            return None

    def _put_blob(self, checkpoint_id: int, name: str, data: bytes) -> str:
        key = f"chk-{checkpoint_id}/{_file_name(name)}"
        self._put(f"{self.root}/{key}", data)
        return key

    def _get_blob(self, key: str) -> bytes | None:
        directory, _, base = key.partition("/")
        if not _CHECKPOINT_DIR.fullmatch(directory) or not base or base[0] in "._" or "/" in base:
            return None  # not a key this layout writes
        return self._get(f"{self.root}/{key}")

    def _name_of(self, key: str) -> str:
        return unquote(key.rpartition("/")[2])

    def _put_metadata(self, checkpoint_id: int, record: bytes) -> None:
        self._put(f"{self._dir(checkpoint_id)}/{METADATA_FILE}", record)

    def _get_metadata(self, checkpoint_id: int) -> bytes | None:
        return self._get(f"{self._dir(checkpoint_id)}/{METADATA_FILE}")

    def _checkpoint_dirs(self) -> dict[int, str]:
        selector = pafs.FileSelector(self.root, allow_not_found=True)
        dirs = {}
        for info in self.filesystem.get_file_info(selector):
            match = _CHECKPOINT_DIR.fullmatch(info.base_name)
            if match and info.type == pafs.FileType.Directory:
                dirs[int(match.group(1))] = info.path
        return dirs

    def _split_by_metadata(self) -> tuple[list[int], list[str]]:
        """Ids of the checkpoint directories with metadata, and the directories without."""
        dirs = sorted(self._checkpoint_dirs().items())
        infos = self.filesystem.get_file_info([f"{d}/{METADATA_FILE}" for _, d in dirs])
        committed, incomplete = [], []
        for (checkpoint_id, directory), info in zip(dirs, infos):
            if info.type == pafs.FileType.File:
                committed.append(checkpoint_id)
            else:
                incomplete.append(directory)
        return committed, incomplete

    def completed(self) -> list[int]:
        return self._split_by_metadata()[0]

    def discard(self, checkpoint_id: int) -> None:
        _check_id(checkpoint_id)
        directory = self._dir(checkpoint_id)
        _ignore_missing(self.filesystem.delete_file, f"{directory}/{METADATA_FILE}")
        _ignore_missing(self.filesystem.delete_dir, directory)

    def discard_incomplete(self) -> None:
        for directory in self._split_by_metadata()[1]:
            _ignore_missing(self.filesystem.delete_dir, directory)

    def close(self) -> None:
        pass  # every read and write opens and closes its own stream

    def __reduce__(self):  # pyarrow filesystems pickle with their configuration
        return (FsCheckpointStore, (self.filesystem, self.root))


# -- opening a store by location -------------------------------------------------------------------

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _has_scheme(location: str) -> bool:
    return _SCHEME.match(location) is not None


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
