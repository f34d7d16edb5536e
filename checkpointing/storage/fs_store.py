"""Internal: checkpoints as files on any ``pyarrow.fs`` filesystem (local disk, S3, GCS, ...)."""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Iterable
from urllib.parse import quote, unquote

import pyarrow.fs as pafs

from raystream.checkpointing.storage.base import (
    CheckpointStore,
    CheckpointStoreError,
    _check_id,
    _has_scheme,
)

METADATA_FILE = "_metadata"
MARK_PREFIX = "_committed."
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


def make_private_dir(path: str) -> None:
    """``path`` and its missing parents, the new ones 0700; ``path`` itself made 0700."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    if os.stat(path).st_mode & 0o077:
        os.chmod(path, 0o700)


def _write_local_file(path: str, data: bytes, sync_dir: bool = True) -> None:
    """Write ``path`` (0600) so that it appears whole or not at all, and survives a power loss
    (its directory's entry too, unless ``sync_dir`` is False: then the caller fsyncs the
    directory before anything depends on the file)."""
    directory, base = os.path.split(path)
    if not os.path.isdir(directory):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass
        _fsync_dir(os.path.dirname(directory))
    tmp = f"{directory}/.{base}.{uuid.uuid4().hex}.tmp"  # no blob's file name starts with "."
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        _ignore_missing(os.unlink, tmp)
        raise
    if sync_dir:
        _fsync_dir(directory)


class FsCheckpointStore(CheckpointStore):
    """Checkpoints as files under a root directory of a ``pyarrow.fs`` filesystem.

    ``FsCheckpointStore("s3://bucket/job")`` resolves the filesystem from a URI (or takes a plain
    local path); ``FsCheckpointStore(filesystem, "bucket/job")`` uses a configured one, such as
    an ``S3FileSystem`` with an ``endpoint_override``.
    """

    def __init__(
        self,
        location: str | pafs.FileSystem,
        path: str | None = None,
        *,
        key: bytes | None = None,
    ):
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
        self._key = key
        self._root_seen = False  # once it existed, a missing root means the store vanished
        #: blobs are written from several threads at once: one of them creates the root
        self._root_lock = threading.Lock()

    def ensure_root(self) -> None:
        """Creates the root directory (0700 on a local disk) if it is missing."""
        if self._local:
            make_private_dir(self.root)
            self._root_seen = True

    def _dir(self, checkpoint_id: int) -> str:
        return f"{self.root}/chk-{checkpoint_id}"

    def _put(self, path: str, data: bytes, sync_dir: bool | None = True) -> None:
        """``sync_dir``: True fsyncs the directory after the file, False leaves that to a later
        write, None fsyncs it before and after (the metadata, after its blobs)."""
        if self._local:
            if not os.path.isdir(self.root):
                with self._root_lock:  # checked again: another writer may have just created it
                    if not os.path.isdir(self.root):
                        if self._root_seen:
                            raise CheckpointStoreError(
                                f"checkpoint store {self.location} vanished: its directory "
                                f"{self.root} is gone (deleted while the job ran?); it is not "
                                "created again, since the checkpoints it held are lost"
                            )
                        make_private_dir(self.root)
                    self._root_seen = True
            self._root_seen = True
            try:
                if sync_dir is None:  # the directory's earlier entries must be durable first
                    _fsync_dir(os.path.dirname(path))
                _write_local_file(path, data, sync_dir is not False)
            except OSError as exc:
                raise CheckpointStoreError(
                    f"checkpoint store {self.location}: cannot write {path}: {exc}"
                ) from exc
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
        self._put(f"{self.root}/{key}", data, sync_dir=False)  # the metadata's write syncs it
        return key

    def _get_blob(self, key: str) -> bytes | None:
        directory, _, base = key.partition("/")
        if not _CHECKPOINT_DIR.fullmatch(directory) or not base or base[0] in "._" or "/" in base:
            return None  # not a key this layout writes
        return self._get(f"{self.root}/{key}")

    def _blob_size(self, key: str) -> int | None:
        info = self.filesystem.get_file_info(f"{self.root}/{key}")
        return info.size if info.type == pafs.FileType.File else None

    def _name_of(self, key: str) -> str:
        return unquote(key.rpartition("/")[2])

    def _put_metadata(self, checkpoint_id: int, record: bytes) -> None:
        self._put(f"{self._dir(checkpoint_id)}/{METADATA_FILE}", record, sync_dir=None)

    def _get_metadata(self, checkpoint_id: int) -> bytes | None:
        return self._get(f"{self._dir(checkpoint_id)}/{METADATA_FILE}")

    def _put_mark(self, name: str, record: bytes) -> None:
        self._put(f"{self.root}/{MARK_PREFIX}{_file_name(name)}", record)

    def _get_marks(self) -> dict[str, bytes]:
        selector = pafs.FileSelector(self.root, allow_not_found=True)
        out = {}
        for info in self.filesystem.get_file_info(selector):
            if info.base_name.startswith(MARK_PREFIX) and info.type == pafs.FileType.File:
                data = self._get(info.path)
                if data is not None:
                    out[unquote(info.base_name[len(MARK_PREFIX) :])] = data
        return out

    def _delete_mark(self, name: str) -> None:
        _ignore_missing(self.filesystem.delete_file, f"{self.root}/{MARK_PREFIX}{_file_name(name)}")

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

    def written(self) -> list[int]:
        return sorted(self._checkpoint_dirs())

    def discard(self, checkpoint_id: int) -> None:
        _check_id(checkpoint_id)
        directory = self._dir(checkpoint_id)
        _ignore_missing(self.filesystem.delete_file, f"{directory}/{METADATA_FILE}")
        _ignore_missing(self.filesystem.delete_dir, directory)

    def discard_incomplete(self, ids: Iterable[int] | None = None) -> None:
        only = None if ids is None else {self._dir(i) for i in ids}
        for directory in self._split_by_metadata()[1]:
            if only is None or directory in only:
                _ignore_missing(self.filesystem.delete_dir, directory)

    def close(self) -> None:
        pass  # every read and write opens and closes its own stream

    def __reduce__(self):  # pyarrow filesystems pickle with their configuration
        return (_reopen, (self.filesystem, self.root, self._key))


def _reopen(filesystem: pafs.FileSystem, root: str, key: bytes | None) -> FsCheckpointStore:
    return FsCheckpointStore(filesystem, root, key=key)
