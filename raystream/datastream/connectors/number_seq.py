"""Mirror of ``pyflink.datastream.connectors.number_seq``."""

from raystream.connectors.number_seq import *  # noqa: F403
from raystream.connectors.number_seq import __all__ as __all__
