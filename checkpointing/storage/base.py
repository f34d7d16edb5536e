"""Internal: the checkpoint store contract and its metadata record (see the package docstring)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from raystream.errors import RaystreamError

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


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _has_scheme(location: str) -> bool:
    return _SCHEME.match(location) is not None
