"""Internal: the user-facing API modules (re-exported from :mod:`raystream`)."""
