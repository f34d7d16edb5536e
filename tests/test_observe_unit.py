"""Watching jobs without Ray: samples, rates, the Ray metrics exporter (into a recording sink),
the graph and its layout, the page's data, the progress line and the ``raystream ui`` server."""

from __future__ import annotations

import io
import json
import threading
import urllib.error
import urllib.request

import pytest

from raystream import StreamExecutionEnvironment
from raystream.core.time import MAX_TS, MIN_TS
from raystream.graph.plan import build_plan
from raystream.observe.graph import expected_records, layout, plan_graph
from raystream.observe.progress import (
    ProgressLine,
    ProgressState,
    format_event_time,
    human_count,
    render,
    should_show,
)
from raystream.observe.ray_export import COUNTERS, GAUGES, JobMetricsExporter
from raystream.observe.samples import (
    CounterTracker,
    increase,
    job_watermark,
    parse,
    rates,
    source_records_read,
    watermark_lag_ms,
)
from raystream.observe.ui import UiServer
from raystream.observe.view import job_view
from raystream.runtime.jobs import JobNotFoundError

# -- what a job master's metrics() answers (the shapes the tests feed in) ---------------------


def live_task(
    chain_id: int,
    chain: str,
    subtask: int,
    ops: dict[str, dict],
    watermark: int = MIN_TS,
    bytes_in: int = 0,
    bytes_sent: int = 0,
    blocked_s: float = 0.0,
    alignment_ms: float = 0.0,
) -> dict:
    return {
        "task": f"{chain} ({subtask + 1}/2)",
        "chain_id": chain_id,
        "chain": chain,
        "subtask": subtask,
        "node": "n",
        "state": "RUNNING",
        "queued_in": 1,
        "bytes_in": bytes_in,
        "watermark": watermark,
        "operators": ops,
        "checkpoints": {
            "taken": 1,
            "sync_ms_max": 2.5,
            "sync_ms_sum": 2.5,
            "alignments": 1,
            "alignment_ms_last": alignment_ms,
            "alignment_ms_sum": alignment_ms,
        },
        "step_records": 16,
        "records_sent": 0,
        "batches_sent": 0,
        "bytes_sent": bytes_sent,
        "backpressured_s": blocked_s,
        "in_flight": 0,
    }


def job_metrics(status: str, tasks: list[dict], restarts: int = 0) -> dict:
    return {"status": status, "job_id": "j1", "restarts": restarts, "tasks": tasks}


def two_tasks(
    src_in: int, win_in: tuple[int, int], late: tuple[int, int], wm: tuple[int, int], **kw
) -> list[dict]:
    """A source chain (id 0, one subtask) feeding a window chain (id 1, two subtasks)."""
    out = [
        live_task(
            0,
            "src",
            0,
            {"src": {"records_in": src_in, "records_out": src_in}},
            bytes_sent=10 * src_in,
            blocked_s=kw.get("blocked_s", 0.0),
        )
    ]
    for i in range(2):
        out.append(
            live_task(
                1,
                "win -> sink",
                i,
                {
                    "win": {
                        "records_in": win_in[i],
                        "records_out": 3,
                        "num_late_records_dropped": late[i],
                    },
                    "sink": {"records_in": 3, "records_out": 0},
                },
                watermark=wm[i],
                bytes_in=5 * win_in[i],
                alignment_ms=1.5,
            )
        )
    return out


GRAPH = {
    "nodes": [
        {
            "id": 0,
            "name": "src",
            "parallelism": 1,
            "operators": ["src"],
            "source": True,
            "expected_records": 1000,
        },
        {
            "id": 1,
            "name": "win -> sink",
            "parallelism": 2,
            "operators": ["win", "sink"],
            "source": False,
            "expected_records": None,
        },
    ],
    "edges": [{"id": 0, "src": 0, "dst": 1, "partitioner": "HASH", "tag": None}],
}


# -- samples ----------------------------------------------------------------------------------


