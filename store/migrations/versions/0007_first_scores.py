"""Model health's first-score summary: one row per (model version, model name, lead), kept by the database.

Monitoring wants each lead's first score by a model version (the earliest by scored_at, then id) and the count of
logged rows. Picking them from the prediction log took most of `leadcast monitor`'s time over a million rows
(DISTINCT ON over every row of the version on PostgreSQL, the whole index through Python on SQLite). first_scores
holds them, so monitoring reads one row per lead.

Triggers on predictions keep it, not the writer: every way a row arrives or leaves (the log's COPY in autocommit,
an INSERT, erasure, retention, an operator's DELETE) updates the summary in the same statement, so it can never
disagree with the log, and the writer's COPY path keeps its two round trips (docs/store.md).
- insert: the new rows' first per key is upserted; the stored first stays unless the new one is earlier by
  (scored_at, id). Ids grow, so a batch that arrives late wins only with an earlier time, and a tie stays with
  the lower id, as ORDER BY scored_at, id does. `rows_logged` adds the batch's count.
- delete: `rows_logged` drops by the rows deleted; a key left with none is removed; a key whose first was deleted takes
  the earliest remaining row.
PostgreSQL does this per statement (transition tables: one set-based upsert per COPY, keys in sorted order so two
writers lock them in the same order); SQLite per row. A delete locks its keys in the same sorted order before it
changes them: in its join's order, a purge and a writer's COPY over two of the same leads each held one key and
waited for the other, and PostgreSQL aborted one of them (a deadlock, measured).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

KEY = ("model_version", "model_name", "lead_id")

BACKFILL = """
INSERT INTO first_scores (model_version, model_name, lead_id, prediction_id, scored_at, probability, rows_logged)
SELECT model_version, model_name, lead_id, id, scored_at, probability, n FROM (
    SELECT model_version, model_name, lead_id, id, scored_at, probability,
           row_number() OVER (PARTITION BY model_version, model_name, lead_id ORDER BY scored_at, id) AS k,
           count(*) OVER (PARTITION BY model_version, model_name, lead_id) AS n
    FROM predictions) AS ranked
WHERE k = 1
"""


def upsert_set(target: str) -> str:
    """Return the SET of the upsert: an earlier (scored_at, id) replaces the stored first score (every column of
    one SET reads the row as it was), and the rows logged add up. SQLite names the target table, PostgreSQL its
    alias."""
    earlier = f"(excluded.scored_at, excluded.prediction_id) < ({target}.scored_at, {target}.prediction_id)"
    return f"""
    rows_logged = {target}.rows_logged + excluded.rows_logged,
    prediction_id = CASE WHEN {earlier} THEN excluded.prediction_id ELSE {target}.prediction_id END,
    scored_at = CASE WHEN {earlier} THEN excluded.scored_at ELSE {target}.scored_at END,
    probability = CASE WHEN {earlier} THEN excluded.probability ELSE {target}.probability END"""


SQLITE = [
    f"""
CREATE TRIGGER tr_predictions_first_scores_insert AFTER INSERT ON predictions
BEGIN
    INSERT INTO first_scores
           (model_version, model_name, lead_id, prediction_id, scored_at, probability, rows_logged)
    VALUES (NEW.model_version, NEW.model_name, NEW.lead_id, NEW.id, NEW.scored_at, NEW.probability, 1)
    ON CONFLICT (model_version, model_name, lead_id) DO UPDATE SET {upsert_set("first_scores")};
END
""",
    """
CREATE TRIGGER tr_predictions_first_scores_delete AFTER DELETE ON predictions
BEGIN
    UPDATE first_scores SET rows_logged = rows_logged - 1
    WHERE model_version = OLD.model_version AND model_name = OLD.model_name AND lead_id = OLD.lead_id;
    DELETE FROM first_scores
    WHERE model_version = OLD.model_version AND model_name = OLD.model_name AND lead_id = OLD.lead_id
      AND rows_logged <= 0;
    UPDATE first_scores SET (prediction_id, scored_at, probability) = (
        SELECT p.id, p.scored_at, p.probability FROM predictions AS p
        WHERE p.model_version = OLD.model_version AND p.model_name = OLD.model_name AND p.lead_id = OLD.lead_id
        ORDER BY p.scored_at, p.id LIMIT 1)
    WHERE model_version = OLD.model_version AND model_name = OLD.model_name AND lead_id = OLD.lead_id
      AND prediction_id = OLD.id;
