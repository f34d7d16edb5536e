"""Internal: batch formats of ``map_batches`` — rows into the format a function asks for, and
whatever it returns back into rows.

Ray Data's convention: a batch is columns. Dict records become one column per key (the keys of
the first record; a key missing from a later record is None there); any other record becomes
the single column ``item``. Formats:

- ``"numpy"``: ``dict[str, numpy.ndarray]`` (numbers and equally long numeric vectors as
  numeric arrays; strings, None, mixed and ragged values as object arrays, never coerced);
- ``"pandas"``: a ``pandas.DataFrame``;
- ``"pyarrow"``: a ``pyarrow.Table``;
- ``"rows"``: the records themselves, as a list.

A function returns a batch in any of these forms (independently of the input format): a dict of
equally long columns, a DataFrame, an Arrow table or record batch (rows become dicts), or a
list of records (kept as they are). Numeric 1-D numpy columns become Python scalars; rows of a
2-D column (an embedding matrix) become 1-D arrays.

Two converters, kept apart so that a columnar stream (Arrow record batches) only adds its own
input side: :func:`rows_to_batch` (input) and :func:`batch_to_rows` (output).
"""

from __future__ import annotations

from typing import Any

BATCH_FORMATS = ("numpy", "pandas", "pyarrow", "rows")
#: the column that holds records that are not dicts
ITEM = "item"


def check_batch_format(batch_format: str) -> str:
    if batch_format == "default":
        return "numpy"
    if batch_format not in BATCH_FORMATS:
        raise ValueError(
            f"batch_format must be one of {', '.join(map(repr, BATCH_FORMATS))}, got "
            f"{batch_format!r}"
        )
    return batch_format


def rows_to_columns(rows: list) -> dict[str, list]:
    """Dict records as columns (keys of the first record), anything else as ``item``."""
    if rows and all(type(r) is dict for r in rows):
        keys = list(rows[0])
        columns = {k: [r.get(k) for r in rows] for k in keys}
        return columns
    return {ITEM: list(rows)}


def rows_to_batch(rows: list, batch_format: str) -> Any:
    """``rows`` as one batch in ``batch_format``."""
    if batch_format == "rows":
        return list(rows)
    columns = rows_to_columns(rows)
    if batch_format == "numpy":
        return {k: _to_numpy(v) for k, v in columns.items()}
    if batch_format == "pandas":
        import pandas as pd

        return pd.DataFrame(columns)
    if batch_format == "pyarrow":
        import pyarrow as pa

        return pa.table(columns)
    raise ValueError(f"unknown batch format {batch_format!r}")


def _to_numpy(values: list) -> Any:
    """A column as an array: numbers as a numeric array, equally long numeric vectors as a
    matrix, anything else (strings, None, mixed types, ragged lists) as an object array, so
    that no value is coerced into another type (numpy would turn ``["a", 1]`` into strings)."""
    import numpy as np

    if values and all(isinstance(v, (int, float, np.number, np.bool_)) for v in values):
        return np.asarray(values)
    if values and all(isinstance(v, (list, tuple, np.ndarray)) for v in values):
        try:
            arr = np.asarray(values)
        except ValueError:  # ragged
            arr = None
        if arr is not None and arr.dtype.kind in "biufc":
            return arr
    out: Any = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


class BatchOutputError(TypeError):
    """A ``map_batches`` function returned something that is not a batch."""


def batch_to_rows(output: Any) -> list:
    """What a ``map_batches`` function returned, as a list of records."""
    if type(output) is list:
        return output
    if isinstance(output, tuple):
        return list(output)
    if isinstance(output, dict):
        return _columns_to_rows(output)
    kind = type(output).__module__.split(".", 1)[0]
    if kind == "pandas" and hasattr(output, "to_dict"):
        return _columns_to_rows({str(k): output[k].to_numpy() for k in output.columns})
    if kind == "pyarrow" and hasattr(output, "to_pylist"):
        return output.to_pylist()  # type: ignore[no-any-return]
    raise BatchOutputError(
        f"returned {type(output).__name__}; return a dict of columns, a pandas DataFrame, a "
        "pyarrow Table or a list of records"
    )


def _columns_to_rows(columns: dict) -> list:
    if not columns:
        return []
    names = list(columns)
    cols = [_column_values(name, columns[name]) for name in names]
    n = len(cols[0])
    for name, col in zip(names, cols):
        if len(col) != n:
            raise BatchOutputError(
                f"returned columns of different lengths ({names[0]!r}: {n}, {name!r}: {len(col)})"
            )
    return [dict(zip(names, values)) for values in zip(*cols)]


def _column_values(name: str, column: Any) -> list:
    ndim = getattr(column, "ndim", None)
    if ndim is not None:
        if ndim == 0:
            raise BatchOutputError(f"returned a scalar for column {name!r}, not one value per row")
        if ndim == 1:
            return column.tolist()  # type: ignore[no-any-return]  # Python scalars
        return list(column)  # one array per row
    if isinstance(column, (list, tuple)):
        return list(column)
    if hasattr(column, "to_pylist"):  # a pyarrow array
        return column.to_pylist()  # type: ignore[no-any-return]
    raise BatchOutputError(
        f"returned {type(column).__name__} for column {name!r}; a column is a list or an array"
    )
