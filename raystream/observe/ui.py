"""Internal: ``raystream ui`` — a small web server on loopback with a page per job.

The server runs in the process of the command, which joins the Ray cluster as any client does
(``--address``, ``RAY_ADDRESS``, Ray's token authentication): it adds no port to the cluster and
nothing to the job. It binds ``127.0.0.1`` unless told otherwise (``--host``), and every request
must carry the session's secret, which the command prints as part of the URL (``?token=...``; the
page passes it on to its data requests), so other users of the machine cannot read the job's
numbers through it. On a cluster, run it where the head's Ray port is reachable (on the head
node, or through ``ray attach`` / the dashboard's SSH tunnel) and open the URL through the same
tunnel.

Routes: ``/`` the list of jobs, ``/jobs/<job id>`` a job's page (the same static page; its script
polls the JSON), ``/api/jobs`` and ``/api/jobs/<job id>`` the data. A job is sampled at most
once per ``interval_s`` however many pages poll it; rates are between successive samples.
"""

from __future__ import annotations

import hmac
import http.server
import importlib.resources
import json
import logging
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from raystream.observe.samples import JobSample, parse
from raystream.observe.view import job_view

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_INTERVAL_S = 1.0


class JobWatch:
    """One job as the page sees it: sampled at most every ``interval_s``; the previous sample
    gives the rates. ``client`` is a ``JobClient``."""

    def __init__(
        self,
        client: Any,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ):
        self.client = client
        self.interval_s = interval_s
        self.clock = clock
        self.wall_ms = wall_ms
        self._lock = threading.Lock()
        self._desc: dict[str, Any] | None = None
        self._prev: JobSample | None = None
        self._view: dict[str, Any] | None = None
        self._at = 0.0

    def view(self) -> dict[str, Any]:
        with self._lock:
            now = self.clock()
            if self._view is not None and now - self._at < self.interval_s:
                return self._view
            if self._desc is None or self._desc["status"] not in ("FINISHED", "FAILED", "CANCELED"):
                self._desc = self.client.describe()
            assert self._desc is not None
            metrics = self.client.metrics()
            checkpoints = self.client.get_checkpoint_stats()
            sample = parse(metrics, self.clock(), self.wall_ms())
            self._view = job_view(self._desc, sample, self._prev, checkpoints)
            self._prev, self._at = sample, now
            return self._view


class UiServer:
    """The HTTP server of ``raystream ui``; ``attach(job)`` gives a ``JobClient`` (by id or
    name), ``list_jobs()`` the cluster's jobs as dicts."""

    def __init__(
        self,
        attach: Callable[[str], Any],
        list_jobs: Callable[[], list[dict[str, Any]]],
        host: str = DEFAULT_HOST,
        port: int = 0,
        interval_s: float = DEFAULT_INTERVAL_S,
        token: str | None = None,
    ):
        self.attach = attach
        self.list_jobs = list_jobs
        self.interval_s = interval_s
        self.token = token or secrets.token_urlsafe(24)
        self._watches: dict[str, JobWatch] = {}
        self._lock = threading.Lock()
        handler = _make_handler(self)
        self.httpd = http.server.ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def url(self, job_id: str | None = None) -> str:
        host, port = self.address
        if ":" in host:
            host = f"[{host}]"
        path = f"/jobs/{urllib.parse.quote(job_id)}" if job_id else "/"
        return f"http://{host}:{port}{path}?token={self.token}"

    def watch(self, job_id: str) -> JobWatch:
        with self._lock:
            w = self._watches.get(job_id)
            if w is None:
                w = JobWatch(self.attach(job_id), self.interval_s)
                self._watches[job_id] = w
            return w

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def authorized(self, query: dict[str, list[str]]) -> bool:
        given = (query.get("token") or [""])[0]
        return hmac.compare_digest(given.encode(), self.token.encode())


def page_html() -> bytes:
    return importlib.resources.files("raystream.observe").joinpath("ui_page.html").read_bytes()


_SECURITY_HEADERS = {
    # the page loads nothing from elsewhere and may not be framed; the token is in the URL,
    # so no referrer leaves the page
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def _make_handler(server: UiServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "raystream-ui"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("ui: " + format, *args)

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in _SECURITY_HEADERS.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, data: Any) -> None:
            body = json.dumps(data, default=str).encode()
            self._send(code, body, "application/json")

        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            if not server.authorized(query):
                self._send(
                    403,
                    b"raystream ui: open the URL the command printed (it holds the token)\n",
                    "text/plain; charset=utf-8",
                )
                return
            parts = [urllib.parse.unquote(p) for p in url.path.split("/") if p]
            try:
                if parts in ([], ["jobs"]) or (len(parts) == 2 and parts[0] == "jobs"):
                    self._send(200, page_html(), "text/html; charset=utf-8")
                elif parts == ["api", "jobs"]:
                    self._json(200, {"jobs": server.list_jobs()})
                elif len(parts) == 3 and parts[:2] == ["api", "jobs"]:
                    self._json(200, server.watch(parts[2]).view())
                else:
                    self._json(404, {"error": f"no such page: {url.path}"})
            except Exception as exc:  # the job went away, the cluster is unreachable, ...
                self._json(502, {"error": f"{type(exc).__name__}: {_first_line(exc)}"})

    return Handler


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""
