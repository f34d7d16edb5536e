"""Mirror of ``pyflink.datastream.state_backend`` (same names as :mod:`raystream.state_backend`)."""

from raystream.state_backend import *  # noqa: F403
from raystream.state_backend import __all__ as __all__
