"""Build the one Store of a process from its settings (the edge reads settings; the store never does)."""

from __future__ import annotations

from api.keys import KeyStore
from api.settings import Settings
from store import Store


def open_store(settings: Settings) -> Store:
    """Return the store `settings` name; an embedded SQLite store upgrades its own schema on first use, a
    server's (PostgreSQL) waits for `leadcast db upgrade`, run once per release by whoever deploys it."""
    store = Store(settings.resolved_database_url)
    store.auto_upgrade = store.is_sqlite
    return store


def open_keys(settings: Settings, store: Store | None = None) -> KeyStore:
    """Return the API keys of `store` (default: the settings' store), importing the legacy keys file once."""
    return KeyStore(store or open_store(settings), legacy_file=settings.resolved_api_keys_file,
                    cache_seconds=settings.key_cache_seconds)
