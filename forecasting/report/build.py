"""Build the leadership report: forecast, its measured accuracy, pipeline health, as one HTML page and a workbook."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crmdata.files import atomic_write_all
from crmdata.loaders import Pipeline
from forecasting import metrics as fm
from forecasting.backtest import backtest
from forecasting.errors import ForecastInputError
from forecasting.forecast import ForecastResult, forecast, forecast_methods
from forecasting.periods import as_day, parse_horizon
from forecasting.report import charts, data, narrative
from forecasting.report import format as fmt
from forecasting.report.content import Chart, ExtraSection, Headline, ReportContent, Section
from forecasting.report.excel import workbook_bytes
from forecasting.report.html import render_html
from forecasting.report.tables import Column, Table
from forecasting.snapshot import snapshot
from forecasting.summary import pipeline_metrics

REPORT_STEPS = 6
HTML_ROWS = 25
VELOCITY_WINDOW_DAYS = 90
PAST_PERIODS = {"D": 4, "W": 8, "M": 6, "Q": 4}
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Report:
    """A built report: the forecast JSON (with its backtest), the metrics, the summary, the page and the workbook."""

    forecast: dict[str, Any]
    metrics: dict[str, Any]
    backtest: dict[str, Any] | None
    summary: tuple[str, ...]
    html: str
    xlsx: bytes


def json_ready(value: Any) -> Any:
    """Return a copy with NaN and infinities as None, numpy scalars as Python numbers, timestamps as ISO text."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else (value.date().isoformat() if value == value.normalize()
                                             else value.isoformat())
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json_ready(frame.to_dict(orient="records"))
    return out


def _category_column(snap: pd.DataFrame) -> str:
    """Return product_category when the export fills it, else product."""
    return "product_category" if snap["product_category"].notna().any() else "product"


def _group_columns(by: str, header: str) -> tuple[Column, ...]:
    return (
        Column("rank", "rank", "int"), Column(by, header),
        Column("sales_velocity_per_day", "velocity ($/day)", "money"),
        Column("open_deals", "open deals", "int"), Column("open_pipeline", "open pipeline", "money"),
        Column("win_rate", "win rate", "share"), Column("average_deal_size", "avg deal size", "money"),
        Column("average_cycle_days", "cycle (days)", "days"), Column("closed_deals", "closed deals", "int"),
        Column("won_deals", "won deals", "int"), Column("won_revenue", "won revenue", "money"),
    )


def _headline(f: dict[str, Any], *, target: float | None) -> tuple[Headline, ...]:
    total, m = f["total"], f["metrics"]
    out = [
        Headline("p50", "forecast P50", total["p50"], fmt.money(total["p50"]), "total.p50", "money"),
        Headline("p10", "P10", total["p10"], fmt.money(total["p10"]), "total.p10", "money"),
        Headline("p90", "P90", total["p90"], fmt.money(total["p90"]), "total.p90", "money"),
        Headline("mean", "mean", total["mean"], fmt.money(total["mean"]), "total.mean", "money"),
    ]
    if target is not None:
        gap = total["p50"] - target
        out += [
            Headline("target", "target", target, fmt.money(target), "target", "money"),
            Headline("probability_of_target", "chance of reaching the target", f["probability_of_target"],
                     fmt.pct(f["probability_of_target"]), "probability_of_target", "share"),
            Headline("gap_to_target", "gap to target (P50 - target)", gap,
                     ("+" if gap >= 0 else "") + fmt.money(gap), "total.p50 - target", "money"),
        ]
        if m.get("pipeline_coverage") is not None:
            out.append(Headline("pipeline_coverage", "pipeline coverage", m["pipeline_coverage"],
                                fmt.ratio(m["pipeline_coverage"]), "metrics.pipeline_coverage", "ratio"))
    out += [
        Headline("required_coverage", "coverage the win rate requires", m.get("required_coverage"),
                 fmt.ratio(m.get("required_coverage")), "metrics.required_coverage", "ratio"),
        Headline("open_pipeline", "open pipeline", m["open_pipeline"], fmt.money(m["open_pipeline"]),
                 "metrics.open_pipeline", "money"),
        Headline("win_rate", "win rate", m.get("win_rate"), fmt.pct(m.get("win_rate")), "metrics.win_rate", "share"),
    ]
    bt = f.get("backtest")
    if bt and bt.get("rows"):
        index = next(i for i, a in enumerate(bt["accuracy"]) if a["method"] == "monte_carlo_p50")
        mc = bt["accuracy"][index]
        inside = sum(bool(r["inside_p10_p90"]) for r in bt["rows"])
        out += [
            Headline("backtest_mape", "backtest MAPE of the P50", mc["mape"], fmt.points(mc["mape"]),
                     f"backtest.accuracy.{index}.mape", "percent"),
            Headline("backtest_bias", "backtest bias of the P50", mc["bias"], fmt.points(mc["bias"], signed=True),
                     f"backtest.accuracy.{index}.bias", "signed_percent"),
            Headline("backtest_coverage", "backtest: actual inside P10-P90", mc["coverage"],
                     f"{inside} of {len(bt['rows'])} ({fmt.pct(mc['coverage'])})",
                     f"backtest.accuracy.{index}.coverage", "share"),
        ]
    return tuple(out)


