"""The live pipeline in the store: opportunity records diffed against what is stored, each change kept as an event.

An export says where every deal is now; the store remembers where it was. Each sync compares the records with the
stored state, writes the rows that changed, and records an event per change of a tracked field (stage, amount,
expected close date, owner, outcome), so the stage history that an export lacks builds up one sync at a time.
Every forecast made from the store is kept too (`forecast_snapshots`), with the last event it saw, so the
pipeline it forecast can be rebuilt for deal flow.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from crmdata.contracts import OPPORTUNITY
from store.core import Store, StoreError
from store.schema import forecast_snapshots, opportunities, opportunity_events, pipeline_config

TRACKED = ("stage", "amount", "expected_close_date", "owner", "outcome")
CONTRACT = OPPORTUNITY.names
KINDS = {c.name: c.kind for c in OPPORTUNITY.columns}
EXAMPLES = 20  # changes listed in a sync's answer; the counts cover all of them
CHUNK = 5_000  # rows per executemany: bounds the memory of one statement's parameters


@dataclass(frozen=True)
class SyncResult:
    """What one sync changed: deals created, updated, unchanged, stored but absent, and the events per field."""

    source: str
    received: int
    created: int
    updated: int
    unchanged: int
    absent: int
    changes: dict[str, int]
    examples: tuple[dict[str, Any], ...] = field(default=())

    @property
    def events(self) -> int:
        """Return the events written (first sightings and changes of tracked fields)."""
        return self.created + sum(self.changes.values())

    def to_dict(self) -> dict[str, Any]:
        """Return JSON-ready values."""
        return {"source": self.source, "received": self.received, "created": self.created, "updated": self.updated,
                "unchanged": self.unchanged, "absent": self.absent, "changes": dict(self.changes),
                "events": self.events, "examples": list(self.examples)}


def text_of(value: Any) -> str | None:
    """Return a value as an event's text: ISO for dates, repr for numbers (exact), None when missing."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else repr(float(value))
    if isinstance(value, pd.Timestamp | datetime | np.datetime64):
        stamp = pd.Timestamp(value)
        return None if pd.isna(stamp) else stamp.isoformat()
    return str(value)


def _texts(values: np.ndarray) -> np.ndarray:
    """Return a column's values as event texts (numpy's datetime64[ns] lists as integers: go through datetime)."""
    items = values.astype("datetime64[us]").tolist() if values.dtype.kind == "M" else values.tolist()
    return np.array([text_of(v) for v in items], dtype=object)


def _plain(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Return the contract columns as numpy arrays: text as objects with None, numbers float64 with NaN, dates
    datetime64[ns] with NaT, so a stored state and an incoming frame compare column by column."""
    out: dict[str, np.ndarray] = {}
    for name in CONTRACT:
        series = frame[name] if name in frame.columns else pd.Series(pd.NA, index=frame.index, dtype=object)
        kind = KINDS[name]
        if kind == "datetime":
            out[name] = pd.to_datetime(series).to_numpy("datetime64[ns]")
        elif kind in ("float", "int"):
            out[name] = pd.to_numeric(series).astype("Float64").to_numpy(np.float64, na_value=np.nan)
        else:
            values = series.astype(object).to_numpy()
            missing = pd.isna(values)
            values = values.copy()
            values[missing] = None
            out[name] = values
    return out


def _differs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return where two columns of the same kind hold different values (missing equals missing)."""
    if a.dtype.kind == "M":
        na, nb = np.isnat(a), np.isnat(b)
        return (na != nb) | (~na & ~nb & (a != b))
    if a.dtype.kind == "f":
        na, nb = np.isnan(a), np.isnan(b)
        return (na != nb) | (~na & ~nb & (a != b))
    return np.fromiter((x != y for x, y in zip(a.tolist(), b.tolist(), strict=True)), dtype=bool, count=len(a))


def _native(values: np.ndarray) -> list[Any]:
    """Return a column as Python values for the driver (None when missing, datetime for dates)."""
    if values.dtype.kind == "M":
        micro = values.astype("datetime64[us]")
        return [None if v is None else v for v in micro.tolist()]
    if values.dtype.kind == "f":
        return [None if v != v else v for v in values.tolist()]
    return values.tolist()


def _read_state(conn: Connection, columns: Sequence[str] = CONTRACT) -> pd.DataFrame:
    """Return the stored opportunities (the given columns and seq), in the order they were first seen."""
    cols = [opportunities.c[c] for c in ("seq", *columns)]
    rows = conn.execute(sa.select(*cols).order_by(opportunities.c.seq, opportunities.c.opportunity_id)).all()
    frame = pd.DataFrame.from_records(rows, columns=["seq", *columns])
    for name in columns:
        kind = KINDS[name]
        if kind == "datetime":
            frame[name] = pd.to_datetime(frame[name]).astype("datetime64[ns]")
        elif kind == "float":
            frame[name] = pd.to_numeric(frame[name]).astype(np.float64)
        else:
            frame[name] = frame[name].astype(object)
    return frame


def _chunks(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), CHUNK):
        yield rows[start:start + CHUNK]


