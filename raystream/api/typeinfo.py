"""``Types`` and ``TypeInformation``: PyFlink's type descriptions, accepted wherever PyFlink
takes them (``output_type=``, ``type_info=``, ``key_type=``, state descriptors, ...).

raystream is dynamically typed: records are Python objects and pickle as they are, so a type
is metadata, with one exception that PyFlink programs rely on: where ``Types.ROW(...)`` or
``Types.ROW_NAMED(...)`` is the output type of an operator (or the ``type_info`` of
``from_collection``), the records it produces become :class:`~raystream.core.row.Row` objects
(tuples and lists converted, field by field, to the row's names). The conversion runs once per
batch on the operator's output (:func:`row_converter`), not per record through another operator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from raystream.core.row import Row, RowKind, make_row
from raystream.errors import record_repr

_INSERT = RowKind.INSERT

__all__ = [
    "BasicArrayTypeInfo",
    "BasicTypeInfo",
    "ListTypeInfo",
    "MapTypeInfo",
    "PickledBytesTypeInfo",
    "PrimitiveArrayTypeInfo",
    "RowTypeInfo",
    "TupleTypeInfo",
    "TypeInformation",
    "Types",
]


class TypeInformation:
    """Describes the type of a stream's records (metadata in raystream)."""

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(self)))

    def __repr__(self) -> str:
        return type(self).__name__


class BasicTypeInfo(TypeInformation):
    """A scalar type (``STRING``, ``INT``, ``SQL_TIMESTAMP``, ...)."""

    def __init__(self, name: str, python_type: type | None = None):
        self.name = name
        self.python_type = python_type

    def __repr__(self) -> str:
        return self.name


class PickledBytesTypeInfo(TypeInformation):
    """Any picklable Python object (what every raystream record is)."""

    def __repr__(self) -> str:
        return "PickledByteArrayTypeInfo"


class RowTypeInfo(TypeInformation):
    """Rows with these field types and names (``f0``, ``f1``, ... unless named)."""

    def __init__(
        self, field_types: Sequence[TypeInformation], field_names: Sequence[str] | None = None
    ):
        types = list(field_types)
        names = [f"f{i}" for i in range(len(types))] if field_names is None else list(field_names)
        if len(names) != len(types):
            raise ValueError(
                f"Types.ROW_NAMED: {len(names)} field names {names} for {len(types)} field types"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"Types.ROW_NAMED: duplicate field names in {names}")
        self.field_types = types
        self.field_names = names

    def get_field_names(self) -> list[str]:
        return list(self.field_names)

    def get_field_types(self) -> list[TypeInformation]:
        return list(self.field_types)

    def get_field_index(self, field_name: str) -> int:
        return self.field_names.index(field_name)

    def get_arity(self) -> int:
        return len(self.field_types)

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}: {t!r}" for n, t in zip(self.field_names, self.field_types))
        return f"RowTypeInfo({inner})"


class TupleTypeInfo(TypeInformation):
    def __init__(self, field_types: Sequence[TypeInformation]):
        self.field_types = list(field_types)

    def get_field_types(self) -> list[TypeInformation]:
        return list(self.field_types)

    def __repr__(self) -> str:
        return "TupleTypeInfo({})".format(", ".join(repr(t) for t in self.field_types))


class _ElementTypeInfo(TypeInformation):
    def __init__(self, element_type: TypeInformation):
        self.element_type = element_type

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.element_type!r})"


class ListTypeInfo(_ElementTypeInfo):
    pass


class BasicArrayTypeInfo(_ElementTypeInfo):
    pass


class PrimitiveArrayTypeInfo(_ElementTypeInfo):
    pass


class ObjectArrayTypeInfo(_ElementTypeInfo):
    pass


def element_type_of(type_info: Any) -> TypeInformation | None:
    """The element type of a ``LIST`` or array type, else None."""
    return type_info.element_type if isinstance(type_info, _ElementTypeInfo) else None


class MapTypeInfo(TypeInformation):
    def __init__(self, key_type: TypeInformation, value_type: TypeInformation):
        self.key_type = key_type
        self.value_type = value_type

    def __repr__(self) -> str:
        return f"MapTypeInfo({self.key_type!r}, {self.value_type!r})"


def _basic(name: str, python_type: type | None = None) -> Callable[[], BasicTypeInfo]:
    info = BasicTypeInfo(name, python_type)
    return staticmethod(lambda: info)  # type: ignore[return-value]


