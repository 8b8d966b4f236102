"""The tables of the store (SQLAlchemy Core); every change to them ships as an Alembic migration."""

from __future__ import annotations

import sqlalchemy as sa

# Names for constraints and indexes, so migrations can refer to them on every backend.
metadata = sa.MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
})

# Times are stored as naive UTC: SQLite has no time zone type, and one convention keeps both backends equal.
api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("key_id", sa.String(12), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("salt", sa.String(32), nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("scopes", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("revoked_at", sa.DateTime, nullable=True),
    # At most one active key per name, enforced by the database so two processes cannot both create one.
    sa.Index("uq_api_keys_active_name", "name", unique=True,
             sqlite_where=sa.text("revoked_at IS NULL"), postgresql_where=sa.text("revoked_at IS NULL")),
)

# Files whose contents were imported once (the api-keys.json of earlier releases), so they are never re-read.
imports = sa.Table(
    "imports", metadata,
    sa.Column("source", sa.String(1024), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("imported_at", sa.DateTime, nullable=False),
)

# Every score the service returned (the prediction log): no protected and no unknown field, only the values of
# the spec's features that the model used.
predictions = sa.Table(
    "predictions", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
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
    sa.Index("ix_predictions_lead_id_scored_at", "lead_id", "scored_at"),
    sa.Index("ix_predictions_model_version_scored_at", "model_version", "scored_at"),
    # model health reads a version's scores from this index alone (migration 0004)
    sa.Index("ix_predictions_monitoring", "model_version", "model_name", "scored_at", "id", "lead_id", "probability",
             "grade"),
)

# What the CRM reported of each lead: converted or not, and when. One row per lead, replaced by a newer report
# (an upsert), so posting the same outcomes twice leaves the table as it was.
outcomes = sa.Table(
    "outcomes", metadata,
    sa.Column("lead_id", sa.String(256), primary_key=True),
    sa.Column("converted", sa.Boolean, nullable=False),
    sa.Column("converted_at", sa.DateTime, nullable=True),
    sa.Column("source", sa.String(16), nullable=False),  # api or import: who reported it last
    sa.Column("recorded_at", sa.DateTime, nullable=False),  # first reported
    sa.Column("updated_at", sa.DateTime, nullable=False),  # last changed (not touched by an identical report)
    sa.Index("ix_outcomes_updated_at", "updated_at"),
)
