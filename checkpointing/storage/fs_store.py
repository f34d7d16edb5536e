"""Internal: checkpoints as files on any ``pyarrow.fs`` filesystem (local disk, S3, GCS, ...)."""

from __future__ import annotations

import os
import re
import uuid
from urllib.parse import quote, unquote

import pyarrow.fs as pafs

from raystream.checkpointing.storage.base import CheckpointStore, _check_id, _has_scheme

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