def test_parse_reads_live_and_finished_answers_and_skips_unanswered_tasks():
    live = parse(
        job_metrics("RUNNING", [*two_tasks(100, (40, 50), (1, 2), (MIN_TS, 7)), {"error": "x"}]),
        10.0,
        1000,
    )
    assert [(t.chain_id, t.subtask, t.watermark, t.live) for t in live.tasks] == [
        (0, 0, None, True),  # MIN_TS: no watermark yet
        (1, 0, None, True),
        (1, 1, 7, True),
    ]
    assert live.unanswered == ["x"]
    win1 = next(o for o in live.operators if o.key == (1, 1, "win"))
    assert win1.counters == {"records_in": 50, "records_out": 3, "num_late_records_dropped": 2}
    assert live.tasks[1].counters["bytes_in"] == 200
    assert live.tasks[1].checkpoints["alignment_ms_last"] == 1.5

    finished = parse(
        job_metrics(
            "FINISHED",
            [
                {
                    "task": "src (1)",
                    "chain_id": 0,
                    "chain": "src",
                    "subtask": 0,
                    "state": "FINISHED",
                    "operators": {"src": {"records_in": 5, "records_out": 5}},
                }
            ],
        ),
        11.0,
        2000,
    )
    assert [(t.state, t.live) for t in finished.tasks] == [("FINISHED", False)]
    assert finished.operators[0].counters == {"records_in": 5, "records_out": 5}


def test_rates_are_per_second_between_samples_and_survive_a_restart():
    a = parse(job_metrics("RUNNING", two_tasks(100, (40, 60), (0, 0), (5, 5))), 10.0, 0)
    b = parse(
        job_metrics("RUNNING", two_tasks(300, (140, 160), (0, 0), (5, 5), blocked_s=1.0)),
        12.0,
        0,
    )
    ops, tasks = rates(a, b)
    assert ops[(0, 0, "src")].records_in == 100.0
    assert ops[(1, 0, "win")].records_in == 50.0
    assert ops[(1, 0, "win")].records_out == 0.0
    assert tasks[(0, 0)].backpressure == 0.5
    assert tasks[(0, 0)].bytes_out == 1000.0
    assert tasks[(1, 1)].bytes_in == 250.0
    # a restart: new tasks count from 0, so what they counted is all new
    c = parse(job_metrics("RUNNING", two_tasks(50, (10, 10), (0, 0), (5, 5))), 14.0, 0)
    assert rates(b, c)[0][(0, 0, "src")].records_in == 25.0
    # back-pressure is a share of the interval: never above 1
    d = parse(job_metrics("RUNNING", two_tasks(50, (10, 10), (0, 0), (5, 5), blocked_s=9)), 15, 0)
    assert rates(c, d)[1][(0, 0)].backpressure == 1.0
    assert rates(None, a) == ({}, {})
    assert rates(a, a) == ({}, {})  # no time passed


def test_counter_increments_and_lag():
    assert increase(None, 5) == 5 and increase(5, 8) == 3 and increase(8, 2) == 2
    t = CounterTracker()
    assert [t.add("k", v) for v in (3, 3, 10, 4)] == [3, 0, 7, 4]
    assert t.add("other", 1) == 1
    t.forget()
    assert t.add("k", 6) == 6  # above the last reading (4), yet all new
    assert watermark_lag_ms(1_000, 1_500) == 500
    assert watermark_lag_ms(None, 1_500) is None
    assert watermark_lag_ms(MAX_TS, 1_500) is None  # the input ended: no lag


def test_job_watermark_and_records_read():
    s = parse(job_metrics("RUNNING", two_tasks(100, (40, 60), (0, 0), (9, 7))), 1.0, 0)
    assert job_watermark(s, {1}) == 7
    none_yet = parse(job_metrics("RUNNING", two_tasks(1, (1, 0), (0, 0), (9, MIN_TS))), 1.0, 0)
    assert job_watermark(none_yet, {1}) is None
    done = parse(job_metrics("FINISHED", []), 1.0, 0)
    assert job_watermark(done, {1}) == MAX_TS
    assert source_records_read(s, {0}, {0: "src"}) == 100


# -- the Ray metrics exporter -------------------------------------------------------------------


