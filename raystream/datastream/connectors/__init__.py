"""Mirror of ``pyflink.datastream.connectors`` (same names as :mod:`raystream.connectors`)."""

from raystream.connectors import *  # noqa: F403
from raystream.connectors import __all__ as __all__
