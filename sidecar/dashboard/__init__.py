"""The dashboard: what the sidecar achieves — sleepers, grants, letters, and what happened after them."""
