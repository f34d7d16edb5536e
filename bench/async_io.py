"""Async I/O benchmark: unordered_wait against a loopback server that answers after 10 ms.

    python bench/async_io.py                              # p=1 and p=2, capacity 100
    python bench/async_io.py --requests 40000 --parallelism 1 2 --capacity 100 --latency-ms 10

The server is an asyncio TCP server in a child process on 127.0.0.1 (a free port): one
newline-terminated integer per request, answered on the same connection after ``latency_ms``;
requests are independent, so one connection carries many at once. Each subtask of the job keeps
one connection and at most ``capacity`` requests in flight, so its bound is ``capacity /
latency`` requests/s (10 000/s for 100 and 10 ms). Printed per parallelism: requests/s in the
steady phase (first to last result at the sinks) and over the whole job, as a fraction of the
bound (``p × capacity / latency``) and of the bound at the mean latency the requests actually
saw (on a loaded machine the server answers late: this tells whether the operator kept
``capacity`` requests in flight); and a sequential ``await`` loop (one request at a time, the
code a map function calling the service would amount to) for comparison. Report ``uptime`` next
to the numbers: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import subprocess
import time
from typing import Any

import ray

from raystream import AsyncDataStream, AsyncFunction, StreamExecutionEnvironment
from raystream.operators.sinks import Sink, SinkWriter

# -- the server ---------------------------------------------------------------------------------


def _serve(latency_s: float, port_pipe: Any) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        rest = b""
        while chunk := await reader.read(1 << 16):
            data = rest + chunk
            cut = data.rfind(b"\n") + 1
            rest = data[cut:]
            if cut:  # every complete request of this read is answered latency_s later
                loop.call_later(latency_s, writer.write, data[:cut])
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=64)
        port_pipe.send(server.sockets[0].getsockname()[1])
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def start_server(latency_ms: float) -> tuple[multiprocessing.Process, int]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(latency_ms / 1000.0, child), daemon=True)
    proc.start()
    if not parent.poll(30):
        proc.kill()
        raise RuntimeError("the benchmark server did not start")
    return proc, int(parent.recv())


# -- the client: one connection per subtask, requests matched by their number ----------------------


class LoopbackClient(AsyncFunction):
    """Requests written in one ``write`` per event-loop iteration, answers read in chunks (as
    an HTTP/2 or gRPC client multiplexes a connection)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._writer: asyncio.StreamWriter | None = None
        self._waiting: dict[bytes, asyncio.Future] = {}
        self._connecting: asyncio.Lock | None = None
        self._out: list[bytes] = []

    async def _connect(self) -> None:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._writer is None:
                reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
                asyncio.ensure_future(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        waiting = self._waiting
        rest = b""
        while chunk := await reader.read(1 << 16):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                fut = waiting.pop(line, None)
                if fut is not None and not fut.done():
                    fut.set_result(time.perf_counter())

    def _flush(self) -> None:
        self._writer.write(b"".join(self._out))  # type: ignore[union-attr]
        self._out.clear()

    async def async_invoke(self, value: int) -> list:
        if self._writer is None:
            await self._connect()
        key = b"%d" % value
        fut = asyncio.get_running_loop().create_future()
        self._waiting[key] = fut
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(key + b"\n")
        sent = time.perf_counter()
        return [(value, await fut - sent)]  # the record and the latency it saw

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


# -- measurements ---------------------------------------------------------------------------------


class _CountingWriter(SinkWriter):
    def __init__(self) -> None:
        self.count = 0
        self.first: float | None = None
        self.last: float | None = None
        self.latency_s = 0.0

    def write(self, batch: Any) -> None:
        now = time.time()
        if self.first is None:
            self.first = now
        self.count += len(batch.values)
        self.latency_s += sum(latency for _, latency in batch.values)
        self.last = now

    def result(self) -> tuple:
        return (self.count, self.first, self.last, self.latency_s)


class CountingSink(Sink):
    def create_writer(self, context: Any) -> SinkWriter:
        return _CountingWriter()


def run_job(port: int, n: int, parallelism: int, capacity: int) -> dict:
    env = StreamExecutionEnvironment()
    env.set_parallelism(parallelism)
    AsyncDataStream.unordered_wait(
        env.from_sequence(0, n - 1), LoopbackClient(port), 30_000, capacity=capacity
    ).sink_to(CountingSink()).name("sink")
    t0 = time.perf_counter()
    result = env.execute(f"bench-async-io-p{parallelism}")
    total_s = time.perf_counter() - t0
    parts = [r for r in result.get_sink_result("sink") if r[0]]
    count = sum(p[0] for p in parts)
    steady_s = max(p[2] for p in parts) - min(p[1] for p in parts)
    latency_s = sum(p[3] for p in parts) / count
    return {"count": count, "total_s": total_s, "steady_s": steady_s, "latency_s": latency_s}


def sequential_loop(port: int, n: int) -> float:
    """Requests/s of ``for x in xs: await call(x)`` with the same client."""

    async def main() -> float:
        client = LoopbackClient(port)
        t0 = time.perf_counter()
        for i in range(n):
            [(got, _)] = await client.async_invoke(i)
            assert got == i
        elapsed = time.perf_counter() - t0
        client.close()
        return n / elapsed

    return asyncio.run(main())


def main() -> None:
    ap = argparse.ArgumentParser(description="unordered_wait vs capacity/latency")
    ap.add_argument("--requests", type=int, default=40_000, help="requests per subtask")
    ap.add_argument("--parallelism", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--capacity", type=int, default=100)
    ap.add_argument("--latency-ms", type=float, default=10.0)
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()

    server, port = start_server(args.latency_ms)
    ray.init(include_dashboard=False, log_to_driver=False)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, Ray {ray.__version__}\nload before: {load}"
    )
    seq = sequential_loop(port, 300)
    per_subtask_bound = args.capacity / (args.latency_ms / 1000.0)
    print(
        f"server latency {args.latency_ms} ms; sequential await loop {seq:.0f} req/s; bound "
        f"{per_subtask_bound:.0f} req/s per subtask (capacity {args.capacity})"
    )
    rows = []
    try:
        for p in args.parallelism:
            n = args.requests * p
            r = run_job(port, n, p, args.capacity)
            assert r["count"] == n, (p, r["count"], n)
            bound = p * per_subtask_bound
            seen = p * args.capacity / r["latency_s"]  # the bound at the latency requests saw
            steady, total = n / r["steady_s"], n / r["total_s"]
            rows.append(
                {
                    "parallelism": p,
                    "requests": n,
                    "steady_req_per_s": steady,
                    "total_req_per_s": total,
                    "bound_req_per_s": bound,
                    "steady_vs_bound": steady / bound,
                    "mean_latency_ms": r["latency_s"] * 1000,
                    "steady_vs_bound_at_seen_latency": steady / seen,
                    "total_vs_bound": total / bound,
                    "sequential_req_per_s": seq,
                }
            )
            print(
                f"  p={p}: steady {steady:.0f} req/s = {steady / bound:.2f}x bound, "
                f"{steady / seq:.0f}x sequential; whole job {total:.0f} req/s "
                f"({total / bound:.2f}x bound, {r['total_s']:.1f} s); requests saw "
                f"{r['latency_s'] * 1000:.1f} ms on average: {steady / seen:.2f}x the bound at "
                "that latency"
            )
    finally:
        load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        print(f"load after: {load}")
        ray.shutdown()
        server.kill()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
