"""The brief's pipeline metrics gathered into one JSON-ready summary (used by the CLI, the API and reports)."""

from __future__ import annotations

import itertools
from typing import Any

import pandas as pd

from crmdata.files import json_safe
from crmdata.stages import StageConfig
from forecasting import metrics as m
from forecasting.errors import ForecastInputError
from forecasting.periods import as_day
from forecasting.snapshot import last_known_date, snapshot
from forecasting.stage_model import stage_statistics


def _overall(value: float | pd.Series) -> float:
    """Return an ungrouped metric as a float (the metrics return a Series only when grouped)."""
    if isinstance(value, pd.Series):
        raise TypeError("expected an ungrouped metric")
    return float(value)


def pipeline_metrics(
    deals: pd.DataFrame,
    *,
    stages: StageConfig,
    history: pd.DataFrame | None = None,
    as_of: object | None = None,
    start: object | None = None,
    end: object | None = None,
    by: str | None = None,
    target: float | None = None,
    daily_target: float | None = None,
    spend: float | None = None,
    margin: float | None = None,
    churn: float | None = None,
) -> dict[str, Any]:
    """Return every metric of the brief for deals closed in [start, end), as known at `as_of` (default: the latest
    date in the data), overall and, with `by`, per group. Amounts in $, durations in days, rates in 0-1."""
    if target is not None and target <= 0:
        raise ForecastInputError(f"target must be a positive amount in $, got {target}")
    if (margin is None) != (churn is None):
        raise ForecastInputError("customer lifetime value needs both a margin and a churn rate")
    known = last_known_date(deals)
    if as_of is None and known is None:
        raise ForecastInputError("the pipeline has no dates to measure from")
    when = as_day(as_of) if as_of is not None else as_day(known).normalize() + pd.Timedelta(days=1)
    snap = snapshot(deals, as_of=when, stages=stages, history=history)
    period: dict[str, Any] = {"start": start, "end": end}
    wr = _overall(m.win_rate(snap, **period))
    ads = _overall(m.average_deal_size(snap, **period))
    pipe = _overall(m.open_pipeline(snap))
    won = m.closed_in(snap, **period)
    new_customers = int((won["outcome"] == "won").sum())
    out: dict[str, Any] = {
        "as_of": when.date().isoformat(),
        "period": {"start": None if start is None else str(start), "end": None if end is None else str(end)},
        "win_rate": wr,
        "average_deal_size": ads,
        "average_cycle_days": _overall(m.average_cycle_days(snap, **period)),
        "sales_velocity_per_day": _overall(m.pipeline_velocity(snap, **period)),
        "open_deals": int((snap["outcome"] == "open").sum()),
        "open_pipeline": pipe,
        "won_deals": new_customers,
        "won_revenue": _overall(m.won_revenue(snap, **period)),
        "required_coverage": m.required_coverage(win_rate=wr) if 0 < wr <= 1 else None,
    }
    if target is not None:
        out["target"] = target
        out["pipeline_coverage"] = m.pipeline_coverage(pipeline=pipe, target=target)
    if spend is not None:
        # Undefined before the first won deal: null, as the other undefined metrics (it was a 422 of valid input).
        out["customer_acquisition_cost"] = (m.customer_acquisition_cost(spend=spend, new_customers=new_customers)
                                            if new_customers > 0 else None)
    if margin is not None and churn is not None:
        out["customer_lifetime_value"] = m.customer_lifetime_value(revenue_per_period=ads, gross_margin=margin,
                                                                   churn_rate=churn)
    monthly = m.revenue_by_period(snap, freq="M", **period)
    values = monthly.to_numpy(dtype=float)
    # No month at all when nothing closed by `as_of` (an as_of before every deal): no first month to leave empty.
    growth: list[float | None] = [None] if len(values) else []
    growth += [m.revenue_growth(previous=float(a), current=float(b)) if a else None
               for a, b in itertools.pairwise(values)]
    out["monthly_revenue"] = [{"month": str(k), "won_revenue": float(v), "growth_pct": g}
                              for (k, v), g in zip(monthly.items(), growth, strict=True)]
    mix = m.product_mix(snap, **period)
    out["product_mix"] = [{"product_category": str(k), **{c: float(v) for c, v in row.items()}}
                          for k, row in mix.iterrows()]
    _, _, stats, _ = stage_statistics(snap, stages=stages, as_of=when, history=history)
    out["stages"] = [{"stage": s.stage, "reached": s.reached, "conversion_to_next": s.conversion_to_next,
                      "win_probability": s.win_probability} for s in stats]
    if daily_target is not None:
        if start is None or end is None:
            raise ForecastInputError("lead-generation pace needs a period: give a start and an end")
        out["lead_generation_pace"] = m.lead_generation_pace(deals, daily_target=daily_target, start=start, end=end,
                                                             as_of=when).to_dict()
    if by is not None:
        table = pd.DataFrame({
            "won_revenue": m.won_revenue(snap, by=by, **period),
            "win_rate": m.win_rate(snap, by=by, **period),
            "average_deal_size": m.average_deal_size(snap, by=by, **period),
            "average_cycle_days": m.average_cycle_days(snap, by=by, **period),
            "open_pipeline": m.open_pipeline(snap, by=by),
            "sales_velocity_per_day": m.pipeline_velocity(snap, by=by, **period),
        }).sort_values("won_revenue", ascending=False)
        out["by"] = by
        out["groups"] = [{by: str(k), **{c: float(v) for c, v in row.items()}} for k, row in table.iterrows()]
    cleaned: dict[str, Any] = json_safe(out)
    return cleaned
