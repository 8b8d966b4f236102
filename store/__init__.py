"""leadcast's database: one Store over SQLAlchemy 2, its tables, and the Alembic migrations shipped with it."""

from store.core import Store, StoreError, StoreUnavailable, naive_utc
from store.schema import metadata

__all__ = ["Store", "StoreError", "StoreUnavailable", "metadata", "naive_utc"]
