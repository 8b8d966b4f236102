"""The plain-language summary at the top of the report, written from the numbers only."""

from __future__ import annotations

from typing import Any

import pandas as pd

from forecasting.report import format as fmt


def period_text(periods: list[dict[str, Any]]) -> str:
    """Return the horizon in words: "2017-Q4 (1 Oct 2017 to 31 Dec 2017)"."""
    first, last = periods[0], periods[-1]
    name = first["label"] if len(periods) == 1 else f"{first['label']} to {last['label']}"
    end = pd.Timestamp(last["end"]) - pd.Timedelta(days=1)
    return f"{name} ({fmt.day(first['start'])} to {fmt.day(end)})"


def forecast_sentence(forecast: dict[str, Any]) -> str:
    """Return the forecast and where it stands against the target."""
    total = forecast["total"]
    text = (f"The P50 forecast of won revenue for {period_text(forecast['periods'])} is {fmt.money(total['p50'])} "
            f"(80% range {fmt.money(total['p10'])} to {fmt.money(total['p90'])})")
    target = forecast.get("target")
    if target is None:
        return text + "; no target was given."
    gap = total["p50"] - target
    if target > 0 and fmt.finite(gap):
        side = "below" if gap < 0 else "above"
        text += f", {fmt.pct(abs(gap) / target)} {side} the {fmt.money(target)} target"
    else:
        text += f" against a target of {fmt.money(target)}"
    prob = forecast.get("probability_of_target")
    return text + (f"; the chance of reaching the target is {fmt.pct(prob)}." if prob is not None else ".")


def sources_sentence(forecast: dict[str, Any]) -> str:
    """Return how much of the expected revenue comes from open deals and how much from deals not yet created."""
    total = forecast["total"]
    n = forecast["metrics"].get("open_deals")
    return (f"On average {fmt.money(total['from_open_deals'])} is expected from the {fmt.count(n)} open deals and "
            f"{fmt.money(total['from_new_deals'])} from deals not yet created.")


def coverage_sentence(forecast: dict[str, Any]) -> str:
    """Return the pipeline coverage against what the win rate requires."""
    m = forecast["metrics"]
    pipe, wr, need = m.get("open_pipeline"), m.get("win_rate"), m.get("required_coverage")
    cov = m.get("pipeline_coverage")
    if cov is None:
        text = f"Open pipeline is {fmt.money(pipe)} in {fmt.count(m.get('open_deals'))} deals"
        if fmt.finite(wr) and fmt.finite(need):
            text += f"; at the {fmt.pct(wr)} win rate, each $1 of target needs {fmt.ratio(need)} in pipeline"
        return text + "."
    text = f"Open pipeline of {fmt.money(pipe)} covers the target {fmt.ratio(cov)}"
    if fmt.finite(wr) and fmt.finite(need):
        verdict = "enough" if cov >= need else "short of it"
        text += f"; at the {fmt.pct(wr)} win rate {fmt.ratio(need)} is needed, so coverage is {verdict}"
    return text + "."


def stuck_sentence(stuck: pd.DataFrame) -> str:
    """Return how many deals are stuck, what they are worth, and the stage holding most of their value."""
    if stuck.empty:
        return "No open deal has sat in its stage longer than won deals usually do."
    amount = float(stuck["amount"].astype(float).sum())
    risk = float(stuck["value_at_risk"].astype(float).sum())
    by_stage = stuck.groupby(stuck["stage"].astype(str))["value_at_risk"].agg(["size", "sum"])
    top = by_stage.sort_values(["sum", "size"], ascending=False).index[0]
    n_top = int(by_stage.loc[top, "size"])
    where = (f" in {top}" if n_top == len(stuck)
             else f", {fmt.count(n_top)} of them in {top}")
    return (f"{fmt.count(len(stuck))} deals worth {fmt.money(amount)} are stuck{where} (longer in their stage than "
            f"won deals usually stay); their expected value at risk is {fmt.money(risk)}.")


