"""Rebuild the pipeline as it was known at a date: the one place where "as of T" is defined."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from crmdata.contracts import OPPORTUNITY
from crmdata.stages import StageConfig
from forecasting.columns import arrow, is_in, positions, sorted_codes
from forecasting.errors import ForecastInputError
from forecasting.periods import as_day

DAY = pd.Timedelta(days=1)


def elapsed_days(later: Any, earlier: Any) -> pd.Series:
    """Return (later - earlier) in days as floats (NaN where a date is missing)."""
    return pd.Series(later - earlier).dt.total_seconds() / 86_400.0


def last_known_date(opportunities: pd.DataFrame) -> pd.Timestamp | None:
    """Return the latest date the export mentions (creation, stage entry or close), or None when it has none."""
    dates = [opportunities[c].max() for c in ("created_at", "stage_entered_at", "closed_at")
             if c in opportunities.columns]
    known = [d for d in dates if pd.notna(d)]
    return max(known) if known else None


def first_rows(history: pd.DataFrame, *, last: bool = False) -> np.ndarray:
    """Return the row of each deal's first (or last) stage change, deals in id order.

    As a stable sort by (opportunity_id, entered_at) and taking each deal's first (last) row does: a tie in
    entered_at goes to the row that comes first (last) in the frame.
    """
    ids = sorted_codes(history["opportunity_id"])
    if len(ids) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((history["entered_at"].to_numpy("datetime64[ns]").view(np.int64), ids))
    grouped = ids[order]
    edge = np.empty(len(order), dtype=bool)
    if last:
        edge[-1] = True
        np.not_equal(grouped[1:], grouped[:-1], out=edge[:-1])
    else:
        edge[0] = True
        np.not_equal(grouped[1:], grouped[:-1], out=edge[1:])
    return order[edge]


def entry_stage(opportunities: pd.DataFrame, *, stages: StageConfig, history: pd.DataFrame | None = None) -> str:
    """Return the open stage a deal is in when it is created.

    With a stage history: the most common first recorded open stage. Without one: the earliest open stage held
    by any open deal that has a creation date (in the Maven export, "Engaging"; "Prospecting" deals have no date).
    """
    if history is not None and len(history):
        first = history["stage"].iloc[first_rows(history)]
        first = first[is_in(first, stages.open)]
        if len(first):
            return str(first.value_counts().idxmax())
    dated = opportunities.loc[opportunities["created_at"].notna() & (opportunities["outcome"] == "open"), "stage"]
    held = [s for s, hit in zip(stages.open, is_in(np.asarray(stages.open, dtype=object), dated), strict=True)
            if hit]
    return held[0] if held else stages.open[0]


def snapshot(
    opportunities: pd.DataFrame,
    *,
    as_of: pd.Timestamp,
    stages: StageConfig,
    history: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Return the opportunities as known at the start of day `as_of`, in the opportunity contract.

    "As of T" means at midnight starting day T: whatever is dated T or later is the future. A deal is in the
    snapshot if it was created before T (deals with no creation date only when T is after every date of the
    export, i.e. the snapshot is the present). A deal closed on or after T is open at T. Its stage at T comes from
    the stage history (the last stage entered before T) when there is one; else it is its current stage if it
    entered it before T; else the entry stage (the earliest open stage it must have passed). Extra columns:
    `age_days` (whole days since creation), `days_in_stage` (whole days in the stage at T) and `stage_inferred`
    (True when the stage at T was not recorded but inferred).
    """
    t = as_day(as_of)
    frame = opportunities
    last = last_known_date(frame)
    created = frame["created_at"]
    present = last is not None and t > last
    keep = (created < t).fillna(False).to_numpy(bool).copy()
    if present:
        keep |= (created.isna() & (frame["outcome"] == "open")).fillna(False).to_numpy(bool)
    snap = frame.loc[keep].copy()
    entry = entry_stage(frame, stages=stages, history=history)

    closed_before = (snap["closed_at"] < t).fillna(False).to_numpy(bool)
    # An open deal's recorded stage held at T if it entered it before T, or if T is the present.
    recorded_open = (snap["outcome"] == "open").to_numpy(bool) & (
        (snap["stage_entered_at"] < t).fillna(False).to_numpy(bool) | present)
    entered = snap["stage_entered_at"].to_numpy(copy=True)
    inferred = np.zeros(len(snap), dtype=bool)
    still_open = ~closed_before
    # A still-open deal with no recorded stage entry before T: its stage then is the entry stage at creation.
    fallback = still_open & ~recorded_open
    entered[fallback] = snap["created_at"].to_numpy()[fallback]
    keep_entered = recorded_open & pd.isna(entered)
    entered[keep_entered] = snap["created_at"].to_numpy()[keep_entered]
    inferred[fallback] = True

    stage_rows = np.arange(len(snap))  # where each deal's stage at T comes from: snap rows, the entry, history
    stage_rows[fallback] = len(snap)
    stage_values = [arrow(snap["stage"]), arrow([entry])]
    if history is not None and len(history):
        row = positions(history["opportunity_id"], snap["opportunity_id"])
        known = np.flatnonzero((history["entered_at"] < t).fillna(False).to_numpy(bool) & (row >= 0))
        before = history.iloc[known]
        last_entry = known[first_rows(before, last=True)]
        pos = np.full(len(snap), -1, dtype=np.int64)
        pos[row[last_entry]] = last_entry
        has = (pos >= 0) & still_open
        hist_open = np.zeros(len(snap), dtype=bool)
        hist_open[has] = is_in(history["stage"].iloc[pos[has]], stages.open)
        stage_rows[hist_open] = len(snap) + 1 + pos[hist_open]
        stage_values.append(arrow(history["stage"]))
        entered[hist_open] = history["entered_at"].to_numpy()[pos[hist_open]]
        inferred[hist_open] = False

    chosen = pa.concat_arrays([v.cast(pa.large_string()) for v in stage_values]).take(pa.array(stage_rows))
    snap["stage"] = pd.arrays.ArrowStringArray(chosen)
    snap["stage_entered_at"] = pd.to_datetime(entered)
    snap["outcome"] = snap["outcome"].astype("string").mask(pd.Series(still_open, index=snap.index), "open")
    snap.loc[still_open, "closed_at"] = pd.NaT
    won_amount = snap["won_amount"].astype("Float64")
    snap["won_amount"] = won_amount.mask(pd.Series(still_open, index=snap.index))
    snap["age_days"] = np.floor(elapsed_days(t, snap["created_at"])).astype("Float64")
    in_stage = np.floor(elapsed_days(t, snap["stage_entered_at"])).astype("Float64")
    snap["days_in_stage"] = in_stage.where(in_stage.notna(), snap["age_days"])
    snap["stage_inferred"] = inferred
    columns = [*OPPORTUNITY.names, *[c for c in snap.columns if c not in OPPORTUNITY.names]]
    return snap[columns].reset_index(drop=True)


def require_history(snap: pd.DataFrame, *, as_of: pd.Timestamp, min_closed: int = 1) -> None:
    """Raise ForecastInputError unless the snapshot has open deals and enough closed deals to learn from."""
    if snap.empty:
        raise ForecastInputError(
            f"no opportunity was created before the as-of date {as_day(as_of):%Y-%m-%d}; "
            "choose a later as-of date (the data starts later)"
        )
    closed = int(snap["outcome"].isin(["won", "lost"]).sum())
    if closed < min_closed:
        raise ForecastInputError(
            f"only {closed} deal(s) closed before {as_day(as_of):%Y-%m-%d}; need at least {min_closed} won or "
            "lost deal(s) to learn win rates and cycle lengths: choose a later as-of date"
        )
    if not (snap["outcome"] == "won").any():
        raise ForecastInputError(
            f"no deal was won before {as_day(as_of):%Y-%m-%d}; cannot learn deal sizes or win rates"
        )
