"""State descriptors: a name unique within the operator plus what the state needs to work.

A descriptor may carry a :class:`~raystream.state.ttl.StateTtlConfig`
(``descriptor.enable_time_to_live(config)``, as in Flink); it does not take part in equality.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from raystream.api.functions import ReduceFunction, resolve

if TYPE_CHECKING:
    from raystream.state.ttl import StateTtlConfig


@dataclass(frozen=True)
class StateDescriptor:
    name: str
    type_info: Any = None  # accepted for PyFlink compatibility; Python values need no type info
    ttl_config: StateTtlConfig | None = field(default=None, compare=False, kw_only=True)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"state name must be a non-empty str, got {self.name!r}")

    def get_name(self) -> str:
        return self.name

    def enable_time_to_live(self, ttl_config: StateTtlConfig) -> None:
        """Makes values of this state expire (SEMANTICS §3.3); call before the state is used."""
        from raystream.state.ttl import StateTtlConfig

        if not isinstance(ttl_config, StateTtlConfig):
            raise TypeError(
                f"state {self.name!r}: enable_time_to_live needs a StateTtlConfig (built with "
                f"StateTtlConfig.new_builder(ttl)...build()), got {type(ttl_config).__name__}"
            )
        # descriptors are frozen value objects, but Flink's API configures TTL in place
        object.__setattr__(self, "ttl_config", ttl_config)


@dataclass(frozen=True)
class ValueStateDescriptor(StateDescriptor):
    pass


@dataclass(frozen=True)
class ListStateDescriptor(StateDescriptor):
    pass


@dataclass(frozen=True, init=False)
class MapStateDescriptor(StateDescriptor):
    """``MapStateDescriptor(name, key_type_info=None, value_type_info=None)``; the key type is
    kept as ``type_info``."""

    value_type_info: Any = None

    def __init__(self, name: str, key_type_info: Any = None, value_type_info: Any = None):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "type_info", key_type_info)
        object.__setattr__(self, "ttl_config", None)
        object.__setattr__(self, "value_type_info", value_type_info)
        self.__post_init__()


@dataclass(frozen=True, init=False)
class ReducingStateDescriptor(StateDescriptor):
    reduce_function: Callable[[Any, Any], Any] = None  # type: ignore[assignment]

    def __init__(self, name: str, reduce_function: Any, type_info: Any = None):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "type_info", type_info)
        object.__setattr__(self, "ttl_config", None)
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
        object.__setattr__(self, "ttl_config", None)
        object.__setattr__(self, "agg_function", agg_function)
        self.__post_init__()
