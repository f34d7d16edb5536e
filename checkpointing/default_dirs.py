"""Internal: the default checkpoint directories, ``<tmp>/raystream-<uid>/checkpoints/<job id>``.

A job without ``set_checkpoint_storage`` keeps its checkpoints (a file store) in a directory of
its own under the private directory of the user its JobMaster runs as, in the system temporary
directory of its node: ``raystream-<uid>`` (0700, refused if another user owns it or can enter
it), ``checkpoints`` and the job's directory 0700, every file 0600. The job removes it when it
ends (unless the retention setting keeps its checkpoints). A JobMaster that dies with its driver
cannot, so each directory holds an owner file naming the host and the process (pid and start
time) of its JobMaster; every job that starts with the default location removes the directories
of this host whose owner process is gone. Directories whose checkpoints were retained on purpose
are marked so and never swept; a directory without an owner file is left alone. A detached job's
JobMaster is restarted by Ray when its process dies and carries on from these checkpoints: its
owner file also names the JobMaster's Ray actor, and the directory is swept only once that actor
is gone (checked through Ray; where that cannot be checked, it stays).

LMDB state backends keep their working environments the same way (``<tmp>/raystream-<uid>/state``
by default): each environment's directory holds an owner file, and a backend that starts removes
the environments of this host whose process died without disposing them (a killed task actor).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from typing import Any

from raystream.checkpointing.state_key import user_subdir

OWNER_FILE = "raystream-owner.json"


def default_root() -> str:
    """``<tmp>/raystream-<uid>/checkpoints``, created private (0700) if missing."""
    return user_subdir("checkpoints")


def state_root() -> str:
    """``<tmp>/raystream-<uid>/state``: where LMDB state backends put their environments by
    default, created private (0700) if missing."""
    return user_subdir("state")


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux: clock ticks since boot), None if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces: the fields after it follow the last ')'
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if start is None:
        return True
    now = _start_time(pid)
    return now is None or now == start  # another start time: the pid was reused


def _write_owner(path: str, owner: dict[str, Any]) -> None:
    tmp = os.path.join(path, OWNER_FILE + ".tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump(owner, f)
    os.replace(tmp, os.path.join(path, OWNER_FILE))


def claim(path: str, job_id: str, actor: tuple[str, str] | None = None) -> None:
    """Creates the job's directory (0700) and records this process as its owner; ``actor``:
    the (name, namespace) of a JobMaster actor that Ray restarts, which takes the directory
    over when it comes back (it is not swept while that actor exists)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    pid = os.getpid()
    before = read_owner(path) or {}
    owner: dict[str, Any] = {
        "job_id": job_id,
        "host": socket.gethostname(),
        "pid": pid,
        "start": _start_time(pid),
        # a restarted job master takes its job's directory over as it was left
        "retained": bool(before.get("retained")) and before.get("job_id") == job_id,
    }
    if actor is not None:
        owner["actor"] = list(actor)
    _write_owner(path, owner)


def mark_retained(path: str) -> None:
    """The job ended and its checkpoints stay (retention setting): never sweep them."""
    owner = read_owner(path) or {}
    owner["retained"] = True
    _write_owner(path, owner)


def read_owner(path: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(path, OWNER_FILE)) as f:
            owner = json.load(f)
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def is_stale(path: str) -> bool:
    """A directory of this host whose owner process is gone and that was not retained, nor
    belongs to a JobMaster actor that Ray may restart."""
    owner = read_owner(path)
    if owner is None or owner.get("retained") or owner.get("host") != socket.gethostname():
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return False
    if _alive(pid, owner.get("start")):
        return False
    actor = owner.get("actor")
    return actor is None or not _actor_may_return(actor)


def _actor_may_return(actor: Any) -> bool:
    """Whether the named Ray actor still exists (alive or being restarted); True when that
    cannot be told (no Ray connection here, or a malformed record): the directory stays."""
    if not (isinstance(actor, list) and len(actor) == 2):
        return True
    name, namespace = actor
    try:
        import ray

        if not ray.is_initialized():
            return True
        ray.get_actor(name, namespace=namespace)
    except ValueError:  # Ray: no such actor
        return False
    except Exception:  # noqa: BLE001 - unknown: keep the directory
        return True
    return True


def sweep_stale(root: str | None = None, prefix: str = "", keep: str | None = None) -> list[str]:
    """Removes the stale directories under ``root`` (default: :func:`default_root`) whose name
    starts with ``prefix``, except ``keep`` (a path); returns them. Never fails: what cannot be
    read or removed stays."""
    root = default_root() if root is None else root
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return []
    removed = []
    for entry in entries:
        if not entry.name.startswith(prefix) or (
            keep is not None and os.path.abspath(entry.path) == os.path.abspath(keep)
        ):
            continue
        try:
            if entry.is_dir(follow_symlinks=False) and is_stale(entry.path):
                shutil.rmtree(entry.path)
                removed.append(entry.path)
        except OSError:
            continue
    return removed
