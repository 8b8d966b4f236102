"""A covering index for model health: one model version's scores in time order, read from the index alone.

Monitoring reads every logged score of a model version (1 million rows in its benchmark); without this index
each read walks the whole table, feature values included (about 1 KB a row).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = ["model_version", "model_name", "scored_at", "id", "lead_id", "probability", "grade"]


def upgrade() -> None:
    """Create ix_predictions_monitoring."""
    op.create_index("ix_predictions_monitoring", "predictions", COLUMNS)


def downgrade() -> None:
    """Drop ix_predictions_monitoring."""
    op.drop_index("ix_predictions_monitoring", table_name="predictions")
