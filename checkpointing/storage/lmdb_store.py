"""Internal: checkpoints in an LMDB environment in a local directory.

LMDB trusts its files: damaged meta or branch pages can make the C library abort the whole
process (``mdb.c: Assertion 'mx != NULL' failed``) instead of raising. The job master must not
die of a damaged store, so before this process maps an existing environment, a child process
opens it and reads every entry (:func:`probe`): if the child dies or fails, the store is refused
with a :class:`CheckpointStoreError`. While the environment is open, every write first checks
that its data file is still the one mapped (a deleted or replaced directory fails the checkpoint
instead of "completing" into an unlinked file) and that its two meta pages are sane
(:func:`check_meta_pages`). Damage elsewhere that appears while the environment is open is
found by the next open: every recovery reopens the store (``reopened``) before reading it. The file store, which has none of this
exposure, is the default disk store; LMDB checkpoint stores are used only when asked for
(``lmdb:///dir``, or a directory that already holds one).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator

import lmdb

from raystream.checkpointing.backends.lmdb import DEFAULT_MAP_SIZE
from raystream.checkpointing.storage.base import (
    CheckpointStore,
    CheckpointStoreError,
    _check_id,
)

_BLOB_PREFIX = b"blob/"
_META_PREFIX = b"meta/"
_MARK_PREFIX = b"mark/"
DATA_FILE = "data.mdb"

# -- guarding the process against damaged files ----------------------------------------------------

_META_MAGIC = 0xBEEFC0DE
_P_META, _P_BRANCH, _P_LEAF = 0x08, 0x01, 0x02
_P_INVALID = (1 << 64) - 1
_MDB_INTEGERKEY = 0x08


def check_meta_pages(path: str) -> None:
    """Raises :class:`CheckpointStoreError` unless the data file's newest valid meta page
    describes a plausible tree (64-bit LMDB 0.9 layout): magic and version right, the main
    database without flags we never set, its root page inside the file and marked as a tree
    page.

    Other processes may commit while this reads (the file is read without a read transaction):
    a problem counts only if the newest meta page is still the same when it is read again, so
    a commit between two reads (a file that grew, a freed page written over) is looked at anew.
    """
    data_file = os.path.join(path, DATA_FILE)

    def bad(problem: str) -> CheckpointStoreError:
        return CheckpointStoreError(
            f"LMDB checkpoint store lmdb://{path} is damaged ({problem}); it is not opened, "
            "since LMDB may abort the process on damaged pages. Restore from another store, or "
            "remove it to start without checkpoints"
        )

    try:
        # unbuffered: every read below must see the file as it is then, not a buffered copy
        with open(data_file, "rb", buffering=0) as f:
            problem = ""
            for _ in range(_CONSISTENT_READS):
                txnid, problem = _inspect(f)
                if not problem:
                    return
                again, _ = _newest_meta(f)
                if again is not None and again[0] == txnid:
                    break  # nothing was committed meanwhile: the problem is in the file
            raise bad(problem)
    except FileNotFoundError:
        return
    except (OSError, struct.error) as exc:
        raise bad(f"cannot read its data file: {exc}") from exc


#: how often a meta check is repeated while other processes keep committing
_CONSISTENT_READS = 8


def _newest_meta(f) -> tuple[tuple | None, str]:
    """The newest valid meta page ``(txnid, index, free_flags, main_flags, root, last_pg,
    page_size)``, or ``None`` and the problem."""
    f.seek(0)
    head = f.read(160)
    page_size = 4096
    if len(head) >= 160:
        page_size = struct.unpack_from("<I", head, 40)[0] or 4096
    if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
        return None, f"page size {page_size} in meta page 0"
    f.seek(page_size)
    metas = []
    for i, page in enumerate([head, f.read(160)]):
        if len(page) < 152:
            continue
        pgno, _, flags = struct.unpack_from("<QHH", page, 0)
        magic, version = struct.unpack_from("<II", page, 16)
        if pgno != i or not flags & _P_META or magic != _META_MAGIC or version != 1:
            continue
        free_flags = struct.unpack_from("<H", page, 44)[0]
        main_flags = struct.unpack_from("<H", page, 92)[0]
        main_root = struct.unpack_from("<Q", page, 128)[0]
        last_pg, txnid = struct.unpack_from("<QQ", page, 136)
        metas.append((txnid, i, free_flags, main_flags, main_root, last_pg, page_size))
    if not metas:
        return None, "no valid meta page"
    return max(metas), ""


def _inspect(f) -> tuple[int | None, str]:
    """One look at the file: the newest meta page's transaction id and the problem found
    (``""`` if none)."""
    meta, problem = _newest_meta(f)
    if meta is None:
        return None, problem
    txnid, i, free_flags, main_flags, root, last_pg, page_size = meta
    # the size after the meta page was read: a file only grows, so a sane meta page read
    # before never names a page past it
    pages_in_file = os.fstat(f.fileno()).st_size // page_size
    if free_flags & ~_MDB_INTEGERKEY or main_flags:
        return txnid, f"meta page {i} has database flags {free_flags:#x}/{main_flags:#x}"
    if last_pg >= pages_in_file:
        return txnid, f"meta page {i} names page {last_pg}, the file has {pages_in_file}"
    if root != _P_INVALID:
        if root < 2 or root > last_pg:
            return txnid, f"meta page {i} has root page {root} outside 2..{last_pg}"
        f.seek(root * page_size)
        root_no, _, root_flags = struct.unpack("<QHH", f.read(12))
        if root_no != root or not root_flags & (_P_BRANCH | _P_LEAF):
            return txnid, f"root page {root} is not a tree page"
    return txnid, ""


_PROBE = """
import sys, lmdb
env = lmdb.open(sys.argv[1], readonly=True, lock=False, subdir=True, max_dbs=0)
with env.begin() as txn:
    for _key, value in txn.cursor():
        pass