def _events_for(name: str, ids: np.ndarray, old: dict[str, np.ndarray], new: dict[str, np.ndarray],
                rows: np.ndarray, observed: datetime, outcomes: np.ndarray) -> list[np.ndarray]:
    """Return the event columns (id, old, new, changed_at) of one tracked field's changes at `rows`."""
    olds, news = _texts(old[name][rows]), _texts(new[name][rows])
    when = np.full(len(rows), np.datetime64(observed, "ns"))
    closed = np.isin(outcomes[rows], ["won", "lost"]) & ~np.isnat(new["closed_at"][rows])
    if name == "stage":
        # A record that dates its stage entry says when the move happened; a close says so for a won/lost stage.
        # A deal that gains its creation (engagement) date as it moves: it moved then.
        created = new["created_at"][rows]
        when = np.where(np.isnat(old["created_at"][rows]) & ~np.isnat(created), created, when)
        when = np.where(closed, new["closed_at"][rows], when)
        entered = new["stage_entered_at"][rows]
        dated = ~np.isnat(entered) & _differs(entered, old["stage_entered_at"][rows])
        when = np.where(dated, entered, when)
    elif name == "outcome":
        when = np.where(closed, new["closed_at"][rows], when)
    return [ids[rows], olds, news, when]


def sync_opportunities(store: Store, frame: pd.DataFrame, *, observed_at: datetime, source: str,
                       stages: dict[str, Any] | None = None) -> SyncResult:
    """Upsert contract-typed opportunity records, writing an event for each first sighting and each change of a
    tracked field; deals stored but absent from `frame` are kept as they were (and counted).

    `observed_at` (naive UTC) is when the records describe the pipeline: the time of a change whose record gives
    no date of its own. `stages` (a `[stages]` table) is stored as the pipeline's stage configuration.
    """
    new = _plain(frame)
    ids = new["opportunity_id"]
    with store.begin() as conn:
        stored = _read_state(conn)
        old_all = _plain(stored)
        position = pd.Index(stored["opportunity_id"].astype(object)).get_indexer(pd.Index(ids))
        known = position >= 0
        fresh = np.flatnonzero(~known)
        seen = np.flatnonzero(known)
        old = {k: v[position[seen]] for k, v in old_all.items()}
        cur = {k: v[seen] for k, v in new.items()}
        diffs = {name: _differs(cur[name], old[name]) for name in CONTRACT if name != "opportunity_id"}
        changed = np.zeros(len(seen), dtype=bool)
        for mask in diffs.values():
            changed |= mask

        recorded = _now()
        next_seq = int(stored["seq"].max()) + 1 if len(stored) else 0
        if len(fresh):
            columns = {name: _native(new[name][fresh]) for name in CONTRACT}
            columns["seq"] = list(range(next_seq, next_seq + len(fresh)))
            keys = list(columns)
            rows = [dict(zip(keys, values, strict=True)) for values in zip(*columns.values(), strict=True)]
            for row in rows:
                row["first_seen_at"] = row["updated_at"] = observed_at
            for part in _chunks(rows):
                conn.execute(opportunities.insert(), part)
        update_rows = np.flatnonzero(changed)
        if len(update_rows):
            params = {f"b_{name}": _native(cur[name][update_rows]) for name in CONTRACT}
            keys = list(params)
            rows = [dict(zip(keys, values, strict=True)) for values in zip(*params.values(), strict=True)]
            for row in rows:
                row["b_updated_at"] = observed_at
            statement = (opportunities.update()
                         .where(opportunities.c.opportunity_id == sa.bindparam("b_opportunity_id"))
                         .values({name: sa.bindparam(f"b_{name}") for name in (*CONTRACT[1:], "updated_at")}))
            for part in _chunks(rows):
                conn.execute(statement, part)

        event_cols: list[list[np.ndarray]] = []
        fields: list[str] = []
        if len(fresh):
            entered = new["stage_entered_at"][fresh]
            entered = np.where(np.isnat(entered), new["created_at"][fresh], entered)
            entered = np.where(np.isnat(entered), np.datetime64(observed_at, "ns"), entered)
            event_cols.append([ids[fresh], np.full(len(fresh), None, dtype=object),
                               _texts(new["stage"][fresh]), entered])
            fields.append("created")
        counts: dict[str, int] = {}
        examples: list[dict[str, Any]] = []
        for name in TRACKED:
            rows_changed = np.flatnonzero(diffs[name])
            counts[name] = len(rows_changed)
            if not len(rows_changed):
                continue
            cols = _events_for(name, ids[seen], old, cur, rows_changed, observed_at, cur["outcome"])
            event_cols.append(cols)
            fields.append(name)
            for i in range(min(EXAMPLES - len(examples), len(rows_changed))):
                examples.append({"opportunity_id": str(cols[0][i]), "field": name, "old": cols[1][i],
                                 "new": cols[2][i]})
        events = []
        for name, (eids, olds, news, when) in zip(fields, event_cols, strict=True):
            stamps = _native(np.asarray(when, dtype="datetime64[ns]"))
            events += [{"opportunity_id": i, "field": name, "old_value": o, "new_value": n, "changed_at": w,
                        "recorded_at": recorded, "source": source[:256]}
                       for i, o, n, w in zip(eids.tolist(), olds.tolist(), news.tolist(), stamps, strict=True)]
        for part in _chunks(events):
            conn.execute(opportunity_events.insert(), part)
        if stages is not None:
            _put_config(conn, "stages", stages)
        absent = len(stored) - len(seen)
    return SyncResult(source=source, received=len(ids), created=len(fresh), updated=int(changed.sum()),
                      unchanged=int(len(seen) - changed.sum()), absent=absent, changes=counts,
                      examples=tuple(examples))


