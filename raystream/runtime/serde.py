"""Internal: pickling of plans and task specs that may hold Ray object refs.

Plans and specs are cloudpickled by raystream itself (so user functions are pickled once, at
submit). Object refs inside them (e.g. the blocks of a Ray Dataset source) must not be pickled
that way — Ray would not know who borrows them. They are pulled out into a list that travels as a
real actor-call argument, where Ray tracks the references, and put back on load.

Code objects of functions pickled by value (defined in ``__main__``, a notebook or inside another
function) keep their real ``co_filename``: cloudpickle replaces it with ``<dynamic-code>``, which
would make every user frame of a traceback raised in a task point nowhere.
"""

from __future__ import annotations

import io
import pickle
import types
from collections import ChainMap
from typing import Any

import cloudpickle
import ray

_ANONYMOUS_FILE = "<dynamic-code>"


def _code_reduce(code: types.CodeType) -> tuple:
    """cloudpickle's reduction of ``code``, with the real file name put back."""
    rebuild, args = cloudpickle.Pickler.dispatch_table[types.CodeType](code)
    args = list(args)
    for i, arg in enumerate(args):  # co_filename is the only str argument equal to that marker
        if type(arg) is str and arg == _ANONYMOUS_FILE:
            args[i] = code.co_filename
            break
    return rebuild, tuple(args)


_DISPATCH = ChainMap({types.CodeType: _code_reduce}, cloudpickle.Pickler.dispatch_table)


class _Pickler(cloudpickle.Pickler):
    dispatch_table = _DISPATCH

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
