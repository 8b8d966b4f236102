"""What model health reads from the store: each lead's first logged score by a model version, its outcome once
matured, and a sample of the logged feature values.

A lead's outcome has matured when it converted, or when its first score is older than the maturity window with no
conversion recorded (then it counts as not converted, whether or not a non-conversion was recorded). Leads younger
than the window with no conversion are left out of every outcome figure: they may still convert.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pandas as pd
import sqlalchemy as sa

from store.core import Store
from store.outcomes import chunks
from store.schema import outcomes, predictions

FEATURE_SAMPLE_ROWS = 50_000  # PSI over 10 bins: sampling error about 10 / 50,000 = 0.0002
FEATURE_CHUNK = 30_000  # ids per IN (...) query on SQLite (its limit is 32,766 bound values since 3.32)


@dataclass(frozen=True)
class Logged:
    """The leads a model version scored in a window: one row per lead (its first score), and sampled features.

    `scores` columns, in time order: scored_at (UTC, naive), probability, converted (1, 0, or NaN while the
    outcome has not matured). `features` holds the logged feature values of a sample of the logged rows, with
    `as_of` and the time scored; `rows` counts every logged row (rescored leads included).
    """

    scores: pd.DataFrame
    features: pd.DataFrame
    rows: int


def _epoch(conn: Any, column: Any) -> Any:
    """Return a SQL expression of a naive-UTC timestamp column as float seconds since 1970 (no per-row parsing)."""
    if conn.dialect.name != "postgresql":
        return (sa.func.julianday(column) - 2440587.5) * 86400.0
    return sa.cast(sa.extract("epoch", column), sa.Float)


def _filters(model_name: str | None, model_version: str | None, since: datetime | None) -> list[Any]:
    where: list[Any] = []
    if model_version is not None:
        where.append(predictions.c.model_version == model_version)
    if model_name is not None:
        where.append(predictions.c.model_name == model_name)
    if since is not None:
        where.append(predictions.c.scored_at >= since)
    return where


def _times(seconds: Any) -> pd.Series:
    return pd.Series(pd.to_datetime(np.asarray(seconds, dtype=np.float64) * 1e9, unit="ns").round("us"))


def _raw_rows(conn: Any, query: Any) -> list[tuple[Any, ...]]:
    """Return the rows of `query` as the driver's plain tuples: a million rows without SQLAlchemy's per-row work."""
    result = conn.execute(query)
    rows: list[tuple[Any, ...]] = result.cursor.fetchall()
    result.close()
    return rows


def _first_scores_postgres(conn: Any, where: list[Any]) -> tuple[int, list[np.ndarray]]:
    """Return the count of logged rows and (id, seconds, probability, converted) of each lead's first score.

    The server does the work: ix_predictions_first_score yields a version's rows in (lead, time) order, DISTINCT
    ON keeps each lead's first, and a merge join with the outcomes' primary key (in the same lead order) marks
    the converted. Each column comes back as one bytea of its values in binary (float8send and the like,
    concatenated), read by numpy in one step: a row per lead would cost a Python object per value, and a
    COPY a protocol message per row.
    """
    from sqlalchemy.dialects.postgresql import BYTEA, distinct_on

    total = int(conn.execute(sa.select(sa.func.count()).select_from(predictions).where(*where)).scalar())
    if not total:
        return 0, []
    converted = sa.cast(sa.cast(outcomes.c.lead_id.is_not(None), sa.Integer), sa.SmallInteger)
    first = (sa.select(predictions.c.id.label("id"), _epoch(conn, predictions.c.scored_at).label("seconds"),
                       predictions.c.probability.label("probability"), converted.label("converted"))
             .select_from(predictions.outerjoin(outcomes, sa.and_(outcomes.c.lead_id == predictions.c.lead_id,
                                                                  outcomes.c.converted)))
             .where(*where).ext(distinct_on(predictions.c.lead_id))
             .order_by(predictions.c.lead_id, predictions.c.scored_at, predictions.c.id)).subquery()
    empty = sa.literal(b"", BYTEA)
    packed = [sa.func.string_agg(getattr(sa.func, send)(first.c[name]), empty)
              for send, name in (("int8send", "id"), ("float8send", "seconds"), ("float8send", "probability"),
                                 ("int2send", "converted"))]
    compiled = sa.select(*packed).compile(dialect=conn.dialect)
    cursor = conn.connection.driver_connection.cursor(binary=True)  # bytea as raw bytes, not hex text
    try:
        row = cursor.execute(str(compiled), compiled.params).fetchone()
    finally:
        cursor.close()
    return total, [np.frombuffer(row[k], dtype=dtype).astype(cast)
                   for k, (dtype, cast) in enumerate(((">i8", np.int64), (">f8", np.float64), (">f8", np.float64),
                                                      (">i2", bool)))]


def _first_scores_sqlite(conn: Any, where: list[Any]) -> tuple[int, list[np.ndarray]]:
    """Return the count of logged rows and (id, seconds, probability, converted) of each lead's first score.

    SQLite reads the rows from ix_predictions_first_score in (lead, time) order, so a lead's first score is the
    row whose lead differs from the one before; the converted leads are a set looked up once per lead. Both are
    cheaper here than SQLite's window functions or a join of a million index look-ups (measured).
    """
    query = (sa.select(predictions.c.id, predictions.c.lead_id, _epoch(conn, predictions.c.scored_at),
                       predictions.c.probability)
             .where(*where).order_by(predictions.c.lead_id, predictions.c.scored_at, predictions.c.id))
    rows = _raw_rows(conn, query)
    if not rows:
        return 0, []
    n = len(rows)
    lead_ids = np.asarray(list(map(operator.itemgetter(1), rows)), dtype=object)
    first = np.ones(n, dtype=bool)
    first[1:] = lead_ids[1:] != lead_ids[:-1]
    ids, seconds, probability = (np.fromiter(map(operator.itemgetter(k), rows), dtype, n)[first]
                                 for k, dtype in ((0, np.int64), (2, np.float64), (3, np.float64)))
    lead_ids = lead_ids[first]
    del rows
    converted_ids = {r[0] for r in _raw_rows(conn, sa.select(outcomes.c.lead_id).where(outcomes.c.converted))}
    converted = np.fromiter(map(converted_ids.__contains__, lead_ids), bool, len(lead_ids))
    return n, [ids, seconds, probability, converted]


def logged_scores(store: Store, *, model_name: str | None, model_version: str | None, since: datetime | None,
                  now: datetime, maturity_days: float, feature_rows: int = FEATURE_SAMPLE_ROWS) -> Logged:
    """Return each lead's first logged score (with its matured outcome) and a sample of the logged features.

    A lead's first score is its earliest by (scored_at, id) within the window; the scores come back in that
    time order. The features are those of an even sample of the first scores (every k-th in time order),
    fetched by id.
    """
    where = _filters(model_name, model_version, since)
    with store.begin() as conn:
        first_scores = _first_scores_postgres if conn.dialect.name == "postgresql" else _first_scores_sqlite
        total, columns = first_scores(conn, where)
        if not total:
            return Logged(scores=pd.DataFrame(columns=["scored_at", "probability", "converted"]),
                          features=pd.DataFrame(), rows=0)
        order = np.lexsort((columns[0], columns[1]))  # by time, then id: the order the log was written in
        ids, seconds, probability, converted = (c[order] for c in columns)
        step = max(1, math.ceil(len(ids) / feature_rows)) if feature_rows else 0
        sample = _feature_rows(conn, ids[::step].tolist() if step else [])
    age_days = (pd.Timestamp(now.replace(tzinfo=None)).value / 1e9 - seconds) / 86400.0
    y = np.where(converted, 1.0, np.where(age_days > maturity_days, 0.0, np.nan))
    scores = pd.DataFrame({"scored_at": _times(seconds), "probability": probability, "converted": y})
    return Logged(scores=scores, features=_feature_frame(sample), rows=total)


def _feature_rows(conn: Any, ids: list[int]) -> list[tuple[Any, ...]]:
    """Return (features text, as_of text, lead_id) of the logged rows `ids`: on PostgreSQL one query with the ids
    as one array parameter, on SQLite a query per 30,000 ids."""
    # As text on the server too: psycopg would otherwise parse each JSON value with the standard json module.
    columns = (sa.cast(predictions.c.features, sa.Text), sa.type_coerce(predictions.c.as_of, sa.Text),
               predictions.c.lead_id)
    if not ids:
        return []
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        wanted = sa.bindparam("ids", ids, type_=ARRAY(sa.BigInteger))
        return _raw_rows(conn, sa.select(*columns).where(predictions.c.id == sa.func.any(wanted)))
    rows: list[tuple[Any, ...]] = []
    for part in chunks(ids, FEATURE_CHUNK):
        rows += _raw_rows(conn, sa.select(*columns).where(predictions.c.id.in_(part)))
    return rows


def _feature_frame(rows: Sequence[Any]) -> pd.DataFrame:
    records = [orjson.loads(text) if isinstance(text, (str, bytes)) else (text or {}) for text, _, _ in rows]
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    frame["as_of"] = pd.to_datetime(pd.Series([r[1] for r in rows], dtype=object), errors="coerce") \
        if rows else pd.Series(dtype="datetime64[ns]")
    frame["lead_id"] = [r[2] for r in rows]
    return frame


def training_frame(store: Store, *, spec: Any, since: datetime | None, now: datetime, maturity_days: float,
                   model_name: str | None = None) -> pd.DataFrame:
    """Return one row per lead with a matured outcome: its first logged feature values, the time it was first
    scored (as the spec's created-at column), the `as_of` it was scored at, and the outcome as the spec's target."""
    where = _filters(model_name, None, since)
    query = (sa.select(predictions.c.lead_id, predictions.c.scored_at, predictions.c.as_of,
                       sa.type_coerce(predictions.c.features, sa.Text), outcomes.c.converted)
             .select_from(predictions.outerjoin(outcomes, outcomes.c.lead_id == predictions.c.lead_id))
             .where(*where).order_by(predictions.c.lead_id, predictions.c.scored_at, predictions.c.id))
    with store.begin() as conn:
        rows = conn.execute(query).all()
    first: dict[str, Any] = {}
    for row in rows:
        first.setdefault(row[0], row)
    cutoff = now.replace(tzinfo=None) - timedelta(days=maturity_days)
    kept = [r for r in first.values() if r[4] or r[1] <= cutoff]
    if not kept:
        return pd.DataFrame()
    frame = pd.DataFrame.from_records([orjson.loads(r[3]) if isinstance(r[3], (str, bytes)) else r[3]
                                       for r in kept])
    positive, negative = spec.target.positive[0], spec.target.negative[0]
    frame[spec.id_column] = [r[0] for r in kept]
    frame[spec.created_at_column or "created_at"] = pd.to_datetime([r[1] for r in kept])
    frame[spec.as_of_column or "as_of"] = pd.to_datetime([r[2] for r in kept])
    frame[spec.target.column] = [positive if r[4] else negative for r in kept]
    return frame
