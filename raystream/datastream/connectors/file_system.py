"""Mirror of ``pyflink.datastream.connectors.file_system``."""

from raystream.connectors.file_system import *  # noqa: F403
from raystream.connectors.file_system import __all__ as __all__
