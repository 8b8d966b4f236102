"""Erasure and retention: remove everything the store holds of one lead, or the predictions older than a date."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from store.core import Store
from store.schema import metadata, predictions

PURGE_ROWS = 10_000  # predictions deleted per transaction, so a purge never holds a long lock


def erase_lead(store: Store, *, lead_id: str) -> dict[str, int]:
    """Delete every row of every table keyed by `lead_id` in one transaction; return the rows removed per kind.

    `features` counts the logged feature sets among the removed predictions (they live in those rows). Any
    table with a lead_id column is covered, including ones added by later migrations.
    """
    removed: dict[str, int] = {}
    with store.begin() as conn:
        features = conn.execute(sa.select(predictions.c.features).where(predictions.c.lead_id == lead_id)).scalars()
        removed["features"] = sum(1 for f in features if f)
        for table in reversed(metadata.sorted_tables):  # children before parents
            if "lead_id" in table.c:
                removed[table.name] = int(conn.execute(table.delete().where(table.c.lead_id == lead_id)).rowcount)
    return removed


def purge_predictions(store: Store, *, before: datetime) -> int:
    """Delete the predictions logged before `before` (naive UTC), in batches; return how many were removed."""
    total = 0
    while True:
        with store.begin() as conn:
            ids = sa.select(predictions.c.id).where(predictions.c.scored_at < before).limit(PURGE_ROWS)
            done = int(conn.execute(predictions.delete().where(predictions.c.id.in_(ids.scalar_subquery()))).rowcount)
        total += done
        if done < PURGE_ROWS:
            return total
