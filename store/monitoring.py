"""What model health reads from the store: each lead's first logged score by a model version, its outcome once
matured, and a sample of the logged feature values.

A lead's outcome has matured when it converted, or when its first score is older than the maturity window with no
conversion recorded (then it counts as not converted, whether or not a non-conversion was recorded). Leads younger
than the window with no conversion are left out of every outcome figure: they may still convert.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pandas as pd
import sqlalchemy as sa

from store.core import Store
from store.schema import outcomes, predictions

FEATURE_SAMPLE_ROWS = 100_000


@dataclass(frozen=True)
class Logged:
    """The leads a model version scored in a window: one row per lead (its first score), and sampled features.

    `scores` columns: lead_id, scored_at (UTC, naive), probability, grade, converted (1, 0, or NaN while the
    outcome has not matured). `features` holds the logged feature values of a sample of the logged rows, with
    `as_of` and the time scored; `rows` counts every logged row (rescored leads included).
    """

    scores: pd.DataFrame
    features: pd.DataFrame
    rows: int


def _epoch(store: Store, column: Any) -> Any:
    """Return a SQL expression of a naive-UTC timestamp column as seconds since 1970 (no per-row parsing)."""
    if store.is_sqlite:
        return (sa.func.julianday(column) - 2440587.5) * 86400.0
    return sa.extract("epoch", column)


def _filters(model_name: str | None, model_version: str | None, since: datetime | None) -> list[Any]:
    where: list[Any] = []
    if model_name is not None:
        where.append(predictions.c.model_name == model_name)
    if model_version is not None:
        where.append(predictions.c.model_version == model_version)
    if since is not None:
        where.append(predictions.c.scored_at >= since)
    return where


def _times(seconds: Any) -> pd.Series:
    return pd.Series(pd.to_datetime(np.asarray(seconds, dtype=np.float64) * 1e9, unit="ns").round("us"))


def logged_scores(store: Store, *, model_name: str | None, model_version: str | None, since: datetime | None,
                  now: datetime, maturity_days: float, feature_rows: int = FEATURE_SAMPLE_ROWS) -> Logged:
    """Return each lead's first logged score (with its matured outcome) and a sample of the logged features."""
    where = _filters(model_name, model_version, since)
    query = (sa.select(predictions.c.lead_id, _epoch(store, predictions.c.scored_at).label("t"),
                       predictions.c.probability, predictions.c.grade, outcomes.c.converted)
             .select_from(predictions.outerjoin(outcomes, outcomes.c.lead_id == predictions.c.lead_id))
             .where(*where))
    with store.begin() as conn:
        rows = conn.execute(query).all()
        total = len(rows)
        stride = max(1, math.ceil(total / feature_rows)) if feature_rows else 0
        sample: Sequence[Any] = []
        if stride:
            # every stride-th logged row by id: ids follow arrival, so the sample spreads over the whole window
            picked = sa.select(sa.type_coerce(predictions.c.features, sa.Text), predictions.c.as_of,
                               predictions.c.lead_id).where(*where)
            sample = conn.execute(picked.where((predictions.c.id % stride) == 0) if stride > 1 else picked).all()
    frame = pd.DataFrame(rows, columns=["lead_id", "t", "probability", "grade", "converted"])
    frame = frame.sort_values(["lead_id", "t"], kind="stable").drop_duplicates("lead_id", keep="first")
    scored_at = _times(frame["t"].to_numpy())
    converted = frame["converted"].to_numpy(dtype=object)
    age_days = (pd.Timestamp(now.replace(tzinfo=None)) - scored_at).dt.total_seconds().to_numpy() / 86400.0
    y = np.where(converted == True, 1.0, np.where(age_days > maturity_days, 0.0, np.nan))  # noqa: E712 (objects)
    scores = pd.DataFrame({"lead_id": frame["lead_id"].to_numpy(), "scored_at": scored_at.to_numpy(),
                           "probability": frame["probability"].to_numpy(dtype=np.float64),
                           "grade": frame["grade"].to_numpy(), "converted": y})
    return Logged(scores=scores.sort_values("scored_at", kind="stable").reset_index(drop=True),
                  features=_feature_frame(sample), rows=total)


def _feature_frame(rows: Sequence[Any]) -> pd.DataFrame:
    records = [orjson.loads(text) if isinstance(text, (str, bytes)) else (text or {}) for text, _, _ in rows]
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    frame["as_of"] = pd.to_datetime([r[1] for r in rows]) if rows else pd.Series(dtype="datetime64[ns]")
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
