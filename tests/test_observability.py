"""Watching a job from the outside, on a real ``ray start --head`` cluster on loopback with
Ray's token authentication on: its metrics in the head's Prometheus endpoint (Ray's metrics
agent), its page in ``raystream ui`` driven by headless Chromium, and bad input to ``ui``.

One job feeds every check: ``examples/watched_windows.py``, a paced bounded event-time job
whose counts are known in advance (readings, late readings). While it runs, the page must show
it running with its graph; once it finished, the scraped series and the page's numbers must
equal what ``JobClient.metrics()`` (through ``raystream info --json``) says, and those must
equal the example's own arithmetic.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from html.parser import HTMLParser

import pytest

from examples.watched_windows import late_readings
from tests.ray_cluster import ROOT, free_ports, start_head
from tests.test_cli import RAYSTREAM, ok, raystream, submitted_id, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

COUNT = 40_000  # 20 s at RATE: time to see it running
RATE = 2_000.0
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: set to a path (e.g. docs/ui.png) to keep the screenshot of the running job's page
SCREENSHOT_ENV = "RAYSTREAM_UI_SCREENSHOT"


@pytest.fixture(scope="module")
def cluster():
    # Ray sends recorded metrics to its agent every 10 s by default; 1 s keeps the test short
    c = start_head(extra_env={"RAY_metrics_report_interval_ms": "1000"})
    yield c
    c.stop()


# -- scraping Prometheus text ---------------------------------------------------------------------

_SERIES = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<labels>.*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(port: int) -> list[tuple[str, dict[str, str], float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = []
    for line in text.splitlines():
        m = _SERIES.match(line)
        if m and m["name"].startswith("ray_raystream_"):
            out.append((m["name"], dict(_LABEL.findall(m["labels"])), float(m["value"])))
    return out


def series_of(samples, job_id: str, name: str) -> dict[tuple[str, str], float]:
    """(operator or task, subtask) → value of one metric of one job."""
    got = {}
    for n, labels, value in samples:
        if n == name and labels.get("job_id") == job_id:
            key = (labels.get("operator", labels.get("task", "")), labels.get("subtask", ""))
            got[key] = value
    return got


# -- the page, as Chromium rendered it --------------------------------------------------------------


class Dom(HTMLParser):
    """The elements of a dumped DOM that carry data attributes, with their text."""

    def __init__(self, html: str):
        super().__init__()
        self.elements: list[dict] = []
        self._open: list[dict] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        e = {"tag": tag, **{k: (v or "") for k, v in attrs}, "text": "", "children": []}
        if self._open:
            self._open[-1]["children"].append(e)
        self._open.append(e)
        self.elements.append(e)

    def handle_endtag(self, tag):  # noqa: ANN001
        while self._open:
            if self._open.pop()["tag"] == tag:
                break

    def handle_data(self, data):  # noqa: ANN001
        for e in self._open:
            e["text"] += data

    def find(self, **attrs: str) -> list[dict]:
        return [e for e in self.elements if all(e.get(k) == v for k, v in attrs.items())]

    def fields(self, row: dict) -> dict[str, str]:
        return {c["data-field"]: c["data-value"] for c in row["children"] if "data-field" in c}


def chromium(args: list[str], url: str) -> str:
    profile = tempfile.mkdtemp(prefix="rs-chromium-")
    try:
        proc = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=5000",  # lets the page's script fetch and draw
                *args,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def page(url: str) -> Dom:
    return Dom(chromium(["--dump-dom"], url))


@pytest.fixture
def ui(cluster, tmp_path):
    """``raystream ui`` for the cluster, in a process of its own; yields a function that
    starts it with the given arguments and returns the URL it printed."""
    procs = []

    def start(*args: str) -> str:
        err = tmp_path / f"ui-{len(procs)}.err"
        with open(err, "w") as stderr:
            proc = subprocess.Popen(
                [RAYSTREAM, "ui", *args],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=cluster.env(),
                cwd=ROOT,
            )
        procs.append(proc)
        line = proc.stdout.readline()  # type: ignore[union-attr]  # '' if it exited
        assert line.startswith("raystream ui: http://127.0.0.1:"), (line, err.read_text())
        return line.split(": ", 1)[1].strip()

    yield start
    for proc in procs:
        proc.terminate()
        assert proc.wait(30) == 0  # SIGTERM ends it cleanly


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_a_jobs_metrics_reach_prometheus_and_its_page_matches_them(cluster, ui, tmp_path):
    job_id = submitted_id(
        ok(
            raystream(
                cluster,
                "run",
                "--detached",
                "examples/watched_windows.py",
                "--count",
                str(COUNT),
                "--rate",
                str(RATE),
                "--metrics-interval-ms",
                "500",
            )
        )
    )
    url = ui(job_id)
    base, token = url.split("/jobs/")[0], url.split("token=")[1]

    # the ui answers nothing without the token, and listens on loopback only
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(f"{base}/api/jobs/{job_id}", timeout=10)
    assert denied.value.code == 403

    # Prometheus, while it runs: the tasks' gauges (they describe the running job)
    window = "readings per second -> discard"

    def live_series():  # noqa: ANN202
        samples = scrape(cluster.metrics_port)
        lag = series_of(samples, job_id, "ray_raystream_task_watermark_lag_ms")
        bp = series_of(samples, job_id, "ray_raystream_task_backpressure_ratio")
        rate = series_of(samples, job_id, "ray_raystream_operator_records_in_per_second")
        running = series_of(samples, job_id, "ray_raystream_job_running")
        if set(lag) == {(window, "0"), (window, "1")} and len(bp) == 3 and running:
            return lag, bp, rate, running
        return None

    lag, bp, rate, running = wait_for(live_series, 90, "the running job's gauges")
    assert running == {("", ""): 1.0}
    assert all(0.0 <= v <= 1.0 for v in bp.values())
    assert ("paced readings", "0") in rate and all(v >= 0 for v in rate.values())

    # running: the page shows the job, its graph and numbers that grow
    def running_page() -> Dom | None:
        dom = page(url)
        job = dom.find(id="job")
        rows = dom.find(**{"class": "chain", "data-chain-id": "0"})
        if job and job[0]["data-status"] == "RUNNING" and rows:
            if float(dom.fields(rows[0])["records_in"] or 0) > 0:
                return dom
        return None

    dom = wait_for(running_page, 120, "the page of the running job with records read")
    desc = json.loads(ok(raystream(cluster, "info", job_id, "--json")))["job"]
    nodes = dom.find(**{"class": "node"})
    assert sorted((n["data-chain-id"], n["data-name"], n["data-parallelism"]) for n in nodes) == [
        (str(t["id"]), t["name"], str(t["parallelism"])) for t in desc["tasks"]
    ]
    edges = dom.find(**{"class": "edge"})
    assert [(e["data-src"], e["data-dst"], e["data-partitioner"]) for e in edges] == [
        ("0", "1", "HASH")
    ]
    shot = os.environ.get(SCREENSHOT_ENV) or str(tmp_path / "ui.png")
    chromium(["--hide-scrollbars", "--window-size=1280,1000", f"--screenshot={shot}"], url)
    with open(shot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    # finished: the job's own numbers, as any client reads them
    def finished() -> dict | None:
        info = json.loads(ok(raystream(cluster, "info", job_id, "--json")))
        return info if info["job"]["status"] == "FINISHED" else None

    info = wait_for(finished, 180, "the job to finish")
    ops: dict[tuple[str, str], dict] = {}
    for t in info["metrics"]["tasks"]:
        for name, m in t["operators"].items():
            ops[(name, str(t["subtask"]))] = m
    # ... which are the example's arithmetic: every reading read once, the late ones dropped
    assert ops[("paced readings", "0")]["records_in"] == COUNT
    assert sum(m["records_in"] for (n, _), m in ops.items() if n == "readings per second") == COUNT
    late = sum(
        m["num_late_records_dropped"] for (n, _), m in ops.items() if n == "readings per second"
    )
    assert late == late_readings(COUNT) > 0

    # Prometheus: the head's endpoint has the job's final counts, per operator and subtask
    def final_series():  # noqa: ANN202
        samples = scrape(cluster.metrics_port)
        got = series_of(samples, job_id, "ray_raystream_operator_records_in_total")
        running = series_of(samples, job_id, "ray_raystream_job_running")
        if got == {k: m["records_in"] for k, m in ops.items()} and running == {("", ""): 0.0}:
            return samples
        return None

    samples = wait_for(final_series, 90, "the job's final counts in Prometheus")
    assert series_of(samples, job_id, "ray_raystream_operator_records_out_total") == {
        k: m["records_out"]
        for k, m in ops.items()
        if m["records_out"] > 0  # no counter at 0
    }
    assert series_of(samples, job_id, "ray_raystream_operator_late_records_dropped_total") == {
        k: m["num_late_records_dropped"]
        for k, m in ops.items()
        if m.get("num_late_records_dropped")
    }
    assert series_of(samples, job_id, "ray_raystream_job_restarts") == {("", ""): 0.0}
    completed = series_of(samples, job_id, "ray_raystream_job_checkpoints_completed")
    assert completed == {("", ""): info["checkpoints"]["completed"]} and completed[("", "")] >= 1
    # live series of the tasks, recorded while it ran: consistent with the counts
    sent = series_of(samples, job_id, "ray_raystream_task_bytes_out_total")
    received = series_of(samples, job_id, "ray_raystream_task_bytes_in_total")
    assert set(sent) == {("paced readings", "0")} and sent[("paced readings", "0")] > 0
    assert len(received) == 2 and min(received.values()) > 0
    assert series_of(samples, job_id, "ray_raystream_job_last_checkpoint_size_bytes")
    assert not any("actor" in k.lower() for _, labels, _ in samples for k in labels)

    # the page of the finished job shows the same numbers
    dom = page(url)
    assert dom.find(id="job")[0]["data-status"] == "FINISHED"
    for row in dom.find(**{"class": "operator"}):
        name, shown = row["data-operator"], dom.fields(row)
        per_subtask = [m for (n, _), m in ops.items() if n == name]
        assert int(shown["records_in"]) == sum(m["records_in"] for m in per_subtask)
        assert int(shown["records_out"]) == sum(m["records_out"] for m in per_subtask)
        dropped = sum(m.get("num_late_records_dropped", 0) for m in per_subtask)
        assert int(shown["late_records_dropped"]) == dropped
    assert len(dom.find(**{"class": "operator"})) == 3
    summary = dom.find(id="checkpoint-summary")[0]
    assert int(summary["data-completed"]) == info["checkpoints"]["completed"]
    assert len(dom.find(**{"class": "checkpoint"})) == len(info["checkpoints"]["history"])

    # the list of jobs links to it
    listing = page(f"{base}/?token={token}")
    assert [r["data-job-id"] for r in listing.find(**{"class": "job"})] == [job_id]


def test_ui_of_an_unknown_job_or_a_dead_cluster_fails_at_once(cluster):
    unknown = raystream(cluster, "ui", "no-such-job", timeout=60)
    assert unknown.returncode == 1
    assert "raystream ui: error: JobNotFoundError: no job named 'no-such-job'" in unknown.stderr
    (dead_port,) = free_ports(1)
    dead = raystream(None, "ui", "--address", f"127.0.0.1:{dead_port}", timeout=60)
    assert dead.returncode == 1
    assert f"ClusterUnreachableError: no Ray cluster at 127.0.0.1:{dead_port}" in dead.stderr
    bad = raystream(cluster, "ui", "--interval", "0", timeout=60)
    assert bad.returncode == 1 and "--interval must be positive" in bad.stderr
