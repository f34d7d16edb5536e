"""Internal: the logical graph the API builds, partitioners, and its translation to a plan."""
