"""Mirror of ``pyflink.common.types``."""

from raystream.core.row import Row, RowKind

__all__ = ["Row", "RowKind"]