def _backtest_tables(bt: dict[str, Any] | None) -> tuple[Table, ...]:
    if not bt or not bt.get("rows"):
        return ()
    rows = pd.DataFrame([{
        "as_of": pd.Timestamp(r["as_of"]), "label": r["label"], "actual": r["actual"], "p10": r["p10"],
        "p50": r["forecasts"]["monte_carlo_p50"], "p90": r["p90"], "inside": r["inside_p10_p90"],
        "error_pct": (r["forecasts"]["monte_carlo_p50"] - r["actual"]) / r["actual"] * 100 if r["actual"] else None,
        **{f"f_{k}": v for k, v in r["forecasts"].items() if k != "monte_carlo_p50"},
    } for r in bt["rows"]])
    others = [m for m in forecast_methods() if m.name != "monte_carlo_p50" and f"f_{m.name}" in rows.columns]
    replay = Table("Backtest", "Replayed forecasts", (
        Column("as_of", "as of", "date"), Column("label", "period"), Column("actual", "actual", "money"),
        Column("p10", "P10", "money"), Column("p50", "P50", "money"), Column("p90", "P90", "money"),
        Column("inside", "inside P10-P90", "bool"), Column("error_pct", "P50 error", "signed_percent"),
        *[Column(f"f_{m.name}", m.label, "money") for m in others],
    ), rows)
    acc = pd.DataFrame(bt["accuracy"])
    accuracy = Table("Backtest accuracy", "Accuracy by method on the same replays", (
        Column("label", "method"), Column("mape", "MAPE", "percent"), Column("bias", "bias", "signed_percent"),
        Column("coverage", "actual inside P10-P90", "share"), Column("n", "periods scored", "int"),
    ), acc, note="MAPE = mean |forecast - actual| / actual; bias > 0 means the method forecast too much. Periods "
                 "with no revenue are not scored.")
    return replay, accuracy


def _live_tables(live: pd.DataFrame | None) -> tuple[Table, ...]:
    """Return the table of saved forecasts scored against what was booked, when there are any."""
    if live is None or live.empty:
        return ()
    return (Table("Live accuracy", "Our forecasts of past periods, as made at the time", (
        Column("as_of", "forecast as of", "date"), Column("made_at", "made on", "date"), Column("label", "period"),
        Column("actual", "actual", "money"), Column("p10", "P10", "money"), Column("p50", "P50", "money"),
        Column("p90", "P90", "money"), Column("inside", "inside P10-P90", "bool"),
        Column("error_pct", "P50 error", "signed_percent"),
    ), live, note="Each period is judged by the saved forecast made for it last before it began; actual = the "
                  "revenue the store shows won in it now. Unlike the backtest, nothing is replayed."),)


