"""Internal: state descriptors, the user-facing state interfaces and the backend protocol."""
