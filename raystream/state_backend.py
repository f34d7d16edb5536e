"""Mirror of ``pyflink.datastream.state_backend``: ``HashMapStateBackend`` (in memory) and
``LmdbStateBackend`` (on disk; raystream's counterpart of ``EmbeddedRocksDBStateBackend``)."""

from raystream.checkpointing.backends.factory import HashMapStateBackend, LmdbStateBackend

__all__ = ["HashMapStateBackend", "LmdbStateBackend"]
