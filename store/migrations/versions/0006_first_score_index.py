"""Model health's index in (lead, time) order: each lead's first score by a model version, read from the index alone.

It replaces ix_predictions_monitoring (time order, 0004). Monitoring keeps one row per lead, its first score: in
time order that took the database's whole answer, lead ids included, through Python to drop the rescored rows. In
lead order the first row of each lead is the first score, so PostgreSQL keeps it with DISTINCT ON and joins the
outcomes by a merge with their primary key, and SQLite's rows come grouped. One index still, so logging a score
costs what it did.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

COLUMNS = ["model_version", "model_name", "lead_id", "scored_at", "id", "probability"]
BEFORE = ["model_version", "model_name", "scored_at", "id", "lead_id", "probability", "grade"]


def upgrade() -> None:
    """Replace ix_predictions_monitoring with ix_predictions_first_score."""
    op.create_index("ix_predictions_first_score", "predictions", COLUMNS)
    op.drop_index("ix_predictions_monitoring", table_name="predictions")


def downgrade() -> None:
    """Restore ix_predictions_monitoring."""
    op.create_index("ix_predictions_monitoring", "predictions", BEFORE)
    op.drop_index("ix_predictions_first_score", table_name="predictions")
