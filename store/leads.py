"""Erasure and retention: remove everything the store holds of one lead, or the predictions older than a date."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from store.core import Store
from store.schema import FIRST_SCORE_OUTCOME_LOCK, metadata, predictions

PURGE_ROWS = 10_000  # predictions deleted per transaction, so a purge never holds a long lock


def erase_lead(store: Store, *, lead_id: str) -> dict[str, int]:
    """Remove the lead from every table with a lead_id column in one transaction; return the rows per kind.

    A table whose lead_id is required belongs to the lead (predictions, outcomes): its rows are deleted. A
    table whose lead_id is an optional link (an opportunity the lead became) keeps its rows, which are the
    account's deal and the pipeline's history, and loses the link: counted as `<table>_unlinked`. `features`
    counts the logged feature sets among the removed predictions (they live in those rows). Tables added by
    later migrations are covered by the same rule, except derived ones (first_scores): the database removes
    their rows with the rows they derive from, and they are not counted a second time.
    """
    removed: dict[str, int] = {}
    with store.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Before any delete's row locks: a log writer holding this lock (shared) may wait on one of them.
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(FIRST_SCORE_OUTCOME_LOCK)))
        features = conn.execute(sa.select(predictions.c.features).where(predictions.c.lead_id == lead_id)).scalars()
        removed["features"] = sum(1 for f in features if f)
        for table in reversed(metadata.sorted_tables):  # children before parents
            if "lead_id" not in table.c or "derived_from" in table.info:
                continue
            rows = table.c.lead_id == lead_id
            if table.c.lead_id.nullable:
                unlinked = conn.execute(table.update().where(rows).values(lead_id=None)).rowcount
                removed[f"{table.name}_unlinked"] = int(unlinked)
            else:
                removed[table.name] = int(conn.execute(table.delete().where(rows)).rowcount)
    return removed


def purge_predictions(store: Store, *, before: datetime) -> int:
    """Delete the predictions logged before `before` (naive UTC), in batches; return how many were removed.

    The first-score summary follows in each batch's statement (migration 0007's trigger): a lead whose first
    score went takes its earliest remaining one, and a lead with none left leaves it.
    """
    total = 0
    while True:
        with store.begin() as conn:
            ids = sa.select(predictions.c.id).where(predictions.c.scored_at < before).limit(PURGE_ROWS)
            done = int(conn.execute(predictions.delete().where(predictions.c.id.in_(ids.scalar_subquery()))).rowcount)
        total += done
        if done < PURGE_ROWS:
            return total
