"""Web layer: thin blueprints, templates, translations."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app

if TYPE_CHECKING:
    from sidecar.bootstrap import Runtime

RUNTIME_KEY = "mlsidecar"


def current_runtime() -> Runtime:
    """The adapters wired for this app (set by ``create_app``)."""
    return current_app.extensions[RUNTIME_KEY]


def app_singleton(key: str, factory):
    """One instance per app of a service that keeps caches (e.g. the bridge's level cache)."""
    extensions = current_app.extensions
    if key not in extensions:
        extensions[key] = factory(current_runtime())
    return extensions[key]
