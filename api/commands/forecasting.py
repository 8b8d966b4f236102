"""Forecasting commands: metrics, forecast, backtest, stuck. Thin wrappers over the forecasting library."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np
import pandas as pd

from api.commands import FILE, settings_of
from crmdata.files import write_json, write_text
from crmdata.loaders import Pipeline, load_pipeline
from forecasting.backtest import BacktestResult, as_of_dates, backtest
from forecasting.errors import ForecastInputError
from forecasting.forecast import ForecastResult, forecast, forecast_methods, method_label
from forecasting.periods import as_day, parse_horizon
from forecasting.snapshot import last_known_date, require_history, snapshot
from forecasting.stage_model import fit_stage_model
from forecasting.stuck import find_stuck, stuck_thresholds
from forecasting.summary import pipeline_metrics
from parallel import default_workers


def _money(x: float | None) -> str:
    return "-" if x is None or not np.isfinite(x) else f"${x:,.0f}"


def _pct_points(x: float | None, *, sign: bool = False) -> str:
    return "-" if x is None or not np.isfinite(x) else (f"{x:+.1f}%" if sign else f"{x:.1f}%")


def _pct(x: float | None) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:.1%}"


def _load(opportunities: Path, mapping: Path | None, history: Path | None) -> Pipeline:
    pipeline = load_pipeline(opportunities, mapping=mapping, history=history)
    if pipeline.opportunities.empty:
        raise ForecastInputError(f"the pipeline is empty: {opportunities} has no opportunities")
    return pipeline


def _as_of(pipeline: Pipeline, as_of: str | None) -> pd.Timestamp:
    """Return the as-of date: the one given, or the day after the last date in the export (the present)."""
    if as_of is not None:
        return as_day(as_of, field="--as-of")
    last = last_known_date(pipeline.opportunities)
    if last is None:
        raise ForecastInputError("the export has no dates; give --as-of")
    return as_day(last) + pd.Timedelta(days=1)


def _data_options(f: Any, *, required: bool = True) -> Any:
    f = click.option("--history", type=FILE, default=None,
                     help="Stage history export (one row per stage entered).")(f)
    f = click.option("--mapping", type=FILE, default=None,
                     help="TOML column mapping for an export with other names.")(f)
    return click.option("--opportunities", type=FILE, required=required,
                        help="Opportunity export (CSV or Parquet)" + ("." if required else "; or --from-store."))(f)


def _store_options(f: Any) -> Any:
    f = click.option("--from-store", "from_store", is_flag=True, default=False,
                     help="Use the stored pipeline and the stage history the syncs built (leadcast sync "
                          "opportunities); the forecast is saved as a snapshot.")(f)
    return _data_options(f, required=False)


def check_source(opportunities: Path | None, mapping: Path | None, history: Path | None, from_store: bool) -> None:
    """Refuse a command given both a file and --from-store, or neither."""
    if from_store and (opportunities or mapping or history):
        raise ForecastInputError("give either --opportunities (with --mapping, --history) or --from-store, not both")
    if not from_store and opportunities is None:
        raise ForecastInputError("give --opportunities FILE, or --from-store to use the stored pipeline")


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True)))
    out = [line, "  ".join("-" * w for w in widths)]
    for r in rows:
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    return "\n".join(out)


@click.command("metrics")
@_data_options
@click.option("--start", default=None, help="First day of the period (YYYY-MM-DD); default: all history.")
@click.option("--end", default=None, help="Day after the period (YYYY-MM-DD, excluded); default: all history.")
@click.option("--by", default=None, help="Group by a column: owner, team, region, product, product_category.")
@click.option("--target", type=float, default=None, help="Revenue target ($) for pipeline coverage.")
@click.option("--daily-target", type=float, default=None, help="Lead-generation target in $ of pipeline per day.")
@click.option("--spend", type=float, default=None, help="Sales and marketing spend ($) for acquisition cost.")
@click.option("--margin", type=float, default=None, help="Gross margin (0-1) for customer lifetime value.")
@click.option("--churn", type=float, default=None, help="Churn per period (0-1) for customer lifetime value.")
@click.option("--json", "json_path", type=FILE, default=None, help="Write every metric as JSON to this file.")
def metrics_command(opportunities: Path, mapping: Path | None, history: Path | None, start: str | None,
                    end: str | None, by: str | None, target: float | None, daily_target: float | None,
                    spend: float | None, margin: float | None, churn: float | None, json_path: Path | None) -> None:
    """Print the brief's pipeline metrics for a period, overall or by owner, team, region or product."""
    pipeline = _load(opportunities, mapping, history)
    out = pipeline_metrics(pipeline.opportunities, stages=pipeline.stages, history=pipeline.history, start=start,
                           end=end, by=by, target=target, daily_target=daily_target, spend=spend, margin=margin,
                           churn=churn)
    wr, ads, pipe = out["win_rate"], out["average_deal_size"], out["open_pipeline"]
    span = f"{start or 'start'} .. {end or 'end'}"
    click.echo(f"Pipeline metrics, {span} (open pipeline as of {out['as_of']})")
    click.echo(f"  win rate (won / closed)       {_pct(wr)}")
    click.echo(f"  average deal size             {_money(ads)}")
    cycle = out["average_cycle_days"]
    click.echo(f"  average sales cycle           {'-' if cycle is None else f'{cycle:.1f}'} days")
    click.echo(f"  sales velocity                {_money(out['sales_velocity_per_day'])} per day")
    click.echo(f"  open pipeline                 {_money(pipe)} in {out['open_deals']:,} deals")
    if out["required_coverage"]:
        click.echo(f"  coverage the win rate needs   {out['required_coverage']:.2f}x")
    if "pipeline_coverage" in out:
        click.echo(f"  pipeline coverage of target   {out['pipeline_coverage']:.2f}x")
    if "customer_acquisition_cost" in out:
        click.echo(f"  customer acquisition cost     {_money(out['customer_acquisition_cost'])} "
                   f"({out['won_deals']:,} new customers)")
    if "customer_lifetime_value" in out:
        click.echo(f"  customer lifetime value       {_money(out['customer_lifetime_value'])}")
    if "lead_generation_pace" in out:
        p = out["lead_generation_pace"]
        click.echo(f"  lead generation to date       {_money(p['actual_to_date'])} of {_money(p['target_to_date'])}"
                   f" (shortfall {_money(p['shortfall'])}; {_money(p['daily_needed'])}/day needed)")
    click.echo("")
    click.echo(_table(["month", "won revenue", "growth"],
                      [[r["month"], _money(r["won_revenue"]),
                        "-" if r["growth_pct"] is None else f"{r['growth_pct']:+.1f}%"]
                       for r in out["monthly_revenue"]]))
    click.echo("")
    click.echo(_table(["product category", "created", "won", "lost", "won revenue", "share"],
                      [[str(r["product_category"]), f"{int(r['created']):,}", f"{int(r['won']):,}",
                        f"{int(r['lost']):,}", _money(r["won_revenue"]), _pct(r["revenue_share"])]
                       for r in out["product_mix"]]))
    click.echo("")
    click.echo(_table(["stage", "reached", "to next", "P(win)"],
                      [[s["stage"], f"{s['reached']:,}", _pct(s["conversion_to_next"]), _pct(s["win_probability"])]
                       for s in out["stages"]]))
    if by is not None:
        click.echo("")
        click.echo(_table([by, "won revenue", "win rate", "avg deal", "cycle days", "open pipeline", "velocity/day"],
                          [[str(g[by]), _money(g["won_revenue"]), _pct(g["win_rate"]), _money(g["average_deal_size"]),
                            "-" if g["average_cycle_days"] is None else f"{g['average_cycle_days']:.1f}",
                            _money(g["open_pipeline"]), _money(g["sales_velocity_per_day"])]
                           for g in out["groups"]]))
    if json_path is not None:
        write_json(json_path, out)
        click.echo(f"\nwrote {json_path}")


