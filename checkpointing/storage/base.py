"""Internal: the checkpoint store contract and its metadata record (see the package docstring)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from raystream.checkpointing.state_key import mac, resolve_state_key, verify
from raystream.errors import RaystreamError

logger = logging.getLogger(__name__)

METADATA_FORMAT = "raystream-checkpoint-v2"
_UNSIGNED_FORMATS = ("raystream-checkpoint-v1",)
COMMITTED_FORMAT = "raystream-committed-v1"
ENDED_FORMAT = "raystream-ended-v1"
#: the marks of ended jobs are named ``ended.<job id>`` (a committed mark is named by its job id)
ENDED_PREFIX = "ended."
_BLOB_TAG = "__blob__"
_HINT = "restore from an earlier checkpoint (latest_valid() skips corrupt ones)"
_BLOB_DOMAIN = b"raystream-blob"
_METADATA_DOMAIN = b"raystream-metadata"
_COMMITTED_DOMAIN = b"raystream-committed"
_ENDED_DOMAIN = b"raystream-ended"


class CorruptCheckpointError(RaystreamError):
    """A checkpoint's metadata or one of its blobs is missing, truncated, fails its checksum, or
    is unsigned or fails its HMAC (tampered, or written under another state key)."""

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


class CheckpointStoreError(RaystreamError):
    """A checkpoint store cannot be written or read back: it vanished, is full, is not writable,
    or its files are damaged beyond one checkpoint (a checkpoint written there fails)."""


@dataclass(frozen=True, slots=True)
class BlobHandle:
    """Where a written blob lives in its store, and what its bytes must hash to."""

    key: str  # relative to the store's location
    size: int
    checksum: str  # SHA-256 hex digest of the bytes
    mac: str = ""  # HMAC-SHA256 of the bytes under the state key ("" = unsigned: refused)


def checksum_of(data: bytes) -> str:
    """The checksum stores record for ``data`` (SHA-256, hex)."""
    return hashlib.sha256(data).hexdigest()


# -- the metadata record ---------------------------------------------------------------------------


def _to_json(value: Any, where: str) -> Any:
    """``value`` with every BlobHandle replaced by its tagged dict; rejects non-string keys."""
    if isinstance(value, BlobHandle):
        return {
            _BLOB_TAG: {
                "key": value.key,
                "size": value.size,
                "checksum": value.checksum,
                "mac": value.mac,
            }
        }
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
            return BlobHandle(
                str(fields["key"]),
                int(fields["size"]),
                str(fields["checksum"]),
                str(fields.get("mac", "")),
            )
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def _canonical(body: Any) -> bytes:
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()


def _signed_part(checkpoint_id: int, canonical_body: bytes) -> bytes:
    return b"%d\0" % checkpoint_id + canonical_body


def encode_metadata(checkpoint_id: int, metadata: dict, key: bytes) -> bytes:
    """The JSON record ``commit`` stores: the metadata, its id, its checksum and its HMAC."""
    where = f"checkpoint {checkpoint_id}"
    if not isinstance(metadata, dict):
        raise TypeError(f"{where}: metadata must be a dict, got {type(metadata).__name__}")
    body = _to_json(metadata, where)
    try:
        canonical = _canonical(body)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{where}: metadata is not JSON-serializable: {exc}") from exc
    record = {
        "format": METADATA_FORMAT,
        "checkpoint_id": checkpoint_id,
        "checksum": checksum_of(canonical),
        "mac": mac(key, _METADATA_DOMAIN, _signed_part(checkpoint_id, canonical)),
        "metadata": body,
    }
    return json.dumps(record, indent=2, sort_keys=True, allow_nan=False).encode()


def decode_metadata(checkpoint_id: int, data: bytes, location: str, key: bytes) -> dict:
    """The metadata of a record written by :func:`encode_metadata`, verified.

    Raises:
        CorruptCheckpointError: the record does not parse, belongs to another checkpoint, its
            metadata does not match its checksum, or it is unsigned or fails its HMAC.
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
    if isinstance(record, dict) and record.get("format") in _UNSIGNED_FORMATS:
        raise corrupt(
            f"is unsigned ({record.get('format')}, written before checkpoints carried an HMAC); "
            "it is not restored, since its blobs would be unpickled without authentication"
        )
    if not isinstance(record, dict) or record.get("format") != METADATA_FORMAT:
        raise corrupt(f"is not a {METADATA_FORMAT} record")
    if record.get("checkpoint_id") != checkpoint_id:
        raise corrupt(f"names checkpoint {record.get('checkpoint_id')!r}")
    body = record.get("metadata")
    if not isinstance(body, dict):
        raise corrupt("has no metadata object")
    try:
        canonical = _canonical(body)
    except ValueError:  # a flipped digit can overflow a float to infinity
        raise corrupt("holds a number JSON cannot represent") from None
    digest = checksum_of(canonical)
    if digest != record.get("checksum"):
        raise corrupt(f"has checksum {digest}, expected {record.get('checksum')!r}")
    if not record.get("mac"):
        raise corrupt("is unsigned (no HMAC); it is not restored")
    if not verify(key, _METADATA_DOMAIN, _signed_part(checkpoint_id, canonical), record["mac"]):
        raise corrupt(
            "fails its HMAC: it was changed after it was written, or written under another "
            "state key (RAYSTREAM_STATE_KEY / CheckpointConfig.state_key)"
        )
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

    Subclasses store bytes under keys; this class checks ids and names, builds, signs and
    verifies handles and metadata records, and picks the checkpoint to restore. Every blob and
    metadata record carries an HMAC-SHA256 under the store's state key (``key``; None: resolved
    by :func:`~raystream.checkpointing.state_key.resolve_state_key`); unsigned or tampered data
    is refused before anything is unpickled.
    """

    location: str
    _key: bytes | None = None

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = resolve_state_key(None)
        return self._key

    # -- what a layout provides ----------------------------------------------------------------

    @abstractmethod
    def _put_blob(self, checkpoint_id: int, name: str, data: bytes) -> str:
        """Store a blob durably; return its key."""

    @abstractmethod
    def _get_blob(self, key: str) -> bytes | None:
        """The bytes under a blob key, or None if there are none."""

    def _blob_size(self, key: str) -> int | None:
        """The size of the blob under a key as stored now, None if it is missing."""
        data = self._get_blob(key)
        return None if data is None else len(data)

    @abstractmethod
    def _name_of(self, key: str) -> str:
        """The name a blob key was written under."""

    @abstractmethod
    def _put_metadata(self, checkpoint_id: int, record: bytes) -> None:
        """Store a metadata record atomically and durably."""

    @abstractmethod
    def _get_metadata(self, checkpoint_id: int) -> bytes | None:
        """The metadata record of a checkpoint, or None if there is none."""

    @abstractmethod
    def _put_mark(self, name: str, record: bytes) -> None:
        """Store a small record (a committed mark) atomically and durably under ``name``."""

    @abstractmethod
    def _get_marks(self) -> dict[str, bytes]:
        """Every mark, by name."""

    @abstractmethod
    def _delete_mark(self, name: str) -> None:
        """Remove a mark; a no-op if it is gone."""

    @abstractmethod
    def completed(self) -> list[int]:
        """Ids of the checkpoints that have a metadata record, ascending (not verified)."""

    def written(self) -> list[int]:
        """Ids of every checkpoint with anything stored (metadata or blobs), ascending."""
        return self.completed()

    @abstractmethod
    def discard(self, checkpoint_id: int) -> None:
        """Remove a checkpoint, metadata first and then its blobs; a no-op if it is gone."""

    @abstractmethod
    def discard_incomplete(self, ids: Iterable[int] | None = None) -> None:
        """Remove the blobs of every checkpoint without metadata (of ``ids`` only, if given).

        Only call it while no checkpoint is being written (e.g. when a job starts or recovers):
        the blobs of an in-flight checkpoint have no metadata yet either.
        """

    @abstractmethod
    def close(self) -> None:
        """Release the store's resources; the data stays."""

    def reopened(self) -> CheckpointStore:
        """This store, opened again if opening is where its files are checked (LMDB); call it
        only while nothing is being written."""
        return self

    # -- the protocol --------------------------------------------------------------------------

    def write_blob(self, checkpoint_id: int, name: str, data: bytes) -> BlobHandle:
        """Store one task's snapshot for a checkpoint; put the handle into the metadata."""
        _check_id(checkpoint_id)
        _check_name(name)
        key = self._put_blob(checkpoint_id, name, data)
        return BlobHandle(key, len(data), checksum_of(data), mac(self.key, _BLOB_DOMAIN, data))

    def read_blob(self, checkpoint_id: int, handle: BlobHandle) -> bytes:
        """The bytes of a blob, verified against its handle (size, SHA-256, HMAC).

        Raises:
            CorruptCheckpointError: the blob is missing, has another size, fails its checksum,
                or is unsigned or fails its HMAC.
        """
        data = self._get_blob(handle.key)
        if data is None:
            problem = "is missing"
        elif len(data) != handle.size:
            problem = f"has {len(data)} bytes, expected {handle.size}"
        elif (digest := checksum_of(data)) != handle.checksum:
            problem = f"has checksum {digest}, expected {handle.checksum}"
        elif not handle.mac:
            problem = "is unsigned (its handle has no HMAC)"
        elif not verify(self.key, _BLOB_DOMAIN, data, handle.mac):
            problem = "fails its HMAC (tampered, or signed under another state key)"
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
        """Write the metadata record, after every blob, and read it back: from now on the
        checkpoint exists.

        Raises:
            CheckpointStoreError: the record or a blob it names is not there as written (the
                store vanished or lost data); the checkpoint must count as failed.
        """
        _check_id(checkpoint_id)
        record = encode_metadata(checkpoint_id, metadata, self.key)
        self._put_metadata(checkpoint_id, record)
        self._verify_written(checkpoint_id, record, metadata)

    def _verify_written(self, checkpoint_id: int, record: bytes, metadata: dict) -> None:
        problem = None
        if self._get_metadata(checkpoint_id) != record:
            problem = "its metadata record does not read back as written"
        else:
            for handle in _handles(_from_json(_to_json(metadata, ""))):
                size = self._blob_size(handle.key)
                if size != handle.size:
                    got = "nothing" if size is None else f"{size} bytes"
                    problem = f"blob {handle.key!r} reads back as {got}, {handle.size} written"
                    break
        if problem is not None:
            raise CheckpointStoreError(
                f"checkpoint {checkpoint_id} at {self.location} is not durable: {problem} (did "
                "the store's directory vanish or fill up?)"
            )

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
        return decode_metadata(checkpoint_id, record, self.location, self.key)

    def load(self, checkpoint_id: int) -> tuple[dict, dict[str, bytes]]:
        """The metadata and every blob it references (by the name it was written under).

        Raises:
            CorruptCheckpointError: the metadata or any blob fails verification.
        """
        metadata = self.read_metadata(checkpoint_id)
        handles = {h.key: h for h in _handles(metadata)}.values()
        blobs = {self._name_of(h.key): self.read_blob(checkpoint_id, h) for h in handles}
        return metadata, blobs

    def newest_valid(
        self, ids: Iterable[int] | None = None
    ) -> tuple[tuple[int, dict, dict[str, bytes]] | None, dict[int, str]]:
        """The newest checkpoint (of ``ids``, default all completed) that verifies completely,
        as ``(id, metadata, blobs)`` or None, and why each newer one was skipped."""
        candidates = self.completed() if ids is None else sorted(set(ids))
        skipped: dict[int, str] = {}
        for checkpoint_id in reversed(candidates):
            try:
                metadata, blobs = self.load(checkpoint_id)
            except CorruptCheckpointError as exc:
                logger.warning("skipping checkpoint %d: %s", checkpoint_id, exc)
                skipped[checkpoint_id] = str(exc)
                continue
            return (checkpoint_id, metadata, blobs), skipped
        return None, skipped

    def latest_valid(self) -> tuple[int, dict, dict[str, bytes]] | None:
        """The newest checkpoint that verifies completely, as ``(id, metadata, blobs)``.

        Corrupt checkpoints are skipped with a warning; None if no checkpoint verifies.
        """
        return self.newest_valid()[0]

    # -- committed marks -------------------------------------------------------------------------

    def record_committed(self, job_id: str, checkpoint_id: int) -> None:
        """Durably note that checkpoint ``checkpoint_id`` of job ``job_id`` completed and its
        commit notifications go out: transactional sinks may have made its effects visible, so a
        recovery must not go back before it unnoticed. Kept apart from the checkpoint itself,
        so damage to the checkpoint cannot erase it."""
        _check_id(checkpoint_id)
        body = {"format": COMMITTED_FORMAT, "job_id": job_id, "checkpoint_id": checkpoint_id}
        canonical = _canonical(body)
        record = json.dumps({**body, "mac": mac(self.key, _COMMITTED_DOMAIN, canonical)}).encode()
        self._put_mark(job_id, record)

    def committed_marks(self) -> dict[str, int | None]:
        """The last committed checkpoint id per job that recorded one; None for a mark that
        does not verify (it must be treated as "something was committed, we do not know what")."""
        out: dict[str, int | None] = {}
        for name, record in self._get_marks().items():
            if name.startswith(ENDED_PREFIX):
                continue
            try:
                parsed = json.loads(record)
                body = {k: parsed[k] for k in ("format", "job_id", "checkpoint_id")}
                ok = (
                    body["format"] == COMMITTED_FORMAT
                    and body["job_id"] == name
                    and isinstance(body["checkpoint_id"], int)
                    and verify(self.key, _COMMITTED_DOMAIN, _canonical(body), parsed.get("mac"))
                )
            except (ValueError, TypeError, KeyError):
                ok = False
            out[name] = body["checkpoint_id"] if ok else None
        return out

    def discard_committed_mark(self, job_id: str) -> None:
        self._delete_mark(job_id)

    def record_ended(self, job_id: str, status: str) -> None:
        """Durably note that job ``job_id`` ended with ``status``: a job master that Ray
        restarts during the job's retention time must not run it again."""
        body = {"format": ENDED_FORMAT, "job_id": job_id, "status": status}
        record = json.dumps({**body, "mac": mac(self.key, _ENDED_DOMAIN, _canonical(body))})
        self._put_mark(ENDED_PREFIX + job_id, record.encode())

    def ended_status(self, job_id: str) -> str | None:
        """The status :meth:`record_ended` noted for the job (None: none, or it does not
        verify)."""
        record = self._get_marks().get(ENDED_PREFIX + job_id)
        if record is None:
            return None
        try:
            parsed = json.loads(record)
            body = {k: parsed[k] for k in ("format", "job_id", "status")}
        except (ValueError, TypeError, KeyError):
            return None
        ok = (
            body["format"] == ENDED_FORMAT
            and body["job_id"] == job_id
            and isinstance(body["status"], str)
            and verify(self.key, _ENDED_DOMAIN, _canonical(body), parsed.get("mac"))
        )
        return body["status"] if ok else None

    def discard_ended(self, job_id: str) -> None:
        self._delete_mark(ENDED_PREFIX + job_id)

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _has_scheme(location: str) -> bool:
    return _SCHEME.match(location) is not None
