"""What model health reads from the store: each lead's first logged score by a model version, its outcome once
matured, and a sample of the logged feature values.

A lead's outcome has matured when it converted, or when its first score is older than the maturity window with no
conversion recorded (then it counts as not converted, whether or not a non-conversion was recorded). Leads younger
than the window with no conversion are left out of every outcome figure: they may still convert.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import sqlalchemy as sa

from store.core import Store
from store.outcomes import chunks
from store.schema import outcomes, predictions

FEATURE_SAMPLE_ROWS = 50_000  # PSI over 10 bins: sampling error about 10 / 50,000 = 0.0002
FEATURE_CHUNK = 30_000  # ids per IN (...) query on SQLite (its limit is 32,766 bound values since 3.32)


@dataclass(frozen=True)
class Logged:
    """The leads a model version scored in a window: one row per lead (its first score), and sampled features.

    `scores` columns: lead_id, scored_at (UTC, naive), probability, converted (1, 0, or NaN while the
    outcome has not matured). `features` holds the logged feature values of a sample of the logged rows, with
    `as_of` and the time scored; `rows` counts every logged row (rescored leads included).
    """

    scores: pd.DataFrame
    features: pd.DataFrame
    rows: int


def _epoch(store: Store, column: Any) -> Any:
    """Return a SQL expression of a naive-UTC timestamp column as float seconds since 1970 (no per-row parsing)."""
    if store.is_sqlite:
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


def _columns(conn: Any, query: Any, names: Sequence[str], types: Sequence[pa.DataType]) -> list[np.ndarray]:
    """Return the columns of `query` as numpy arrays (text as object arrays).

    On PostgreSQL the rows travel as `COPY (query) TO STDOUT` CSV parsed by Arrow: a million rows in well under
    a second, where building a Python tuple per row through the driver takes seconds. SQLite's driver has no
    such path, and its tuples are cheap.
    """
    empty = [np.asarray([], dtype=object if t == pa.string() else t.to_pandas_dtype()) for t in types]
    if conn.dialect.name != "postgresql":
        rows = _raw_rows(conn, query)
        return [np.asarray(c) for c in zip(*rows, strict=True)] if rows else empty
    compiled = query.compile(dialect=conn.dialect)
    buffer = io.BytesIO()
    cursor = conn.connection.driver_connection.cursor()
    try:
        with cursor.copy(f"COPY ({compiled}) TO STDOUT WITH (FORMAT csv)", compiled.params) as copy:
            for block in copy:
                buffer.write(block)
    finally:
        cursor.close()
    if not buffer.tell():
        return empty  # no rows: Arrow refuses an empty CSV
    buffer.seek(0)
    table = pa_csv.read_csv(buffer, read_options=pa_csv.ReadOptions(column_names=list(names)),
                            convert_options=pa_csv.ConvertOptions(
                                column_types=dict(zip(names, types, strict=True)),
                                strings_can_be_null=False, quoted_strings_can_be_null=False))
    return [table.column(n).to_numpy(zero_copy_only=False) for n in names]


def logged_scores(store: Store, *, model_name: str | None, model_version: str | None, since: datetime | None,
                  now: datetime, maturity_days: float, feature_rows: int = FEATURE_SAMPLE_ROWS) -> Logged:
    """Return each lead's first logged score (with its matured outcome) and a sample of the logged features.

    The scores come from the covering index ix_predictions_monitoring (time order, no table read); the converted
    leads from the outcomes table; the features of an even sample of the first scores, fetched by id.
    """
    where = _filters(model_name, model_version, since)
    query = (sa.select(predictions.c.id, predictions.c.lead_id, _epoch(store, predictions.c.scored_at),
                       predictions.c.probability)
             .where(*where).order_by(predictions.c.scored_at, predictions.c.id))
    with store.begin() as conn:
        ids, lead_ids, seconds, probability = _columns(conn, query, ("id", "lead_id", "seconds", "probability"),
                                                       (pa.int64(), pa.string(), pa.float64(), pa.float64()))
        total = len(ids)
        if not total:
            return Logged(scores=pd.DataFrame(columns=["lead_id", "scored_at", "probability", "converted"]),
                          features=pd.DataFrame(), rows=0)
        first = ~pd.Series(lead_ids, dtype=object).duplicated(keep="first").to_numpy(bool)  # time order: first
        lead_ids, seconds, probability, ids = (a[first] for a in (lead_ids, seconds, probability, ids))
        [converted_ids] = _columns(conn, sa.select(outcomes.c.lead_id).where(outcomes.c.converted), ("lead_id",),
                                   (pa.string(),))
        step = max(1, math.ceil(len(ids) / feature_rows)) if feature_rows else 0
        sample = _feature_rows(conn, ids[::step].tolist() if step else [])
    # object dtype: a hash lookup per id (pandas 3's default Arrow strings compare by a Python-level loop here)
    converted = pd.Series(lead_ids, dtype=object).isin(set(converted_ids.tolist())).to_numpy(bool)
    age_days = (pd.Timestamp(now.replace(tzinfo=None)).value / 1e9 - seconds.astype(np.float64)) / 86400.0
    y = np.where(converted, 1.0, np.where(age_days > maturity_days, 0.0, np.nan))
    scores = pd.DataFrame({"lead_id": lead_ids, "scored_at": _times(seconds), "probability":
                           probability.astype(np.float64), "converted": y})
    return Logged(scores=scores, features=_feature_frame(sample), rows=total)


def _feature_rows(conn: Any, ids: list[int]) -> list[tuple[Any, ...]]:
    """Return (features text, as_of text, lead_id) of the logged rows `ids`: on PostgreSQL one query with the ids
    as one array parameter, on SQLite a query per 30,000 ids."""
    columns = (sa.type_coerce(predictions.c.features, sa.Text), sa.type_coerce(predictions.c.as_of, sa.Text),
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
