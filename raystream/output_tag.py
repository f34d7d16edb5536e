"""Mirror of ``pyflink.datastream.output_tag``."""

from raystream.api.functions import OutputTag

__all__ = ["OutputTag"]
