"""The prediction log: every score the service returned, with the model and the feature values it used.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create predictions and its two indexes (a lead's history; a model version's recent scores)."""
    op.create_table(
        "predictions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), autoincrement=True, nullable=False),
        sa.Column("lead_id", sa.String(256), nullable=False),
        sa.Column("scored_at", sa.DateTime, nullable=False),
        sa.Column("as_of", sa.DateTime, nullable=True),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("model_kind", sa.String(16), nullable=False),
        sa.Column("probability", sa.Float, nullable=False),
        sa.Column("score", sa.Integer, nullable=False),
        sa.Column("grade", sa.String(8), nullable=False),
        sa.Column("reasons", sa.JSON, nullable=True),
        sa.Column("features", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_predictions"),
    )
    op.create_index("ix_predictions_lead_id_scored_at", "predictions", ["lead_id", "scored_at"])
    op.create_index("ix_predictions_model_version_scored_at", "predictions", ["model_version", "scored_at"])


def downgrade() -> None:
    """Drop predictions."""
    op.drop_table("predictions")