def accuracy_sentence(backtest: dict[str, Any] | None, *, as_of: pd.Timestamp, sims: int, months: int) -> str:
    """Return how accurate this forecast method was on the months before the as-of date."""
    if months == 0:
        return "The backtest was not run for this report, so the forecast's accuracy is not measured here."
    if not backtest or not backtest.get("rows"):
        return (f"There is not enough history before {fmt.day(as_of)} to replay this forecast and measure its "
                "accuracy: read its range with caution.")
    rows = backtest["rows"]
    mc = next(a for a in backtest["accuracy"] if a["method"] == "monte_carlo_p50")
    inside = sum(bool(r["inside_p10_p90"]) for r in rows)
    text = f"Replayed as of the first of {len(rows)} earlier months with only what was known then"
    if fmt.finite(mc.get("mape")):
        text += (f", this method's P50 missed the actual revenue by {fmt.points(mc['mape'])} on average (MAPE, "
                 f"bias {fmt.points(mc['bias'], signed=True)})")
    return text + (f" and the actual fell inside the P10–P90 range {inside} of {len(rows)} times "
                   f"({sims:,} simulations per replay).")


def trend_sentence(monthly: list[dict[str, Any]], *, as_of: pd.Timestamp) -> str | None:
    """Return last complete month's won revenue and its growth on the month before."""
    done = [m for m in monthly if pd.Period(m["month"], "M").end_time < as_of]
    if not done:
        return None
    last = done[-1]
    month = pd.Period(last["month"], "M")
    text = f"Won revenue in {month.strftime('%B %Y')} was {fmt.money(last['won_revenue'])}"
    if fmt.finite(last.get("growth_pct")):
        g = float(last["growth_pct"])
        text += f", {fmt.points(abs(g), 0)} {'up' if g >= 0 else 'down'} on {(month - 1).strftime('%B')}"
    return text + "."


def drivers_sentence(drivers: list[dict[str, Any]]) -> str | None:
    """Return how much of the forecast's spread the largest deals carry."""
    if not drivers:
        return None
    share = sum(float(d["spread_share"] or 0) for d in drivers)
    top = drivers[0]
    return (f"The {len(drivers)} deals that move the forecast most carry {fmt.pct(share)} of its spread; the "
            f"largest is {top['opportunity_id']} ({top['owner']}, {fmt.money(top['amount'])}, "
            f"{fmt.pct(top['win_probability'])} likely to close in the horizon).")


def leads_sentence(grades: pd.DataFrame | None) -> str | None:
    """Return how many open leads there are and how many are grade A and B."""
    if grades is None:
        return None
    total = int(grades["leads"].sum())
    if total == 0:
        return "There are no open leads to score."
    n = dict(zip(grades["grade"], grades["leads"], strict=True))
    return (f"Of {fmt.count(total)} open leads, {fmt.count(n['A'])} ({fmt.pct(n['A'] / total)}) are grade A and "
            f"{fmt.count(n['B'])} ({fmt.pct(n['B'] / total)}) grade B.")


def summary(forecast: dict[str, Any], *, metrics: dict[str, Any], stuck: pd.DataFrame, as_of: pd.Timestamp,
            backtest_months: int, backtest_sims: int, grades: pd.DataFrame | None) -> tuple[str, ...]:
    """Return the summary sentences, most important first."""
    sentences = [
        forecast_sentence(forecast),
        accuracy_sentence(forecast.get("backtest"), as_of=as_of, sims=backtest_sims, months=backtest_months),
        coverage_sentence(forecast),
        stuck_sentence(stuck),
        sources_sentence(forecast),
        drivers_sentence(forecast["drivers"]),
        trend_sentence(metrics.get("monthly_revenue", []), as_of=as_of),
        leads_sentence(grades),
    ]
    return tuple(s for s in sentences if s)
