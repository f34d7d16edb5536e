"""Internal: what a declared type (``output_type=``, ``type_info=``) does to values, as in PyFlink.

PyFlink's Python functions run in a Python worker next to a JVM. Chained Python operators hand
each other Python objects; everywhere else a value crosses into Java through its declared type
and back. Two visible effects follow, both reproduced here:

- **Conversion where a value leaves the chain** (:func:`crossing_converter`). A ``FLOAT`` field
  becomes a Java ``float``: 32 bits (``0.1`` comes back as ``0.10000000149011612``); a
  ``DOUBLE`` field becomes a Java ``double`` (``1`` comes back as ``1.0``). PyFlink converts
  at ``from_collection(type_info=...)``, at every edge between operators that are not chained
  (``key_by``, ``rebalance``, a change of parallelism, ``disable_chaining``) and at sinks;
  values passed between chained operators keep full precision. raystream converts at the same
  places: ``from_collection`` on the driver, the task outputs of non-chained edges, and the
  input of sinks other than ``print``.
- **``print()``** (:func:`print_formatter`): a stream of a declared type prints the Java
  object's ``toString`` (``(hi,1,0.1)`` for a tuple, ``[a, b]`` for a list, ``{k=1}`` for a
  map in Java ``HashMap`` order, ``true``, ``1.0E10``); a row prints ``+I[hi,1]`` (PyFlink
  formats rows in Python: ``str`` of each field); a stream without a declared type prints
  Python's ``str``.

Nothing here runs for streams without a declared type; with one, converters and formatters are
built once on the driver (picklable) and run once per value.
"""

from __future__ import annotations

import datetime as _dt
import struct
from array import array
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from raystream.api.duration import Instant
from raystream.api.typeinfo import (
    BasicTypeInfo,
    MapTypeInfo,
    PickledBytesTypeInfo,
    RowTypeInfo,
    TupleTypeInfo,
    TypeInformation,
    element_type_of,
)
from raystream.core.row import Row, make_row

__all__ = ["crossing_converter", "java_double_string", "java_float_string", "print_formatter"]

Convert = Callable[[Any], Any]
Format = Callable[[Any], str]

# -- conversion where a value leaves a chain ---------------------------------------------------


def _to_float32(v: Any) -> Any:
    # array('f') casts as Java does: out of range becomes +-inf instead of raising
    if type(v) is float or isinstance(v, int):
        return array("f", (v,))[0]
    return v


def _to_double(v: Any) -> Any:
    if type(v) is float:
        return v
    return float(v) if isinstance(v, int) else v


class _FieldValues:
    """Converts the fields of a tuple, list or Row (the container kind is kept; a Row comes
    back with the field names of its ``ROW`` type, as from PyFlink's row coder)."""

    __slots__ = ("fields", "names")

    def __init__(self, fields: list[Convert | None], names: list[str] | None):
        self.fields = fields
        self.names = names

    def __call__(self, v: Any) -> Any:
        if not isinstance(v, (tuple, list, Row)) or len(v) != len(self.fields):
            return v
        out = [x if c is None or x is None else c(x) for c, x in zip(self.fields, v)]
        if isinstance(v, Row):
            return make_row(self.names or v._fields, out, v._row_kind)
        return tuple(out) if isinstance(v, tuple) else out


class _Elements:
    __slots__ = ("element",)

    def __init__(self, element: Convert):
        self.element = element

    def __call__(self, v: Any) -> Any:
        if not isinstance(v, (list, tuple)):
            return v
        c = self.element
        return [None if x is None else c(x) for x in v]


