"""Keyed state — descriptors and TTL (``ttl``), the user-facing state interfaces (``api``), their
shared implementation (``handles``) and the backend seam (``backend``). Backends themselves live
in ``raystream.checkpointing.backends``.

This package also mirrors ``pyflink.datastream.state``: it re-exports the descriptors, the state
interfaces and ``StateTtlConfig``."""

from raystream.state.api import AggregatingState, ListState, MapState, ReducingState, ValueState
from raystream.state.descriptors import (
    AggregatingStateDescriptor,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    ValueStateDescriptor,
)
from raystream.state.ttl import StateTtlConfig

__all__ = [
    "AggregatingState",
    "AggregatingStateDescriptor",
    "ListState",
    "ListStateDescriptor",
    "MapState",
    "MapStateDescriptor",
    "ReducingState",
    "ReducingStateDescriptor",
    "StateTtlConfig",
    "ValueState",
    "ValueStateDescriptor",
]
