"""Internal: keyed state — descriptors and TTL (``ttl``), the user-facing state interfaces
(``api``), their shared implementation (``handles``) and the backend seam (``backend``).
Backends themselves live in ``raystream.checkpointing.backends``."""
