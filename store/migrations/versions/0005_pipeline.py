"""The live pipeline: opportunities, their events (the stage history the store builds), its stage settings, and
every forecast made from it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TEXT = 1000


def upgrade() -> None:
    """Create opportunities, opportunity_events, pipeline_config and forecast_snapshots."""
    op.create_table(
        "opportunities",
        sa.Column("opportunity_id", sa.String(256), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("lead_id", sa.String(TEXT), nullable=True),
        sa.Column("account", sa.String(TEXT), nullable=True),
        sa.Column("owner", sa.String(TEXT), nullable=False),
        sa.Column("team", sa.String(TEXT), nullable=True),
        sa.Column("region", sa.String(TEXT), nullable=True),
        sa.Column("product", sa.String(TEXT), nullable=False),
        sa.Column("product_category", sa.String(TEXT), nullable=True),
        sa.Column("amount", sa.Float(53), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=True),
        sa.Column("stage", sa.String(TEXT), nullable=False),
        sa.Column("stage_entered_at", sa.DateTime, nullable=True),
        sa.Column("expected_close_date", sa.DateTime, nullable=True),
        sa.Column("closed_at", sa.DateTime, nullable=True),
        sa.Column("outcome", sa.String(8), nullable=False),
        sa.Column("won_amount", sa.Float(53), nullable=True),
        sa.Column("first_seen_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("opportunity_id", name="pk_opportunities"),
    )
    op.create_index("ix_opportunities_seq", "opportunities", ["seq"])
    op.create_table(
        "opportunity_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), autoincrement=True, nullable=False),
        sa.Column("opportunity_id", sa.String(256), nullable=False),
        sa.Column("field", sa.String(32), nullable=False),
        sa.Column("old_value", sa.String(TEXT), nullable=True),
        sa.Column("new_value", sa.String(TEXT), nullable=True),
        sa.Column("changed_at", sa.DateTime, nullable=False),
        sa.Column("recorded_at", sa.DateTime, nullable=False),
        sa.Column("source", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_opportunity_events"),
    )
    op.create_index("ix_opportunity_events_opportunity_id_id", "opportunity_events", ["opportunity_id", "id"])
    op.create_index("ix_opportunity_events_field_id", "opportunity_events", ["field", "id"])
    op.create_table(
        "pipeline_config",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_pipeline_config"),
    )
    op.create_table(
        "forecast_snapshots",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), autoincrement=True, nullable=False),
        sa.Column("made_at", sa.DateTime, nullable=False),
        sa.Column("as_of", sa.DateTime, nullable=False),
        sa.Column("horizon", sa.String(16), nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("group_by", sa.String(32), nullable=True),
        sa.Column("simulations", sa.Integer, nullable=False),
        sa.Column("seed", sa.BigInteger, nullable=True),
        sa.Column("stage_model_version", sa.String(32), nullable=False),
        sa.Column("event_mark", sa.BigInteger, nullable=False),
        sa.Column("open_deals", sa.Integer, nullable=False),
        sa.Column("periods", sa.JSON, nullable=False),
        sa.Column("total", sa.JSON, nullable=False),
        sa.Column("groups", sa.JSON, nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_forecast_snapshots"),
    )
    op.create_index("ix_forecast_snapshots_made_at", "forecast_snapshots", ["made_at"])
    op.create_index("ix_forecast_snapshots_as_of", "forecast_snapshots", ["as_of"])


def downgrade() -> None:
    """Drop the pipeline's tables."""
    op.drop_table("forecast_snapshots")
    op.drop_table("pipeline_config")
    op.drop_table("opportunity_events")
    op.drop_table("opportunities")