def build_report(
    pipeline: Pipeline,
    *,
    as_of: object,
    horizon: str,
    rng: np.random.Generator,
    target: float | None = None,
    leads_scores: pd.DataFrame | None = None,
    n_sims: int = 10_000,
    backtest_months: int = 6,
    backtest_sims: int = 1_000,
    source: str | None = None,
    generated_at: str | None = None,
    progress: Progress | None = None,
    live: pd.DataFrame | None = None,
    extra_sections: Sequence[ExtraSection] = (),
    workers: int = 1,
) -> Report:
    """Forecast the horizon after `as_of` with only what was known then, measure the same method's accuracy on
    the months before, gather the pipeline's health, and write it all as one HTML page and one workbook.
    `workers` processes replay the past months at once (the numbers are the same for any count).

    The forecast draws from `rng` first, so `forecast(..., rng=np.random.default_rng(seed), n_sims=n_sims)`
    gives the report's numbers; the backtest (`backtest_sims` simulations per replayed month) draws after it.
    `leads_scores`: one row per open lead with `score` (0-100) and `grade` (A-D), as scoring returns them.
    `live`: the saved forecasts scored against what was booked (forecasting.live.live_accuracy), shown beside
    the backtest. `extra_sections`: parts made elsewhere (see ExtraSection), shown after the report's own.
    Amounts in $, rates as shares, durations in days.
    """
    step = progress or (lambda _name: None)
    hz = parse_horizon(horizon)
    t = as_day(as_of, field="as_of")
    if backtest_months < 0:
        raise ForecastInputError(f"backtest months must be 0 or more, got {backtest_months}")
    if backtest_months and backtest_sims < 100:
        raise ForecastInputError(f"need at least 100 backtest simulations for P10/P90, got {backtest_sims}")
    grades = scores = grade_of = None
    if leads_scores is not None:
        grades, scores, grade_of = data.lead_grades(leads_scores)
    opps, stages, history = pipeline.opportunities, pipeline.stages, pipeline.history

    result: ForecastResult = forecast(opps, stages=stages, history=history, as_of=t, horizon=hz, rng=rng,
                                      target=target, n_sims=n_sims)
    step("forecast")
    dates = data.backtest_dates(opps, as_of=t, horizon=hz, months=backtest_months) if backtest_months else []
    if dates:
        bt = backtest(opps, stages=stages, history=history, dates=dates, horizon=hz, rng=rng, n_sims=backtest_sims,
                      workers=workers)
        result = result.with_backtest(bt.to_dict())
    f: dict[str, Any] = json_ready(result.to_dict())
    step("backtest")

    positive_target = target if target is not None and target > 0 else None
    summary_metrics = pipeline_metrics(opps, stages=stages, history=history, as_of=t, target=positive_target)
    snap = snapshot(opps, as_of=t, stages=stages, history=history)
    category = _category_column(snap)
    reps = data.group_table(snap, by="owner")
    products = data.group_table(snap, by="product")
    categories = data.group_table(snap, by=category) if category != "product" else products
    mix = fm.product_mix(snap, by=category).reset_index()
    trend = data.velocity_trend(snap, as_of=t, window_days=VELOCITY_WINDOW_DAYS)
    funnel = data.funnel(snap, stages=stages)
    past = data.past_periods(snap, as_of=t, horizon=hz, count=PAST_PERIODS[hz.unit])
    stage_stats = [{"stage": s["stage"], "reached": s["reached"], "conversion_to_next": s["conversion_to_next"],
                    "win_probability": s["win_probability"]} for s in f["model"]["stages"]]
    monthly = pd.DataFrame(summary_metrics["monthly_revenue"], columns=["month", "won_revenue", "growth_pct"])
    step("metrics")

    chart_list = {
        "fan": charts.fan_chart(past, f["periods"], f["total"], target),
        "backtest": charts.backtest_chart(f["backtest"]["rows"] if f.get("backtest") else []),
        "funnel": charts.funnel_chart(funnel),
        "conversion": charts.conversion_chart(stage_stats),
        "monthly": charts.monthly_chart(monthly),
        "velocity": charts.velocity_chart(trend, window_days=VELOCITY_WINDOW_DAYS),
        "reps": charts.group_chart(reps, by="owner", what="reps", key="reps"),
        "categories": charts.group_chart(categories, by=category, key="categories",
                                         what="product categories" if category == "product_category" else "products"),
        "mix": charts.mix_chart(mix, by=category),
        "grades": (charts.grades_chart(grades, scores, grade_of)
                   if grades is not None and scores is not None and grade_of is not None else None),
    }
    step("charts")

    stuck = result.stuck
    summary = narrative.summary(f, metrics=summary_metrics, stuck=stuck, as_of=t, backtest_months=backtest_months,
                                backtest_sims=backtest_sims, grades=grades)
    content = _content(f, result=result, target=target, summary=summary, chart_list=chart_list, past=past,
                       funnel=funnel, stage_stats=stage_stats, monthly=monthly, trend=trend, reps=reps,
                       products=products, categories=categories, category=category, mix=mix, grades=grades,
                       leads_scores=leads_scores, n_sims=n_sims, backtest_months=backtest_months,
                       backtest_sims=backtest_sims, source=source, generated_at=generated_at, live=live)
    content = _with_extra(content, extra_sections)
    page = render_html(content)
    step("page")
    book = workbook_bytes(content)
    step("workbook")
    report_metrics: dict[str, Any] = json_ready({
        **summary_metrics,
        "past_periods": _records(past),
        "funnel": _records(funnel),
        "velocity_trend": _records(trend),
        "velocity_window_days": VELOCITY_WINDOW_DAYS,
        "by_owner": _records(reps),
        "by_product": _records(products),
        f"by_{category}": _records(categories),
        "product_mix_by": category,
        "product_mix_table": _records(mix),
        "lead_grades": None if grades is None else _records(grades),
    })
    return Report(forecast=f, metrics=report_metrics, backtest=f.get("backtest"), summary=summary, html=page,
                  xlsx=book)