END
""",
]

POSTGRESQL = [
    f"""
CREATE FUNCTION first_scores_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO first_scores AS f
           (model_version, model_name, lead_id, prediction_id, scored_at, probability, rows_logged)
    SELECT DISTINCT ON (model_version, model_name, lead_id)
           model_version, model_name, lead_id, id, scored_at, probability,
           count(*) OVER (PARTITION BY model_version, model_name, lead_id)
    FROM new_rows
    ORDER BY model_version, model_name, lead_id, scored_at, id
    ON CONFLICT (model_version, model_name, lead_id) DO UPDATE SET {upsert_set("f")};
    RETURN NULL;
END
$$
""",
    """
CREATE FUNCTION first_scores_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM first_scores AS f
    WHERE (f.model_version, f.model_name, f.lead_id) IN (SELECT model_version, model_name, lead_id FROM old_rows)
    ORDER BY f.model_version, f.model_name, f.lead_id FOR UPDATE;
    UPDATE first_scores AS f SET rows_logged = f.rows_logged - d.n
    FROM (SELECT model_version, model_name, lead_id, count(*) AS n FROM old_rows
          GROUP BY model_version, model_name, lead_id) AS d
    WHERE (f.model_version, f.model_name, f.lead_id) = (d.model_version, d.model_name, d.lead_id);
    DELETE FROM first_scores AS f
    WHERE f.rows_logged <= 0
      AND (f.model_version, f.model_name, f.lead_id) IN (SELECT model_version, model_name, lead_id FROM old_rows);
    UPDATE first_scores AS f SET (prediction_id, scored_at, probability) = (
        SELECT p.id, p.scored_at, p.probability FROM predictions AS p
        WHERE (p.model_version, p.model_name, p.lead_id) = (f.model_version, f.model_name, f.lead_id)
        ORDER BY p.scored_at, p.id LIMIT 1)
    WHERE f.prediction_id IN (SELECT id FROM old_rows);
    RETURN NULL;
END
$$
""",
    """
CREATE TRIGGER tr_predictions_first_scores_insert AFTER INSERT ON predictions
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION first_scores_insert()
""",
    """
CREATE TRIGGER tr_predictions_first_scores_delete AFTER DELETE ON predictions
REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION first_scores_delete()
""",
]


def upgrade() -> None:
    """Create first_scores, fill it from the logged predictions, and the triggers that keep it."""
    op.create_table(
        "first_scores",
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("lead_id", sa.String(256), nullable=False),
        sa.Column("prediction_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=False),
        sa.Column("scored_at", sa.DateTime, nullable=False),
        sa.Column("probability", sa.Float, nullable=False),
        sa.Column("rows_logged", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint(*KEY, name="pk_first_scores"),
    )
    # The triggers before the backfill: CREATE TRIGGER locks predictions against writers until this migration
    # commits, so the backfill reads every row committed before it and the triggers add every row after. The
    # other way round, a row a writer committed between the backfill's read and the lock was in neither.
    for statement in POSTGRESQL if op.get_bind().dialect.name == "postgresql" else SQLITE:
        op.execute(statement)
    op.execute(BACKFILL)


def downgrade() -> None:
    """Drop the triggers and first_scores."""
    op.execute("DROP TRIGGER IF EXISTS tr_predictions_first_scores_insert ON predictions"
               if op.get_bind().dialect.name == "postgresql" else
               "DROP TRIGGER IF EXISTS tr_predictions_first_scores_insert")
    op.execute("DROP TRIGGER IF EXISTS tr_predictions_first_scores_delete ON predictions"
               if op.get_bind().dialect.name == "postgresql" else
               "DROP TRIGGER IF EXISTS tr_predictions_first_scores_delete")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS first_scores_insert()")
        op.execute("DROP FUNCTION IF EXISTS first_scores_delete()")
    op.drop_table("first_scores")
