"""Mirror of ``pyflink.datastream.execution_mode`` (same names as :mod:`raystream.execution_mode`)."""

from raystream.execution_mode import *  # noqa: F403
from raystream.execution_mode import __all__ as __all__