def print_forecast(result: ForecastResult) -> None:
    """Print a forecast as readable tables."""
    click.echo(f"Forecast of won revenue as of {result.as_of:%Y-%m-%d}, horizon {result.horizon} "
               f"({result.model.simulations:,} simulations; {result.model.open_deals:,} open deals)")
    rows = [[p.label, _money(p.p10), _money(p.p50), _money(p.p90), _money(p.mean), _money(p.methods["velocity"])]
            for p in (*result.periods, result.total)]
    rows[-1][0] = f"total {result.horizon}"
    click.echo(_table(["period", "P10", "P50", "P90", "mean", "velocity"], rows))
    click.echo(f"stage-weighted pipeline (no timing): {_money(result.stage_weighted)}")
    if result.target is not None and result.probability_of_target is not None:
        click.echo(f"probability of reaching {_money(result.target)}: {result.probability_of_target:.0%}")
    if result.drivers:
        click.echo("\ndeals that drive the spread")
        click.echo(_table(["deal", "owner", "stage", "value", "P(win in horizon)", "share of variance"],
                          [[d.opportunity_id, d.owner, d.stage, _money(d.amount), _pct(d.win_probability),
                            _pct(d.spread_share)] for d in result.drivers]))
    if result.groups:
        click.echo(f"\nby {result.by}")
        click.echo(_table([str(result.by), "open deals", "pipeline", "P10", "P50", "P90"],
                          [[g.group, f"{g.open_deals:,}", _money(g.pipeline), _money(g.p10), _money(g.p50),
                            _money(g.p90)] for g in result.groups]))
    stuck = result.stuck
    if len(stuck):
        click.echo(f"\nstuck deals: {len(stuck):,}, expected value at risk "
                   f"{_money(float(stuck['value_at_risk'].sum()))}")
    for w in result.warnings:
        click.echo(f"note: {w}")
    if result.backtest:
        click.echo("\nbacktest on your history (same horizon)")
        click.echo(_table(["method", "MAPE", "bias", "inside P10-P90"],
                          [[a["label"], _pct_points(a["mape"]), _pct_points(a["bias"], sign=True),
                            "-" if a["coverage"] is None else f"{a['coverage']:.0%}"]
                           for a in result.backtest["accuracy"]]))


