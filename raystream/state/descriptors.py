"""State descriptors: a name unique within the operator plus what the state needs to work."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raystream.api.functions import ReduceFunction, resolve


@dataclass(frozen=True)
class StateDescriptor:
    name: str
    type_info: Any = None  # accepted for PyFlink compatibility; Python values need no type info

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"state name must be a non-empty str, got {self.name!r}")


@dataclass(frozen=True)
class ValueStateDescriptor(StateDescriptor):
    pass


@dataclass(frozen=True)
class ListStateDescriptor(StateDescriptor):
    pass


@dataclass(frozen=True)
class MapStateDescriptor(StateDescriptor):
    """``MapStateDescriptor(name, key_type_info=None, value_type_info=None)``."""

    value_type_info: Any = None


@dataclass(frozen=True, init=False)
class ReducingStateDescriptor(StateDescriptor):
    reduce_function: Callable[[Any, Any], Any] = None  # type: ignore[assignment]

    def __init__(self, name: str, reduce_function: Any, type_info: Any = None):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "type_info", type_info)
        fn = resolve(reduce_function, ReduceFunction, "reduce", f"ReducingStateDescriptor {name!r}")
        object.__setattr__(self, "reduce_function", fn)
        self.__post_init__()


@dataclass(frozen=True, init=False)
class AggregatingStateDescriptor(StateDescriptor):
    agg_function: Any = None

    def __init__(self, name: str, agg_function: Any, type_info: Any = None):
        for method in ("create_accumulator", "add", "get_result"):
            if not callable(getattr(agg_function, method, None)):
                raise TypeError(
                    f"AggregatingStateDescriptor {name!r} needs an AggregateFunction with "
                    f"{method}(), got {type(agg_function).__name__}"
                )
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "type_info", type_info)
        object.__setattr__(self, "agg_function", agg_function)
        self.__post_init__()
