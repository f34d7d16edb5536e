"""The runtime context a user function receives in ``open(runtime_context)``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from raystream.errors import GraphError
from raystream.state.api import AggregatingState, ListState, MapState, ReducingState, ValueState
from raystream.state.descriptors import (
    AggregatingStateDescriptor,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    ValueStateDescriptor,
)

if TYPE_CHECKING:
    from raystream.operators.base import OperatorContext


class RuntimeContext:
    """Information about the subtask, and keyed state of the current key (keyed streams only)."""

    def __init__(self, ctx: OperatorContext):
        self._ctx = ctx

    def get_task_name(self) -> str:
        return self._ctx.operator_name

    def get_task_name_with_subtasks(self) -> str:
        c = self._ctx
        return f"{c.operator_name} ({c.subtask_index + 1}/{c.parallelism})"

    def get_index_of_this_subtask(self) -> int:
        return self._ctx.subtask_index

    def get_number_of_parallel_subtasks(self) -> int:
        return self._ctx.parallelism

    def get_max_number_of_parallel_subtasks(self) -> int:
        return self._ctx.max_parallelism

    def get_attempt_number(self) -> int:
        return self._ctx.attempt

    def _backend(self, what: str):
        backend = self._ctx.keyed_backend
        if backend is None:
            raise GraphError(
                f"{what} is keyed state, only available after key_by (operator "
                f"{self._ctx.operator_name!r}, subtask {self._ctx.subtask_index})"
            )
        return backend

    def get_state(self, descriptor: ValueStateDescriptor) -> ValueState:
        return self._backend(f"ValueState {descriptor.name!r}").value_state(descriptor)

    def get_list_state(self, descriptor: ListStateDescriptor) -> ListState:
        return self._backend(f"ListState {descriptor.name!r}").list_state(descriptor)

    def get_map_state(self, descriptor: MapStateDescriptor) -> MapState:
        return self._backend(f"MapState {descriptor.name!r}").map_state(descriptor)

    def get_reducing_state(self, descriptor: ReducingStateDescriptor) -> ReducingState:
        return self._backend(f"ReducingState {descriptor.name!r}").reducing_state(descriptor)

    def get_aggregating_state(self, descriptor: AggregatingStateDescriptor) -> AggregatingState:
        return self._backend(f"AggregatingState {descriptor.name!r}").aggregating_state(descriptor)
