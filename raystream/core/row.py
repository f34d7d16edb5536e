"""``Row`` and ``RowKind``: PyFlink's composite record, with PyFlink's semantics.

A row is positional (``Row(1, "a")``) or named (``Row(name="a", age=1)``, fields in the order
given). Fields are read by index, by name (``row["name"]``) or as attributes (``row.name``) and
written by index or name (``row[0] = x``); as in PyFlink, setting an attribute is refused
(``AttributeError``). Two named rows are equal when they have the same field names (in any order)
with the same values and the same kind; a named row never equals a positional one.

Rows are what a stream produces where ``Types.ROW(...)`` / ``Types.ROW_NAMED(...)`` is given as the
output type (see :mod:`raystream.api.typeinfo`). They are slotted and pickle as
``(fields, values, kind)``; rows built by the same conversion share one field-name list, which
pickle writes once per batch.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

__all__ = ["Row", "RowKind"]


class RowKind(enum.Enum):
    """The change a row stands for in a changelog (``INSERT`` for plain records)."""

    INSERT = 0
    UPDATE_BEFORE = 1
    UPDATE_AFTER = 2
    DELETE = 3

    def short_string(self) -> str:
        return ("+I", "-U", "+U", "-D")[self.value]

    def __str__(self) -> str:  # as PyFlink's: "+I", "-U", "+U", "-D"
        return self.short_string()


_INSERT = RowKind.INSERT
_SLOTS = frozenset(("_values", "_fields", "_row_kind"))


def make_row(fields: list[str] | None, values: Iterable[Any], kind: RowKind = _INSERT) -> Row:
    """A row with these field names (or positional with ``None``): the fast constructor the
    type conversions and unpickling use."""
    row = Row.__new__(Row)
    _set = object.__setattr__
    _set(row, "_values", list(values))
    _set(row, "_fields", fields)
    _set(row, "_row_kind", kind)
    return row


class Row:
    """A fixed-length record with optional field names (PyFlink's ``pyflink.common.Row``).

    >>> r = Row(name="Alice", age=11)
    >>> r.name, r["age"], r[0]
    ('Alice', 11, 'Alice')
    >>> r
    Row(name='Alice', age=11)
    >>> Person = Row("name", "age")
    >>> Person("Bob", 3)
    Row(name='Bob', age=3)
    >>> Row(1, "a")
    <Row(1, 'a')>
    """

    __slots__ = ("_values", "_fields", "_row_kind")

    _values: list[Any]
    _fields: list[str] | None
    _row_kind: RowKind

    def __init__(self, *args: Any, **kwargs: Any):
        if args and kwargs:
            raise ValueError("Can not use both args and kwargs to create Row")
        _set = object.__setattr__
        if kwargs:
            _set(self, "_fields", list(kwargs))
            _set(self, "_values", list(kwargs.values()))
        else:
            _set(self, "_fields", None)
            _set(self, "_values", list(args))
        _set(self, "_row_kind", _INSERT)

    # -- PyFlink's methods -----------------------------------------------------------------------

    def as_dict(self, recursive: bool = False) -> dict[str, Any]:
        """The named fields as a dict (nested rows too, with ``recursive``)."""
        if self._fields is None:
            raise TypeError("Cannot convert a Row without field names into dict")
        if not recursive:
            return dict(zip(self._fields, self._values))
        return dict(zip(self._fields, (_as_plain(v) for v in self._values)))

    def get_fields_by_names(self, names: Sequence[str]) -> list[Any]:
        fields = self._fields
        if fields is None:
            raise TypeError("Cannot access fields by name: the Row has no field names")
        try:
            return [self._values[fields.index(n)] for n in names]
        except ValueError:
            missing = [n for n in names if n not in fields]
            raise KeyError(f"Row has no field(s) {missing}; its fields are {fields}") from None

    def get_row_kind(self) -> RowKind:
        return self._row_kind

    def set_row_kind(self, row_kind: RowKind) -> None:
        object.__setattr__(self, "_row_kind", row_kind)

    def set_field_names(self, field_names: Sequence[str]) -> None:
        object.__setattr__(self, "_fields", list(field_names))

    def __call__(self, *args: Any) -> Row:
        """``Person = Row("name", "age"); Person("Alice", 11)``: a row named by this row's
        values."""
        if len(args) > len(self._values):
            raise ValueError(
                f"Can not create Row with fields {self!r}, expected {len(self._values)} values "
                f"but got {args!r}"
            )
        return make_row(list(self._values), args, self._row_kind)

    # -- access ----------------------------------------------------------------------------------

    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, (int, slice)):
            return self._values[item]
        return self._values[self._index(item, KeyError)]

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(key, (int, slice)):
            self._values[key] = value
            return
        self._values[self._index(key, KeyError)] = value

    def __getattr__(self, item: str) -> Any:
        # only called when normal lookup fails, i.e. for field names
        if item.startswith("_"):
            raise AttributeError(item)
        return self._values[self._index(item, AttributeError)]

    def __setattr__(self, key: str, value: Any) -> None:
        if key not in _SLOTS:
            raise AttributeError(f"Row fields are set by index or name (row[{key!r}] = ...)")
        object.__setattr__(self, key, value)

    def _index(self, name: Any, error: type[Exception]) -> int:
        fields = self._fields
        if fields is not None:
            try:
                return fields.index(name)
            except ValueError:
                pass
        raise error(name)

    def __contains__(self, item: Any) -> bool:
        if self._fields is not None:
            return item in self._fields
        return item in self._values

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    # -- value semantics -------------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Row):
            return False
        if self._row_kind != other._row_kind:
            return False
        a, b = self._fields, other._fields
        if a is None or b is None:
            return a is None and b is None and self._values == other._values
        if a == b:
            return self._values == other._values
        return dict(zip(a, self._values)) == dict(zip(b, other._values)) and len(a) == len(b)

    def __hash__(self) -> int:
        if self._fields is None:
            return hash(tuple(self._values))
        # equal named rows may list their fields in different orders
        return hash(frozenset(zip(self._fields, self._values)))

    def __repr__(self) -> str:
        if self._fields is not None:
            inner = ", ".join(f"{k}={v!r}" for k, v in zip(self._fields, self._values))
            return f"Row({inner})"
        return "<Row({})>".format(", ".join(repr(v) for v in self._values))

    def __reduce__(self) -> tuple[Any, ...]:
        return (make_row, (self._fields, self._values, self._row_kind))


def _as_plain(obj: Any) -> Any:
    if isinstance(obj, Row):
        return obj.as_dict(True)
    if isinstance(obj, list):
        return [_as_plain(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _as_plain(v) for k, v in obj.items()}
    return obj
