"""What model health reads from the store: each lead's first logged score by a model version, its outcome once
matured, and a sample of the logged feature values.

A lead's outcome has matured when it converted, or when its first score is older than the maturity window with no
conversion recorded (then it counts as not converted, whether or not a non-conversion was recorded). Leads younger
than the window with no conversion are left out of every outcome figure: they may still convert.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pandas as pd
import sqlalchemy as sa

from store.core import Store
from store.outcomes import chunks
from store.schema import first_scores, outcomes, predictions

# PSI over 10 bins: sampling error about 9 / 25,000 = 0.0004; api.settings' monitoring_sample_rows has the same default
FEATURE_SAMPLE_ROWS = 25_000
FEATURE_CHUNK = 30_000  # ids per IN (...) query on SQLite (its limit is 32,766 bound values since 3.32)


@dataclass(frozen=True)
class Logged:
    """The leads a model version scored in a window: one row per lead (its first score), and sampled features.

    `scores` columns, in time order: scored_at (UTC, naive), probability, converted (1, 0, or NaN while the
    outcome has not matured). `features` holds the logged feature values of a sample of the logged rows, with
    `as_of` and the time scored; `rows` counts every logged row (rescored leads included). The sample may still
    be on its way (`sample` a Future): `features` waits for it, so work on the scores can go first.
    """

    scores: pd.DataFrame
    sample: pd.DataFrame | Future[pd.DataFrame]
    rows: int

    @property
    def features(self) -> pd.DataFrame:
        """Return the sampled features, waiting for them if they are still being read."""
        return self.sample.result() if isinstance(self.sample, Future) else self.sample


def _epoch(conn: Any, column: Any) -> Any:
    """Return a SQL expression of a naive-UTC timestamp column as float seconds since 1970 (no per-row parsing)."""
    if conn.dialect.name != "postgresql":
        return (sa.func.julianday(column) - 2440587.5) * 86400.0
    # date_part, not extract: since PostgreSQL 14 extract() returns numeric, and its cast back to float8 doubled the
    # cost of the first-score query (0.74 s against 0.37 s over a million rows, measured). Both are the correctly
    # rounded float of the exact microsecond count, so the values are the same to the bit.
    return sa.func.date_part("epoch", column, type_=sa.Float)


def _filters(table: sa.Table, model_name: str | None, model_version: str | None,
             since: datetime | None) -> list[Any]:
    """Return the conditions on `table` (predictions or first_scores) of a model name, version and window."""
    where: list[Any] = []
    if model_version is not None:
        where.append(table.c.model_version == model_version)
    if model_name is not None:
        where.append(table.c.model_name == model_name)
    if since is not None:
        where.append(table.c.scored_at >= since)
    return where


def _times(seconds: Any) -> pd.Series:
    """Return float seconds since 1970 as datetime64[ns] rounded to the microsecond (the log's precision).

    In numpy: pandas' to_datetime of the nanoseconds and its round took 0.26 s for a million, this 0.03 s, and
    gives the same times (checked on 2,000,000 microsecond times)."""
    micro = np.round(np.asarray(seconds, dtype=np.float64) * 1e6).astype(np.int64)
    return pd.Series(micro.astype("datetime64[us]").astype("datetime64[ns]"))


def _raw_rows(conn: Any, query: Any) -> list[tuple[Any, ...]]:
    """Return the rows of `query` as the driver's plain tuples: a million rows without SQLAlchemy's per-row work."""
    result = conn.execute(query)
    rows: list[tuple[Any, ...]] = result.cursor.fetchall()
    result.close()
    return rows


def _packed(conn: Any, first: Any, total: Any) -> tuple[int, list[np.ndarray]]:
    """Return `total` and the (id, seconds, probability, converted) columns of the subquery `first`, each as one
    bytea of its values in binary (float8send and the like, concatenated) read by numpy in one step: a row per lead
    would cost a Python object per value, and a COPY a protocol message per row."""
    from sqlalchemy.dialects.postgresql import BYTEA

    empty = sa.literal(b"", BYTEA)
    packed = [sa.func.string_agg(getattr(sa.func, send)(first.c[name]), empty)
              for send, name in (("int8send", "id"), ("float8send", "seconds"), ("float8send", "probability"),
                                 ("int2send", "converted"))]
    compiled = sa.select(total, *packed).compile(dialect=conn.dialect)
    cursor = conn.connection.driver_connection.cursor(binary=True)  # bytea as raw bytes, not hex text
    try:
        row = cursor.execute(str(compiled), compiled.params).fetchone()
    finally:
        cursor.close()
    if not row[0]:
        return 0, []
    return int(row[0]), [np.frombuffer(row[k + 1], dtype=dtype).astype(cast)
                         for k, (dtype, cast) in enumerate(((">i8", np.int64), (">f8", np.float64),
                                                            (">f8", np.float64), (">i2", bool)))]


def _converted() -> Any:
    return sa.cast(sa.cast(outcomes.c.lead_id.is_not(None), sa.Integer), sa.SmallInteger).label("converted")


def _with_outcomes(table: Any, lead_id: Any) -> Any:
    return table.outerjoin(outcomes, sa.and_(outcomes.c.lead_id == lead_id, outcomes.c.converted))


def _summary_postgres(conn: Any, where: list[Any], *, one_key: bool) -> tuple[int, list[np.ndarray]]:
    """Return the count of logged rows and (id, seconds, probability, converted) of each lead's first score, from
    first_scores: one row per lead when the version and name are both given (`one_key`), else the earliest of each
    lead's rows by (scored_at, id), as in the log."""
    from sqlalchemy.dialects.postgresql import distinct_on

    f = first_scores
    # The outcome is first_scores' own (migration 0008): a join with outcomes was 0.7 of 1.3 s over 1M leads.
    columns = (f.c.prediction_id.label("id"), _epoch(conn, f.c.scored_at).label("seconds"),
               f.c.probability.label("probability"),
               sa.cast(sa.cast(f.c.converted, sa.Integer), sa.SmallInteger).label("converted"))
    if one_key:
        first = sa.select(*columns, f.c.rows_logged).where(*where).subquery()
        return _packed(conn, first, sa.func.sum(first.c.rows_logged))
    # Window functions run before DISTINCT ON: the total counts every key's rows, not only the kept ones.
    first = (sa.select(*columns, sa.func.sum(f.c.rows_logged).over().label("total"))
             .where(*where).ext(distinct_on(f.c.lead_id))
             .order_by(f.c.lead_id, f.c.scored_at, f.c.prediction_id)).subquery()
    return _packed(conn, first, sa.func.max(first.c.total))


def _window_postgres(conn: Any, where: list[Any]) -> tuple[int, list[np.ndarray]]:
    """Return the count of logged rows in a window and (id, seconds, probability, converted) of each lead's first
    score in it, from the log itself.

    ix_predictions_first_score yields a version's rows in (lead, time) order, DISTINCT ON keeps each lead's first,
    and a merge join with the outcomes' primary key (in the same lead order) marks the converted.
    """
    from sqlalchemy.dialects.postgresql import distinct_on

    p = predictions
    total = int(conn.execute(sa.select(sa.func.count()).select_from(p).where(*where)).scalar())
    if not total:
        return 0, []
    first = (sa.select(p.c.id.label("id"), _epoch(conn, p.c.scored_at).label("seconds"),
                       p.c.probability.label("probability"), _converted())
             .select_from(_with_outcomes(p, p.c.lead_id))
             .where(*where).ext(distinct_on(p.c.lead_id))
             .order_by(p.c.lead_id, p.c.scored_at, p.c.id)).subquery()
    return total, _packed(conn, first, sa.literal(total))[1]


def _first_of_each_lead(rows: list[tuple[Any, ...]], *, grouped: bool, converted: int | None = None
                        ) -> list[np.ndarray]:
    """Return (id, seconds, probability) and the lead ids of `rows` (id, lead_id, seconds, probability, ...): each
    lead's first row when `grouped` (rows in (lead, time, id) order), else every row (one per lead already). With
    `converted`, the position of each row's outcome flag, that flag comes last instead of the lead ids."""
    n = len(rows)
    first = np.ones(n, dtype=bool)
    lead_ids = (np.asarray(list(map(operator.itemgetter(1), rows)), dtype=object) if grouped or converted is None
                else np.empty(0, dtype=object))
    if grouped:
        first[1:] = lead_ids[1:] != lead_ids[:-1]
    last = lead_ids if converted is None else np.fromiter(map(operator.itemgetter(converted), rows), bool, n)
    return [np.fromiter(map(operator.itemgetter(k), rows), dtype, n)[first]
            for k, dtype in ((0, np.int64), (2, np.float64), (3, np.float64))] + [last[first]]


def _marked_converted(conn: Any, columns: list[np.ndarray]) -> list[np.ndarray]:
    """Return (id, seconds, probability, converted) from (id, seconds, probability, lead ids): the converted leads
    are a set looked up once per lead, cheaper on SQLite than a join of a million index look-ups (measured)."""
    converted_ids = {r[0] for r in _raw_rows(conn, sa.select(outcomes.c.lead_id).where(outcomes.c.converted))}
    lead_ids = columns[3]
    return [*columns[:3], np.fromiter(map(converted_ids.__contains__, lead_ids), bool, len(lead_ids))]


def _summary_sqlite(conn: Any, where: list[Any], *, one_key: bool) -> tuple[int, list[np.ndarray]]:
    """Return the count of logged rows and (id, seconds, probability, converted) of each lead's first score, from
    first_scores alone (see _summary_postgres)."""
    f = first_scores
    query = sa.select(f.c.prediction_id, f.c.lead_id if not one_key else sa.null(), _epoch(conn, f.c.scored_at),
                      f.c.probability, f.c.rows_logged, f.c.converted).where(*where)
    if not one_key:
        query = query.order_by(f.c.lead_id, f.c.scored_at, f.c.prediction_id)
    rows = _raw_rows(conn, query)
    if not rows:
        return 0, []
    total = sum(map(operator.itemgetter(4), rows))
    return total, _first_of_each_lead(rows, grouped=not one_key, converted=5)


def _window_sqlite(conn: Any, where: list[Any]) -> tuple[int, list[np.ndarray]]:
    """Return the count of logged rows in a window and (id, seconds, probability, converted) of each lead's first
    score in it, from the log itself: ix_predictions_first_score gives the rows in (lead, time) order, so a lead's
    first score is the row whose lead differs from the one before (cheaper than SQLite's window functions)."""
    p = predictions
    query = (sa.select(p.c.id, p.c.lead_id, _epoch(conn, p.c.scored_at), p.c.probability)
             .where(*where).order_by(p.c.lead_id, p.c.scored_at, p.c.id))
    rows = _raw_rows(conn, query)
    if not rows:
        return 0, []
    n = len(rows)
    columns = _first_of_each_lead(rows, grouped=True)
    del rows
    return n, _marked_converted(conn, columns)


def logged_scores(store: Store, *, model_name: str | None, model_version: str | None, since: datetime | None,
                  now: datetime, maturity_days: float, feature_rows: int = FEATURE_SAMPLE_ROWS,
                  read_features: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> Logged:
    """Return each lead's first logged score (with its matured outcome) and a sample of the logged features, as
    `read_features` reads them (the caller's typing; on PostgreSQL it runs while the server builds the summary).

    A lead's first score is its earliest by (scored_at, id) within the window; the scores come back in that
    time order. The features are those of a sample of the first scores (`sampled`: a hash of the row's id, so
    spread evenly over time and over any pattern in the ids). Without `since` the first scores come from
    first_scores, one row per lead; with it, from the log, since a lead first scored before `since` and again
    after counts from its first score in the window, which the summary does not hold.
    """
    one_key = model_name is not None and model_version is not None
    ahead = since is None and one_key and feature_rows > 0 and not store.is_sqlite

    def read(raw: pd.DataFrame) -> pd.DataFrame:
        return read_features(raw) if read_features is not None and len(raw) else raw

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leadcast-monitor") if ahead else None
    # On PostgreSQL the sample is read and typed on a second connection while the server builds the summary: the
    # two take about as long over a million rows (docs/monitoring.md), and a sample drawn by a hash of the id needs
    # nothing from the summary. The pool lets its one thread finish without anyone waiting on it.
    sample: pd.DataFrame | Future[pd.DataFrame] = pd.DataFrame()
    try:
        if pool is not None:
            sample = pool.submit(lambda: read(_summary_sample(store, model_name, model_version, feature_rows)))
        with store.begin() as conn:
            postgres = conn.dialect.name == "postgresql"
            if since is None:
                summary = _summary_postgres if postgres else _summary_sqlite
                total, columns = summary(conn, _filters(first_scores, model_name, model_version, None),
                                         one_key=one_key)
            else:
                window = _window_postgres if postgres else _window_sqlite
                total, columns = window(conn, _filters(predictions, model_name, model_version, since))
            if total and pool is None and feature_rows:
                ids = columns[0]
                sample = _feature_sample(conn, np.sort(ids[sampled(ids, len(ids), feature_rows)]).tolist())
    except BaseException:
        _settle(sample)
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=False)
    if not total:
        _settle(sample)
        return Logged(scores=pd.DataFrame(columns=["scored_at", "probability", "converted"]),
                      sample=pd.DataFrame(), rows=0)
    if not isinstance(sample, Future):
        sample = read(sample)
    order = np.lexsort((columns[0], columns[1]))  # by time, then id: the order the log was written in
    seconds, probability, converted = (c[order] for c in columns[1:])
    age_days = (pd.Timestamp(now.replace(tzinfo=None)).value / 1e9 - seconds) / 86400.0
    y = np.where(converted, 1.0, np.where(age_days > maturity_days, 0.0, np.nan))
    scores = pd.DataFrame({"scored_at": _times(seconds), "probability": probability, "converted": y})
    return Logged(scores=scores, sample=sample, rows=total)


def _settle(sample: pd.DataFrame | Future[pd.DataFrame]) -> None:
    """Cancel a sample not yet started, else wait until it is done: its connection is back in the pool before the
    caller goes on (a caller that closes the store next would leave it open), its outcome unused."""
    if isinstance(sample, Future) and not sample.cancel():
        sample.exception()


SAMPLE_MODULUS = 2_147_483_647  # 2^31 - 1, prime
# round(M x (sqrt(5) - 1) / 2): Fibonacci hashing. id x A mod M walks the circle by the golden ratio's fraction, so
# consecutive ids land far apart and any rows below a threshold are spread evenly (gaps of 21-55 ids for 25,000 of
# 1,000,000), also along any period in the ids. A small multiplier (Park-Miller's 48,271) kept ids below 44,489 in
# order: every first score of a small store, or blocks of consecutive ids in a big one.
SAMPLE_MULTIPLIER = 1_327_217_884


def sample_threshold(population: int, wanted: int) -> int:
    """Return the hash value below which a row is sampled, so that `wanted` of `population` rows are expected."""
    return SAMPLE_MODULUS if wanted >= population else math.ceil(SAMPLE_MODULUS * wanted / population)


def sample_hash(ids: Any) -> Any:
    """Return ((id mod M) x A) mod M (M = 2^31 - 1) of an int64 array or of a SQL integer column alike.

    A multiplicative hash, not every k-th id: rows of one kind that arrive on a period (a rescore after each first
    score) are still sampled at the same rate as the rest. Products stay below 2^62: no overflow in int64 or in
    PostgreSQL's bigint.
    """
    return (ids % SAMPLE_MODULUS) * SAMPLE_MULTIPLIER % SAMPLE_MODULUS


def sampled(ids: np.ndarray, population: int, wanted: int) -> np.ndarray:
    """Return which prediction ids are in the feature sample: their hash below the threshold."""
    return np.asarray(sample_hash(np.asarray(ids, dtype=np.int64))) < sample_threshold(population, wanted)


def _summary_sample(store: Store, model_name: str | None, model_version: str | None,
                    wanted: int) -> pd.DataFrame:
    """Return the logged features of the sample (`sampled`) of one version's first scores in first_scores."""
    f = first_scores
    where = _filters(f, model_name, model_version, None)
    with store.begin() as conn:
        population = int(conn.execute(sa.select(sa.func.count()).select_from(f).where(*where)).scalar_one())
        if not population:
            return pd.DataFrame()
        hashed = sample_hash(f.c.prediction_id)
        ids = conn.execute(sa.select(f.c.prediction_id).where(*where, hashed < sample_threshold(population, wanted))
                           .order_by(f.c.prediction_id)).scalars().all()
        # The ids first, then their rows by primary key: joined in one query, the planner (which cannot know the
        # hash's selectivity) read the whole log, 0.8 s where the look-ups take 0.3 s (EXPLAIN ANALYZE, 1M rows).
        return _feature_sample(conn, list(ids))


def _feature_sample(conn: Any, ids: list[int]) -> pd.DataFrame:
    """Return the logged features, `as_of` and lead_id of the logged rows `ids` (sorted), in id order: on
    PostgreSQL one query with the ids as one array parameter, answered as one row of three JSON arrays; on SQLite
    a query per 30,000 ids, a row each."""
    if not ids:
        return _feature_frame([], [], [])
    p = predictions
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by

        # One row, not 50,000: psycopg's work per row was 0.4 s of the 0.7 s fetch (measured under load). The
        # features as stored (JSON text, never re-parsed), the times and ids as JSON arrays.
        wanted = sa.bindparam("ids", ids, type_=ARRAY(sa.BigInteger))
        texts = (sa.literal("[") + sa.func.string_agg(sa.cast(p.c.features, sa.Text),
                                                      aggregate_order_by(sa.literal(","), p.c.id)) + sa.literal("]"),
                 sa.cast(sa.func.json_agg(aggregate_order_by(p.c.as_of, p.c.id)), sa.Text),
                 sa.cast(sa.func.json_agg(aggregate_order_by(p.c.lead_id, p.c.id)), sa.Text))
        row = _raw_rows(conn, sa.select(*texts).where(p.c.id == sa.func.any(wanted)))[0]
        if row[0] is None:
            return _feature_frame([], [], [])
        records, as_of, lead_ids = (orjson.loads(text) for text in row)
        return _feature_frame(records, as_of, lead_ids)
    # As text: the JSON column's own parsing would read each value with the standard json module.
    columns = (sa.cast(p.c.features, sa.Text), sa.type_coerce(p.c.as_of, sa.Text), p.c.lead_id)
    rows: list[tuple[Any, ...]] = []
    for part in chunks(ids, FEATURE_CHUNK):
        rows += _raw_rows(conn, sa.select(*columns).where(p.c.id.in_(part)).order_by(p.c.id))
    return _feature_frame([orjson.loads(r[0]) if isinstance(r[0], (str, bytes)) else (r[0] or {}) for r in rows],
                          [r[1] for r in rows], [r[2] for r in rows])


def _feature_frame(records: list[dict[str, Any]], as_of: list[Any], lead_ids: list[Any]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    # ISO 8601 whatever each value's precision: inferred from the first, a time with microseconds made a whole
    # second after it NaT (PostgreSQL writes no fraction when it is zero).
    frame["as_of"] = pd.to_datetime(pd.Series(as_of, dtype=object), format="ISO8601", errors="coerce") \
        if records else pd.Series(dtype="datetime64[ns]")
    frame["lead_id"] = lead_ids
    return frame


def training_frame(store: Store, *, spec: Any, since: datetime | None, now: datetime, maturity_days: float,
                   model_name: str | None = None) -> pd.DataFrame:
    """Return one row per lead with a matured outcome: its first logged feature values, the time it was first
    scored (as the spec's created-at column), the `as_of` it was scored at, and the outcome as the spec's target."""
    where = _filters(predictions, model_name, None, since)
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
