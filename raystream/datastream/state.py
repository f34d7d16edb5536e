"""Mirror of ``pyflink.datastream.state`` (same names as :mod:`raystream.state`)."""

from raystream.state import *  # noqa: F403
from raystream.state import __all__ as __all__
