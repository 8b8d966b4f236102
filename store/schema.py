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
    # model health reads each lead's first score by a version from this index alone (migration 0006)
    sa.Index("ix_predictions_first_score", "model_version", "model_name", "lead_id", "scored_at", "id",
             "probability"),
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

# The live pipeline (issue 12 item 6): each opportunity's current state, in the opportunity contract, and `seq`,
# the order it was first seen in (so a forecast from the store draws deals in the export's order).
TEXT = 1000  # characters: crmdata.values.MAX_TEXT_LENGTH, the longest text a value may hold
opportunities = sa.Table(
    "opportunities", metadata,
    sa.Column("opportunity_id", sa.String(256), primary_key=True),
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
    sa.Index("ix_opportunities_seq", "seq"),
)

# Every change the store saw of a tracked field (stage, amount, expected_close_date, owner, outcome), and each
# deal's first sighting (field "created", new_value its stage). `changed_at` is when it happened as far as the
# record tells (its stage entry or close date), else when it was seen; `recorded_at` is when it was stored.
# Values are text (ISO dates, repr of numbers), so one column holds every field's old and new value.
opportunity_events = sa.Table(
    "opportunity_events", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("opportunity_id", sa.String(256), nullable=False),
    sa.Column("field", sa.String(32), nullable=False),
    sa.Column("old_value", sa.String(TEXT), nullable=True),
    sa.Column("new_value", sa.String(TEXT), nullable=True),
    sa.Column("changed_at", sa.DateTime, nullable=False),
    sa.Column("recorded_at", sa.DateTime, nullable=False),
    sa.Column("source", sa.String(256), nullable=False),
    sa.Index("ix_opportunity_events_opportunity_id_id", "opportunity_id", "id"),
    sa.Index("ix_opportunity_events_field_id", "field", "id"),
)

# Settings of the stored pipeline that its records do not carry (the stage configuration of the last sync).
pipeline_config = sa.Table(
    "pipeline_config", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.JSON, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

# Every forecast made from the store (issue 12 item 7): what it said per period and group, which stage model
# said it, and `event_mark`, the last pipeline event it saw (the pipeline it forecast can be rebuilt from it).
forecast_snapshots = sa.Table(
    "forecast_snapshots", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
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
    sa.Index("ix_forecast_snapshots_made_at", "made_at"),
    sa.Index("ix_forecast_snapshots_as_of", "as_of"),
)

# Model health's first-score summary (migration 0007): per model version, name and lead, the first logged score
# by (scored_at, id) and how many rows were logged. Triggers on predictions keep it in the statement that adds or
# removes the rows, so it is derived data: erasure counts the predictions, not these rows.
first_scores = sa.Table(
    "first_scores", metadata,
    sa.Column("model_version", sa.String(64), primary_key=True),
    sa.Column("model_name", sa.String(128), primary_key=True),
    sa.Column("lead_id", sa.String(256), primary_key=True),
    sa.Column("prediction_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=False),
    sa.Column("scored_at", sa.DateTime, nullable=False),
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("rows_logged", sa.BigInteger, nullable=False),
    # the lead's outcome as the outcomes hold it (migration 0008's triggers): converted, else not (yet)
    sa.Column("converted", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_first_scores_lead_id", "lead_id"),
    info={"derived_from": "predictions"},
)
# The advisory lock that keeps first_scores.converted right under concurrent writers (migration 0008): taken shared
# by the log's trigger and exclusive by the outcomes' triggers, and by erasure before it deletes anything.
FIRST_SCORE_OUTCOME_LOCK = 8_190_233_308
