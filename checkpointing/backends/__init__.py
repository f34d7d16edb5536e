"""Internal: keyed state backends (one folder per backend kind, same interface)."""
