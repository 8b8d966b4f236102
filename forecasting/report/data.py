"""The report's own figures, all from the pipeline as known at the as-of date: past periods' revenue, the
funnel, metrics by group, the velocity levers over time, the backtest dates and the lead grades."""

from __future__ import annotations

import numpy as np
import pandas as pd

from crmdata.errors import DataValidationError, Problem
from crmdata.stages import StageConfig
from forecasting import metrics
from forecasting.periods import Horizon, Period, as_day, periods
from forecasting.snapshot import elapsed_days

GRADES = ("A", "B", "C", "D")


def past_periods(snap: pd.DataFrame, *, as_of: pd.Timestamp, horizon: Horizon, count: int) -> pd.DataFrame:
    """Return won revenue ($) in the `count` periods before `as_of`, of the horizon's kind.

    M and Q: the whole calendar months or quarters that end by as_of; D and W: windows of the horizon's days
    (7 for W) ending at as_of. A period that starts before the first close in the data is left out (the export
    does not cover it). Columns: label, start, end (excluded), won_revenue.
    """
    t = as_day(as_of)
    first_close = snap.loc[snap["outcome"].isin(["won", "lost"]).fillna(False).astype(bool), "closed_at"].min()
    spans: list[Period] = []
    if horizon.unit in ("M", "Q"):
        freq = horizon.unit
        last = (t - pd.Timedelta(days=1)).to_period(freq)
        if (last + 1).start_time.normalize() > t:
            last -= 1
        for k in range(count - 1, -1, -1):
            p = last - k
            spans.append(Period(p.start_time.normalize(), (p + 1).start_time.normalize()))
    else:
        step = pd.Timedelta(days=horizon.count if horizon.unit == "D" else 7)
        spans = [Period(t - step * (k + 1), t - step * k) for k in range(count - 1, -1, -1)]
    rows = [
        {"label": p.label, "start": p.start, "end": p.end,
         "won_revenue": float(metrics.won_revenue(snap, start=p.start, end=p.end))}  # type: ignore[arg-type]
        for p in spans if pd.notna(first_close) and p.start >= first_close.normalize()
    ]
    return pd.DataFrame(rows, columns=["label", "start", "end", "won_revenue"])


def funnel(snap: pd.DataFrame, *, stages: StageConfig) -> pd.DataFrame:
    """Return the open deals and their summed amount ($) in each open stage, in pipeline order."""
    open_deals = snap[(snap["outcome"] == "open").fillna(False).astype(bool)]
    keys = open_deals["stage"].astype(object)
    amount = open_deals["amount"].astype(float)
    n = keys.value_counts()
    value = amount.groupby(keys).sum()
    return pd.DataFrame({
        "stage": list(stages.open),
        "open_deals": [int(n.get(s, 0)) for s in stages.open],
        "open_value": [float(value.get(s, 0.0)) for s in stages.open],
    })


def group_table(snap: pd.DataFrame, *, by: str) -> pd.DataFrame:
    """Return per group, over deals closed before the as-of date: closed and won deals, won revenue, win rate
    (won / closed), average deal size ($, won revenue / won deals), average won cycle (days, creation to close);
    open deals and pipeline ($) now; and sales velocity ($/day = open deals x average deal size x win rate /
    cycle days), ranked by velocity (groups without one last).

    The same definitions as forecasting.metrics (tested equal), computed in one grouped pass: one call per
    metric and group would take seconds for hundreds of reps.
    """
    keys = snap[by].astype(object).where(snap[by].notna(), "(none)").to_numpy()
    outcome = snap["outcome"].astype(object).to_numpy()
    is_open = outcome == "open"
    closed = np.isin(outcome, ["won", "lost"]) & snap["closed_at"].notna().to_numpy(bool)
    won = closed & (outcome == "won")
    cycle = elapsed_days(snap["closed_at"], snap["created_at"]).to_numpy(float)
    timed = won & ~np.isnan(cycle)
    frame = pd.DataFrame({
        "key": keys,
        "open_deals": is_open.astype(int),
        "open_pipeline": np.where(is_open, snap["amount"].astype(float).fillna(0).to_numpy(float), 0.0),
        "closed_deals": closed.astype(int),
        "won_deals": won.astype(int),
        "won_revenue": np.where(won, snap["won_amount"].astype(float).fillna(0).to_numpy(float), 0.0),
        "cycle_sum": np.where(timed, cycle, 0.0),
        "cycle_n": timed.astype(int),
    })
    g = frame.groupby("key", sort=True).sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        win_rate = g["won_deals"] / g["closed_deals"].where(g["closed_deals"] > 0)
        deal_size = g["won_revenue"] / g["won_deals"].where(g["won_deals"] > 0)
        cycle_days = g["cycle_sum"] / g["cycle_n"].where(g["cycle_n"] > 0)
    velocity = (g["open_deals"] * deal_size * win_rate / cycle_days.where(cycle_days > 0)).astype(float)
    out = pd.DataFrame({
        by: g.index.astype(object),
        "open_deals": g["open_deals"].astype(int).to_numpy(),
        "open_pipeline": g["open_pipeline"].astype(float).to_numpy(),
        "closed_deals": g["closed_deals"].astype(int).to_numpy(),
        "won_deals": g["won_deals"].astype(int).to_numpy(),
        "won_revenue": g["won_revenue"].astype(float).to_numpy(),
        "win_rate": win_rate.astype(float).to_numpy(),
        "average_deal_size": deal_size.astype(float).to_numpy(),
        "average_cycle_days": cycle_days.astype(float).to_numpy(),
        "sales_velocity_per_day": velocity.to_numpy(),
    })
    out = out.sort_values(["sales_velocity_per_day", "won_revenue"], ascending=False, na_position="last",
                          kind="stable")
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    return out.reset_index(drop=True)


