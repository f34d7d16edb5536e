"""``RuntimeExecutionMode``: how a job runs (PyFlink's ``pyflink.datastream.RuntimeExecutionMode``).

``STREAMING`` (the default) is the classic mode. ``BATCH`` runs a job whose sources are all
bounded with Flink's batch semantics: keyed running aggregates emit only their final value per key,
no watermark flows until the single ``MAX`` watermark at the end of input (so every event-time
window and timer fires then and no record is late), processing-time timers fire at the end of
input too, and checkpointing is not used. ``AUTOMATIC`` is ``BATCH`` when every source is bounded
and ``STREAMING`` otherwise.

The mode is decided once, when the plan is built (:func:`resolve_runtime_mode`); the plan's copy of
the config then says ``STREAMING`` or ``BATCH``, never ``AUTOMATIC``, and operators read it once.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from typing import Any

__all__ = ["RuntimeExecutionMode"]

_log = logging.getLogger(__name__)


class RuntimeExecutionMode(enum.Enum):
    STREAMING = 0
    BATCH = 1
    AUTOMATIC = 2


def coerce_runtime_mode(mode: Any) -> RuntimeExecutionMode:
    """The mode for ``mode``: a :class:`RuntimeExecutionMode` or its name (Flink's configuration
    value ``execution.runtime-mode``: ``"BATCH"``, ``"streaming"``, ...)."""
    from raystream.errors import GraphError

    if isinstance(mode, RuntimeExecutionMode):
        return mode
    if isinstance(mode, str) and mode.strip().upper() in RuntimeExecutionMode.__members__:
        return RuntimeExecutionMode[mode.strip().upper()]
    raise GraphError(
        f"runtime mode must be RuntimeExecutionMode.STREAMING, BATCH or AUTOMATIC (or that name "
        f"as a string), got {mode!r}"
    )


def is_batch(config: Any) -> bool:
    """Whether a (plan's) config runs with batch semantics."""
    return getattr(config, "runtime_mode", None) is RuntimeExecutionMode.BATCH


def resolve_runtime_mode(mode: Any, sources: Iterable[tuple[str, Any]]) -> RuntimeExecutionMode:
    """``STREAMING`` or ``BATCH`` for a job whose sources are ``(name, Source)``. ``BATCH`` with an
    unbounded source is an error that names the source(s), as in Flink."""
    from raystream.errors import GraphError
    from raystream.operators.sources import Boundedness

    mode = coerce_runtime_mode(mode)
    if mode is RuntimeExecutionMode.STREAMING:
        return mode
    unbounded = [
        (name, src)
        for name, src in sources
        if getattr(src, "boundedness", Boundedness.BOUNDED) is not Boundedness.BOUNDED
    ]
    if mode is RuntimeExecutionMode.AUTOMATIC:
        return RuntimeExecutionMode.STREAMING if unbounded else RuntimeExecutionMode.BATCH
    if unbounded:
        named = ", ".join(f"{name!r} ({type(src).__name__})" for name, src in unbounded)
        raise GraphError(
            f"the runtime mode is BATCH but source(s) {named} are unbounded; BATCH needs every "
            "source to be bounded. Hint: set_runtime_mode(RuntimeExecutionMode.STREAMING) or "
            "AUTOMATIC, or bound the source (e.g. from_sequence with an end)"
        )
    return mode


def apply_runtime_mode(config: Any, sources: Iterable[tuple[str, Any]], job_name: str) -> None:
    """Resolves the mode of a plan's own config copy in place. In BATCH, checkpointing is switched
    off with a one-line notice (Flink does the same): a bounded job that fails is rerun from the
    start if its restart strategy allows a restart."""
    config.runtime_mode = resolve_runtime_mode(config.runtime_mode, sources)
    if config.runtime_mode is RuntimeExecutionMode.BATCH and (
        config.checkpoint.is_checkpointing_enabled()
    ):
        _log.warning(
            "job %r runs in BATCH mode: checkpointing is not used in BATCH (as in Flink), the "
            "checkpoint interval is ignored; a failure reruns the job from the start if the "
            "restart strategy allows it",
            job_name,
        )
        config.checkpoint.interval_ms = None