class RecordingSink:
    """What the exporter would hand to ``ray.util.metrics``: counters summed, gauges last."""

    def __init__(self):
        self.counters: dict[tuple, float] = {}
        self.gauges: dict[tuple, float] = {}

    def inc(self, name, value, tags):  # noqa: ANN001
        assert name in COUNTERS and value > 0
        assert set(tags) == set(COUNTERS[name][1])
        key = (name, tuple(sorted(tags.items())))
        self.counters[key] = self.counters.get(key, 0) + value

    def set(self, name, value, tags):  # noqa: ANN001
        assert name in GAUGES
        assert set(tags) == set(GAUGES[name][1])
        self.gauges[(name, tuple(sorted(tags.items())))] = value

    def get(self, table: dict, name: str, **tags: str) -> float | None:
        for (n, t), v in table.items():
            if n == name and all(dict(t).get(k) == want for k, want in tags.items()):
                return v
        return None


def test_exporter_records_counters_by_increase_and_gauges_as_they_are():
    sink = RecordingSink()
    exp = JobMetricsExporter("j1", "job", sink)
    chains = {0: "src", 1: "win -> sink"}
    ckpt = {
        "completed": 2,
        "failed": 0,
        "last_completed": {"duration_ms": 12.0, "size_bytes": 300},
    }
    exp.update(
        parse(job_metrics("RUNNING", two_tasks(100, (40, 60), (1, 2), (9, 7))), 10.0, 1_000),
        ckpt,
        chains,
    )
    c = sink.counters
    assert sink.get(c, "raystream_operator_records_in", operator="win", subtask="1") == 60
    assert sink.get(c, "raystream_operator_late_records_dropped", subtask="0") == 1
    assert sink.get(c, "raystream_task_bytes_out", task="src") == 1000
    assert sink.get(sink.gauges, "raystream_task_watermark_lag_ms", subtask="1") == 993
    assert sink.get(sink.gauges, "raystream_task_checkpoint_alignment_ms", task="src") == 0.0
    assert sink.get(sink.gauges, "raystream_job_checkpoints_completed") == 2
    assert sink.get(sink.gauges, "raystream_job_running") == 1.0
    assert sink.get(sink.gauges, "raystream_operator_records_in_per_second") is None  # one sample

    # a restart in between: the new tasks count from 0 and the counters go on growing, also
    # where a new task already counted past its predecessor (win 0: 40 before, 45 now)
    exp.update(
        parse(
            job_metrics("RUNNING", two_tasks(30, (45, 20), (1, 2), (9, 7)), restarts=1),
            12.0,
            2_000,
        ),
        ckpt,
        chains,
    )
    assert sink.get(c, "raystream_operator_records_in", operator="src") == 130
    assert sink.get(c, "raystream_operator_records_in", operator="win", subtask="0") == 85
    assert sink.get(c, "raystream_operator_records_in", operator="win", subtask="1") == 80
    assert sink.get(sink.gauges, "raystream_job_restarts") == 1
    assert sink.get(sink.gauges, "raystream_operator_records_in_per_second", operator="src") == 15

    # the job ended: the operators' final counts (the tasks' own numbers are gone)
    final = {
        "status": "FINISHED",
        "job_id": "j1",
        "restarts": 1,
        "tasks": [
            {
                "task": "src (1)",
                "chain_id": 0,
                "chain": "src",
                "subtask": 0,
                "state": "FINISHED",
                "operators": {"src": {"records_in": 45, "records_out": 45}},
            }
        ],
    }
    exp.update(parse(final, 13.0, 3_000), ckpt, chains)
    assert sink.get(c, "raystream_operator_records_in", operator="src") == 145
    assert sink.get(c, "raystream_task_bytes_out", task="src") == 1300  # unchanged
    assert sink.get(sink.gauges, "raystream_job_running") == 0.0
    # Ray drops gauges not recorded for a while: the ended job's own are recorded again, the
    # tasks' and the rates (which described it running) are not
    sink.gauges.clear()
    exp.refresh()
    assert {name for name, _ in sink.gauges} == {
        "raystream_job_running",
        "raystream_job_restarts",
        "raystream_job_checkpoints_completed",
        "raystream_job_checkpoints_failed",
        "raystream_job_last_checkpoint_duration_ms",
        "raystream_job_last_checkpoint_size_bytes",
    }
    assert sink.get(sink.gauges, "raystream_job_running") == 0.0


