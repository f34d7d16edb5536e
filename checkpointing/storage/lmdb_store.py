"""Internal: checkpoints in an LMDB environment in a local directory."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import lmdb

from raystream.checkpointing.backends.lmdb import DEFAULT_MAP_SIZE
from raystream.checkpointing.storage.base import CheckpointStore, _check_id

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
