"""The ``raystream`` command: run job scripts and operate a cluster's jobs from the outside, as
Flink's ``flink run/list/info/savepoint/stop/cancel``.

    raystream run [--detached] [--from-savepoint PATH] [--allow-non-restored-state] SCRIPT [ARGS]
    raystream list [--all] [--json]
    raystream info JOB [--json]
    raystream cancel JOB
    raystream savepoint JOB DIR
    raystream stop JOB --savepoint DIR
    raystream checkpoints JOB [--json]
    raystream ui [JOB] [--port N] [--host ADDRESS] [--open]

Every command takes ``--address`` as Ray's command line does (default: ``RAY_ADDRESS``, else the
cluster running on this machine). ``JOB`` is a job id (or a unique prefix of 6+ characters) or a
job name (the running job of that name; if none runs, the newest that ended and is still kept).

``run`` starts ``python SCRIPT ARGS`` with the settings in its environment, where the script's
``execute``/``execute_async`` picks them up: ``RAYSTREAM_DETACHED=1`` (``--detached``: the job
is submitted detached and ``execute()`` returns at once), ``RAYSTREAM_SAVEPOINT_PATH`` and
``RAYSTREAM_ALLOW_NON_RESTORED_STATE`` (the restore every job of the script starts from unless it
names its own), ``RAY_ADDRESS`` (``--address``). Exit codes: 0 done, 1 the operation failed
(unknown job, unreachable cluster, failed savepoint, ...; a message on stderr), 2 bad usage;
``run`` exits with the script's own code.

``ui`` serves a live page per job on ``127.0.0.1`` (``raystream.observe.ui``) and prints its
URL, which holds a secret token; it runs until interrupted (Ctrl-C), then exits with 0.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from raystream.errors import RaystreamError

#: seconds a command waits for a job master's answer (a savepoint: for it to complete)
DEFAULT_TIMEOUT_S = 120.0
#: the longest the web page's data request waits for a job master
UI_CALL_TIMEOUT_S = 15.0

_MIN_TS = -(2**63)


class CliError(RaystreamError):
    """A failed operation: its message goes to stderr, the exit code is 1."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        _err(args, str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a raystream or Ray error: one clear line, no traceback
        _err(args, _describe(exc))
        return 1


def _err(args: argparse.Namespace, message: str) -> None:
    print(f"raystream {args.command}: error: {message}", file=sys.stderr)


