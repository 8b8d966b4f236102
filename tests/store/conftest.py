"""The store every store test works on: fresh, at the newest schema, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from store import Store


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """Return a fresh store at the newest schema (closed after the test)."""
    store = Store(database_url)
    store.upgrade()
    yield store
    store.dispose()
