"""Outcomes: what became of each lead (converted or not, and when), and the scores they judge.

`upsert_outcomes` records what a CRM reports, idempotently: one row per lead, replaced only when the report
differs. `matured_outcomes` joins the prediction log to those outcomes for whoever measures how good the
scores were (monitoring, calibration over time): a prediction has matured once its lead's outcome is known
and the prediction was made before that outcome.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from store.core import Store, StoreError, naive_utc
from store.schema import outcomes, predictions

Source = Literal["api", "import"]
# Ids per IN (...) query: well under SQLite's bound-parameter limit and PostgreSQL's comfortable plan size.
ID_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Outcome:
    """One lead's outcome: converted or not, and when it converted (naive UTC; None when not known)."""

    lead_id: str
    converted: bool
    converted_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class UpsertCounts:
    """What an upsert did: leads new to the store, leads whose outcome changed, leads already as reported."""

    inserted: int
    updated: int
    unchanged: int


@dataclass(frozen=True, slots=True)
class MaturedOutcome:
    """A logged prediction beside the outcome of its lead (times naive UTC)."""

    prediction_id: int
    lead_id: str
    scored_at: datetime
    model_name: str
    model_version: str
    model_kind: str
    probability: float
    score: int
    grade: str
    converted: bool
    converted_at: datetime | None
    outcome_recorded_at: datetime


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def chunks(values: Sequence[Any], size: int = ID_CHUNK) -> Iterator[Sequence[Any]]:
    """Yield `values` in slices of at most `size`."""
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _check(outcome: Outcome, index: int) -> Outcome:
    if not outcome.lead_id or len(outcome.lead_id) > 256:
        raise StoreError(f"outcome {index}: lead_id must be 1-256 characters")
    if outcome.converted_at is not None and not outcome.converted:
        raise StoreError(f"outcome {index} (lead {outcome.lead_id!r}): converted_at is given but converted is false")
    return Outcome(outcome.lead_id, bool(outcome.converted), naive_utc(outcome.converted_at))


def _upsert_statement(store: Store, *, source: str, now: datetime) -> Any:
    dialect_insert = postgresql.insert if store.url.get_backend_name() == "postgresql" else sqlite.insert
    stmt = dialect_insert(outcomes)
    excluded = stmt.excluded
    # Only a report that differs touches the row, so a repeated report is a no-op (its updated_at included).
    differs = sa.or_(outcomes.c.converted != excluded.converted,
                     outcomes.c.converted_at.is_distinct_from(excluded.converted_at))
    return stmt.on_conflict_do_update(
        index_elements=[outcomes.c.lead_id],
        set_={"converted": excluded.converted, "converted_at": excluded.converted_at, "source": source,
              "updated_at": now},
        where=differs,
    )


def upsert_outcomes(store: Store, items: Sequence[Outcome], *, source: Source, now: datetime | None = None
                    ) -> UpsertCounts:
    """Record the outcomes of `items` (the last one wins for a lead listed twice); return what changed.

    Idempotent: the same outcomes sent again change nothing and count as unchanged.
    """
    latest: dict[str, Outcome] = {}
    for i, item in enumerate(items):
        checked = _check(item, i)
        latest[checked.lead_id] = checked
    when = naive_utc(now) or _now()
    inserted = updated = unchanged = 0
    with store.begin() as conn:
        ids = list(latest)
        known: dict[str, tuple[bool, datetime | None]] = {}
        for part in chunks(ids):
            rows = conn.execute(sa.select(outcomes.c.lead_id, outcomes.c.converted, outcomes.c.converted_at)
                                .where(outcomes.c.lead_id.in_(part)))
            known.update({r.lead_id: (bool(r.converted), r.converted_at) for r in rows})
        write = []
        for lead_id, item in latest.items():
            before = known.get(lead_id)
            if before is None:
                inserted += 1
            elif before == (item.converted, item.converted_at):
                unchanged += 1
                continue
            else:
                updated += 1
            write.append({"lead_id": lead_id, "converted": item.converted, "converted_at": item.converted_at,
                          "source": source, "recorded_at": when, "updated_at": when})
        if write:
            # An upsert, not a plain insert: another process may have recorded one of these leads meanwhile.
            stmt = _upsert_statement(store, source=source, now=when)
            for part in chunks(write, 1_000):
                conn.execute(stmt, list(part))
    return UpsertCounts(inserted=inserted, updated=updated, unchanged=unchanged)


