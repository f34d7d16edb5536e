"""Mirror of ``pyflink.datastream.connectors.number_seq``."""

from raystream.operators.sources import NumberSequenceSource

__all__ = ["NumberSequenceSource"]
