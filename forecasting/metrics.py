"""The brief's sales metrics as pure functions. Each states its formula and units.

Frame-based metrics take an opportunity-contract frame (or a snapshot of one), an optional half-open period
[start, end) and an optional `by` column (owner, team, region, product, product_category...): without `by`
they return a number, with it a Series indexed by group.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from forecasting.errors import ForecastInputError
from forecasting.periods import as_day
from forecasting.snapshot import elapsed_days

Value = float | pd.Series


def _check_by(deals: pd.DataFrame, by: str | None) -> None:
    if by is not None and by not in deals.columns:
        raise ForecastInputError(f"cannot group by '{by}': no such column (try owner, team, region, product, "
                                 "product_category)", field="by")


def _period_mask(dates: pd.Series, start: object | None, end: object | None) -> pd.Series:
    mask = dates.notna()
    if start is not None:
        mask &= dates >= as_day(start, field="start")
    if end is not None:
        mask &= dates < as_day(end, field="end")
    return mask.fillna(False).astype(bool)


def _grouped(frame: pd.DataFrame, by: str | None, fn: Callable[[pd.DataFrame], float]) -> Value:
    if by is None:
        return fn(frame)
    keys = frame[by].astype(object).where(frame[by].notna(), "(none)")
    return pd.Series({k: fn(g) for k, g in frame.groupby(keys, sort=True)}, name=fn.__name__, dtype=float)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


def closed_in(deals: pd.DataFrame, *, start: object | None = None, end: object | None = None) -> pd.DataFrame:
    """Return the won or lost deals whose close date falls in [start, end)."""
    closed = deals["outcome"].isin(["won", "lost"]).fillna(False).astype(bool)
    return deals[closed & _period_mask(deals["closed_at"], start, end)]


def average_deal_size(deals: pd.DataFrame, *, start: object | None = None, end: object | None = None,
                      by: str | None = None) -> Value:
    """Return won revenue / number of won deals ($ per deal), over deals won in [start, end)."""
    _check_by(deals, by)
    won = closed_in(deals, start=start, end=end)
    won = won[won["outcome"] == "won"]

    def average_deal_size(g: pd.DataFrame) -> float:
        return _ratio(float(g["won_amount"].astype(float).fillna(0).sum()), len(g))

    return _grouped(won, by, average_deal_size)


def average_cycle_days(deals: pd.DataFrame, *, start: object | None = None, end: object | None = None,
                       by: str | None = None, outcomes: tuple[str, ...] = ("won",)) -> Value:
    """Return the mean of (closed_at - created_at) in days over deals closed in [start, end) with those outcomes."""
    _check_by(deals, by)
    closed = closed_in(deals, start=start, end=end)
    closed = closed[closed["outcome"].isin(outcomes) & closed["created_at"].notna()]

    def average_cycle_days(g: pd.DataFrame) -> float:
        days = elapsed_days(g["closed_at"], g["created_at"])
        return float(days.mean()) if len(g) else float("nan")

    return _grouped(closed, by, average_cycle_days)


def win_rate(deals: pd.DataFrame, *, start: object | None = None, end: object | None = None,
             by: str | None = None) -> Value:
    """Return won / (won + lost) over deals closed in [start, end) (a share of closed deals, not of leads)."""
    _check_by(deals, by)
    closed = closed_in(deals, start=start, end=end)

    def win_rate(g: pd.DataFrame) -> float:
        return _ratio(float((g["outcome"] == "won").sum()), len(g))

    return _grouped(closed, by, win_rate)


def open_pipeline(deals: pd.DataFrame, *, by: str | None = None) -> Value:
    """Return the summed amount of open deals ($)."""
    _check_by(deals, by)
    opened = deals[(deals["outcome"] == "open").fillna(False).astype(bool)]

    def open_pipeline(g: pd.DataFrame) -> float:
        return float(g["amount"].astype(float).fillna(0).sum())

    return _grouped(opened, by, open_pipeline)


def pipeline_coverage(*, pipeline: float, target: float) -> float:
    """Return open pipeline / revenue target (a ratio: 3.0 means three dollars in play per dollar needed)."""
    if target <= 0:
        raise ForecastInputError(f"target must be positive to compute coverage, got {target}")
    return float(pipeline / target)


def required_coverage(*, win_rate: float) -> float:
    """Return the coverage a win rate requires: 1 / win rate (a 25% win rate needs 4x pipeline)."""
    if not 0 < win_rate <= 1:
        raise ForecastInputError(f"win rate must be in (0, 1], got {win_rate}")
    return 1.0 / win_rate


def customer_acquisition_cost(*, spend: float, new_customers: int) -> float:
    """Return sales and marketing spend / new customers won ($ per customer)."""
    if spend < 0:
        raise ForecastInputError(f"spend must not be negative, got {spend}")
    if new_customers <= 0:
        raise ForecastInputError("new_customers must be at least 1 to compute an acquisition cost")
    return float(spend / new_customers)


def customer_lifetime_value(*, revenue_per_period: float, gross_margin: float, churn_rate: float | None = None,
                            retention_rate: float | None = None) -> float:
    """Return revenue per customer per period x gross margin / churn per period ($ per customer).

    Churn is given directly or as 1 - retention; 1 / churn is the expected number of periods a customer stays.
    """
    if (churn_rate is None) == (retention_rate is None):
        raise ForecastInputError("give exactly one of churn_rate and retention_rate")
    churn = churn_rate if churn_rate is not None else 1.0 - float(retention_rate)  # type: ignore[arg-type]
    if not 0 < churn <= 1:
        raise ForecastInputError(f"churn must be in (0, 1] (retention in [0, 1)), got churn {churn}")
    if not 0 <= gross_margin <= 1:
        raise ForecastInputError(f"gross margin must be a share between 0 and 1, got {gross_margin}")
    return float(revenue_per_period * gross_margin / churn)


def revenue_growth(*, previous: float, current: float) -> float:
    """Return (current - previous) / previous x 100 (% growth from one period to the next)."""
    if previous == 0:
        raise ForecastInputError("revenue growth is undefined when the previous period's revenue is 0")
    return float((current - previous) / previous * 100.0)


def won_revenue(deals: pd.DataFrame, *, start: object | None = None, end: object | None = None,
                by: str | None = None) -> Value:
    """Return the revenue ($) of deals won in [start, end)."""
    _check_by(deals, by)
    won = closed_in(deals, start=start, end=end)
    won = won[won["outcome"] == "won"]

    def won_revenue(g: pd.DataFrame) -> float:
        return float(g["won_amount"].astype(float).fillna(0).sum())

    return _grouped(won, by, won_revenue)


def revenue_by_period(deals: pd.DataFrame, *, freq: str = "M", start: object | None = None,
                      end: object | None = None) -> pd.Series:
    """Return won revenue ($) per calendar period (freq M, Q or W), every period in the range, zero-filled."""
    won = closed_in(deals, start=start, end=end)
    won = won[won["outcome"] == "won"]
    if won.empty:
        return pd.Series(dtype=float)
    keys = won["closed_at"].dt.to_period(freq)
    series = won["won_amount"].astype(float).fillna(0).groupby(keys).sum()
    first = as_day(start).to_period(freq) if start is not None else series.index.min()
    last = (as_day(end) - pd.Timedelta(days=1)).to_period(freq) if end is not None else series.index.max()
    return series.reindex(pd.period_range(first, last, freq=freq), fill_value=0.0).astype(float)


def sales_velocity(*, opportunities: float, deal_size: float, win_rate: float, cycle_days: float) -> float:
    """Return open opportunities x average deal size ($) x win rate / cycle length (days): $ per day."""
    if cycle_days <= 0:
        raise ForecastInputError(f"cycle length must be positive days, got {cycle_days}")
    return float(opportunities * deal_size * win_rate / cycle_days)


def pipeline_velocity(deals: pd.DataFrame, *, start: object | None = None, end: object | None = None,
                      by: str | None = None) -> Value:
    """Return sales velocity ($/day) from data: open deals x average deal size x win rate / mean won cycle days,
    with deal size, win rate and cycle taken over deals closed in [start, end)."""
    _check_by(deals, by)

    def pipeline_velocity(g: pd.DataFrame) -> float:
        cycle = float(average_cycle_days(g, start=start, end=end))  # type: ignore[arg-type]
        if not cycle or np.isnan(cycle):
            return float("nan")
        return sales_velocity(
            opportunities=float((g["outcome"] == "open").sum()),
            deal_size=float(average_deal_size(g, start=start, end=end)),  # type: ignore[arg-type]
            win_rate=float(win_rate(g, start=start, end=end)),  # type: ignore[arg-type]
            cycle_days=cycle,
        )

    return _grouped(deals, by, pipeline_velocity)


def product_mix(deals: pd.DataFrame, *, start: object | None = None, end: object | None = None,
                by: str = "product_category") -> pd.DataFrame:
    """Return per group: deals created in [start, end), deals won and lost in it, won revenue ($) and its share."""
    _check_by(deals, by)
    keys = deals[by].astype(object).where(deals[by].notna(), "(none)")
    created = deals[_period_mask(deals["created_at"], start, end)].groupby(keys).size()
    closed = closed_in(deals, start=start, end=end)
    ckeys = keys[closed.index]
    won = closed[closed["outcome"] == "won"].groupby(ckeys).size()
    lost = closed[closed["outcome"] == "lost"].groupby(ckeys).size()
    revenue = closed.loc[closed["outcome"] == "won", "won_amount"].astype(float).fillna(0).groupby(ckeys).sum()
    out = pd.DataFrame({"created": created, "won": won, "lost": lost, "won_revenue": revenue}).fillna(0)
    out[["created", "won", "lost"]] = out[["created", "won", "lost"]].astype(int)
    total = out["won_revenue"].sum()
    out["revenue_share"] = out["won_revenue"] / total if total else 0.0
    out.index.name = by
    return out.sort_index()


def pace_target(*, daily_target: float, days: int) -> float:
    """Return daily target ($/day) x days: $250 a day over a 30-day month is $7,500."""
    if daily_target < 0:
        raise ForecastInputError(f"daily target must not be negative, got {daily_target}")
    if days < 0:
        raise ForecastInputError(f"days must not be negative, got {days}")
    return float(daily_target * days)


@dataclass(frozen=True)
class Pace:
    """Lead generation against a daily target over a period, measured at `as_of`."""

    start: str
    end: str
    as_of: str
    period_days: int
    days_elapsed: int
    daily_target: float
    period_target: float
    target_to_date: float
    actual_to_date: float
    shortfall: float
    daily_needed: float

    def to_dict(self) -> dict[str, object]:
        """Return the pace as JSON-ready values."""
        return asdict(self)


def lead_generation_pace(deals: pd.DataFrame, *, daily_target: float, start: object, end: object,
                         as_of: object) -> Pace:
    """Return pipeline value created (sum of amount of deals created, $) against daily_target x days.

    target_to_date = daily_target x days elapsed in [start, min(as_of, end)); shortfall = max(0, target_to_date -
    actual_to_date); daily_needed = (period_target - actual_to_date) / days left, the $/day that still meets it.
    """
    s, e, t = as_day(start, field="start"), as_day(end, field="end"), as_day(as_of)
    if e <= s:
        raise ForecastInputError(f"pace period end {e:%Y-%m-%d} must be after its start {s:%Y-%m-%d}")
    period_days = int((e - s).days)
    upto = min(max(t, s), e)
    elapsed = int((upto - s).days)
    created = deals[_period_mask(deals["created_at"], s, upto)]
    actual = float(created["amount"].astype(float).fillna(0).sum())
    period_target = pace_target(daily_target=daily_target, days=period_days)
    to_date = pace_target(daily_target=daily_target, days=elapsed)
    left = period_days - elapsed
    needed = max(0.0, period_target - actual) / left if left else 0.0
    return Pace(start=s.date().isoformat(), end=e.date().isoformat(), as_of=t.date().isoformat(),
                period_days=period_days, days_elapsed=elapsed, daily_target=float(daily_target),
                period_target=period_target, target_to_date=to_date, actual_to_date=actual,
                shortfall=max(0.0, to_date - actual), daily_needed=needed)