def test_every_exported_name_is_a_valid_prometheus_name_without_reserved_tags():
    import re

    for name, (desc, tags) in {**COUNTERS, **GAUGES}.items():
        assert re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name) and name.startswith("raystream_")
        assert desc and "actor" not in tags
        # Ray adds these to every series itself
        assert not set(tags) & {"Component", "NodeAddress", "SessionName", "Version", "WorkerId"}


# -- graph and layout ---------------------------------------------------------------------------


def test_plan_graph_has_chains_edges_and_known_record_counts():
    env = StreamExecutionEnvironment()
    env.set_parallelism(2)
    a = env.from_collection(list(range(10))).map(lambda x: x).name("m")
    b = env.from_sequence(1, 5)
    a.union(b).key_by(lambda x: x % 2).reduce(lambda x, y: x + y).name("r").print()
    plan = build_plan("p", env._transformations, env.get_config())
    g = plan_graph(plan)
    names = {n["name"]: n for n in g["nodes"]}
    # the collection reads in parallel slices, chained with its map (no order to keep there)
    assert names["Collection Source -> m"]["expected_records"] == 10
    assert names["Sequence Source"]["expected_records"] == 5
    assert expected_records(g) == 15
    assert [n["operators"] for n in g["nodes"] if n["name"].startswith("r")] == [["r", "Print"]]
    assert sorted(e["partitioner"] for e in g["edges"]) == ["HASH", "HASH"]
    json.dumps(g)  # goes over the wire as it is

    unbounded = StreamExecutionEnvironment()
    unbounded.from_sequence(0, None).print()
    g2 = plan_graph(build_plan("u", unbounded._transformations, unbounded.get_config()))
    assert expected_records(g2) is None


def test_layout_puts_every_edge_left_to_right_without_overlaps():
    g = {
        "nodes": [
            {"id": i, "name": f"n{i}", "parallelism": 1, "operators": [f"n{i}"], "source": i < 2}
            for i in range(5)
        ],
        # two sources, a join of both, one branch of the first source, and a sink after both
        "edges": [
            {"id": 0, "src": 0, "dst": 2, "partitioner": "HASH", "tag": None},
            {"id": 1, "src": 1, "dst": 2, "partitioner": "HASH", "tag": None},
            {"id": 2, "src": 0, "dst": 3, "partitioner": "FORWARD", "tag": "late"},
            {"id": 3, "src": 2, "dst": 4, "partitioner": "REBALANCE", "tag": None},
            {"id": 4, "src": 3, "dst": 4, "partitioner": "REBALANCE", "tag": None},
        ],
    }
    placed = layout(g)
    at = {n["id"]: n for n in placed["nodes"]}
    for e in g["edges"]:
        assert at[e["src"]]["x"] + at[e["src"]]["w"] < at[e["dst"]]["x"]
    boxes = [(n["x"], n["y"]) for n in placed["nodes"]]
    assert len(set(boxes)) == len(boxes)
    for n in placed["nodes"]:
        assert n["x"] + n["w"] <= placed["width"] and n["y"] + n["h"] <= placed["height"]
    assert layout(g) == placed  # deterministic
    assert layout({"nodes": [], "edges": []})["nodes"] == []


# -- the page's data ----------------------------------------------------------------------------


def desc(status: str = "RUNNING") -> dict:
    return {
        "job_id": "j1",
        "job_name": "job",
        "status": status,
        "detached": True,
        "start_time_ms": 1,
        "end_time_ms": None,
        "checkpointing": True,
        "graph": GRAPH,
        "tasks": [{"id": 0, "name": "src", "parallelism": 1}],
    }


