"""Mirror of ``pyflink.datastream.formats``."""
