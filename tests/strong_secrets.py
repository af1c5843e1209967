"""Secrets strong enough for the configuration's strength rules (sidecar.config.check_strength), for tests.

Deterministic, so a failing test shows the same value each run; never used outside tests.
"""

from __future__ import annotations

import hashlib


def strong_secret(label: str) -> str:
    """``label`` made long and varied enough to pass as a key, token or path token (at least 32 characters)."""
    return f"{label}-{hashlib.sha256(label.encode()).hexdigest()[:32]}"