class _Entries:
    __slots__ = ("key", "value")

    def __init__(self, key: Convert | None, value: Convert | None):
        self.key = key
        self.value = value

    def __call__(self, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        k, c = self.key or _same, self.value or _same
        return {k(a): None if b is None else c(b) for a, b in v.items()}


def _same(v: Any) -> Any:
    return v


def _value_converter(t: Any) -> Convert | None:
    if isinstance(t, BasicTypeInfo):
        return {"Float": _to_float32, "Double": _to_double}.get(t.name)
    if isinstance(t, (TupleTypeInfo, RowTypeInfo)):
        fields = [_value_converter(f) for f in t.field_types]
        names = list(t.field_names) if isinstance(t, RowTypeInfo) else None
        return _FieldValues(fields, names) if any(fields) else None
    if isinstance(t, MapTypeInfo):
        key, value = _value_converter(t.key_type), _value_converter(t.value_type)
        return _Entries(key, value) if key or value else None
    element = element_type_of(t)
    if element is not None:
        c = _value_converter(element)
        return _Elements(c) if c else None
    return None


class CrossingConverter:
    """``convert(values) -> values`` for one batch: a declared type's values as they come back
    from Java (see the module docstring)."""

    __slots__ = ("value",)

    def __init__(self, value: Convert):
        self.value = value

    def __call__(self, values: list, where: str = "") -> list:
        c = self.value
        if c is _to_float32:
            try:
                return array("f", values).tolist()
            except TypeError:  # None or a non-number among them: one by one
                pass
        return [None if v is None else c(v) for v in values]


def crossing_converter(type_info: Any) -> CrossingConverter | None:
    """The conversion values of ``type_info`` go through where they leave a chain, or None
    when it changes nothing (no ``FLOAT``/``DOUBLE`` inside, or no declared type)."""
    c = _value_converter(type_info)
    return None if c is None else CrossingConverter(c)


# -- Java's toString -------------------------------------------------------------------------------


def _java_number(sign: str, digits: str, exponent: int) -> str:
    """Java's ``Double.toString`` layout of ``digits x 10**exponent`` (digits without trailing
    zeros): plain from 10^-3 up to 10^7, else ``d.dddE<n>``, always one fraction digit."""
    magnitude = len(digits) - 1 + exponent  # the power of ten of the first digit
    if -3 <= magnitude < 7:
        if exponent >= 0:
            whole, frac = digits + "0" * exponent, ""
        elif magnitude >= 0:
            whole, frac = digits[: magnitude + 1], digits[magnitude + 1 :]
        else:
            whole, frac = "0", "0" * (-magnitude - 1) + digits
        return f"{sign}{whole}.{frac or '0'}"
    return f"{sign}{digits[0]}.{digits[1:] or '0'}E{magnitude}"


def _special(x: float) -> str | None:
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0:
        return "-0.0" if str(x).startswith("-") else "0.0"
    return None


def _layout(shortest: str) -> str:
    sign, digits, exponent = Decimal(shortest).as_tuple()
    text = "".join(map(str, digits))
    stripped = text.rstrip("0")
    return _java_number("-" if sign else "", stripped, int(exponent) + len(text) - len(stripped))


def java_double_string(x: float) -> str:
    """Java's ``Double.toString``: the shortest digits that read back as ``x``."""
    x = float(x)
    return _special(x) or _layout(repr(x))


_F32 = struct.Struct("f")


def java_float_string(x: float) -> str:
    """Java's ``Float.toString``: the shortest digits that read back as the same 32-bit float."""
    f = array("f", (float(x),))[0]
    special = _special(f)
    if special is not None:
        return special
    for precision in range(9):
        text = f"{f:.{precision}e}"
        if array("f", (float(text),))[0] == f:
            return _layout(text)
    return _layout(repr(f))  # not reached: 9 significant digits always identify a float


def _java_timestamp(v: Any) -> str:
    # PyFlink carries SQL_TIMESTAMP at millisecond precision (truncated)
    if not isinstance(v, _dt.datetime):
        return str(v)
    millis = v.microsecond // 1000
    fraction = f"{millis:03d}".rstrip("0") or "0"
    return f"{v:%Y-%m-%d %H:%M:%S}.{fraction}"


def _java_instant(v: Any) -> str:
    if not isinstance(v, Instant):
        return str(v)
    when = _dt.datetime(1970, 1, 1) + _dt.timedelta(seconds=v.seconds)
    nanos = v.nanos
    if nanos == 0:
        fraction = ""
    elif nanos % 1_000_000 == 0:
        fraction = f".{nanos // 1_000_000:03d}"
    elif nanos % 1000 == 0:
        fraction = f".{nanos // 1000:06d}"
    else:
        fraction = f".{nanos:09d}"
    return f"{when:%Y-%m-%dT%H:%M:%S}{fraction}Z"


def _java_time(v: Any) -> str:
    return f"{v:%H:%M:%S}" if isinstance(v, (_dt.time, _dt.datetime)) else str(v)


def _java_boolean(v: Any) -> str:
    return "true" if v else "false"


_BASIC_FORMATS: dict[str, Format] = {
    "Boolean": _java_boolean,
    "Float": java_float_string,
    "Double": java_double_string,
    "Timestamp": _java_timestamp,
    "Time": _java_time,
    "Instant": _java_instant,
}


class _Nullable:
    """Java prints ``null`` for a missing value inside a composite."""

    __slots__ = ("inner",)

    def __init__(self, inner: Format):
        self.inner = inner

    def __call__(self, v: Any) -> str:
        return "null" if v is None else self.inner(v)


class _Fields:
    """A tuple, Java's ``Tuple.toString`` (``(a,1)``), or a row inside a composite, Java's
    ``Row.toString`` (``+I[1, a]``)."""

    __slots__ = ("fields", "is_row")

    def __init__(self, fields: list[Format], is_row: bool):
        self.fields = fields
        self.is_row = is_row

    def __call__(self, v: Any) -> str:
        if not isinstance(v, (tuple, list, Row)):
            return str(v)
        shown = (f(x) for f, x in zip(self.fields, v))
        if not self.is_row:
            return "(" + ",".join(shown) + ")"
        kind = v.get_row_kind() if isinstance(v, Row) else "+I"
        return f"{kind}[{', '.join(shown)}]"


class _Sequence:
    """``java.util.List`` and arrays inside composites: ``[1, 2]``."""

    __slots__ = ("element",)

    def __init__(self, element: Format):
        self.element = element

    def __call__(self, v: Any) -> str:
        if not isinstance(v, (list, tuple)):
            return str(v)
        return "[" + ", ".join(map(self.element, v)) + "]"


class _Map:
    """``java.util.HashMap``: entries in the order of its buckets."""

    __slots__ = ("key", "value", "hash_code")

    def __init__(self, key: Format, value: Format, hash_code: Callable[[Any], int] | None):
        self.key = key
        self.value = value
        self.hash_code = hash_code

    def __call__(self, v: Any) -> str:
        if not isinstance(v, dict):
            return str(v)
        items = list(v.items())
        if self.hash_code is not None:
            items = _hash_map_order(items, self.hash_code)
        k, f = self.key, self.value
        return "{" + ", ".join(f"{k(a)}={f(b)}" for a, b in items) + "}"


def _hash_map_order(items: list, hash_code: Callable[[Any], int]) -> list:
    """The iteration order of a ``HashMap`` sized for the entries and filled in this order
    (how Flink's map serializer rebuilds a map): by bucket, insertion order within one."""
    capacity = 1
    while capacity < len(items):
        capacity *= 2
    while len(items) > capacity * 3 // 4:
        capacity *= 2
    mask = capacity - 1

    def bucket(item: tuple) -> int:
        if item[0] is None:
            return 0
        h = hash_code(item[0])
        return (h ^ (h >> 16)) & mask

    try:
        return sorted(items, key=bucket)  # stable: insertion order within a bucket
    except (TypeError, ValueError, OverflowError):  # a key not of the declared type
        return items


def _string_hash(s: Any) -> int:
    h = 0
    data = str(s).encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + (data[i] << 8 | data[i + 1])) & 0xFFFFFFFF
    return h


