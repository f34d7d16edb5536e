"""Checkpoint stores: one conformance suite run against LMDB, local files and S3 (no Ray).

S3 is moto's server on loopback, reached through pyarrow's ``S3FileSystem``. Corruption is made
by rewriting what a store wrote (a flipped byte, a cut-off file, a deleted blob) through the
backing storage itself, never through the store.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import re
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable

import lmdb
import pyarrow.fs as pafs
import pytest
from moto.server import ThreadedMotoServer

from raystream.checkpointing.storage import (
    BlobHandle,
    CheckpointStore,
    CorruptCheckpointError,
    FsCheckpointStore,
    LmdbCheckpointStore,
    open_savepoint_store,
    open_store,
)
from raystream.errors import RaystreamError

KINDS = ["lmdb", "local", "subtree", "s3"]  # subtree: files, but no local fast path
BUCKET = "checkpoints"
S3_KEYS = {"access_key": "testing", "secret_key": "testing", "region": "us-east-1"}
STORE_LOGGER = "raystream.checkpointing.storage"

Mutation = Callable[[bytes | None], bytes | None]  # None: the value is (to be) absent


# -- the stores under test -------------------------------------------------------------------------


class Backing(ABC):
    """A store kind, and a way to change what the store wrote behind its back."""

    @abstractmethod
    def open(self) -> CheckpointStore: ...

    @abstractmethod
    def metadata_key(self, checkpoint_id: int) -> str: ...

    @abstractmethod
    def tamper(self, store: CheckpointStore, key: str, mutate: Mutation) -> CheckpointStore:
        """Apply ``mutate`` to the bytes under ``key``; returns the store to go on with."""


class LmdbBacking(Backing):
    def __init__(self, path: str):
        self.path = path

    def open(self) -> CheckpointStore:
        return LmdbCheckpointStore(self.path)

    def metadata_key(self, checkpoint_id: int) -> str:
        return f"meta/{checkpoint_id:020d}"

    def tamper(self, store: CheckpointStore, key: str, mutate: Mutation) -> CheckpointStore:
        store.close()  # one environment per path and process: release the store's first
        with lmdb.open(self.path, map_size=1 << 30) as env, env.begin(write=True) as txn:
            new = mutate(txn.get(key.encode()))
            if new is None:
                txn.delete(key.encode())
            else:
                txn.put(key.encode(), new)
        return self.open()


class FsBacking(Backing):
    def __init__(self, filesystem: pafs.FileSystem, root: str):
        self.filesystem = filesystem
        self.root = root

    def open(self) -> CheckpointStore:
        return FsCheckpointStore(self.filesystem, self.root)

    def metadata_key(self, checkpoint_id: int) -> str:
        return f"chk-{checkpoint_id}/_metadata"

    def tamper(self, store: CheckpointStore, key: str, mutate: Mutation) -> CheckpointStore:
        path = f"{self.root}/{key}"
        with self.filesystem.open_input_stream(path) as stream:
            new = mutate(stream.read())
        if new is None:
            self.filesystem.delete_file(path)
        else:
            with self.filesystem.open_output_stream(path) as out:
                out.write(new)
        return store


@pytest.fixture(scope="module")
def s3_endpoint():
    werkzeug = logging.getLogger("werkzeug")  # moto's server logs every request otherwise
    level = werkzeug.level
    werkzeug.setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()  # returns once the server listens
    host, port = server.get_host_and_port()
    endpoint = f"{host}:{port}"
    admin = pafs.S3FileSystem(
        endpoint_override=endpoint, scheme="http", allow_bucket_creation=True, **S3_KEYS
    )
    admin.create_dir(BUCKET)
    yield endpoint
    server.stop()
    werkzeug.setLevel(level)


def s3_filesystem(endpoint: str) -> pafs.S3FileSystem:
    # allow_delayed_open: objects below the 10 MiB part size go up in one PUT. Without it
    # pyarrow uses a multipart upload even for a few bytes, and moto's CompleteMultipartUpload
    # answer (root element ...Response, not ...Result) is rejected by the AWS SDK pyarrow uses.
    return pafs.S3FileSystem(
        endpoint_override=endpoint, scheme="http", allow_delayed_open=True, **S3_KEYS
    )


@pytest.fixture(params=KINDS)
def backing(request, tmp_path) -> Backing:
    if request.param == "lmdb":
        return LmdbBacking(str(tmp_path / "lmdb"))
    if request.param == "local":
        return FsBacking(pafs.LocalFileSystem(), str(tmp_path / "fs"))
    if request.param == "subtree":
        return FsBacking(pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem()), "fs")
    endpoint = request.getfixturevalue("s3_endpoint")
    prefix = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)
    return FsBacking(s3_filesystem(endpoint), f"{BUCKET}/{prefix}")


@pytest.fixture
def store(backing):
    opened = backing.open()
    yield opened
    opened.close()


# -- helpers ---------------------------------------------------------------------------------------


def commit_checkpoint(store: CheckpointStore, checkpoint_id: int, tasks: int = 2) -> dict:
    """A checkpoint of ``tasks`` task snapshots; returns its metadata."""
    blobs = {
        f"task-{i}": store.write_blob(
            checkpoint_id, f"task-{i}", b"state %d/%d" % (checkpoint_id, i)
        )
        for i in range(tasks)
    }
    metadata = {"blobs": blobs, "offset": 1000 + checkpoint_id}
    store.commit(checkpoint_id, metadata)
    return metadata


def flip_byte(data: bytes | None) -> bytes:
    assert data is not None
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]


def truncate(data: bytes | None) -> bytes:
    assert data is not None
    return data[: len(data) // 2]


def append_byte(data: bytes | None) -> bytes:
    assert data is not None
    return data + b"\x00"


def delete(data: bytes | None) -> None:
    return None


def change_offset(data: bytes | None) -> bytes:
    assert data is not None and b'"offset": 1002' in data
    return data.replace(b'"offset": 1002', b'"offset": 1003')


def not_json(data: bytes | None) -> bytes:
    return b"\x00\xff" * 8


# -- round trips -----------------------------------------------------------------------------------


def test_round_trip(store):
    payload = random.Random(0).randbytes(1 << 20)
    names = ["source:0", "window/agg/3", "_metadata", "..", ".hidden", "ünïcode %41", "a" * 120]
    blobs = {name: store.write_blob(7, name, name.encode() * 3) for name in names}
    big = store.write_blob(7, "big", payload)
    metadata = {
        "blobs": blobs,
        "operators": [{"uid": "map", "state": big, "parallelism": 2}],
        "watermark_ms": -9_223_372_036_854_775_808,
        "ratio": 0.1,
        "note": None,
    }
    store.commit(7, metadata)

    assert store.completed() == [7]
    assert store.read_metadata(7) == metadata
    assert isinstance(store.read_metadata(7)["operators"][0]["state"], BlobHandle)
    assert big.size == len(payload)
    assert store.read_blob(7, big) == payload
    loaded, data = store.load(7)
    assert loaded == metadata
    assert data == {**{name: name.encode() * 3 for name in names}, "big": payload}
    assert store.latest_valid() == (7, metadata, data)


def test_completed_is_ascending_and_needs_metadata(store):
    for checkpoint_id in (10, 2, 1):
        commit_checkpoint(store, checkpoint_id)
    store.write_blob(11, "task-0", b"never committed")

    assert store.completed() == [1, 2, 10]
    with pytest.raises(CorruptCheckpointError, match="checkpoint 11 .*no metadata"):
        store.read_metadata(11)
    assert store.latest_valid()[0] == 10


def test_blobs_without_metadata_are_not_a_checkpoint(store):
    store.write_blob(1, "task-0", b"x")
    store.write_blob(1, "task-1", b"y")
    assert store.completed() == []
    assert store.latest_valid() is None


def test_commit_replaces_metadata(store):
    commit_checkpoint(store, 1)
    store.commit(1, {"blobs": {}, "offset": 5})
    assert store.read_metadata(1) == {"blobs": {}, "offset": 5}


def test_discard(store):
    first = commit_checkpoint(store, 1)
    second = commit_checkpoint(store, 2)

    store.discard(2)
    assert store.completed() == [1]
    with pytest.raises(CorruptCheckpointError, match="blob .* is missing"):
        store.read_blob(2, second["blobs"]["task-0"])
    store.discard(2)  # idempotent
    store.discard(99)  # never written
    assert store.load(1)[0] == first


def test_discard_removes_incomplete_checkpoint(store):
    handle = store.write_blob(3, "task-0", b"x")
    store.discard(3)
    with pytest.raises(CorruptCheckpointError):
        store.read_blob(3, handle)


def test_discard_incomplete(store):
    commit_checkpoint(store, 1)
    orphan = store.write_blob(2, "task-0", b"orphan")
    store.write_blob(12, "task-0", b"orphan")

    store.discard_incomplete()

    assert store.completed() == [1]
    assert store.load(1)[1] == {"task-0": b"state 1/0", "task-1": b"state 1/1"}
    with pytest.raises(CorruptCheckpointError):
        store.read_blob(2, orphan)
    commit_checkpoint(store, 2)  # the id can be written again
    assert store.completed() == [1, 2]
    store.discard_incomplete()  # nothing left to do
    assert store.completed() == [1, 2]


# -- corruption ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mutate", [flip_byte, truncate, append_byte, delete])
def test_corrupt_blob_is_detected_and_skipped(backing, mutate, caplog):
    store = backing.open()
    commit_checkpoint(store, 1)
    handle = commit_checkpoint(store, 2)["blobs"]["task-1"]
    store = backing.tamper(store, handle.key, mutate)
    try:
        with pytest.raises(CorruptCheckpointError) as caught:
            store.read_blob(2, handle)
        assert caught.value.checkpoint_id == 2
        assert caught.value.blob == handle.key
        assert "checkpoint 2" in str(caught.value) and handle.key in str(caught.value)
        with pytest.raises(CorruptCheckpointError):
            store.load(2)

        with caplog.at_level(logging.WARNING, logger=STORE_LOGGER):
            checkpoint_id, metadata, blobs = store.latest_valid()
        assert (checkpoint_id, metadata["offset"]) == (1, 1001)
        assert blobs == {"task-0": b"state 1/0", "task-1": b"state 1/1"}
        assert "skipping checkpoint 2" in caplog.text
        assert store.completed() == [1, 2]  # completed() does not verify
    finally:
        store.close()


@pytest.mark.parametrize("mutate", [change_offset, flip_byte, truncate, not_json])
def test_corrupt_metadata_is_detected_and_skipped(backing, mutate, caplog):
    store = backing.open()
    commit_checkpoint(store, 1)
    commit_checkpoint(store, 2)
    store = backing.tamper(store, backing.metadata_key(2), mutate)
    try:
        with pytest.raises(CorruptCheckpointError, match="checkpoint 2 .*metadata") as caught:
            store.read_metadata(2)
        assert caught.value.checkpoint_id == 2 and caught.value.blob is None
        with pytest.raises(CorruptCheckpointError):
            store.load(2)
        with caplog.at_level(logging.WARNING, logger=STORE_LOGGER):
            assert store.latest_valid()[0] == 1
        assert "skipping checkpoint 2" in caplog.text
    finally:
        store.close()


def test_metadata_of_another_checkpoint_is_rejected(backing):
    store = backing.open()
    commit_checkpoint(store, 1)
    commit_checkpoint(store, 2)
    records = {}

    def keep(data: bytes | None) -> bytes | None:
        records["first"] = data
        return data

    store = backing.tamper(store, backing.metadata_key(1), keep)
    store = backing.tamper(store, backing.metadata_key(2), lambda data: records["first"])
    try:
        with pytest.raises(CorruptCheckpointError, match="names checkpoint 1"):
            store.read_metadata(2)
        assert store.latest_valid()[0] == 1
    finally:
        store.close()


def test_no_valid_checkpoint(backing):
    store = backing.open()
    handle = commit_checkpoint(store, 1)["blobs"]["task-0"]
    store = backing.tamper(store, handle.key, flip_byte)
    try:
        assert store.latest_valid() is None
    finally:
        store.close()


# -- LMDB across stores and processes --------------------------------------------------------------

REOPEN = """
import json, sys
from raystream.checkpointing.storage import open_store

with open_store(sys.argv[1]) as store:
    latest = store.latest_valid()
    store.commit(3, {"blobs": {"task-0": store.write_blob(3, "task-0", b"from the child")}})
    print(json.dumps({"completed": store.completed(), "latest": latest[0],
                      "blobs": {k: v.decode() for k, v in latest[2].items()}}))
"""


def test_lmdb_reopened_by_a_new_process(tmp_path):
    path = str(tmp_path / "checkpoints")
    with open_store(f"lmdb://{path}") as store:
        commit_checkpoint(store, 1)
        commit_checkpoint(store, 2)
        # the parent keeps its environment open while the child reads and writes
        child = subprocess.run(
            [sys.executable, "-c", REOPEN, f"lmdb://{path}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        seen = json.loads(child.stdout)
        assert seen == {
            "completed": [1, 2, 3],
            "latest": 2,
            "blobs": {"task-0": "state 2/0", "task-1": "state 2/1"},
        }
        assert store.completed() == [1, 2, 3]
        assert store.load(3)[1] == {"task-0": b"from the child"}


def test_lmdb_stores_on_one_path_share_an_environment(tmp_path):
    path = str(tmp_path / "checkpoints")
    first = LmdbCheckpointStore(path)
    second = open_store(path)
    commit_checkpoint(first, 1)
    first.close()
    first.close()  # idempotent
    assert second.completed() == [1]
    copy = pickle.loads(pickle.dumps(second))  # travels as its directory
    second.close()
    assert copy.load(1)[0]["offset"] == 1001
    copy.close()
    with pytest.raises(ValueError, match="closed"):
        copy.completed()


def test_lmdb_rejects_a_name_longer_than_a_key(tmp_path):
    with LmdbCheckpointStore(str(tmp_path / "db")) as store:
        with pytest.raises(ValueError, match="too long for LMDB"):
            store.write_blob(1, "x" * 600, b"")


# -- files -----------------------------------------------------------------------------------------


def test_savepoint_is_readable_json(tmp_path):
    with open_savepoint_store(str(tmp_path / "savepoint")) as store:
        assert isinstance(store, FsCheckpointStore)
        metadata = commit_checkpoint(store, 4)
    files = sorted(os.listdir(tmp_path / "savepoint" / "chk-4"))
    assert files == ["_metadata", "task-0", "task-1"]  # no temporary file left behind
    record = json.loads((tmp_path / "savepoint" / "chk-4" / "_metadata").read_text())
    assert record["checkpoint_id"] == 4
    assert record["metadata"]["offset"] == 1004
    assert record["metadata"]["blobs"]["task-0"] == {
        "__blob__": {
            "key": "chk-4/task-0",
            "size": len(b"state 4/0"),
            "checksum": metadata["blobs"]["task-0"].checksum,
            "mac": metadata["blobs"]["task-0"].mac,
        }
    }
    assert len(record["mac"]) == 64 and len(metadata["blobs"]["task-0"].mac) == 64


def test_blob_names_become_safe_file_names(tmp_path):
    with open_savepoint_store(str(tmp_path)) as store:
        keys = {name: store.write_blob(1, name, b"") for name in ["a:b/c", "_metadata", ".."]}
    assert {name: h.key for name, h in keys.items()} == {
        "a:b/c": "chk-1/a%3Ab%2Fc",
        "_metadata": "chk-1/%5Fmetadata",
        "..": "chk-1/%2E.",
    }


def test_fs_store_pickles_with_its_filesystem(s3_endpoint):
    store = FsCheckpointStore(s3_filesystem(s3_endpoint), f"{BUCKET}/pickled")
    commit_checkpoint(store, 1)
    copy = pickle.loads(pickle.dumps(store))
    assert copy.location == f"s3://{BUCKET}/pickled"
    assert copy.load(1)[0]["offset"] == 1001


# -- opening by location ---------------------------------------------------------------------------


def test_open_store_picks_the_layout(tmp_path, s3_endpoint):
    lmdb_path = str(tmp_path / "db")
    with open_store(f"lmdb://{lmdb_path}") as store:
        assert isinstance(store, LmdbCheckpointStore)
        assert store.location == f"lmdb://{os.path.realpath(lmdb_path)}"
    with open_store(lmdb_path) as store:
        assert isinstance(store, LmdbCheckpointStore)
    with open_store(f"file://{tmp_path}/files") as store:
        assert isinstance(store, FsCheckpointStore)
        assert store.location == f"file://{tmp_path}/files"
        commit_checkpoint(store, 1)
    assert os.path.isfile(tmp_path / "files" / "chk-1" / "_metadata")
    # pyarrow takes S3 credentials from the URI's user info, the rest from its query
    query = f"endpoint_override={s3_endpoint}&scheme=http&region=us-east-1&allow_delayed_open=true"
    with open_store(f"s3://testing:testing@{BUCKET}/by-uri?{query}") as store:
        assert isinstance(store, FsCheckpointStore)
        assert store.location == f"s3://{BUCKET}/by-uri"
        commit_checkpoint(store, 5)
        assert store.latest_valid()[0] == 5
    with pytest.raises(ValueError, match="absolute path"):
        open_store("lmdb://relative/dir")


# -- wrong use -------------------------------------------------------------------------------------


def test_wrong_ids_names_and_metadata(tmp_path):
    with open_savepoint_store(str(tmp_path)) as store:
        with pytest.raises(ValueError, match="non-negative"):
            store.write_blob(-1, "task", b"")
        with pytest.raises(ValueError, match="non-negative"):
            store.commit(True, {})
        with pytest.raises(ValueError, match="non-empty"):
            store.write_blob(1, "", b"")
        with pytest.raises(TypeError, match="keys must be strings"):
            store.commit(1, {"blobs": {1: "x"}})
        with pytest.raises(TypeError, match="not JSON-serializable"):
            store.commit(1, {"when": object()})
        with pytest.raises(TypeError, match="not JSON-serializable"):
            store.commit(1, {"ratio": float("nan")})
        assert store.completed() == []


def test_corrupt_checkpoint_error_pickles():
    error = CorruptCheckpointError("bad", checkpoint_id=3, blob="chk-3/x", location="file:///c")
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, RaystreamError)
    assert (str(copy), copy.checkpoint_id, copy.blob, copy.location) == (
        "bad",
        3,
        "chk-3/x",
        "file:///c",
    )
