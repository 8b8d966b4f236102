"""Each first score knows its lead's outcome: first_scores.converted, kept by the database.

Model health joined every first score with the outcomes to mark the converted: over a million first scores that
join was more than half the server's time (0.7 of 1.3 s, measured). The flag now lives in first_scores, kept by
triggers, so monitoring reads one table.

- A first score written (the log's trigger of migration 0007) takes its lead's outcome as the outcomes hold it.
- An outcome written, changed or removed sets the flag of every first score of its lead (any version or name).

Two transactions that meet on one lead, a first score and its outcome, would each miss the other under READ
COMMITTED: the log's trigger reads no outcome yet, and the outcome's trigger finds no first score yet. So they
take one advisory lock: the log's writers shared (they never wait for each other), an outcome's writer exclusive.
An outcome's statement waits for the log's statements in flight to commit, and the log's for it; each trigger
reads in a statement of its own after the lock, so it sees what the other committed. Erasure takes the lock
first too (store.leads), before the row locks its deletes take, so it cannot hold one a writer waits on while it
waits for the lock. SQLite writes one transaction at a time, so there its triggers need no lock.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import importlib

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# The advisory lock's key: store.schema.FIRST_SCORE_OUTCOME_LOCK says the same (a migration restates, never imports).
LOCK = 8_190_233_308

BACKFILL = """
UPDATE first_scores SET converted = TRUE
WHERE lead_id IN (SELECT lead_id FROM outcomes WHERE converted)
"""

_previous = importlib.import_module("store.migrations.versions.0007_first_scores")
upsert_set = _previous.upsert_set


SQLITE = [
    "DROP TRIGGER tr_predictions_first_scores_insert",
    f"""
CREATE TRIGGER tr_predictions_first_scores_insert AFTER INSERT ON predictions
BEGIN
    INSERT INTO first_scores
           (model_version, model_name, lead_id, prediction_id, scored_at, probability, rows_logged, converted)
    VALUES (NEW.model_version, NEW.model_name, NEW.lead_id, NEW.id, NEW.scored_at, NEW.probability, 1,
            EXISTS (SELECT 1 FROM outcomes AS o WHERE o.lead_id = NEW.lead_id AND o.converted))
    ON CONFLICT (model_version, model_name, lead_id) DO UPDATE SET {upsert_set("first_scores")},
    converted = excluded.converted;
END
""",
    *[f"""
CREATE TRIGGER tr_outcomes_first_scores_{event.lower()} AFTER {event} ON outcomes
BEGIN
    UPDATE first_scores SET converted = EXISTS (
        SELECT 1 FROM outcomes AS o WHERE o.lead_id = first_scores.lead_id AND o.converted)
    WHERE lead_id IN ({leads});
END
""" for event, leads in (("INSERT", "NEW.lead_id"), ("UPDATE", "OLD.lead_id, NEW.lead_id"),
                         ("DELETE", "OLD.lead_id"))],
]

POSTGRESQL = [
    f"""
CREATE OR REPLACE FUNCTION first_scores_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared({LOCK});
    INSERT INTO first_scores AS f
           (model_version, model_name, lead_id, prediction_id, scored_at, probability, rows_logged, converted)
    SELECT DISTINCT ON (model_version, model_name, lead_id)
           model_version, model_name, lead_id, id, scored_at, probability,
           count(*) OVER (PARTITION BY model_version, model_name, lead_id),
           EXISTS (SELECT 1 FROM outcomes AS o WHERE o.lead_id = n.lead_id AND o.converted)
    FROM new_rows AS n
    ORDER BY model_version, model_name, lead_id, scored_at, id
    ON CONFLICT (model_version, model_name, lead_id) DO UPDATE SET {upsert_set("f")},
    converted = excluded.converted;
    RETURN NULL;
END
$$
""",
    f"""
CREATE FUNCTION first_scores_outcome() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({LOCK});
    IF TG_OP = 'DELETE' THEN
        UPDATE first_scores SET converted = FALSE WHERE lead_id = OLD.lead_id AND converted;
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF OLD.lead_id <> NEW.lead_id THEN
            UPDATE first_scores SET converted = FALSE WHERE lead_id = OLD.lead_id AND converted;
        END IF;
    END IF;
    UPDATE first_scores SET converted = NEW.converted WHERE lead_id = NEW.lead_id AND converted <> NEW.converted;
    RETURN NULL;
END
$$
""",
    # Per row, not per statement: a driver's executemany sends one INSERT per row, and a statement trigger's
    # query over its transition table cost 0.7 ms a row (5,000 rows in 3.6 s, measured); a row trigger is an index
    # probe with a cached plan.
    """
CREATE TRIGGER tr_outcomes_first_scores AFTER INSERT OR UPDATE OR DELETE ON outcomes
FOR EACH ROW EXECUTE FUNCTION first_scores_outcome()
""",
    # TRUNCATE fires no row or delete trigger: an operator's TRUNCATE of either table would leave first_scores
    # saying what the tables no longer hold. (SQLite has no TRUNCATE: its DELETE runs the row triggers.)
    f"""
CREATE FUNCTION first_scores_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({LOCK});
    IF TG_TABLE_NAME = 'predictions' THEN
        DELETE FROM first_scores;
    ELSE
        UPDATE first_scores SET converted = FALSE WHERE converted;
    END IF;
    RETURN NULL;
END
$$
""",
    *[f"""
CREATE TRIGGER tr_{table}_first_scores_truncate AFTER TRUNCATE ON {table}
FOR EACH STATEMENT EXECUTE FUNCTION first_scores_truncated()
""" for table in ("predictions", "outcomes")],
]

EVENTS = ("insert", "update", "delete")


def upgrade() -> None:
    """Add first_scores.converted, the triggers that keep it, and fill it from the outcomes."""
    postgres = op.get_bind().dialect.name == "postgresql"
    op.add_column("first_scores", sa.Column("converted", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_index("ix_first_scores_lead_id", "first_scores", ["lead_id"])
    # As in 0007, the triggers before the backfill: creating them locks outcomes against writers (and the new
    # column first_scores against the log's trigger) until this migration commits, so an outcome is either read
    # by the backfill or seen by a trigger.
    for statement in POSTGRESQL if postgres else SQLITE:
        op.execute(statement)
    op.execute(BACKFILL)


def downgrade() -> None:
    """Drop the outcome and truncate triggers and first_scores.converted; the log's trigger goes back to 0007's."""
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute("DROP TRIGGER IF EXISTS tr_outcomes_first_scores ON outcomes")
        op.execute("DROP FUNCTION IF EXISTS first_scores_outcome()")
        for table in ("predictions", "outcomes"):
            op.execute(f"DROP TRIGGER IF EXISTS tr_{table}_first_scores_truncate ON {table}")
        op.execute("DROP FUNCTION IF EXISTS first_scores_truncated()")
    else:
        for event in EVENTS:
            op.execute(f"DROP TRIGGER IF EXISTS tr_outcomes_first_scores_{event}")
    if postgres:
        op.execute(_previous.POSTGRESQL[0].replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    else:
        op.execute("DROP TRIGGER tr_predictions_first_scores_insert")
        op.execute(_previous.SQLITE[0])
    op.drop_index("ix_first_scores_lead_id", "first_scores")
    with op.batch_alter_table("first_scores") as batch:
        batch.drop_column("converted")