env.close()
"""


def probe(path: str) -> None:
    """Opens the environment at ``path`` in a child process and reads every entry; raises
    :class:`CheckpointStoreError` if that fails or kills the child (an abort stays there)."""
    if not os.path.exists(os.path.join(path, DATA_FILE)):
        return
    check_meta_pages(path)
    try:
        child = subprocess.run(
            [sys.executable, "-c", _PROBE, path],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "PYTHONFAULTHANDLER": ""},
        )
    except subprocess.TimeoutExpired as exc:
        raise CheckpointStoreError(
            f"LMDB checkpoint store lmdb://{path}: reading it took over {exc.timeout:g} s"
        ) from None
    if child.returncode != 0:
        how = (
            f"killed by signal {-child.returncode}"
            if child.returncode < 0
            else f"exit status {child.returncode}"
        )
        last = (child.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise CheckpointStoreError(
            f"LMDB checkpoint store lmdb://{path} is damaged: reading it in a child process "
            f"failed ({how}: {last}); it is not opened in the job master, where LMDB could "
            "abort the process"
        )


# LMDB forbids opening one environment twice in a process: stores on one path share it
_ENVS: dict[str, tuple[lmdb.Environment, int]] = {}
_ENVS_LOCK = threading.Lock()


def _acquire_env(path: str) -> lmdb.Environment:
    with _ENVS_LOCK:
        env, users = _ENVS.get(path, (None, 0))
        if env is None:
            os.makedirs(path, mode=0o700, exist_ok=True)
            if os.stat(path).st_mode & 0o077:
                os.chmod(path, 0o700)
            probe(path)
            # writemap=False keeps the data file as large as the data, not the 1 TiB map; the
            # default sync=True makes every committed transaction durable
            try:
                env = lmdb.open(path, map_size=DEFAULT_MAP_SIZE, subdir=True, max_dbs=0, mode=0o600)
            except lmdb.Error as exc:
                raise CheckpointStoreError(
                    f"LMDB checkpoint store lmdb://{path} cannot be opened: {exc}"
                ) from exc
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

    def __init__(self, path: str, *, key: bytes | None = None):
        self.path = os.path.realpath(path)
        self.location = f"lmdb://{self.path}"
        self._key = key
        self._env: lmdb.Environment | None = _acquire_env(self.path)
        self._max_key = self._env.max_key_size()
        self._file_id = _file_id(self.path)

    def _environment(self) -> lmdb.Environment:
        if self._env is None:
            raise ValueError(f"checkpoint store {self.location} is closed")
        return self._env

    def _write(self, puts: dict[bytes, bytes]) -> None:
        """One durable write transaction, refused if the mapped file is no longer the store's
        or its meta pages are damaged."""
        env = self._environment()
        if _file_id(self.path) != self._file_id:
            raise CheckpointStoreError(
                f"checkpoint store {self.location} vanished: {os.path.join(self.path, DATA_FILE)}"
                " was deleted or replaced while the job ran; what is written now would not be "
                "durable"
            )
        check_meta_pages(self.path)
        try:
            with env.begin(write=True) as txn:
                for k, v in puts.items():
                    txn.put(k, v)
        except lmdb.Error as exc:
            raise CheckpointStoreError(f"checkpoint store {self.location}: {exc}") from exc

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
        self._write({key: data})
        return key.decode()

    def _get_blob(self, key: str) -> bytes | None:
        if not key.startswith(_BLOB_PREFIX.decode()):
            return None
        with self._environment().begin() as txn:
            return txn.get(key.encode())

    def _name_of(self, key: str) -> str:
        return key.split("/", 2)[2]

    def _put_metadata(self, checkpoint_id: int, record: bytes) -> None:
        self._write({_checkpoint_prefix(_META_PREFIX, checkpoint_id): record})

    def _get_metadata(self, checkpoint_id: int) -> bytes | None:
        with self._environment().begin() as txn:
            return txn.get(_checkpoint_prefix(_META_PREFIX, checkpoint_id))

    def _put_mark(self, name: str, record: bytes) -> None:
        self._write({_MARK_PREFIX + name.encode(): record})

    def _get_marks(self) -> dict[str, bytes]:
        with self._environment().begin() as txn:
            out = {}
            for key in list(_scan(txn, _MARK_PREFIX)):
                value = txn.get(key)
                if value is not None:
                    out[key[len(_MARK_PREFIX) :].decode(errors="replace")] = bytes(value)
            return out

    def _delete_mark(self, name: str) -> None:
        with self._environment().begin(write=True) as txn:
            txn.delete(_MARK_PREFIX + name.encode())

    def completed(self) -> list[int]:
        with self._environment().begin() as txn:
            return [int(key[len(_META_PREFIX) :]) for key in _scan(txn, _META_PREFIX)]

    def written(self) -> list[int]:
        with self._environment().begin() as txn:
            blobs = {int(key.split(b"/", 2)[1]) for key in _scan(txn, _BLOB_PREFIX)}
            metas = {int(key[len(_META_PREFIX) :]) for key in _scan(txn, _META_PREFIX)}
        return sorted(blobs | metas)

    def discard(self, checkpoint_id: int) -> None:
        _check_id(checkpoint_id)
        # one transaction: the metadata and the blobs go together
        with self._environment().begin(write=True) as txn:
            txn.delete(_checkpoint_prefix(_META_PREFIX, checkpoint_id))
            _delete_prefix(txn, _checkpoint_prefix(_BLOB_PREFIX, checkpoint_id) + b"/")

    def discard_incomplete(self, ids: Iterable[int] | None = None) -> None:
        with self._environment().begin(write=True) as txn:
            written = {int(key.split(b"/", 2)[1]) for key in _scan(txn, _BLOB_PREFIX)}
            committed = {int(key[len(_META_PREFIX) :]) for key in _scan(txn, _META_PREFIX)}
            only = written if ids is None else set(ids)
            for checkpoint_id in sorted((written - committed) & only):
                _delete_prefix(txn, _checkpoint_prefix(_BLOB_PREFIX, checkpoint_id) + b"/")

    def reopened(self) -> LmdbCheckpointStore:
        """Closed and opened again, so the child-process check runs on what is there now (with
        other stores on this path open in this process, the shared environment stays)."""
        self.close()
        return LmdbCheckpointStore(self.path, key=self._key)

    def close(self) -> None:
        if self._env is not None:
            self._env = None
            _release_env(self.path)

    def __reduce__(self):  # travels as its directory; the receiver opens it
        return (_reopen, (self.path, self._key))


def _reopen(path: str, key: bytes | None) -> LmdbCheckpointStore:
    return LmdbCheckpointStore(path, key=key)


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(os.path.join(path, DATA_FILE))
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino
