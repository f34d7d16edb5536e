"""Faults of the checkpoint store itself, for the file store and the LMDB store.

Each fault is made behind the store's back (bytes flipped in a file, an LMDB value rewritten
through LMDB, a directory removed) and each test asserts the exact outcome: the exact output,
or a clear failure with nothing duplicated and nothing deleted. Duplicates are counted with
``execute_and_collect``, which hands records to the driver only once the checkpoint after them
completed, like a two-phase-commit sink.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import pickle
import random
import shutil
import stat
import struct
import subprocess
import time

import lmdb
import pytest
import ray

from raystream import CheckpointedFunction, MapFunction, StreamExecutionEnvironment
from raystream.checkpoint_config import ExternalizedCheckpointRetention, RestartStrategies
from raystream.checkpointing.snapshot import decode
from raystream.checkpointing.state_key import StateKeyError, resolve_state_key, user_root
from raystream.checkpointing.storage import (
    CheckpointStore,
    CheckpointStoreError,
    CorruptCheckpointError,
    FsCheckpointStore,
    LmdbCheckpointStore,
    open_restore_source,
    open_savepoint_store,
    open_store,
)
from raystream.checkpointing.storage.base import _canonical
from raystream.checkpointing.storage.lmdb_store import check_meta_pages
from raystream.errors import JobExecutionError
from raystream.operators.file_sink import FileSink
from tests.chaos_jobs import (
    Collector,
    PacedEvents,
    SequenceCheck,
    check_sequences,
    job_master_actor,
    kill_task,
    wait_until,
)

KINDS = ["files", "lmdb"]


def location(kind: str, path) -> str:
    return str(path) if kind == "files" else f"lmdb://{path}"


# -- changing what a store wrote, behind its back -----------------------------------------------


def read_raw(kind: str, path, key: str) -> bytes:
    if kind == "files":
        with open(os.path.join(path, key), "rb") as f:
            return f.read()
    with lmdb.open(str(path), map_size=1 << 30) as env, env.begin() as txn:
        value = txn.get(key.encode())
        assert value is not None, key
        return bytes(value)


def write_raw(kind: str, path, key: str, data: bytes) -> None:
    if kind == "files":
        with open(os.path.join(path, key), "wb") as f:
            f.write(data)
        return
    with lmdb.open(str(path), map_size=1 << 30) as env, env.begin(write=True) as txn:
        txn.put(key.encode(), data)


def metadata_key(kind: str, cid: int) -> str:
    return f"chk-{cid}/_metadata" if kind == "files" else f"meta/{cid:020d}"


def flip_newest_blob(kind: str, path, cid: int) -> None:
    record = json.loads(read_raw(kind, path, metadata_key(kind, cid)))
    key = sorted(b["__blob__"]["key"] for b in record["metadata"]["blobs"].values())[0]
    data = bytearray(read_raw(kind, path, key))
    data[len(data) // 2] ^= 0xFF
    write_raw(kind, path, key, bytes(data))


def truncate_metadata(kind: str, path, cid: int) -> None:
    data = read_raw(kind, path, metadata_key(kind, cid))
    write_raw(kind, path, metadata_key(kind, cid), data[: len(data) // 2])


class Planted:
    """A pickle that, if the job master ever unpickled it, would leave a file behind."""

    def __init__(self, mark: str):
        self.mark = mark

    def __reduce__(self):
        return (open, (self.mark, "w"))


def plant_pickle_with_recomputed_digests(
    kind: str, path, cid: int, mark: str, name: str | None = None
) -> None:
    """Replaces a task blob with a malicious pickle and rewrites the metadata so every unkeyed
    digest matches again: the size, the blob's SHA-256, the record's SHA-256 (and the blake2b
    trailer of the snapshot format)."""
    record = json.loads(read_raw(kind, path, metadata_key(kind, cid)))
    name = name or sorted(record["metadata"]["blobs"])[0]
    handle = record["metadata"]["blobs"][name]["__blob__"]
    body = pickle.dumps(Planted(mark))
    evil = body + hashlib.blake2b(body, digest_size=32).digest()
    write_raw(kind, path, handle["key"], evil)
    handle["size"] = len(evil)
    handle["checksum"] = hashlib.sha256(evil).hexdigest()
    record["checksum"] = hashlib.sha256(_canonical(record["metadata"])).hexdigest()
    write_raw(kind, path, metadata_key(kind, cid), json.dumps(record).encode())


# -- without Ray: the stores ----------------------------------------------------------------------


def commit(store: CheckpointStore, cid: int) -> dict:
    blobs = {
        f"task-{i}": store.write_blob(cid, f"task-{i}", b"state %d/%d" % (cid, i)) for i in (0, 1)
    }
    metadata = {"blobs": blobs, "offset": 1000 + cid}
    store.commit(cid, metadata)
    return metadata


@pytest.mark.parametrize("kind", KINDS)
def test_recomputed_unkeyed_digests_are_refused_by_the_hmac(kind, tmp_path):
    path = tmp_path / "store"
    mark = str(tmp_path / "planted")
    with open_store(location(kind, path)) as store:
        commit(store, 1)
        commit(store, 2)
    plant_pickle_with_recomputed_digests(kind, path, 2, mark)
    with open_store(location(kind, path)) as store:
        with pytest.raises(CorruptCheckpointError, match="checkpoint 2 .*fails its HMAC"):
            store.load(2)
        found, skipped = store.newest_valid()
        assert found is not None and found[0] == 1 and list(skipped) == [2]
    assert not os.path.exists(mark)  # nothing was unpickled


@pytest.mark.parametrize("kind", KINDS)
def test_a_blob_signed_under_another_key_is_refused(kind, tmp_path):
    path = tmp_path / "store"
    with open_store(location(kind, path), key=b"k" * 32) as store:
        commit(store, 1)
        store.record_committed("job", 1)
    with open_store(location(kind, path), key=b"x" * 32) as other:
        with pytest.raises(CorruptCheckpointError, match="HMAC"):
            other.read_metadata(1)
        assert other.committed_marks() == {"job": None}  # unknown, never taken as "nothing"
    with open_store(location(kind, path), key=b"k" * 32) as store:
        assert store.load(1)[1] == {"task-0": b"state 1/0", "task-1": b"state 1/1"}
        assert store.committed_marks() == {"job": 1}


def test_unsigned_records_of_the_old_format_are_refused(tmp_path):
    path = tmp_path / "store"
    with open_store(str(path)) as store:
        commit(store, 1)
    record = json.loads(read_raw("files", path, "chk-1/_metadata"))
    del record["mac"]
    record["format"] = "raystream-checkpoint-v1"
    write_raw("files", path, "chk-1/_metadata", json.dumps(record).encode())
    with open_store(str(path)) as store, pytest.raises(CorruptCheckpointError, match="unsigned"):
        store.read_metadata(1)


@pytest.mark.parametrize("kind", KINDS)
def test_a_store_deleted_under_a_job_fails_the_write(kind, tmp_path):
    path = tmp_path / "store"
    with open_store(location(kind, path)) as store:
        commit(store, 1)
        shutil.rmtree(path)
        with pytest.raises(CheckpointStoreError, match="vanished"):
            commit(store, 2)
        assert not path.exists()  # not silently created again


def test_blobs_written_at_once_into_a_new_savepoint_directory_all_land(tmp_path, monkeypatch):
    """A savepoint's blobs are written from several threads into a directory none has created
    yet: one creates it, and the others must not take the fresh directory for a vanished one.
    The race is forced: each writer sees the directory missing before any has created it."""
    import threading

    from raystream.checkpointing.storage import fs_store

    store = open_savepoint_store(str(tmp_path / "sp"))
    writers = 4
    all_looked = threading.Barrier(writers)
    real_isdir = fs_store.os.path.isdir
    first_look: set[int] = set()

    def isdir(path):  # noqa: ANN001, ANN202
        me = threading.get_ident()
        if path == store.root and me not in first_look:
            first_look.add(me)
            missing = not real_isdir(path)
            all_looked.wait(timeout=10)
            return not missing
        return real_isdir(path)

    monkeypatch.setattr(fs_store.os.path, "isdir", isdir)
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            store.write_blob(1, f"blob-{i}", b"x" * 10)
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert len(os.listdir(tmp_path / "sp" / "chk-1")) == writers


def newest_meta_offset(data: bytes) -> int:
    txns = [struct.unpack_from("<Q", data, page * 4096 + 144)[0] for page in (0, 1)]
    return 4096 * txns.index(max(txns))


def corrupt_lmdb(path, how: str) -> None:
    data_file = os.path.join(path, "data.mdb")
    with open(data_file, "rb") as f:
        data = bytearray(f.read())
    meta = newest_meta_offset(bytes(data))
    if how == "meta-flags":  # the main database claims DUPSORT
        struct.pack_into("<H", data, meta + 92, 0x04)
    elif how == "meta-root":  # the root points past the file
        struct.pack_into("<Q", data, meta + 128, 10**9)
    elif how == "both-metas":
        data[0:8192] = b"\xab" * 8192
    elif how == "leaf-pages":  # every leaf node claims duplicates (meta pages stay sane)
        for page in range(2, len(data) // 4096):
            base = page * 4096
            pgno, _, flags, lower = struct.unpack_from("<QHHH", data, base)
            if pgno == page and flags == 0x02:
                for k in range((lower - 16) // 2):
                    node = base + struct.unpack_from("<H", data, base + 16 + 2 * k)[0]
                    struct.pack_into("<H", data, node + 4, 0x04)
    with open(data_file, "r+b") as f:  # in place: a process may have the file mapped
        f.write(bytes(data))


@pytest.mark.parametrize("how", ["meta-flags", "meta-root", "both-metas", "leaf-pages"])
def test_a_damaged_lmdb_store_raises_instead_of_aborting(tmp_path, how):
    path = tmp_path / "store"
    with LmdbCheckpointStore(str(path)) as store:
        for cid in (1, 2, 3):
            commit(store, cid)
    corrupt_lmdb(path, how)
    with pytest.raises(CheckpointStoreError, match="damaged"):
        LmdbCheckpointStore(str(path))
    with pytest.raises(CheckpointStoreError, match="damaged"):
        open_restore_source(f"lmdb://{path}")


def test_lmdb_meta_pages_damaged_while_open_fail_the_next_write(tmp_path):
    path = tmp_path / "store"
    with LmdbCheckpointStore(str(path)) as store:
        commit(store, 1)
        corrupt_lmdb(path, "meta-flags")
        with pytest.raises(CheckpointStoreError, match="damaged"):
            commit(store, 2)


class _CommitsWhileRead:
    """The store's data file, with a commit by another writer (growing the file) just before
    the ``at``-th read of it."""

    def __init__(self, f, env, at: int):
        self.f, self.env, self.at, self.reads = f, env, at, 0

    def read(self, n: int = -1) -> bytes:
        self.reads += 1
        if self.reads == self.at:
            with self.env.begin(write=True) as txn:
                txn.put(b"blob/grown", b"x" * (4096 * 50))
        return self.f.read(n)

    def __getattr__(self, name: str):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("at", [1, 2, 3, 4])
def test_lmdb_meta_check_is_not_fooled_by_a_commit_between_its_reads(tmp_path, monkeypatch, at):
    """Tasks and the job master write one LMDB store from several processes; each checks the
    meta pages before it writes, reading the file without a read transaction. A commit between
    those reads (the file growing, a freed page reused) is not damage."""
    from raystream.checkpointing.storage import lmdb_store

    path = tmp_path / "store"
    with LmdbCheckpointStore(str(path)) as store:
        commit(store, 1)
    env = lmdb.open(str(path), map_size=1 << 30, subdir=True, max_dbs=0)
    try:
        monkeypatch.setattr(
            lmdb_store,
            "open",
            lambda name, mode, **kw: _CommitsWhileRead(open(name, mode, **kw), env, at),
            raising=False,
        )
        check_meta_pages(str(path))
    finally:
        env.close()
    monkeypatch.undo()
    check_meta_pages(str(path))  # and the store is sane


@pytest.mark.parametrize("kind", KINDS)
def test_files_and_directories_are_private(kind, tmp_path):
    path = tmp_path / "store"
    with open_store(location(kind, path)) as store:
        commit(store, 1)
        store.record_committed("job", 1)
    for root, _dirs, files in os.walk(path):
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o700, root
        for name in files:
            if name != "lock.mdb":  # LMDB's lock file holds no data
                assert stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode) == 0o600, name
    key_file = os.path.join(user_root(), "state-key")  # the generated key the store used
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(user_root()).st_mode) == 0o700


def test_state_key_from_the_environment_and_too_short(monkeypatch):
    monkeypatch.setenv("RAYSTREAM_STATE_KEY", "a-deployment-key-of-some-length")
    assert resolve_state_key() == b"a-deployment-key-of-some-length"
    # CheckpointConfig.set_state_key wins over the environment
    assert resolve_state_key("a-configured-key-of-length") == b"a-configured-key-of-length"
    assert resolve_state_key(b"k" * 16) == b"k" * 16
    with pytest.raises(StateKeyError, match="at least 16"):
        resolve_state_key(b"k" * 15)
    monkeypatch.setenv("RAYSTREAM_STATE_KEY", "short")
    with pytest.raises(StateKeyError, match="at least 16"):
        resolve_state_key()


def test_restore_sources_by_path_and_uri(tmp_path):
    with open_store(str(tmp_path / "files")) as store:
        commit(store, 3)
        commit(store, 4)
    with open_store(f"lmdb://{tmp_path / 'db'}") as store:
        commit(store, 5)
    cases = {
        str(tmp_path / "files"): (FsCheckpointStore, None),
        (tmp_path / "files").as_uri(): (FsCheckpointStore, None),
        str(tmp_path / "files" / "chk-3"): (FsCheckpointStore, 3),
        (tmp_path / "files" / "chk-3").as_uri(): (FsCheckpointStore, 3),
        str(tmp_path / "db"): (LmdbCheckpointStore, None),
        f"lmdb://{tmp_path / 'db'}": (LmdbCheckpointStore, None),
    }
    for source, (cls, cid) in cases.items():
        store, wanted = open_restore_source(source)
        try:
            assert (type(store), wanted) == (cls, cid), source
            assert store.newest_valid()[0] is not None
        finally:
            store.close()


# -- on Ray: jobs ---------------------------------------------------------------------------------

N = 6_000


def held(tmp_path) -> str:
    """A file that, while it exists, keeps a job's sources from ending (see ``PacedEvents``)."""
    hold = tmp_path / "source-hold"
    hold.touch()
    return str(hold)


def job(
    tmp_path,
    kind: str,
    name: str,
    uid: str = "sequence-check",
    rate: float = 3000,
    hold: str | None = None,
):
    env = StreamExecutionEnvironment()
    env.set_parallelism(2)
    env.enable_checkpointing(600_000)  # checkpoints only when the test triggers them
    cc = env.get_checkpoint_config()
    cc.set_checkpoint_storage(location(kind, tmp_path / "store"))
    cc.set_num_retained_checkpoints(2)
    env.set_restart_strategy(RestartStrategies.fixed_delay_restart(3, 0))
    stream = (
        env.from_source(PacedEvents(N, rate, hold=hold), source_name="events")
        .key_by(lambda e: e[0])
        .process(SequenceCheck())
        .uid(uid)
        .name("seq")
    )
    return env, stream


def completed_ids(kind: str, path) -> list[int]:
    with open_store(location(kind, path)) as store:
        return store.completed()


def processes_mapping(path) -> list[int]:
    """The processes that have a file under ``path`` mapped (an open LMDB environment)."""
    prefix = os.path.realpath(path) + os.sep
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(os.path.join(entry.path, "maps")) as f:
                if prefix in f.read():
                    found.append(int(entry.name))
        except OSError:  # ended meanwhile, or not ours to read
            continue
    return found


def assert_no_duplicates(values: list) -> None:
    seqs = [v[2] for v in values]
    assert len(seqs) == len(set(seqs)), f"{len(seqs) - len(set(seqs))} duplicated records"


CORRUPTIONS = {
    "flipped-blob": flip_newest_blob,
    "recomputed-digest": lambda kind, path, cid: plant_pickle_with_recomputed_digests(
        kind, path, cid, str(path) + ".planted"
    ),
    "truncated-metadata": truncate_metadata,
}


@pytest.mark.usefixtures("ray_session")
@pytest.mark.timeout(240)
@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
@pytest.mark.parametrize("kind", KINDS)
def test_a_corrupt_committed_checkpoint_fails_the_job_instead_of_duplicating(
    tmp_path, kind, corruption
):
    _, stream = job(tmp_path, kind, "corrupt", hold=held(tmp_path))
    name = f"corrupt-{kind}-{corruption}"
    col = Collector(stream.execute_and_collect(name))
    first = col.client.trigger_checkpoint()["checkpoint_id"]
    second = col.client.trigger_checkpoint()["checkpoint_id"]
    wait_until(lambda: len(col.values) > 0, what="records of committed checkpoints")
    CORRUPTIONS[corruption](kind, tmp_path / "store", second)
    kill_task(name, "seq", attempt=0)
    with pytest.raises(JobExecutionError) as failed:
        col.join()
    text = str(failed.value)
    assert f"newest checkpoint in {location_of(kind, tmp_path)} that verifies is {first}" in text
    assert f"checkpoint {second} was committed" in text and f"checkpoint {second}:" in text
    assert "allow_fallback_past_committed" in text
    assert_no_duplicates(col.values)
    assert col.client.get_checkpoint_stats()["restarts"] == 1  # failed at the first recovery
    assert completed_ids(kind, tmp_path / "store") == [first, second]  # nothing deleted
    assert not os.path.exists(str(tmp_path / "store") + ".planted")


def location_of(kind: str, tmp_path) -> str:
    path = os.path.realpath(tmp_path / "store")
    return f"file://{path}" if kind == "files" else f"lmdb://{path}"


@pytest.mark.usefixtures("ray_session")
@pytest.mark.timeout(240)
def test_lmdb_pages_damaged_mid_run_fail_the_recovery_not_the_job_master(tmp_path):
    _, stream = job(tmp_path, "lmdb", "lmdb-damaged", hold=held(tmp_path))
    col = Collector(stream.execute_and_collect("lmdb-damaged"))
    col.client.trigger_checkpoint()
    wait_until(lambda: len(col.values) > 0, what="records of a committed checkpoint")
    corrupt_lmdb(tmp_path / "store", "leaf-pages")
    kill_task("lmdb-damaged", "seq", attempt=0)
    with pytest.raises(JobExecutionError, match="cannot recover: LMDB checkpoint store .* damaged"):
        col.join()
    assert_no_duplicates(col.values)
    assert col.client.get_checkpoint_stats()["restarts"] == 1  # the job master still answers


@pytest.mark.usefixtures("ray_session")
@pytest.mark.timeout(240)
def test_every_checkpoint_corrupt_fails_instead_of_restarting_empty(tmp_path):
    _, stream = job(tmp_path, "files", "all-corrupt", hold=held(tmp_path))
    col = Collector(stream.execute_and_collect("all-corrupt"))
    only = col.client.trigger_checkpoint()["checkpoint_id"]
    flip_newest_blob("files", tmp_path / "store", only)
    kill_task("all-corrupt", "seq", attempt=0)
    with pytest.raises(JobExecutionError, match=rf"none of its checkpoints \[{only}\]"):
        col.join()
    assert_no_duplicates(col.values)
    assert completed_ids("files", tmp_path / "store") == [only]


@pytest.mark.usefixtures("ray_session")
@pytest.mark.timeout(240)
@pytest.mark.parametrize("kind", KINDS)
def test_a_store_deleted_mid_run_fails_its_checkpoints(tmp_path, kind):
    env, stream = job(tmp_path, kind, "deleted", rate=1000, hold=held(tmp_path))
    env.set_restart_strategy(RestartStrategies.no_restart())
    col = Collector(stream.execute_and_collect(f"deleted-{kind}"))
    col.client.trigger_checkpoint()
    shutil.rmtree(tmp_path / "store")
    with pytest.raises(Exception, match="vanished"):
        col.client.trigger_checkpoint()
    with pytest.raises(JobExecutionError, match="vanished"):
        col.join()
    assert_no_duplicates(col.values)
    assert not (tmp_path / "store").exists()


@pytest.mark.usefixtures("ray_session")
@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", KINDS)
def test_a_failed_resume_keeps_the_retained_checkpoint_and_a_fixed_one_resumes(tmp_path, kind):
    # a job retains its checkpoint when canceled...
    env, stream = job(tmp_path, kind, "first", rate=2000, hold=held(tmp_path))
    env.get_checkpoint_config().set_externalized_checkpoint_retention(
        ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION
    )
    col = Collector(stream.execute_and_collect(f"first-{kind}"))
    retained = col.client.trigger_checkpoint()["checkpoint_id"]
    wait_until(lambda: len(col.values) > 0, what="committed records")
    col.client.cancel()
    with pytest.raises(JobExecutionError, match="canceled"):
        col.join()
    before = col.values  # what checkpoint `retained` released
    store_path = tmp_path / "store"
    assert completed_ids(kind, store_path) == [retained]
    # an ended job's store is closed: no (pooled, reused) process keeps an LMDB store mapped,
    # which would let the next job there open it without the check in a child process
    assert processes_mapping(store_path) == []

    # ...a resume that fails at restore (a uid changed) leaves it alone, same store or not...
    source = location(kind, store_path)
    _, renamed = job(tmp_path, kind, "renamed", uid="renamed")
    with pytest.raises(JobExecutionError, match="sequence-check"):
        list(renamed.execute_and_collect(f"renamed-{kind}", savepoint_path=source))
    assert completed_ids(kind, store_path) == [retained]

    # ...and the fixed job resumes from it: every event exactly once over both runs
    fixed_env, fixed = job(tmp_path, kind, "fixed", rate=50_000)
    # one retained: the job's final checkpoint must not displace the one it resumed from
    fixed_env.get_checkpoint_config().set_num_retained_checkpoints(1)
    after = list(fixed.execute_and_collect(f"fixed-{kind}", savepoint_path=source))
    check_sequences(before + after, N)
    assert completed_ids(kind, store_path) == [retained]  # its own checkpoints went, not that one
    assert processes_mapping(store_path) == []
    with open_store(source) as store:
        blobs = store.load(retained)[1]
        tasks = [decode(data) for name, data in blobs.items() if name.startswith("task-")]
        assert tasks and all(t.checkpoint_id == retained for t in tasks)


@pytest.mark.usefixtures("ray_session")
@pytest.mark.timeout(300)
def retained_two(tmp_path, name: str) -> tuple[Collector, int, int]:
    """A job that took two checkpoints and was canceled; its file store retains both."""
    env, stream = job(tmp_path, "files", name, rate=2000, hold=held(tmp_path))
    env.get_checkpoint_config().set_externalized_checkpoint_retention(
        ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION
    )
    col = Collector(stream.execute_and_collect(name))
    first = col.client.trigger_checkpoint()["checkpoint_id"]
    second = col.client.trigger_checkpoint()["checkpoint_id"]
    col.client.cancel()
    with pytest.raises(JobExecutionError, match="canceled"):
        col.join()
    return col, first, second


def test_resuming_a_store_whose_committed_checkpoint_is_corrupt_is_refused(tmp_path):
    col, first, second = retained_two(tmp_path, "retain-two")
    store_path = tmp_path / "store"
    flip_newest_blob("files", store_path, second)

    # the store's newest valid checkpoint is older than the committed one: refused...
    _, again = job(tmp_path, "files", "again", rate=50_000)
    with pytest.raises(
        JobExecutionError,
        match=rf"newest valid checkpoint is {first}, but "
        rf"checkpoint {second} was committed",
    ):
        list(again.execute_and_collect("again", savepoint_path=str(store_path)))
    # ...while naming the older checkpoint is a deliberate choice, and works
    _, named = job(tmp_path, "files", "named", rate=50_000)
    after = list(
        named.execute_and_collect("named", savepoint_path=str(store_path / f"chk-{first}"))
    )
    assert {v[2] for v in col.values + after} == set(range(N))
    assert len(after) < N  # it started from checkpoint `first`, not from the beginning
    assert completed_ids("files", store_path) == [first, second]  # nothing deleted


@pytest.mark.usefixtures("ray_session")
@pytest.mark.timeout(240)
def test_resuming_past_a_corrupt_checkpoint_with_a_damaged_committed_mark_is_refused(tmp_path):
    col, first, second = retained_two(tmp_path, "mark")
    store_path = tmp_path / "store"
    marks = [p for p in os.listdir(store_path) if p.startswith("_committed.")]
    assert len(marks) == 1, os.listdir(store_path)
    with open(store_path / marks[0], "r+b") as f:  # damaged: which checkpoint is unknown now
        data = f.read()
        f.seek(0)
        f.write(data.replace(str(second).encode(), str(second + 1).encode(), 1))

    # every checkpoint verifies: the newest is restored (nothing newer can have been committed)
    _, intact = job(tmp_path, "files", "intact", rate=50_000)
    after = list(intact.execute_and_collect("intact", savepoint_path=str(store_path)))
    assert {v[2] for v in col.values + after} == set(range(N))
    # the newest does not verify: falling back to `first` might repeat committed effects
    flip_newest_blob("files", store_path, second)
    _, again = job(tmp_path, "files", "again", rate=50_000)
    with pytest.raises(
        JobExecutionError,
        match=rf"newest valid checkpoint is {first}; the newer checkpoint {second}: .*"
        r"committed mark there does not verify",
    ):
        list(again.execute_and_collect("again", savepoint_path=str(store_path)))
    assert completed_ids("files", store_path) == [first, second]  # nothing deleted


@pytest.mark.usefixtures("ray_session")
@pytest.mark.timeout(240)
def test_a_planted_split_enumerator_blob_is_refused(tmp_path):
    from examples.partitioned_log_source import LogSource, LogWriter

    log = LogWriter(str(tmp_path / "log"))
    for p in (0, 1):
        log.append(p, [{"p": p, "i": i, "ts": i} for i in range(100)])
    env = StreamExecutionEnvironment()
    env.set_parallelism(1)
    env.enable_checkpointing(600_000)
    env.get_checkpoint_config().set_checkpoint_storage(str(tmp_path / "store"))
    env.set_restart_strategy(RestartStrategies.fixed_delay_restart(3, 0))
    source = LogSource(str(tmp_path / "log"), discovery_interval_ms=50)
    stream = env.from_source(source, source_name="log").map(lambda r: (r["p"], r["i"]))
    col = Collector(stream.execute_and_collect("planted-enumerator"))
    wait_until(lambda: col.client.metrics()["tasks"], what="the tasks")
    only = col.client.trigger_checkpoint()["checkpoint_id"]
    record = json.loads(read_raw("files", tmp_path / "store", metadata_key("files", only)))
    assert "enumerator-0" in record["metadata"]["blobs"]  # the split enumerator's snapshot
    mark = str(tmp_path / "planted")
    plant_pickle_with_recomputed_digests("files", tmp_path / "store", only, mark, "enumerator-0")
    kill_task("planted-enumerator", "log", attempt=0)
    # the rewritten metadata (enumerator blob handle with recomputed digests) fails its HMAC
    with pytest.raises(JobExecutionError, match=f"checkpoint {only} .*metadata fails its HMAC"):
        col.join()
    assert not os.path.exists(mark)
    assert len(col.values) == len(set(col.values))


class Ballast(MapFunction, CheckpointedFunction):
    """Passes records on. Keeps ``size`` incompressible bytes of operator state (a checkpoint
    that needs room), and its snapshot waits while the file ``hold`` exists (a checkpoint the
    test keeps in progress), after creating ``<hold>.<checkpoint id>``."""

    def __init__(self, size: int = 0, hold: str | None = None):
        self.size = size
        self.hold = hold

    def initialize_state(self, context):
        self.state = context.get_operator_state_store().get_list_state("ballast")
        self.weight = random.Random(7).randbytes(self.size)

    def snapshot_state(self, context):
        if self.hold is not None and os.path.exists(self.hold):
            open(f"{self.hold}.{context.get_checkpoint_id()}", "w").close()
            while os.path.exists(self.hold):
                time.sleep(0.01)
        self.state.update([self.weight] if self.size else [])

    def map(self, value):
        return value


@contextlib.contextmanager
def small_tmpfs(path, size_kb: int):
    """A tmpfs of ``size_kb`` mounted at ``path`` for the test (needs CAP_SYS_ADMIN: root in
    most CI containers); the test is skipped where none can be mounted."""
    path.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0700", "raystream-test"]
    done = subprocess.run([*mount, str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:  # lazily: a process of the test's Ray may still hold a file open there
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path) -> str:
    """Fills the filesystem ``path`` is on with one file; returns the file."""
    filler = os.path.join(path, "filler")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                os.write(fd, b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                return filler
    finally:
        os.close(fd)


@pytest.mark.usefixtures("ray_session")
@pytest.mark.timeout(240)
@pytest.mark.parametrize("kind", KINDS)
def test_a_full_disk_fails_checkpoints_until_there_is_room_again(tmp_path, kind):
    with small_tmpfs(tmp_path / "disk", 8192) as disk:
        hold = held(tmp_path)
        env, stream = job(disk, kind, "full", rate=1500, hold=hold)
        env.get_checkpoint_config().set_tolerable_checkpoint_failure_number(1)
        stream = stream.map(Ballast(size=512 * 1024)).name("ballast")  # per subtask
        col = Collector(stream.execute_and_collect(f"full-{kind}"))
        first = col.client.trigger_checkpoint()["checkpoint_id"]
        filler = fill(disk)
        with pytest.raises(Exception, match="No space left on device"):
            col.client.trigger_checkpoint()
        # the failed checkpoint is removed, the one before it stays whole
        wait_until(lambda: written_ids(kind, disk / "store") == [first], what="the removal")
        with open_store(location(kind, disk / "store")) as store:
            assert store.load(first)[0]["checkpoint_id"] == first
        os.unlink(filler)
        last = col.client.trigger_checkpoint()["checkpoint_id"]
        os.unlink(hold)  # the sources may end now
        check_sequences(col.join(), N)
        stats = col.client.get_checkpoint_stats()
        assert (stats["failed"], stats["restarts"], stats["completed"]) == (1, 0, 3)
        assert last == first + 2


def written_ids(kind: str, path) -> list[int]:
    with open_store(location(kind, path)) as store:
        return store.written()


def committed_rows(out) -> list:
    rows = []
    for name in sorted(os.listdir(out)):
        if not name.startswith("."):
            with open(os.path.join(out, name)) as f:
                rows += [tuple(json.loads(line)) for line in f]
    return rows


@pytest.mark.usefixtures("ray_session")
@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", KINDS)
def test_a_job_master_killed_during_a_checkpoint_loses_nothing_committed(tmp_path, kind):
    out, hold, store_path = tmp_path / "out", tmp_path / "hold", tmp_path / "store"
    env, stream = job(tmp_path, kind, "jm", rate=1000, hold=held(tmp_path))
    env.enable_checkpointing(200)
    stream.map(Ballast(hold=str(hold))).name("hold").sink_to(FileSink.jsonl(str(out)))
    client = env.execute_async(f"jm-killed-{kind}")
    wait_until(lambda: client.get_checkpoint_stats()["completed"] >= 2, what="checkpoints")
    hold.touch()  # the next checkpoint stays in progress...
    reached = wait_until(lambda: list(tmp_path.glob("hold.*")), what="a held checkpoint")
    partial = int(reached[0].suffix[1:])

    def in_progress() -> bool:  # ...with the sources' snapshots written
        with open_store(location(kind, store_path)) as store:
            return partial in store.written() and partial not in store.completed()

    wait_until(in_progress, what="the sources' part of the held checkpoint")
    ray.kill(job_master_actor(client), no_restart=True)
    hold.unlink()
    with pytest.raises(JobExecutionError, match="job master died"):
        client.wait(120)
    before = committed_rows(out)
    assert len(before) == len(set(before)) and before  # committed once, nothing since

    # the store keeps what completed; the checkpoint in progress never counts as complete...
    with open_store(location(kind, store_path)) as store:
        completed = store.completed()
        assert completed and partial not in completed and partial in store.written()
        newest = store.newest_valid()[0]
        assert newest is not None and newest[0] == completed[-1]
    # ...and a resume from the store gives every event exactly once over both runs
    env2, stream2 = job(tmp_path, kind, "jm-resumed", rate=50_000)
    stream2.map(Ballast()).name("hold").sink_to(FileSink.jsonl(str(out)))
    env2.execute(f"jm-resumed-{kind}", savepoint_path=location(kind, store_path))
    check_sequences(committed_rows(out), N)
    assert sorted(os.listdir(out)) == sorted(n for n in os.listdir(out) if not n.startswith("."))