def _describe(exc: BaseException) -> str:
    """The error a job master raised (without Ray's wrapper), as one line: type and message."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


# -- parser ----------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--address",
        default=None,
        help="the Ray cluster (host:port of its head); default: RAY_ADDRESS, else the cluster "
        "running on this machine",
    )
    timed = argparse.ArgumentParser(add_help=False, parents=[common])
    timed.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds to wait for the job's answer (default {DEFAULT_TIMEOUT_S:g})",
    )
    timed.add_argument(
        "--token",
        default=None,
        help="the job's control token, for cancel/savepoint/stop (default: RAYSTREAM_JOB_TOKEN, "
        "else the one kept when this user submitted the job detached on this machine)",
    )
    parser = argparse.ArgumentParser(
        prog="raystream", description="Run raystream job scripts and operate running jobs."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="run a job script")
    run.add_argument("--detached", "-d", action="store_true", help="submit its jobs detached")
    run.add_argument("--from-savepoint", "-s", metavar="PATH", help="start from this savepoint")
    run.add_argument(
        "--allow-non-restored-state",
        "-n",
        action="store_true",
        help="drop savepoint state of operators the job no longer has",
    )
    run.add_argument("script")
    run.add_argument("script_args", nargs=argparse.REMAINDER, metavar="ARGS")
    run.set_defaults(func=_run)

    ls = sub.add_parser("list", parents=[timed], help="list the cluster's jobs")
    ls.add_argument("--all", "-a", action="store_true", help="also ended jobs still kept")
    ls.add_argument("--json", action="store_true", help="one JSON document")
    ls.set_defaults(func=_list)

    info = sub.add_parser("info", parents=[timed], help="plan, tasks, checkpoints of a job")
    info.add_argument("job")
    info.add_argument("--json", action="store_true", help="one JSON document")
    info.set_defaults(func=_info)

    cancel = sub.add_parser("cancel", parents=[timed], help="cancel a job")
    cancel.add_argument("job")
    cancel.set_defaults(func=_cancel)

    sp = sub.add_parser("savepoint", parents=[timed], help="write a savepoint of a job")
    sp.add_argument("job")
    sp.add_argument("directory")
    sp.set_defaults(func=_savepoint)

    stop = sub.add_parser("stop", parents=[timed], help="stop a job with a savepoint")
    stop.add_argument("job")
    stop.add_argument("--savepoint", "-p", required=True, metavar="DIR")
    stop.add_argument(
        "--drain",
        "-d",
        action="store_true",
        help="advance event time to the end before the savepoint (not supported yet)",
    )
    stop.set_defaults(func=_stop)

    cps = sub.add_parser("checkpoints", parents=[timed], help="checkpoint statistics of a job")
    cps.add_argument("job")
    cps.add_argument("--json", action="store_true", help="one JSON document")
    cps.set_defaults(func=_checkpoints)

    ui = sub.add_parser(
        "ui", parents=[timed], help="serve a live web page of a job (or of every job) on loopback"
    )
    ui.add_argument("job", nargs="?", help="open this job's page (default: the list of jobs)")
    ui.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    ui.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: only this machine; anything else lets "
        "whoever reaches it and holds the URL read the jobs' numbers)",
    )
    ui.add_argument(
        "--interval", type=float, default=1.0, help="seconds between samples of a job (default 1)"
    )
    ui.add_argument("--open", action="store_true", help="open the page in a web browser")
    ui.set_defaults(func=_ui)
    return parser


# -- commands --------------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    from raystream.api import environment as envmod
    from raystream.runtime.jobs import ClusterUnreachableError, connect_probe

    if not os.path.isfile(args.script):
        raise CliError(f"no such script: {args.script}")
    env = dict(os.environ)
    if args.address:
        try:
            connect_probe(args.address)
        except ClusterUnreachableError as exc:
            raise CliError(str(exc)) from None
        env["RAY_ADDRESS"] = args.address
    if args.detached:
        env[envmod.ENV_DETACHED] = "1"
    if args.from_savepoint:
        env[envmod.ENV_SAVEPOINT_PATH] = _absolute(args.from_savepoint)
    if args.allow_non_restored_state:
        env[envmod.ENV_ALLOW_NON_RESTORED_STATE] = "1"
    with tempfile.TemporaryDirectory(prefix="raystream-run-") as tmp:
        submitted = os.path.join(tmp, "submitted.jsonl")
        env[envmod.ENV_SUBMITTED_JOBS_FILE] = submitted
        code = subprocess.call([sys.executable, args.script, *args.script_args], env=env)
        jobs = []
        if os.path.exists(submitted):
            with open(submitted) as f:
                jobs = [json.loads(line) for line in f if line.strip()]
    for job in jobs:
        print(f"Job has been submitted with JobID {job['job_id']} ({job['job_name']})")
    if args.detached and not jobs and code == 0:
        print(f"raystream run: {args.script} submitted no job", file=sys.stderr)
    return code


def _list(args: argparse.Namespace) -> int:
    from raystream.runtime import jobs

    _connect(args)
    found = jobs.scan()
    rows = [j.info for j in found if j.info is not None and (args.all or not j.is_terminal)]
    for j in found:
        if j.info is None:
            print(f"warning: job master {j.actor_name} does not answer", file=sys.stderr)
    if args.json:
        print(json.dumps([_summary(i) for i in rows], indent=1))
        return 0
    if not rows:
        print("No running jobs." if not args.all else "No jobs.")
        return 0
    header = ("JOB ID", "NAME", "STATUS", "STARTED", "DETACHED")
    table = [header] + [
        (
            i["job_id"],
            i["job_name"],
            i["status"],
            _time(i["start_time_ms"]),
            "yes" if i["detached"] else "no",
        )
        for i in rows
    ]
    widths = [max(len(str(r[k])) for r in table) for k in range(len(header))]
    for r in table:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
    return 0


def _info(args: argparse.Namespace) -> int:
    client = _attach(args)
    desc = client.describe()
    stats = client.get_checkpoint_stats()
    metrics = client.metrics()
    if args.json:
        print(json.dumps({"job": desc, "checkpoints": stats, "metrics": metrics}, default=str))
        return 0
    print(f"Job {desc['job_id']} ({desc['job_name']!r}): {desc['status']}")
    print(f"  started {_time(desc['start_time_ms'])}", end="")
    if desc["end_time_ms"]:
        print(f", ended {_time(desc['end_time_ms'])}", end="")
    print(", detached" if desc["detached"] else ", attached to its driver")
    if desc["restored_from_savepoint"]:
        print(f"  started from savepoint {desc['restored_from_savepoint']}")
    print(f"  restarts: {stats['restarts']}")
    print("Plan:")
    for line in desc["plan"].splitlines():
        print(f"  {line}")
    print("Tasks:")
    for t in metrics["tasks"]:
        if "error" in t:
            print(f"  (a task did not answer: {t['error']})")
            continue
        parts = [t["state"]]
        if "watermark" in t:
            wm = t["watermark"]
            parts.append("watermark " + ("none yet" if wm is None or wm <= _MIN_TS else str(wm)))
        if "queued_in" in t:
            parts.append(f"queued in {t['queued_in']}")
        if "backpressured_s" in t:
            parts.append(f"back-pressured {t['backpressured_s']:.2f} s")
        print(f"  {t['task']}: {', '.join(parts)}")
        for op, m in t.get("operators", {}).items():
            counts = ", ".join(f"{k} {v}" for k, v in m.items() if isinstance(v, (int, float)))
            print(f"    {op}: {counts}")
    _print_checkpoints(stats, desc["checkpointing"], brief=True)
    return 0


def _cancel(args: argparse.Namespace) -> int:
    client = _attach(args)
    before = client.get_job_status().value
    if before in ("FINISHED", "FAILED", "CANCELED"):
        raise CliError(f"job {client.job_id} ({client.job_name!r}) is {before}: nothing to cancel")
    status = client.cancel().value
    print(f"Cancelled job {client.job_id} ({client.job_name!r}): {status}")
    return 0


def _savepoint(args: argparse.Namespace) -> int:
    client = _attach(args)
    path = client.trigger_savepoint(_absolute(args.directory))
    print(f"Savepoint completed. Path: {path}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    if args.drain:
        raise CliError(
            "--drain is not supported yet (it would advance event time to the end, firing all "
            "timers, before the savepoint); stop without it"
        )
    client = _attach(args)
    path = client.stop_with_savepoint(_absolute(args.savepoint))
    print(f"Savepoint completed. Path: {path}")
    print(f"Stopped job {client.job_id} ({client.job_name!r})")
    return 0


def _checkpoints(args: argparse.Namespace) -> int:
    client = _attach(args)
    stats = client.get_checkpoint_stats()
    if args.json:
        print(json.dumps(stats, default=str))
        return 0
    print(f"Job {client.job_id} ({client.job_name!r})")
    print(f"  restarts: {stats['restarts']}, attempt {stats['attempt']}")
    if stats.get("restored_from"):
        print(f"  restored from checkpoints: {stats['restored_from']}")
    _print_checkpoints(stats, "completed" in stats, brief=False)
    return 0


def _ui(args: argparse.Namespace) -> int:
    import ipaddress
    import signal
    import webbrowser

    from raystream.observe.ui import UiServer
    from raystream.runtime.client import JobClient

    if args.interval <= 0:
        raise CliError(f"--interval must be positive, got {args.interval:g}")
    timeout = min(args.timeout, UI_CALL_TIMEOUT_S)
    _connect(args)
    job_id = None
    if args.job:  # an unknown job fails here, before anything listens
        job_id = JobClient.attach(args.job, timeout_s=timeout).job_id

    def attach(job: str) -> Any:
        return JobClient.attach(job, timeout_s=timeout)

    def list_all() -> list[dict[str, Any]]:
        from raystream.runtime import jobs

        return [_summary(j.info) for j in jobs.scan() if j.info is not None]

    try:
        server = UiServer(attach, list_all, args.host, args.port, args.interval)
    except OSError as exc:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    try:
        loopback = ipaddress.ip_address(server.address[0]).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        print(
            f"raystream ui: warning: listening on {server.address[0]}, beyond this machine; "
            "whoever reaches it and holds the URL reads the jobs' numbers",
            file=sys.stderr,
        )
    url = server.url(job_id)
    print(f"raystream ui: {url}", flush=True)
    print("raystream ui: serving until interrupted (Ctrl-C)", file=sys.stderr, flush=True)

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    if args.open:
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0


# -- helpers ---------------------------------------------------------------------------------------


def _connect(args: argparse.Namespace) -> None:
    from raystream.runtime.jobs import connect

    connect(args.address)


def _attach(args: argparse.Namespace) -> Any:
    from raystream.runtime.client import JobClient

    _connect(args)
    return JobClient.attach(args.job, timeout_s=args.timeout, token=args.token)


def _absolute(path: str) -> str:
    """A local path as an absolute one (the job master does not run in this directory); a URI
    as it is."""
    return path if "://" in path else os.path.abspath(path)


def _summary(info: dict[str, Any]) -> dict[str, Any]:
    keys = ("job_id", "job_name", "status", "start_time_ms", "end_time_ms", "detached")
    return {k: info[k] for k in keys}


def _time(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.datetime.fromtimestamp(ms / 1000).isoformat(sep=" ", timespec="seconds")


def _print_checkpoints(stats: dict[str, Any], enabled: bool, brief: bool) -> None:
    print("Checkpoints:")
    if not enabled:
        print("  checkpointing is off")
        return
    print(
        f"  completed {stats['completed']}, failed {stats['failed']}, "
        f"in progress {stats['in_progress']}; store {stats['location']}"
    )
    last = stats.get("last_completed")
    if last:
        print(f"  last: {_checkpoint_line(last)}")
    else:
        print("  none completed yet")
    if not brief:
        for c in stats.get("history", []):
            print(f"    {_checkpoint_line(c)}")


def _checkpoint_line(c: dict[str, Any]) -> str:
    return (
        f"{c['kind']} {c['checkpoint_id']}: {c['size_bytes']} bytes in {c['duration_ms']:.0f} ms"
        f" at {_time(int(c['completed_at'] * 1000))}"
    )


if __name__ == "__main__":
    sys.exit(main())
