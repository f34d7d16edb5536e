"""Mirror of ``pyflink.datastream.window`` (same names as :mod:`raystream.window`)."""

from raystream.window import *  # noqa: F403
from raystream.window import __all__ as __all__
