"""Columnar operators: streams of Arrow record batches (see ``docs/columnar.md``)."""

from raystream.operators.columnar.schema import ColumnError

__all__ = ["ColumnError"]
