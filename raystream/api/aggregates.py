"""Declarative aggregates (``raystream.agg``): what to compute per key and window, not how.

``window(...).aggregate(agg.count(), agg.sum("v"), agg.mean("v").alias("avg"))`` takes these
descriptions instead of an ``AggregateFunction``. Because they say what they compute, the
runtime computes them without a user call per record: vectorized over Arrow columns on a
columnar stream (``operators/columnar/aggregates.py``), or over whole batches of rows
(``operators/row_aggregates.py``). Both give a window result with the key, ``window_start``,
``window_end`` and one field per aggregate.

Semantics (the same on both paths; SQL's): ``count()`` counts records; every other aggregate
skips null (``None``) values — ``count(col)`` counts the non-null ones, ``sum``/``min``/``max``/
``mean``/``first``/``last`` are null when a window has no non-null value. ``first``/``last`` are
the first/last non-null value in arrival order. ``mean`` is ``sum / count`` as a float.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from raystream.errors import GraphError

KINDS = ("count", "sum", "min", "max", "mean", "first", "last")


@dataclass(frozen=True)
class Aggregate:
    """One declarative aggregate: its kind, the column (field) it reads and its output name.

    ``column`` is a column name on a columnar stream; on a row stream a dict key, a ``Row``
    field or attribute name (``str``) or a tuple/list position (``int``)."""

    kind: str
    column: str | int | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise GraphError(f"unknown aggregate {self.kind!r}; expected one of {KINDS}")
        if self.column is None and self.kind != "count":
            raise GraphError(f"agg.{self.kind}() needs a column")
        if self.column is not None and (
            isinstance(self.column, bool) or not isinstance(self.column, (str, int))
        ):
            raise GraphError(
                f"agg.{self.kind}: the column must be a name (str) or a position (int), got "
                f"{self.column!r}"
            )

    def alias(self, name: str) -> Aggregate:
        """The same aggregate under the output name ``name``."""
        if not isinstance(name, str) or not name:
            raise GraphError(f"alias expects a non-empty name, got {name!r}")
        return replace(self, name=name)

    @property
    def output_name(self) -> str:
        """``alias`` if given, else ``count`` for ``count()``, else ``<kind>_<column>``."""
        if self.name is not None:
            return self.name
        if self.column is None:
            return self.kind
        return f"{self.kind}_{self.column}"

    def __repr__(self) -> str:
        col = "" if self.column is None else repr(self.column)
        alias = f".alias({self.name!r})" if self.name is not None else ""
        return f"agg.{self.kind}({col}){alias}"


def count(column: str | int | None = None) -> Aggregate:
    """Records per key and window; with a column, its non-null values."""
    return Aggregate("count", column)


def sum(column: str | int) -> Aggregate:  # noqa: A001 - the name users expect
    return Aggregate("sum", column)


def min(column: str | int) -> Aggregate:  # noqa: A001
    return Aggregate("min", column)


def max(column: str | int) -> Aggregate:  # noqa: A001
    return Aggregate("max", column)


def mean(column: str | int) -> Aggregate:
    return Aggregate("mean", column)


def first(column: str | int) -> Aggregate:
    """The first non-null value in arrival order."""
    return Aggregate("first", column)


def last(column: str | int) -> Aggregate:
    """The last non-null value in arrival order."""
    return Aggregate("last", column)


def checked(aggregates: tuple[Any, ...], reserved: list[str], what: str) -> tuple[Aggregate, ...]:
    """The aggregates of an ``aggregate(...)`` call, with unique output names that do not clash
    with ``reserved`` (the key fields, ``window_start``, ``window_end``)."""
    if not aggregates:
        raise GraphError(f"{what} needs at least one aggregate (e.g. agg.count())")
    for a in aggregates:
        if not isinstance(a, Aggregate):
            raise GraphError(
                f"{what}: expected raystream.agg aggregates (agg.count(), agg.sum('v'), ...), "
                f"got {a!r}"
            )
    names = list(reserved) + [a.output_name for a in aggregates]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise GraphError(
            f"{what}: output name(s) {dup} used twice (keys and window_start/window_end come "
            "first, then the aggregates); give an aggregate another name with .alias(name)"
        )
    return tuple(aggregates)


def is_declarative(args: tuple[Any, ...]) -> bool:
    """Whether an ``aggregate(...)`` call got declarative aggregates (not an AggregateFunction)."""
    return bool(args) and isinstance(args[0], Aggregate)