def _now() -> datetime:
    return pd.Timestamp.now("UTC").tz_localize(None).floor("s").to_pydatetime()


def _put_config(conn: Connection, name: str, value: Any) -> None:
    conn.execute(pipeline_config.delete().where(pipeline_config.c.name == name))
    conn.execute(pipeline_config.insert(), {"name": name, "value": value, "updated_at": _now()})


def stored_stages(store: Store) -> dict[str, Any] | None:
    """Return the stage configuration of the last sync that gave one (a `[stages]` table), or None."""
    with store.begin() as conn:
        value = conn.execute(sa.select(pipeline_config.c.value).where(pipeline_config.c.name == "stages")).scalar()
    return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class StoredPipeline:
    """The stored opportunities (raw contract columns, first-seen order), the stage history the syncs built
    (None when no deal has changed stage yet), the stage configuration, and the last event they include."""

    opportunities: pd.DataFrame
    history: pd.DataFrame | None
    stages: dict[str, Any] | None
    event_mark: int


def event_mark(conn: Connection) -> int:
    """Return the id of the newest pipeline event (0 when there is none)."""
    return int(conn.execute(sa.select(sa.func.max(opportunity_events.c.id))).scalar() or 0)


def read_pipeline(store: Store) -> StoredPipeline:
    """Return the stored pipeline and its stage history, read in one transaction.

    The history holds the deals whose stage the store saw change: for each, the stage it was first seen in
    (entered at its recorded stage entry, else its creation, else when first seen) and every stage it moved to
    since, at the time of the move. Deals never seen to move have no rows, as in an export without a history.
    """
    with store.begin() as conn:
        mark = event_mark(conn)
        state = _read_state(conn).drop(columns=["seq"])
        moved = sa.select(opportunity_events.c.opportunity_id).where(opportunity_events.c.field == "stage")
        rows = conn.execute(
            sa.select(opportunity_events.c.opportunity_id, opportunity_events.c.new_value,
                      opportunity_events.c.changed_at)
            .where(opportunity_events.c.field.in_(["created", "stage"]),
                   opportunity_events.c.opportunity_id.in_(moved.scalar_subquery()))
            .order_by(opportunity_events.c.id)).all()
        value = conn.execute(sa.select(pipeline_config.c.value).where(pipeline_config.c.name == "stages")).scalar()
    history = None
    if rows:
        history = pd.DataFrame.from_records(rows, columns=["opportunity_id", "stage", "entered_at"])
        history["entered_at"] = pd.to_datetime(history["entered_at"]).astype("datetime64[ns]")
    return StoredPipeline(opportunities=state, history=history, stages=value if isinstance(value, dict) else None,
                          event_mark=mark)


