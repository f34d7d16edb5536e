"""Declarative aggregates for ``window(...).aggregate(...)``: ``count``, ``sum``, ``min``,
``max``, ``mean``, ``first``, ``last``, each renamed with ``.alias(name)``.

>>> from raystream import agg
>>> agg.sum("v"), agg.mean("v").alias("avg_v")
(agg.sum('v'), agg.mean('v').alias('avg_v'))

See :mod:`raystream.api.aggregates` for the semantics.
"""

from raystream.api.aggregates import Aggregate, count, first, last, max, mean, min, sum

__all__ = ["Aggregate", "count", "first", "last", "max", "mean", "min", "sum"]