@click.command("forecast")
@_store_options
@click.option("--as-of", "as_of", default=None, help="Forecast as of this date (default: the day after the data).")
@click.option("--horizon", default="1Q", show_default=True, help="30D, 6W, 3M or 1Q: periods to forecast.")
@click.option("--target", type=float, default=None, help="Revenue target ($) over the horizon.")
@click.option("--by", default=None, help="Also forecast per owner, team, region, product or product_category.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same numbers).")
@click.option("--sims", type=click.IntRange(min=100), default=10_000, show_default=True, help="Simulations.")
@click.option("--backtest-periods", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also replay this many past as-of dates, one horizon apart, and report the accuracy.")
@click.option("--json", "json_path", type=FILE, default=None, help="Write the full result as JSON to this file.")
@click.pass_context
def forecast_command(ctx: click.Context, opportunities: Path | None, mapping: Path | None, history: Path | None,
                     from_store: bool, as_of: str | None, horizon: str, target: float | None, by: str | None,
                     seed: int, sims: int, backtest_periods: int, json_path: Path | None) -> None:
    """Forecast revenue per period with P10/P50/P90, the chance of reaching a target, and the deals behind it."""
    hz = parse_horizon(horizon)
    if target is not None and target < 0:
        raise ForecastInputError(f"--target must not be negative, got {target}")
    check_source(opportunities, mapping, history, from_store)
    snapshot_id = None
    if from_store:
        from api.live import forecast_from_store, stored_pipeline
        from api.stores import open_store

        with open_store(settings_of(ctx)) as store:
            loaded = stored_pipeline(store)
            pipeline = loaded[0]
            t = _as_of(pipeline, as_of)
            result, snapshot_id = forecast_from_store(store, as_of=t, horizon=str(hz), n_sims=sims, seed=seed,
                                                      target=target, by=by, source="cli", pipeline=loaded)
    else:
        assert opportunities is not None
        pipeline = _load(opportunities, mapping, history)
        t = _as_of(pipeline, as_of)
        rng = np.random.default_rng(seed)
        result = forecast(pipeline.opportunities, stages=pipeline.stages, history=pipeline.history, as_of=t,
                          horizon=hz, target=target, by=by, n_sims=sims, rng=rng)
    if backtest_periods:
        step = {"D": pd.DateOffset(days=hz.count), "W": pd.DateOffset(weeks=hz.count),
                "M": pd.DateOffset(months=hz.count), "Q": pd.DateOffset(months=3 * hz.count)}[hz.unit]
        dates = [as_day(t - step * k) for k in range(backtest_periods, 0, -1)]
        first_close = pipeline.opportunities["closed_at"].min()
        dates = [d for d in dates if pd.notna(first_close) and d > first_close]
        if not dates:
            raise ForecastInputError("no past as-of date has closed deals before it; lower --backtest-periods")
        bt = _run_backtest(pipeline, dates=dates, horizon=str(hz), sims=min(sims, 4000), seed=seed)
        result = result.with_backtest(bt.to_dict())
    print_forecast(result)
    if snapshot_id is not None:
        click.echo(f"\nsaved as forecast {snapshot_id} (leadcast forecasts lists them; GET /v1/forecasts)")
    if json_path is not None:
        write_json(json_path, result.to_dict())
        click.echo(f"\nwrote {json_path}")


def _run_backtest(pipeline: Pipeline, *, dates: list[pd.Timestamp], horizon: str, sims: int,
                  seed: int, workers: int | None = None) -> BacktestResult:
    with click.progressbar(length=len(dates), label="replaying history", file=sys.stderr) as bar:
        return backtest(pipeline.opportunities, stages=pipeline.stages, history=pipeline.history, dates=dates,
                        horizon=horizon, rng=np.random.default_rng(seed), n_sims=sims,
                        progress=lambda _t: bar.update(1), workers=workers or default_workers())


@click.command("backtest")
@_data_options
@click.option("--start", required=True, help="First as-of date (YYYY-MM-DD).")
@click.option("--end", required=True, help="Last as-of date (YYYY-MM-DD, included).")
@click.option("--every", default="1M", show_default=True, help="Step between as-of dates (e.g. 1M, 2W).")
@click.option("--horizon", default="1M", show_default=True, help="Horizon forecast at each date.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--sims", type=click.IntRange(min=100), default=10_000, show_default=True)
@click.option("--json", "json_path", type=FILE, default=None, help="Write rows and accuracy as JSON.")
@click.option("--markdown", "markdown_path", type=FILE, default=None,
              help="Write the tables as Markdown, with the command that produced them.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="As-of dates replayed at once, each in a process of its own; default: every core the command "
                   "may use.")
def backtest_command(opportunities: Path, mapping: Path | None, history: Path | None, start: str, end: str,
                     every: str, horizon: str, seed: int, sims: int, json_path: Path | None,
                     markdown_path: Path | None, workers: int | None) -> None:
    """Replay history as of each date with only what was known then; report each method's accuracy."""
    parse_horizon(horizon)
    pipeline = _load(opportunities, mapping, history)
    dates = as_of_dates(start=start, end=end, every=every)
    bt = _run_backtest(pipeline, dates=dates, horizon=horizon, sims=sims, seed=seed, workers=workers)
    # Every declared method but the Monte Carlo mean, which the P10/P90 columns beside its P50 already frame.
    methods = [m.name for m in forecast_methods() if m.name != "monte_carlo_mean"]
    rows = [[r.label, _money(r.actual), _money(r.p10), _money(r.p90), "yes" if r.inside else "no",
             *[_money(r.forecasts[k]) for k in methods]] for r in bt.rows]
    click.echo(_table(["period", "actual", "MC P10", "MC P90", "inside", *[method_label(k) for k in methods]], rows))
    click.echo("")
    click.echo(_table(["method", "MAPE", "bias", "inside P10-P90"],
                      [[method_label(a.method), f"{a.mape:.1f}%", f"{a.bias:+.1f}%",
                        "-" if a.coverage is None else f"{round(a.coverage * a.n)} of {a.n}"] for a in bt.accuracy]))
    if json_path is not None:
        write_json(json_path, bt.to_dict())
        click.echo(f"\nwrote {json_path}")
    if markdown_path is not None:
        given = {"--opportunities": opportunities, "--mapping": mapping, "--history": history, "--start": start,
                 "--end": end, "--every": every, "--horizon": horizon, "--seed": seed, "--sims": sims,
                 "--markdown": markdown_path}
        command = "leadcast backtest " + " ".join(f"{k} {shlex.quote(str(v))}" for k, v in given.items()
                                                   if v is not None)
        text = (f"# Forecast accuracy: backtest, horizon {horizon}, as of {start} to {end} every {every}\n\n"
                "Each row forecasts the won revenue of the horizon with only what was known at the start of its "
                "as-of day (see docs/forecasting.md, Backtest). Produced by:\n\n"
                f"```\n{command}\n```\n\n" + bt.to_markdown())
        write_text(markdown_path, text)
        click.echo(f"wrote {markdown_path}")


@click.command("stuck")
@_data_options
@click.option("--as-of", "as_of", default=None, help="Judge as of this date (default: the day after the data).")
@click.option("--percentile", type=float, default=80.0, show_default=True,
              help="A stage's threshold: this percentile of the days won deals spent in it.")
@click.option("--threshold", "overrides", multiple=True, metavar="STAGE=DAYS",
              help="Override a stage's threshold in days (repeatable).")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Deals to print.")
@click.option("--json", "json_path", type=FILE, default=None, help="Write thresholds and every stuck deal as JSON.")
def stuck_command(opportunities: Path, mapping: Path | None, history: Path | None, as_of: str | None,
                  percentile: float, overrides: tuple[str, ...], limit: int, json_path: Path | None) -> None:
    """List deals that sat in their stage longer than won deals usually do, with the value at risk."""
    parsed: dict[str, float] = {}
    for item in overrides:
        stage, sep, value = item.partition("=")
        try:
            parsed[stage.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ForecastInputError(f"--threshold {item!r}: write STAGE=DAYS, e.g. proposal=21")
    pipeline = _load(opportunities, mapping, history)
    t = _as_of(pipeline, as_of)
    snap = snapshot(pipeline.opportunities, as_of=t, stages=pipeline.stages, history=pipeline.history)
    require_history(snap, as_of=t)
    model = fit_stage_model(snap, stages=pipeline.stages, as_of=t, history=pipeline.history)
    thresholds = stuck_thresholds(model, percentile=percentile, overrides=parsed)
    stuck = find_stuck(snap, model=model, thresholds=thresholds)
    click.echo(f"Days a deal may stay in a stage before it is stuck (as of {t:%Y-%m-%d}):")
    for stage, days in thresholds.items():
        shown = "no won deal seen in this stage" if not np.isfinite(days) else f"{days:.0f} days"
        click.echo(f"  {stage:<24} {shown}")
    click.echo(f"\n{len(stuck):,} stuck deal(s), expected value at risk {_money(float(stuck['value_at_risk'].sum()))}")
    if len(stuck):
        top = stuck.head(limit)
        click.echo(_table(["deal", "owner", "stage", "days in stage", "days over", "amount", "value at risk"],
                          [[str(r["opportunity_id"]), str(r["owner"]), str(r["stage"]), f"{r['days_in_stage']:.0f}",
                            f"{r['days_over']:.0f}", _money(r["amount"]), _money(r["value_at_risk"])]
                           for r in top.to_dict(orient="records")]))
        by_owner = stuck.groupby("owner")["value_at_risk"].agg(["size", "sum"]).sort_values("sum", ascending=False)
        click.echo("\nby owner")
        click.echo(_table(["owner", "stuck deals", "value at risk"],
                          [[str(k), f"{int(r['size']):,}", _money(float(r["sum"]))]
                           for k, r in by_owner.head(limit).iterrows()]))
    if json_path is not None:
        records = [{k: (None if (isinstance(v, float) and not np.isfinite(v)) or v is pd.NA else
                        (float(v) if isinstance(v, (int, float, np.floating)) else str(v))) for k, v in r.items()}
                   for r in stuck.to_dict(orient="records")]
        write_json(json_path, {"as_of": t.date().isoformat(),
                               "thresholds": {k: (v if np.isfinite(v) else None) for k, v in thresholds.items()},
                               "stuck": records})
        click.echo(f"\nwrote {json_path}")


def register(group: click.Group) -> None:
    """Add the forecasting commands to the `leadcast` group."""
    group.add_command(metrics_command)
    group.add_command(forecast_command)
    group.add_command(backtest_command)
    group.add_command(stuck_command)
