"""A real Ray cluster (``ray start --head``) on loopback, for tests that work from the outside.

It has its own temp dir and its own free ports on 127.0.0.1, and is stopped through the process
that started it (``ray start --block``, interrupted: it takes its own processes down), never with
``ray stop``, which would stop every other Ray session on the machine.
"""

from __future__ import annotations

import os
import pathlib
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parent.parent


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports that were free on 127.0.0.1 a moment ago."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _free_port_range(width: int) -> tuple[int, int]:
    """A run of ``width`` ports none of which is bound now (for Ray's worker ports)."""
    for low in range(41000, 60000, width):
        try:
            held = []
            for p in range(low, low + width):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", p))
            return low, low + width - 1
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError("no free port range for Ray workers")


@dataclass
class RayCluster:
    address: str
    temp_dir: str
    proc: subprocess.Popen
    log_path: str
    #: Ray's token authentication, with a token of this cluster's own
    auth_env: dict[str, str]
    #: the head's Prometheus endpoint (Ray's metrics agent): http://127.0.0.1:<port>/metrics
    metrics_port: int = 0
    #: the dashboard's HTTP port (job submission API), when started with ``dashboard=True``
    dashboard_port: int = 0

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a process that is to use this cluster (and only it)."""
        env = dict(os.environ)
        env["RAY_ADDRESS"] = self.address
        env.update(self.auth_env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        env.update(extra)
        return env

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # --block: kills the processes it started
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout_s)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def start_head(
    num_cpus: int = 2,
    timeout_s: float = 60.0,
    extra_env: dict[str, str] | None = None,
    dashboard: bool = False,
) -> RayCluster:
    """Starts a head node and returns once a driver can connect to it. ``extra_env`` goes to
    the head's processes (and so to its workers), e.g. ``RAY_<setting>`` of Ray's config;
    ``dashboard``: with Ray's dashboard on 127.0.0.1 (``ray job submit`` talks to it)."""
    temp_dir = tempfile.mkdtemp(prefix="rsc-", dir="/tmp")  # short: Ray's socket paths are
    gcs, nm, om, agent_http, agent_grpc, metrics, rt_env, api = free_ports(8)  # length-capped
    low, high = _free_port_range(40)
    cmd = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--head",
        "--block",
        "--disable-usage-stats",
        "--node-ip-address=127.0.0.1",
        f"--port={gcs}",
        f"--node-manager-port={nm}",
        f"--object-manager-port={om}",
        f"--dashboard-agent-listen-port={agent_http}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--metrics-export-port={metrics}",
        f"--runtime-env-agent-port={rt_env}",
        f"--min-worker-port={low}",
        f"--max-worker-port={high}",
        f"--include-dashboard={'true' if dashboard else 'false'}",
        "--dashboard-host=127.0.0.1",
        # Ray starts its API server anyway (jobs, metrics); not on the default 8265, which
        # another cluster on the machine may hold
        f"--dashboard-port={api}",
        f"--num-cpus={num_cpus}",
        f"--temp-dir={temp_dir}",
    ]
    token_path = os.path.join(temp_dir, "auth_token")
    with open(token_path, "w") as f:
        f.write(secrets.token_hex(32))
    os.chmod(token_path, 0o600)
    auth_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token_path}
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_TOKEN", None)
    env.update(auth_env)
    # workers inherit the raylet's environment: tests/ and examples/ importable by name there
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra_env or {})
    log_path = os.path.join(temp_dir, "ray-start.log")
    log = open(log_path, "w")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    log.close()
    cluster = RayCluster(
        f"127.0.0.1:{gcs}", temp_dir, proc, log_path, auth_env, metrics, api if dashboard else 0
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = pathlib.Path(log_path).read_text()
            cluster.stop()
            raise RuntimeError(f"ray start failed ({proc.returncode}):\n{text[-3000:]}")
        if "This command will now block" in pathlib.Path(log_path).read_text():
            return cluster
        time.sleep(0.2)
    cluster.stop()
    raise RuntimeError(f"ray start did not come up in {timeout_s} s")