def read_outcomes(store: Store, *, lead_ids: Sequence[str]) -> dict[str, Outcome]:
    """Return the stored outcome of each of `lead_ids` that has one."""
    found: dict[str, Outcome] = {}
    with store.begin() as conn:
        for part in chunks(list(dict.fromkeys(lead_ids))):
            for r in conn.execute(sa.select(outcomes).where(outcomes.c.lead_id.in_(part))):
                found[r.lead_id] = Outcome(r.lead_id, bool(r.converted), r.converted_at)
    return found


def matured_query(*, model_name: str | None = None, model_version: str | None = None,
                  scored_from: datetime | None = None, scored_to: datetime | None = None,
                  latest_only: bool = True) -> sa.Select[Any]:
    """Return the SELECT behind `matured_outcomes` (for callers that stream or aggregate it themselves)."""
    # The outcome's time: when it converted, else when the CRM reported it (a lost lead has no time of its own).
    outcome_time = sa.func.coalesce(outcomes.c.converted_at, outcomes.c.recorded_at)
    conditions = [predictions.c.scored_at <= outcome_time]
    if model_name is not None:
        conditions.append(predictions.c.model_name == model_name)
    if model_version is not None:
        conditions.append(predictions.c.model_version == model_version)
    if scored_from is not None:
        conditions.append(predictions.c.scored_at >= naive_utc(scored_from))
    if scored_to is not None:
        conditions.append(predictions.c.scored_at < naive_utc(scored_to))
    columns = [predictions.c.id.label("prediction_id"), predictions.c.lead_id, predictions.c.scored_at,
               predictions.c.model_name, predictions.c.model_version, predictions.c.model_kind,
               predictions.c.probability, predictions.c.score, predictions.c.grade, outcomes.c.converted,
               outcomes.c.converted_at, outcomes.c.recorded_at.label("outcome_recorded_at")]
    joined = predictions.join(outcomes, outcomes.c.lead_id == predictions.c.lead_id)
    if not latest_only:
        return sa.select(*columns).select_from(joined).where(*conditions).order_by(predictions.c.id)
    rank = sa.func.row_number().over(
        partition_by=(predictions.c.lead_id, predictions.c.model_name, predictions.c.model_version),
        order_by=(predictions.c.scored_at.desc(), predictions.c.id.desc())).label("rank")
    ranked = sa.select(*columns, rank).select_from(joined).where(*conditions).subquery("ranked")
    return (sa.select(*[ranked.c[c.name] for c in columns]).where(ranked.c.rank == 1)
            .order_by(ranked.c.prediction_id))


def matured_outcomes(store: Store, *, model_name: str | None = None, model_version: str | None = None,
                     scored_from: datetime | None = None, scored_to: datetime | None = None,
                     latest_only: bool = True, conn: Connection | None = None) -> list[MaturedOutcome]:
    """Return the logged predictions whose lead's outcome is known and came after them, oldest first.

    With `latest_only` (the default), one per lead and model version: its last score before the outcome, the
    one the outcome judges. A score logged after the lead converted (or after a lost lead was reported) is
    never matured: it was made knowing the answer. `scored_from`/`scored_to` bound `scored_at` (from
    inclusive, to exclusive).
    """
    query = matured_query(model_name=model_name, model_version=model_version, scored_from=scored_from,
                          scored_to=scored_to, latest_only=latest_only)
    if conn is not None:
        rows = conn.execute(query).all()
    else:
        with store.begin() as own:
            rows = own.execute(query).all()
    return [MaturedOutcome(prediction_id=int(r.prediction_id), lead_id=r.lead_id, scored_at=r.scored_at,
                           model_name=r.model_name, model_version=r.model_version, model_kind=r.model_kind,
                           probability=float(r.probability), score=int(r.score), grade=r.grade,
                           converted=bool(r.converted), converted_at=r.converted_at,
                           outcome_recorded_at=r.outcome_recorded_at) for r in rows]
