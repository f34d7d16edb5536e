"""Internal: validation and graph node of ``DataStream.map_batches`` (the operator is
:mod:`raystream.operators.map_batches`)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from raystream.core.time import Duration, to_millis
from raystream.errors import GraphError
from raystream.operators.batch_format import check_batch_format
from raystream.operators.map_batches import MapBatchesOperator

if TYPE_CHECKING:
    from raystream.api.datastream import DataStream
    from raystream.graph.transformations import Transformation


def map_batches_node(
    stream: DataStream,
    fn: Any,
    *,
    batch_size: int,
    batch_format: str,
    max_wait_ms: Duration | None,
    fn_args: tuple,
    fn_kwargs: dict | None,
    fn_constructor_args: tuple,
    fn_constructor_kwargs: dict | None,
) -> Transformation:
    """Validates the arguments and adds the operator's node after ``stream``."""
    if isinstance(fn, type):
        if not any("__call__" in vars(c) for c in fn.__mro__[:-1]):
            raise TypeError(f"map_batches: class {fn.__name__} has no __call__(batch)")
    elif not callable(fn):
        raise TypeError(f"map_batches expects a function or a callable class, got {fn!r}")
    elif fn_constructor_args or fn_constructor_kwargs:
        raise GraphError(
            "map_batches: fn_constructor_args/fn_constructor_kwargs apply to a callable class "
            f"(constructed once per subtask), not to {fn!r}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise GraphError(f"map_batches: batch_size must be an int >= 1, got {batch_size!r}")
    fmt = check_batch_format(batch_format)
    wait = None if max_wait_ms is None else to_millis(max_wait_ms, "map_batches max_wait_ms")
    if wait is not None and wait < 0:
        raise GraphError(f"map_batches: max_wait_ms must be >= 0 (None: no bound), got {wait}")
    factory = functools.partial(
        MapBatchesOperator,
        fn=fn,
        batch_size=batch_size,
        batch_format=fmt,
        max_wait_ms=wait,
        fn_args=tuple(fn_args),
        fn_kwargs=dict(fn_kwargs or {}),
        fn_constructor_args=tuple(fn_constructor_args),
        fn_constructor_kwargs=dict(fn_constructor_kwargs or {}),
    )
    label = fn.__name__ if isinstance(fn, type) else getattr(fn, "__name__", "fn")
    return stream._add(f"MapBatches({label})", factory)