def pipeline_at(store: Store, mark: int) -> pd.DataFrame:
    """Return the tracked fields of every deal as they stood after event `mark`: the current state with each
    later change undone (a field takes the old value of its first later event) and later deals removed."""
    with store.begin() as conn:
        state = _read_state(conn, ("opportunity_id", *TRACKED)).drop(columns=["seq"])
        later = conn.execute(
            sa.select(opportunity_events.c.opportunity_id, opportunity_events.c.field, opportunity_events.c.old_value)
            .where(opportunity_events.c.id > mark).order_by(opportunity_events.c.id)).all()
    if not later:
        return state
    events = pd.DataFrame.from_records(later, columns=["opportunity_id", "field", "old_value"])
    first = events.drop_duplicates(["opportunity_id", "field"], keep="first")
    born = set(first.loc[first["field"] == "created", "opportunity_id"])
    state = state[~state["opportunity_id"].isin(born)].reset_index(drop=True)
    index = pd.Index(state["opportunity_id"])
    for name in TRACKED:
        undo = first[(first["field"] == name) & ~first["opportunity_id"].isin(born)]
        if undo.empty:
            continue
        rows = index.get_indexer(undo["opportunity_id"])
        keep = rows >= 0
        values = undo["old_value"].to_numpy(object)[keep]
        kind = KINDS[name]
        column = state[name].copy()
        if kind == "datetime":
            column.iloc[rows[keep]] = pd.to_datetime(pd.Series(values, dtype=object)).to_numpy("datetime64[ns]")
        elif kind == "float":
            column.iloc[rows[keep]] = [np.nan if v is None else float(v) for v in values]
        else:
            column.iloc[rows[keep]] = values
        state[name] = column
    return state


def opportunity_events_of(store: Store, opportunity_id: str) -> list[dict[str, Any]]:
    """Return the events of one deal, oldest first."""
    with store.begin() as conn:
        rows = conn.execute(sa.select(opportunity_events).where(opportunity_events.c.opportunity_id == opportunity_id)
                            .order_by(opportunity_events.c.id)).mappings().all()
    return [dict(r) for r in rows]


SNAPSHOT_FIELDS = ("made_at", "as_of", "horizon", "method", "group_by", "simulations", "seed",
                   "stage_model_version", "event_mark", "open_deals", "periods", "total", "groups", "source")


def save_snapshot(store: Store, snapshot: dict[str, Any]) -> int:
    """Store a forecast made from the store (SNAPSHOT_FIELDS); return its id."""
    missing = [k for k in SNAPSHOT_FIELDS if k not in snapshot]
    if missing:
        raise StoreError(f"a forecast snapshot needs {', '.join(missing)}")
    with store.begin() as conn:
        result = conn.execute(forecast_snapshots.insert().values({k: snapshot[k] for k in SNAPSHOT_FIELDS})
                              .returning(forecast_snapshots.c.id))
        return int(result.scalar_one())


def list_snapshots(store: Store, *, limit: int = 50, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Return saved forecasts, newest first (a page of them), and how many there are in all."""
    with store.begin() as conn:
        total = int(conn.execute(sa.select(sa.func.count()).select_from(forecast_snapshots)).scalar() or 0)
        rows = conn.execute(sa.select(forecast_snapshots)
                            .order_by(forecast_snapshots.c.made_at.desc(), forecast_snapshots.c.id.desc())
                            .limit(limit).offset(offset)).mappings().all()
    return [dict(r) for r in rows], total


def all_snapshots(store: Store) -> list[dict[str, Any]]:
    """Return every saved forecast, oldest first."""
    with store.begin() as conn:
        rows = conn.execute(sa.select(forecast_snapshots).order_by(forecast_snapshots.c.id)).mappings().all()
    return [dict(r) for r in rows]


def get_snapshot(store: Store, snapshot_id: int) -> dict[str, Any] | None:
    """Return one saved forecast, or None."""
    with store.begin() as conn:
        row = conn.execute(sa.select(forecast_snapshots).where(forecast_snapshots.c.id == snapshot_id)
                           ).mappings().first()
    return None if row is None else dict(row)
