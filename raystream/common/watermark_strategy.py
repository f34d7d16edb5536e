"""Mirror of ``pyflink.common.watermark_strategy``."""

from raystream.core.watermarks import TimestampAssigner, WatermarkStrategy

__all__ = ["TimestampAssigner", "WatermarkStrategy"]
