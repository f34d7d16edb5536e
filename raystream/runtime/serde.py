"""Internal: pickling of plans and task specs that may hold Ray object refs.

Plans and specs are cloudpickled by raystream itself (so user functions are pickled once, at
submit). Object refs inside them (e.g. the blocks of a Ray Dataset source) must not be pickled
that way — Ray would not know who borrows them. They are pulled out into a list that travels as a
real actor-call argument, where Ray tracks the references, and put back on load.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import cloudpickle
import ray


class _Pickler(cloudpickle.Pickler):
    def __init__(self, file: io.BytesIO):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.refs: list[Any] = []

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, ray.ObjectRef):
            self.refs.append(obj)
            return len(self.refs) - 1
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, refs: list[Any]):
        super().__init__(file)
        self.refs = refs

    def persistent_load(self, pid: Any) -> Any:
        return self.refs[pid]


def dumps(obj: Any) -> tuple[bytes, list[Any]]:
    buf = io.BytesIO()
    pickler = _Pickler(buf)
    pickler.dump(obj)
    return buf.getvalue(), pickler.refs


def loads(data: bytes, refs: list[Any]) -> Any:
    return _Unpickler(io.BytesIO(data), refs).load()