def test_job_view_sums_subtasks_and_takes_the_lowest_watermark():
    a = parse(job_metrics("RUNNING", two_tasks(100, (40, 60), (1, 2), (9, 7))), 10.0, 1_000)
    b = parse(
        job_metrics("RUNNING", two_tasks(300, (140, 160), (1, 2), (19, 17), blocked_s=0.5)),
        12.0,
        1_020,
    )
    history = [{"checkpoint_id": i, "kind": "checkpoint", "size_bytes": 1} for i in (1, 2)]
    v = job_view(desc(), b, a, {"completed": 2, "failed": 0, "in_progress": 0, "history": history})
    src, win = v["chains"]
    assert (src["records_in"], src["records_out_per_s"], src["backpressure"]) == (300, 100.0, 0.25)
    assert (win["records_in"], win["records_out"], win["records_in_per_s"]) == (300, 0, 100.0)
    assert (win["watermark"], win["watermark_lag_ms"]) == (17, 1_003)
    assert [s["watermark"] for s in win["subtasks"]] == [19, 17]
    ops = {o["name"]: o for o in v["operators"]}
    assert ops["win"]["late_records_dropped"] == 3 and ops["sink"]["records_in"] == 6
    assert [c["checkpoint_id"] for c in v["checkpoints"]["history"]] == [2, 1]  # newest first
    assert v["graph"]["width"] > 0 and len(v["graph"]["nodes"]) == 2
    json.dumps(v)

    ended = two_tasks(300, (140, 160), (1, 2), (MAX_TS, MAX_TS))
    assert (
        job_view(desc(), parse(job_metrics("RUNNING", ended), 13.0, 0), b, {})["chains"][1][
            "watermark"
        ]
        == "end"
    )  # MAX_TS is no exact JSON number in a browser


# -- progress line --------------------------------------------------------------------------------


class Tty(io.StringIO):
    def isatty(self) -> bool:
        if self.closed:  # as a real stream: a closed one cannot be asked
            raise ValueError("I/O operation on closed file")
        return True


def test_progress_is_shown_on_a_terminal_only_and_never_in_ci():
    assert should_show(Tty(), {})
    assert not should_show(io.StringIO(), {})
    assert not should_show(Tty(), {"CI": "true"})
    assert not should_show(Tty(), {"TERM": "dumb"})
    assert should_show(io.StringIO(), {"RAYSTREAM_PROGRESS": "1", "CI": "1"})
    assert not should_show(Tty(), {"RAYSTREAM_PROGRESS": "0"})
    closed = Tty()
    closed.close()
    assert not should_show(closed, {})


def test_render_shows_bar_counts_rate_and_watermark_and_fits_the_width():
    now = 1_700_000_010_000
    line = render(452_000, 1_000_000, 120_300.0, 1_700_000_007_900, now, 200)
    assert line == (
        "[#####.......]  45%  452,000/1,000,000 records  120k/s  watermark 22:13:27.900  lag 2.1s"
    )
    assert render(7, None, None, None, now, 80) == "7 records"
    assert render(12, 10, 0.0, None, now, 80).startswith("[############] 100%")
    # too wide: parts go from the right, the count stays
    assert render(452_000, 1_000_000, 120_300.0, 1_700_000_007_900, now, 80) == (
        "[#####.......]  45%  452,000/1,000,000 records  120k/s  watermark 22:13:27.900"
    )
    narrow = render(452_000, 1_000_000, 120_300.0, 1_700_000_007_900, now, 50)
    assert narrow == "[#####.......]  45%  452,000/1,000,000 records"
    assert render(1, None, None, MAX_TS, now, 80) == "1 records  watermark end"
    yesterday = render(1, None, None, now - 86_400_000, now, 100)
    assert yesterday == "1 records  watermark 2023-11-13 22:13:30.000  lag 24.0h"
    assert human_count(1234) == "1,234" and human_count(2_345_678) == "2.35M"
    assert format_event_time(MAX_TS) == "end"


def test_progress_state_counts_source_reads_and_their_rate():
    state = ProgressState(GRAPH)
    assert state.total == 1000 and state.sinks == {1}
    first = parse(job_metrics("RUNNING", two_tasks(100, (40, 60), (0, 0), (9, 7))), 10.0, 1_000)
    assert state.line(first, 200).startswith("[#...........]  10%  100/1,000 records  watermark")
    second = parse(job_metrics("RUNNING", two_tasks(300, (40, 60), (0, 0), (9, 7))), 12.0, 1_000)
    assert "300/1,000 records  100/s  watermark" in state.line(second, 200)


