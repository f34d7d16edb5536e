"""Mirror of ``pyflink.common.serialization`` (the row-format ``Encoder``)."""

from raystream.operators.file_system import Encoder

__all__ = ["Encoder"]