def velocity_trend(snap: pd.DataFrame, *, as_of: pd.Timestamp, months: int = 12,
                   window_days: int = 90) -> pd.DataFrame:
    """Return the four levers of sales velocity and velocity itself at as_of and each month before it.

    At date t: open deals = deals created before t and not closed before t; average deal size ($), win rate and
    average won cycle (days) over deals closed in [t - window_days, t); velocity ($/day) = open deals x deal size
    x win rate / cycle days. Deals closed before as_of keep their outcome in the as-of snapshot, so each point is
    what a snapshot at t would give. Dates before the first deal was created are left out.
    """
    t0 = as_day(as_of)
    created, closed_at = snap["created_at"], snap["closed_at"]
    first = created.min()
    rows = []
    for k in range(months - 1, -1, -1):
        t = as_day(t0 - pd.DateOffset(months=k))
        if pd.isna(first) or t <= first:
            continue
        # Deals with no creation date are only in the snapshot when it is the present, i.e. at as_of itself.
        known = (created < t).fillna(False) | (created.isna() & (t >= t0))
        open_now = int((known & ~(closed_at < t).fillna(False)).sum())
        start = t - pd.Timedelta(days=window_days)
        ads = float(metrics.average_deal_size(snap, start=start, end=t))  # type: ignore[arg-type]
        wr = float(metrics.win_rate(snap, start=start, end=t))  # type: ignore[arg-type]
        cycle = float(metrics.average_cycle_days(snap, start=start, end=t))  # type: ignore[arg-type]
        ok = np.isfinite([ads, wr, cycle]).all() and cycle > 0
        velocity = metrics.sales_velocity(opportunities=open_now, deal_size=ads, win_rate=wr,
                                          cycle_days=cycle) if ok else float("nan")
        rows.append({"date": t, "open_deals": open_now, "average_deal_size": ads, "win_rate": wr,
                     "average_cycle_days": cycle, "sales_velocity_per_day": velocity})
    return pd.DataFrame(rows, columns=["date", "open_deals", "average_deal_size", "win_rate", "average_cycle_days",
                                       "sales_velocity_per_day"])


def backtest_dates(opportunities: pd.DataFrame, *, as_of: pd.Timestamp, horizon: Horizon,
                   months: int) -> list[pd.Timestamp]:
    """Return the first day of each of the `months` months before as_of whose horizon ends by as_of and which
    has a won deal closed before it, so each replayed forecast is scored on revenue already known at as_of."""
    t = as_day(as_of)
    won = opportunities["outcome"] == "won"
    first_win = opportunities.loc[won.fillna(False).astype(bool), "closed_at"].min()
    this_month = t.to_period("M").start_time.normalize()
    out = []
    for k in range(months, -1, -1):
        d = as_day(this_month - pd.DateOffset(months=k))
        if d >= t or pd.isna(first_win) or d <= first_win or d < t - pd.DateOffset(months=months):
            continue
        if periods(as_of=d, horizon=horizon)[-1].end <= t:
            out.append(d)
    return out


def lead_grades(scores: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Check the scores of open leads and return (count and mean score per grade A-D, scores, grades).

    `scores` needs a `score` column (0-100) and a `grade` column (A-D), one row per open lead, as
    scoring.scorer's `score_frame` returns them.
    """
    problems = [Problem("lead scores", c, "column is missing", code="missing_column")
                for c in ("score", "grade") if c not in scores.columns]
    if problems:
        raise DataValidationError(problems, source="lead scores")
    score = pd.to_numeric(scores["score"], errors="coerce").astype(float)
    grade = scores["grade"].astype("string")
    bad = score.isna() | (score < 0) | (score > 100)
    problems = [Problem("lead scores", "score", "is not a number from 0 to 100", row=int(i) + 1,
                        value=str(scores["score"].iloc[i]), code="wrong_value")
                for i in np.flatnonzero(bad.to_numpy(bool))[:100]]
    unknown = ~grade.isin(GRADES).fillna(False)
    problems += [Problem("lead scores", "grade", "is not one of A, B, C, D", row=int(i) + 1,
                         value=str(grade.iloc[i]), code="wrong_value")
                 for i in np.flatnonzero(unknown.to_numpy(bool))[:100]]
    if problems:
        raise DataValidationError(problems, source="lead scores")
    table = pd.DataFrame({
        "grade": list(GRADES),
        "leads": [int((grade == g).sum()) for g in GRADES],
        "mean_score": [float(score[(grade == g).to_numpy(bool)].mean()) if (grade == g).any() else float("nan")
                       for g in GRADES],
    })
    total = int(table["leads"].sum())
    table["share"] = table["leads"] / total if total else 0.0
    return table, score.to_numpy(float), grade.to_numpy(dtype=object)
