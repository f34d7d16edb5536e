"""Internal: who may control a job — the job's control token, and the secret its tasks sign
their calls to the job master with.

A job master refuses control calls (take the collected records, checkpoint, savepoint, stop,
cancel) that do not carry the job's *control token*, a random 128-bit value made by the process
that submits the job and held by its ``JobClient``; a detached job's token is also kept in the
submitting user's private directory (``<tmp>/raystream-<uid>/jobs/<job id>.token``, 0600), where
``JobClient.attach`` and the CLI on that machine find it (elsewhere: ``--token`` or
``RAYSTREAM_JOB_TOKEN``). Status, description, metrics and waiting stay open to any client of
the cluster. Calls of the job's own tasks (checkpoint acknowledgements, collected records) carry
the job master's *task secret*, handed to the tasks with their setup; anything else is refused
before its payload is used.

Ray's own security is the boundary around this: whoever runs code in the cluster's processes
(a task, a driver with the cluster's auth token) can read secrets out of memory. The tokens stop
the casual and the accidental: a second driver or a CLI that names the wrong job.
"""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass
from typing import Any

from raystream.errors import RaystreamError

ENV_TOKEN = "RAYSTREAM_JOB_TOKEN"


class JobControlError(RaystreamError):
    """A control call did not carry the job's control token (or a task call its secret)."""


def new_token() -> str:
    return secrets.token_hex(16)


def matches(expected: str, given: object) -> bool:
    return isinstance(given, str) and hmac.compare_digest(expected, given)


def _jobs_dir() -> str:
    from raystream.checkpointing.state_key import user_subdir

    return user_subdir("jobs")


def token_path(job_id: str) -> str:
    return os.path.join(_jobs_dir(), f"{job_id}.token")


def save_token(job_id: str, token: str) -> None:
    """Keeps a detached job's control token for this user's later CLI calls (0600)."""
    path = token_path(job_id)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)


def load_token(job_id: str) -> str | None:
    """The control token of ``job_id``: ``RAYSTREAM_JOB_TOKEN``, else the one kept when this
    user submitted it detached on this machine, else None."""
    env = os.environ.get(ENV_TOKEN)
    if env:
        return env.strip()
    try:
        with open(token_path(job_id)) as f:
            return f.read().strip() or None
    except (OSError, RaystreamError):
        return None


@dataclass(frozen=True)
class SignedRef:
    """A job master reference whose every call carries ``secret`` as first argument (what the
    job's tasks hold)."""

    target: Any
    secret: str

    def __getattr__(self, name: str) -> _SignedMethod:
        if name.startswith("__"):  # pickling probes dunders on bare instances
            raise AttributeError(name)
        return _SignedMethod(getattr(self.target, name), self.secret)


@dataclass(frozen=True)
class _SignedMethod:
    method: Any
    secret: str

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self.method.remote(self.secret, *args, **kwargs)