class FakeClient:
    """The calls a progress line and the ui make, answered from a script of samples."""

    def __init__(self, answers: list[dict]):
        self.answers = answers
        self.calls = 0

    def describe(self) -> dict:
        return desc(self.answers[min(self.calls, len(self.answers) - 1)]["status"])

    def metrics(self) -> dict:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return answer

    def get_checkpoint_stats(self) -> dict:
        return {"completed": 1, "failed": 0, "in_progress": 0, "history": []}


def test_progress_line_draws_until_stopped_then_clears_its_line():
    stream = Tty()
    client = FakeClient([job_metrics("RUNNING", two_tasks(250, (40, 60), (0, 0), (9, 7)))])
    drawn = threading.Event()

    class Watched(Tty):
        def write(self, s: str) -> int:
            n = stream.write(s)
            if "250/1,000 records" in s:
                drawn.set()
            return n

    line = ProgressLine(client, Watched(), refresh_s=0.01).start()
    assert drawn.wait(30)
    line.stop()
    out = stream.getvalue()
    assert out.startswith("\r[###.........]  25%  250/1,000 records")
    last = out.rsplit("\r", 2)
    assert last[-1] == "" and last[-2].strip() == ""  # the line is blanked out at the end


# -- the ui server --------------------------------------------------------------------------------


@pytest.fixture
def ui_server():
    clients = {
        "j1": FakeClient(
            [
                job_metrics("RUNNING", two_tasks(100, (40, 60), (1, 2), (9, 7))),
                job_metrics("RUNNING", two_tasks(300, (140, 160), (1, 2), (19, 17))),
            ]
        )
    }

    def attach(job: str):  # noqa: ANN202
        if job not in clients:
            raise JobNotFoundError(f"no job named {job!r} or with that id on the cluster")
        return clients[job]

    jobs = [{"job_id": "j1", "job_name": "job", "status": "RUNNING"}]
    server = UiServer(attach, lambda: jobs, port=0, interval_s=0.0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    thread.join(10)


def get(url: str) -> tuple[int, str, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def test_ui_serves_loopback_only_with_the_token(ui_server):
    host, port = ui_server.address
    assert host == "127.0.0.1"
    assert ui_server.url("j1") == f"http://127.0.0.1:{port}/jobs/j1?token={ui_server.token}"
    code, body, _ = get(f"http://127.0.0.1:{port}/api/jobs/j1")
    assert code == 403 and "token" in body
    assert get(f"http://127.0.0.1:{port}/jobs/j1?token=wrong")[0] == 403

    code, page, headers = get(ui_server.url("j1"))
    assert code == 200 and "<svg" not in page and "/api/jobs/" in page  # drawn by its script
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["Referrer-Policy"] == "no-referrer"
    q = f"?token={ui_server.token}"
    code, body, _ = get(f"http://127.0.0.1:{port}/api/jobs{q}")
    assert code == 200 and json.loads(body)["jobs"][0]["job_id"] == "j1"


def test_ui_data_has_rates_between_samples_and_names_unknown_jobs(ui_server):
    _, port = ui_server.address
    q = f"?token={ui_server.token}"
    first = json.loads(get(f"http://127.0.0.1:{port}/api/jobs/j1{q}")[1])
    assert first["chains"][0]["records_in"] == 100
    assert first["chains"][0]["records_in_per_s"] is None  # one sample: no rate yet
    second = json.loads(get(f"http://127.0.0.1:{port}/api/jobs/j1{q}")[1])
    assert second["chains"][0]["records_in"] == 300
    assert second["chains"][0]["records_in_per_s"] > 0
    code, body, _ = get(f"http://127.0.0.1:{port}/api/jobs/nope{q}")
    assert code == 502 and "JobNotFoundError: no job named 'nope'" in json.loads(body)["error"]
    assert get(f"http://127.0.0.1:{port}/elsewhere{q}")[0] == 404
