"""Internal: the key that authenticates checkpoints and savepoints (HMAC-SHA256).

Every blob and every metadata record a :class:`~raystream.checkpointing.storage.CheckpointStore`
writes carries an HMAC under this key, and a restore verifies it before anything is unpickled:
whoever can write the checkpoint store but does not hold the key cannot make the job master run
code. The key comes from, in this order:

1. ``CheckpointConfig.state_key`` (set with ``set_state_key``);
2. the environment variable ``RAYSTREAM_STATE_KEY`` of the process that opens the store (the job
   master: set it on the cluster's nodes or in the job's ``runtime_env``);
3. a key generated once per user and host, kept in ``<tmp>/raystream-<uid>/state-key`` (file
   0600 in a directory 0700 owned by the user). It serves local jobs: checkpoints a local job
   retained can be resumed by the same user on the same host until the file goes (a reboot may
   clear the temporary directory). Deployments that move checkpoints between hosts, or keep
   them across reboots, give a key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import tempfile

from raystream.errors import RaystreamError

ENV_VAR = "RAYSTREAM_STATE_KEY"
KEY_FILE = "state-key"
MIN_KEY_BYTES = 16


class StateKeyError(RaystreamError):
    """No usable key to sign or verify checkpoints (too short, or its file is not private)."""


def user_root() -> str:
    """``<tmp>/raystream-<uid>``: this user's private directory (0700), created if missing.

    Raises:
        StateKeyError: it exists but is not a directory owned by this user with mode 0700 (another
            user may have created it to read or plant files).
    """
    path = os.path.join(tempfile.gettempdir(), f"raystream-{os.getuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise StateKeyError(
            f"{path} must be a directory owned by uid {os.getuid()} with mode 0700, found "
            f"uid {info.st_uid}, mode {stat.filemode(info.st_mode)}; remove it or fix its "
            "permissions (it holds this user's checkpoints and state key)"
        )
    return path


def user_subdir(name: str) -> str:
    """``<tmp>/raystream-<uid>/<name>``, created private (0700) if missing."""
    path = os.path.join(user_root(), name)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    return path


def _from_text(text: str, where: str) -> bytes:
    key = text.strip().encode()
    if len(key) < MIN_KEY_BYTES:
        raise StateKeyError(
            f"the state key from {where} has {len(key)} bytes, at least {MIN_KEY_BYTES} are "
            "needed (e.g. python -c 'import secrets; print(secrets.token_hex(32))')"
        )
    return key


def _generated_key() -> bytes:
    path = os.path.join(user_root(), KEY_FILE)
    if not os.path.lexists(path):
        # written whole under a temporary name, then linked: a concurrent reader never sees a
        # partial key, and of two processes generating at once exactly one link wins
        tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise StateKeyError(
            f"the state key file {path} must be a regular file of uid {os.getuid()} with mode "
            f"0600, found {stat.filemode(info.st_mode)} of uid {info.st_uid}"
        )
    with open(path) as f:
        return _from_text(f.read(), path)


def resolve_state_key(configured: str | bytes | None = None) -> bytes:
    """The key checkpoints are signed with: configured, from ``RAYSTREAM_STATE_KEY``, or the
    generated per-user key (see the module docstring)."""
    if configured is not None:
        if isinstance(configured, bytes):
            if len(configured) < MIN_KEY_BYTES:
                raise StateKeyError(
                    f"the configured state key has {len(configured)} bytes, at least "
                    f"{MIN_KEY_BYTES} are needed"
                )
            return configured
        return _from_text(configured, "CheckpointConfig.state_key")
    text = os.environ.get(ENV_VAR)
    if text:
        return _from_text(text, f"${ENV_VAR}")
    return _generated_key()


def mac(key: bytes, domain: bytes, data: bytes) -> str:
    """HMAC-SHA256 of ``data`` under ``key``, separated by ``domain`` (hex)."""
    digest = hmac.new(key, domain + b"\0", hashlib.sha256)
    digest.update(data)
    return digest.hexdigest()


def verify(key: bytes, domain: bytes, data: bytes, expected: object) -> bool:
    return isinstance(expected, str) and hmac.compare_digest(mac(key, domain, data), expected)
