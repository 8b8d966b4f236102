"""Outcomes: whether each lead converted (and when), as the CRM reported it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create outcomes (one row per lead: the latest outcome reported) and its index on when it was reported."""
    op.create_table(
        "outcomes",
        sa.Column("lead_id", sa.String(256), nullable=False),
        sa.Column("converted", sa.Boolean, nullable=False),
        sa.Column("converted_at", sa.DateTime, nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("recorded_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("lead_id", name="pk_outcomes"),
    )
    op.create_index("ix_outcomes_updated_at", "outcomes", ["updated_at"])


def downgrade() -> None:
    """Drop outcomes."""
    op.drop_index("ix_outcomes_updated_at", table_name="outcomes")
    op.drop_table("outcomes")
