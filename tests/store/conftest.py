"""Fixtures of the store's tests."""

from __future__ import annotations

import pytest

from sidecar.store import db as store_db


@pytest.fixture
def store_url(tmp_path) -> str:
    """A SQLite store file of its own, not created yet."""
    return f"sqlite:///{tmp_path / 'store.sqlite'}"


@pytest.fixture
def engine(store_url):
    """An engine on an empty store: a migration test upgrades it to the revision before the one it checks."""
    engine = store_db.create_store_engine(store_url)
    yield engine
    engine.dispose()