class Types:
    """PyFlink's type constructors: ``Types.STRING()``, ``Types.ROW([Types.INT(), ...])``, ..."""

    STRING = _basic("String", str)
    BYTE = _basic("Byte", int)
    BOOLEAN = _basic("Boolean", bool)
    SHORT = _basic("Short", int)
    INT = _basic("Integer", int)
    LONG = _basic("Long", int)
    FLOAT = _basic("Float", float)
    DOUBLE = _basic("Double", float)
    CHAR = _basic("Character", str)
    BIG_INT = _basic("BigInteger", int)
    BIG_DEC = _basic("BigDecimal")
    VOID = _basic("Void")
    INSTANT = _basic("Instant")
    SQL_DATE = _basic("Date")
    SQL_TIME = _basic("Time")
    SQL_TIMESTAMP = _basic("Timestamp")

    @staticmethod
    def PICKLED_BYTE_ARRAY() -> TypeInformation:
        return PickledBytesTypeInfo()

    @staticmethod
    def ROW(field_types: Sequence[TypeInformation]) -> RowTypeInfo:
        return RowTypeInfo(field_types)

    @staticmethod
    def ROW_NAMED(
        field_names: Sequence[str], field_types: Sequence[TypeInformation]
    ) -> RowTypeInfo:
        return RowTypeInfo(field_types, field_names)

    @staticmethod
    def TUPLE(field_types: Sequence[TypeInformation]) -> TupleTypeInfo:
        return TupleTypeInfo(field_types)

    @staticmethod
    def PRIMITIVE_ARRAY(element_type: TypeInformation) -> PrimitiveArrayTypeInfo:
        return PrimitiveArrayTypeInfo(element_type)

    @staticmethod
    def BASIC_ARRAY(element_type: TypeInformation) -> BasicArrayTypeInfo:
        return BasicArrayTypeInfo(element_type)

    @staticmethod
    def OBJECT_ARRAY(element_type: TypeInformation) -> ObjectArrayTypeInfo:
        return ObjectArrayTypeInfo(element_type)

    @staticmethod
    def MAP(key_type_info: TypeInformation, value_type_info: TypeInformation) -> MapTypeInfo:
        return MapTypeInfo(key_type_info, value_type_info)

    @staticmethod
    def LIST(element_type_info: TypeInformation) -> ListTypeInfo:
        return ListTypeInfo(element_type_info)


# -- Row conversion ------------------------------------------------------------------------------


class RowConverter:
    """Turns one batch of values into rows of a ``RowTypeInfo`` (picklable, built on the
    driver, applied by the operator's output)."""

    __slots__ = ("arity", "field_names")

    def __init__(self, type_info: RowTypeInfo):
        self.field_names = list(type_info.field_names)
        self.arity = len(self.field_names)

    def __call__(self, values: list, where: str) -> list:
        names, arity = self.field_names, self.arity
        out: list[Row] = []
        append = out.append
        for v in values:
            # rows already named as the type pass through; everything else is rebuilt once
            if type(v) is Row and v._fields == names:
                append(v)
            elif isinstance(v, (tuple, list, Row)) and len(v) == arity:
                kind = v._row_kind if isinstance(v, Row) else _INSERT
                append(make_row(names, v, kind))
            else:
                raise TypeError(self._mismatch(v, where))
        return out

    def _mismatch(self, v: Any, where: str) -> str:
        got = (
            f"{type(v).__name__} of length {len(v)}" if hasattr(v, "__len__") else type(v).__name__
        )
        return (
            f"{where}: the output type is a row of {self.arity} fields {self.field_names}, but "
            f"the function produced {record_repr(v)} ({got}); return a tuple, list or Row of "
            f"{self.arity} values"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_converter_from_names, (self.field_names,))


def _converter_from_names(names: list[str]) -> RowConverter:
    return RowConverter(RowTypeInfo([PickledBytesTypeInfo()] * len(names), names))


def row_converter(type_info: Any) -> RowConverter | None:
    """The conversion an output type asks for: rows for ``ROW``/``ROW_NAMED``, else none."""
    if (
        type_info is None
        or isinstance(type_info, TypeInformation)
        and not isinstance(type_info, RowTypeInfo)
    ):
        return None
    if isinstance(type_info, RowTypeInfo):
        return RowConverter(type_info)
    raise TypeError(
        f"expected a type from raystream.common.Types (e.g. Types.ROW([...])), got {type_info!r}"
    )


class OutputTypedFactory:
    """Wraps an operator factory so the operator converts its main output to ``type_info``."""

    def __init__(self, factory: Callable[[str], Any], converter: RowConverter):
        self.factory = factory
        self.converter = converter

    def __call__(self, name: str) -> Any:
        op = self.factory(name)
        op.output_converter = self.converter
        return op


def apply_output_type(transformation: Any, output_type: Any) -> None:
    """Declares ``output_type`` as the type of ``transformation``'s records (it travels with the
    stream: see :mod:`raystream.api.typed_values`); a row type makes the operator produce
    rows."""
    converter = row_converter(output_type)
    if output_type is not None:
        transformation.output_type = output_type
    if converter is not None:
        transformation.operator_factory = OutputTypedFactory(
            transformation.operator_factory, converter
        )


def with_output_type(stream: Any, output_type: Any) -> Any:
    """``stream`` (just created by an operator) with its operator converting to ``output_type``."""
    apply_output_type(stream._t, output_type)
    return stream