def _with_extra(content: ReportContent, extra: Sequence[ExtraSection]) -> ReportContent:
    """Return `content` with the extra sections; refuse a key the page already uses as an id."""
    taken = {"summary", "headline", "notes", *(s.key for s in content.sections)}
    for section in extra:
        if section.key in taken:
            raise ValueError(f"report section key {section.key!r} is already used by the report")
        taken.add(section.key)
    return replace(content, extra_sections=tuple(extra))


def _chart(charts_: dict[str, str | None], key: str, title: str, caption: str) -> tuple[Chart, ...]:
    svg = charts_.get(key)
    return (Chart(key, title, caption, svg),) if svg else ()


def _content(f: dict[str, Any], *, result: ForecastResult, target: float | None, summary: tuple[str, ...],
             chart_list: dict[str, str | None], past: pd.DataFrame, funnel: pd.DataFrame,
             stage_stats: list[dict[str, Any]], monthly: pd.DataFrame, trend: pd.DataFrame, reps: pd.DataFrame,
             products: pd.DataFrame, categories: pd.DataFrame, category: str, mix: pd.DataFrame,
             grades: pd.DataFrame | None, leads_scores: pd.DataFrame | None, n_sims: int, backtest_months: int,
             backtest_sims: int, source: str | None, generated_at: str | None,
             live: pd.DataFrame | None = None) -> ReportContent:
    """Assemble the sections, tables and notes of the report."""
    t = result.as_of
    when = narrative.period_text(f["periods"])
    periods = pd.DataFrame(f["periods"])
    periods["start"], periods["end"] = pd.to_datetime(periods["start"]), pd.to_datetime(periods["end"])
    period_table = Table("Forecast by period", "Forecast by period", (
        Column("label", "period"), Column("start", "from", "date"), Column("end", "until (excluded)", "date"),
        Column("p10", "P10", "money"), Column("p50", "P50", "money"), Column("p90", "P90", "money"),
        Column("mean", "mean", "money"), Column("from_open_deals", "expected from open deals", "money"),
        Column("from_new_deals", "expected from new deals", "money"),
        *[Column(m.name, m.period_label or m.label, "money") for m in forecast_methods() if m.per_period],
    ), periods)
    drivers = pd.DataFrame(f["drivers"], columns=["opportunity_id", "owner", "product", "stage", "amount",
                                                  "win_probability", "expected", "spread_share"])
    driver_table = Table("Spread drivers", "Deals that drive the spread of the forecast", (
        Column("opportunity_id", "deal"), Column("owner", "owner"), Column("product", "product"),
        Column("stage", "stage"), Column("amount", "value", "money"),
        Column("win_probability", "chance to close in horizon", "share"),
        Column("expected", "expected revenue", "money"), Column("spread_share", "share of the spread", "share"),
    ), drivers, note="Value = amount x realisation (booked revenue per $ of pipeline). Share of the spread = the "
                     "deal's part of the variance of the horizon's revenue, value^2 x P x (1 - P).")
    stuck = result.stuck
    stuck_table = Table("Stuck deals", "Stuck deals, largest value at risk first", (
        Column("opportunity_id", "deal"), Column("owner", "owner"), Column("team", "team"),
        Column("product", "product"), Column("stage", "stage"), Column("days_in_stage", "days in stage", "days"),
        Column("threshold_days", "threshold (days)", "days"), Column("days_over", "days over threshold", "days"),
        Column("amount", "amount", "money"), Column("win_probability", "P(win | stage)", "share"),
        Column("value_at_risk", "value at risk", "money"),
    ), stuck, html_rows=HTML_ROWS,
        note=f"{len(stuck):,} stuck deals in all, amount {fmt.dollars(stuck['amount'].astype(float).sum())}, "
             f"expected value at risk {fmt.dollars(stuck['value_at_risk'].astype(float).sum())}.")
    thresholds = pd.DataFrame({"stage": list(result.stuck_thresholds),
                               "threshold_days": list(result.stuck_thresholds.values())})
    threshold_table = Table("Stuck thresholds", "Days a deal may stay in a stage before it is stuck", (
        Column("stage", "stage"), Column("threshold_days", "days", "days")), thresholds,
        note="The 80th percentile of the days that deals which went on to win spent in the stage; a dash: no won "
             "deal was seen in that stage.")
    cat_header = "product category" if category == "product_category" else "product"
    rep_table = Table("Reps by velocity", "Reps ranked by sales velocity", _group_columns("owner", "rep"), reps,
                      html_rows=HTML_ROWS)
    product_table = Table("Products by velocity", "Products ranked by sales velocity",
                          _group_columns("product", "product"), products, html_rows=HTML_ROWS)
    mix_table = Table("Product mix", f"Product mix by {cat_header}", (
        Column(category, cat_header), Column("created", "deals created", "int"), Column("won", "won", "int"),
        Column("lost", "lost", "int"), Column("won_revenue", "won revenue", "money"),
        Column("revenue_share", "share of won revenue", "share"),
    ), mix)
    backtest_tables = _backtest_tables(f.get("backtest")) + _live_tables(live)
    headline = _headline(f, target=target)

    velocity_note = (f"Velocity = open deals x average deal size x win rate / average sales cycle, in $ per day; "
                     f"deal size, win rate and cycle over the deals closed in the {VELOCITY_WINDOW_DAYS} days "
                     "before each date.")
    sections = [
        Section("forecast", f"Forecast for {when}",
                "Grey bars are revenue actually won in past periods; the blue box is the range the forecast "
                "gives 80% odds (P10 to P90), the thick line its median (P50), the diamond its mean.",
                charts=_chart(chart_list, "fan", "Forecast range by period against the target",
                              "Actual won revenue, then the forecast P10-P90 range, P50 and mean per period."),
                tables=(period_table, driver_table)),
        Section("accuracy", "How far to trust it: the same method on past months",
                f"The forecast method was replayed as of the first of each of up to {backtest_months} months before "
                f"{fmt.day(t)}, with only the data known on that day, and compared with the revenue that then "
                f"closed ({backtest_sims:,} simulations per replay, fewer than the forecast's {n_sims:,}, to keep "
                "the report fast). A replay whose horizon ends after the as-of date is left out, because its "
                "revenue is not known yet.",
                charts=_chart(chart_list, "backtest", "Past forecasts against what closed",
                              "Each box is a replayed forecast's P10-P90 range; a dot is the revenue that closed "
                              "(a red cross when it fell outside the range)."),
                tables=backtest_tables,
                empty="" if backtest_tables else (
                    "The backtest was not run for this report." if backtest_months == 0 else
                    f"No earlier month has both closed deals before it and a horizon that ends by {fmt.day(t)}: "
                    "accuracy cannot be measured on this data yet.")),
        Section("pipeline", "Pipeline health",
                f"Open pipeline as of {fmt.day(t)}, how deals move between stages, and the deals that stalled.",
                charts=_chart(chart_list, "funnel", "Funnel: open deals and value by stage",
                              "Open deals in each stage (left) and their summed amount (right).")
                + _chart(chart_list, "conversion", "Stage conversion rates",
                         "Of the deals that reached a stage and left it, the share that reached the next stage "
                         "(blue) and the share that ended won (green)."),
                tables=(stuck_table, threshold_table)),
        Section("revenue", "Revenue and velocity", velocity_note,
                charts=_chart(chart_list, "monthly", "Won revenue by month",
                              "Bars: revenue won each month; line: growth on the month before, (m2 - m1) / m1.")
                + _chart(chart_list, "velocity", "Sales velocity and its four levers",
                         "Velocity (top) moves with open deals, deal size and win rate, and against cycle length.")),
        Section("teams", "Reps and products",
                "Win rate = won / closed deals; cycle = mean days from creation to a win; both over every deal "
                "closed before the as-of date.",
                charts=_chart(chart_list, "reps", "Win rate and sales cycle by rep",
                              "Reps with the most closed deals; sorted by win rate.")
                + _chart(chart_list, "categories", f"Win rate and sales cycle by {cat_header}",
                         f"Each {cat_header}'s win rate and mean days to a win.")
                + _chart(chart_list, "mix", "Product mix",
                         "Deals created, won and lost, and each category's share of won revenue."),
                tables=(rep_table, product_table, mix_table)),
    ]
    if grades is not None:
        grade_table = Table("Lead grades", "Open leads by grade", (
            Column("grade", "grade"), Column("leads", "open leads", "int"), Column("share", "share", "share"),
            Column("mean_score", "mean score", "days")), grades)
        sections.append(Section("leads", "Open leads by grade",
                                "Scores are calibrated probabilities of converting x 100; grades A-D cut them "
                                "at the model spec's thresholds.",
                                charts=_chart(chart_list, "grades", "Score distribution of open leads",
                                              "Open leads per grade and their scores."),
                                tables=(grade_table,)))
    extra = (
        Table("Past periods", "Won revenue in past periods", (
            Column("label", "period"), Column("start", "from", "date"), Column("end", "until (excluded)", "date"),
            Column("won_revenue", "won revenue", "money")), past),
        Table("Funnel", "Open pipeline by stage", (
            Column("stage", "stage"), Column("open_deals", "open deals", "int"),
            Column("open_value", "open value", "money")), funnel),
        Table("Stage conversion", "Stage conversion", (
            Column("stage", "stage"), Column("reached", "deals that reached it", "int"),
            Column("conversion_to_next", "converted to next", "share"),
            Column("win_probability", "ended won", "share")), pd.DataFrame(stage_stats)),
        Table("Monthly revenue", "Won revenue by month", (
            Column("month", "month"), Column("won_revenue", "won revenue", "money"),
            Column("growth_pct", "growth on previous month", "signed_percent")), monthly),
        Table("Velocity trend", "Sales velocity and its levers", (
            Column("date", "as of", "date"), Column("sales_velocity_per_day", "velocity ($/day)", "money"),
            Column("open_deals", "open deals", "int"), Column("average_deal_size", "avg deal size", "money"),
            Column("win_rate", "win rate", "share"), Column("average_cycle_days", "cycle (days)", "days")), trend,
            note=velocity_note),
        *((Table("Categories by velocity", "Product categories ranked by sales velocity",
                 _group_columns(category, "product category"), categories),)
          if category == "product_category" else ()),
    )
    notes = [
        f"As of {fmt.day(t)}: everything is computed from what the export shows before that day; a deal closed "
        "later counts as open, and revenue closed later is not known.",
        f"Forecast: a deal-level Monte Carlo with {n_sims:,} simulations. Each open deal can win once, with the "
        "odds and timing its stage, product and days in the stage have had; deals not yet created arrive at each "
        "product's recent rate; a shock per period reflects how much whole months ran hotter or colder than "
        "expected. P10, P50 and P90: 10%, 50% and 90% of the simulated outcomes fall below them.",
        "Pipeline coverage = open pipeline / target; the coverage a win rate requires = 1 / win rate.",
        "Stuck: in its stage longer than 80% of the deals that went on to win stayed there; value at risk = "
        "amount x realisation x P(win | stage).",
    ]
    if leads_scores is not None and "model_version" in leads_scores.columns and len(leads_scores):
        kinds = sorted(set(leads_scores["model_version"].astype(str)))
        notes.append(f"Lead scores from {', '.join(kinds)}.")
    return ReportContent(
        title=f"Revenue forecast, {when}", as_of=t, horizon=result.horizon, period_text=when, summary=summary,
        headline=headline, sections=tuple(sections), notes=tuple(notes), warnings=tuple(f.get("warnings", [])),
        source=source, generated_at=generated_at, extra_tables=extra,
    )


def write_report(report: Report, out_dir: Path) -> tuple[Path, Path]:
    """Write report.html and report.xlsx into `out_dir`; both are complete before either replaces a file."""
    html, xlsx = out_dir / "report.html", out_dir / "report.xlsx"
    atomic_write_all([(html, lambda tmp: tmp.write_text(report.html, encoding="utf-8")),
                      (xlsx, lambda tmp: tmp.write_bytes(report.xlsx))])
    targets = (html, xlsx)
    return targets