def _int_hash(v: Any) -> int:
    return int(v) & 0xFFFFFFFF


def _long_hash(v: Any) -> int:
    v = int(v) & 0xFFFFFFFFFFFFFFFF
    return (v ^ (v >> 32)) & 0xFFFFFFFF


def _boolean_hash(v: Any) -> int:
    return 1231 if v else 1237


def _char_hash(v: Any) -> int:
    return ord(v)


def _double_hash(v: Any) -> int:
    return _long_hash(struct.unpack(">q", struct.pack(">d", float(v)))[0])


def _float_hash(v: Any) -> int:
    return struct.unpack(">I", struct.pack(">f", float(v)))[0]


_HASH_CODES: dict[str, Callable[[Any], int]] = {
    "String": _string_hash,
    "Byte": _int_hash,
    "Short": _int_hash,
    "Integer": _int_hash,
    "Long": _long_hash,
    "Boolean": _boolean_hash,
    "Character": _char_hash,
    "Double": _double_hash,
    "Float": _float_hash,
}


def _java(t: Any) -> Format:
    """Java's ``toString`` of a value of declared type ``t``, ``null`` for None."""
    if isinstance(t, BasicTypeInfo):
        inner = _BASIC_FORMATS.get(t.name, str)
    elif isinstance(t, (TupleTypeInfo, RowTypeInfo)):
        inner = _Fields([_java(f) for f in t.field_types], isinstance(t, RowTypeInfo))
    elif isinstance(t, MapTypeInfo):
        hash_code = (
            _HASH_CODES.get(t.key_type.name) if isinstance(t.key_type, BasicTypeInfo) else None
        )
        inner = _Map(_java(t.key_type), _java(t.value_type), hash_code)
    elif element_type_of(t) is not None:
        inner = _Sequence(_java(element_type_of(t)))
    else:  # pickled objects inside a composite
        inner = str
    return _Nullable(inner)


class _TopRow:
    """A stream of rows prints ``+I[a,1]``: PyFlink formats it in Python, ``str`` per field."""

    __slots__ = ()

    def __call__(self, v: Any) -> str:
        if not isinstance(v, (tuple, list, Row)):
            return str(v)
        kind = v.get_row_kind() if isinstance(v, Row) else "+I"
        return f"{kind}[{','.join(str(x) for x in v)}]"


# types whose Java toString is Python's str of the value
_AS_STR = frozenset(
    ("String", "Byte", "Short", "Integer", "Long", "BigInteger", "BigDecimal", "Date", "Character")
)


def print_formatter(type_info: Any) -> Format | None:
    """How ``print()`` shows a record of a stream of ``type_info``; None for Python's ``str``
    (no declared type, ``PICKLED_BYTE_ARRAY``, or a type that prints the same)."""
    if not isinstance(type_info, TypeInformation) or isinstance(type_info, PickledBytesTypeInfo):
        return None
    if isinstance(type_info, RowTypeInfo):
        return _TopRow()
    if isinstance(type_info, BasicTypeInfo) and type_info.name in _AS_STR:
        return None
    return _java(type_info)
