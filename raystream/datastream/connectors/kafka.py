"""Mirror of ``pyflink.datastream.connectors.kafka``."""

from raystream.connectors.kafka import *  # noqa: F403
from raystream.connectors.kafka import __all__ as __all__
