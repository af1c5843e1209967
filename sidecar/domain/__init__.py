"""Pure domain rules of the sidecar (no I/O)."""
