"""Mirror of ``pyflink.datastream.output_tag`` (same names as :mod:`raystream.output_tag`)."""

from raystream.output_tag import *  # noqa: F403
from raystream.output_tag import __all__ as __all__
