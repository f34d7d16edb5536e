"""Mirror of ``pyflink.datastream.functions`` (same names as :mod:`raystream.functions`)."""

from raystream.functions import *  # noqa: F403
from raystream.functions import __all__ as __all__
