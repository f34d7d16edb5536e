"""Internal: key groups of the rows of an Arrow record batch, computed vectorized.

The key of a row is the value of its key column, or the tuple of the values of several key
columns — exactly the key the row path would use for the same record as a dict (``r["k"]`` or
``(r["a"], r["b"])``), so its key group is :func:`~raystream.core.keys.key_group_of` of that
Python value and a key lands on the same subtask and in the same key group whichever shape
carries it. The stable hash runs once per distinct key of a batch (and not again for keys seen
before, through a bounded cache): each key column is dictionary-encoded, several columns are
combined into one code per distinct tuple, and the key groups are taken back by code. No Python
runs per row. No Ray here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raystream.core.keys import stable_hash
from raystream.errors import InvalidKeyError, record_repr


class KeyColumnError(InvalidKeyError):
    """A key column is missing from a batch or holds nulls."""


def encode_column(array: Any) -> tuple[np.ndarray, list]:
    """``(codes, values)``: a code per row and the distinct Python values the codes index."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if not pa.types.is_dictionary(array.type):
        array = pc.dictionary_encode(array)
    codes = array.indices.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return codes, array.dictionary.to_pylist()


def distinct_keys(
    batch: pa.RecordBatch, columns: Sequence[str], where: str
) -> tuple[np.ndarray, list]:
    """``(codes, keys)``: per row the index of its key in ``keys``, the batch's distinct keys
    (Python values; tuples for several columns), in no particular order."""
    encoded = []
    names = batch.schema.names
    for c in columns:
        if c not in names:
            raise KeyColumnError(
                f"{where}: key column {c!r} is not in the batch (columns: {', '.join(names)})"
            )
        array = batch.column(c)
        if array.null_count:
            raise KeyColumnError(
                f"{where}: key column {c!r} holds {array.null_count} null value(s); a key must "
                "not be null (hint: drop or fill them before key_by)"
            )
        encoded.append(encode_column(array))
    if len(encoded) == 1:
        return encoded[0]
    sizes = [max(1, len(values)) for _, values in encoded]
    if float(np.prod(np.asarray(sizes, dtype=np.float64))) < 2.0**62:
        combined = np.zeros(batch.num_rows, dtype=np.int64)
        for (codes, _), size in zip(encoded, sizes):
            combined = combined * size + codes
        uniq, inverse = np.unique(combined, return_inverse=True)
        parts = []
        rest = uniq
        for size in reversed(sizes):
            parts.append(rest % size)
            rest = rest // size
        parts.reverse()
    else:  # too many distinct values to combine into one integer code
        stacked = np.stack([codes for codes, _ in encoded], axis=1)
        uniq_rows, inverse = np.unique(stacked, axis=0, return_inverse=True)
        parts = [uniq_rows[:, i] for i in range(len(encoded))]
    value_lists = [values for _, values in encoded]
    keys = list(zip(*[[vals[i] for i in part.tolist()] for part, vals in zip(parts, value_lists)]))
    return np.asarray(inverse, dtype=np.int64).reshape(-1), keys


class ColumnKeyGroups:
    """Key group of every row of a batch, from its key columns; equal to the row path's
    ``key_group_of(key, max_parallelism)`` for the same key. A per-process cache maps keys seen
    before to their group (dropped whole when it is full)."""

    def __init__(self, columns: Sequence[str], max_parallelism: int, cache_size: int = 1 << 17):
        self.columns = tuple(columns)
        self.max_parallelism = max_parallelism
        self.cache: dict = {}
        self.cache_size = cache_size

    def of_keys(self, keys: list) -> np.ndarray:
        """The key group of each key (Python values): cached ones in one pass in C, the stable
        hash for the others."""
        cache = self.cache
        groups = list(map(cache.get, keys))
        if None in groups:
            maxp = self.max_parallelism
            if len(cache) + len(keys) > self.cache_size:
                cache.clear()
            for i, kg in enumerate(groups):
                if kg is None:
                    k = keys[i]
                    try:
                        kg = groups[i] = stable_hash(k) % maxp
                    except InvalidKeyError as exc:
                        raise InvalidKeyError(
                            f"key {record_repr(k)} of columns {list(self.columns)}: {exc}"
                        ) from None
                    cache[k] = kg
        return np.array(groups, dtype=np.int64)

    def __call__(self, batch: pa.RecordBatch, where: str) -> np.ndarray:
        """The key group of every row (int64 array)."""
        codes, keys = distinct_keys(batch, self.columns, where)
        return self.of_keys(keys)[codes]  # type: ignore[no-any-return]
