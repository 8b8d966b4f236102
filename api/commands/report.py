"""The `report` command: the leadership forecast report as one HTML page and an Excel workbook."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np
import pandas as pd

from api.commands import FILE, settings_of
from api.commands.forecasting import check_source
from crmdata.loaders import load_pipeline, read_raw
from forecasting.errors import ForecastInputError
from forecasting.periods import as_day, parse_horizon
from parallel import default_workers

if TYPE_CHECKING:
    from scoring.scorer import Scorer


def score_open_leads(path: Path, *, scorer: Scorer, as_of: pd.Timestamp) -> pd.DataFrame:
    """Score the open leads of a lead export as of a date: those whose outcome is still empty (all of them when
    the file has no outcome column), created before the date when the spec names a creation column.

    Every row is checked against the scorer's spec first, so a bad value is reported with its row in the file.
    Recency is measured from each lead's own as-of value when the file has one, else from `as_of`.
    """
    from scoring.spec import prepare

    spec = scorer.spec
    raw = read_raw(path, missing_values=spec.missing_values, delimiter=spec.delimiter, encoding=spec.encoding)
    stamp = as_of.isoformat()
    raw = raw.assign(as_of=raw["as_of"].fillna(stamp)) if "as_of" in raw.columns else raw.assign(as_of=stamp)
    prepared = prepare(raw, spec=spec, table=path.name)
    column = spec.target.column
    if column in raw.columns:
        text = raw[column].astype("string").str.strip()
        undecided = (text.isna() | text.isin(["", *spec.missing_values])).fillna(True).to_numpy(bool, copy=True)
    else:
        undecided = np.ones(len(raw), dtype=bool)
    if prepared.created_at is not None:
        undecided &= ~(prepared.created_at >= as_of).fillna(False).to_numpy(bool)
    rows = np.flatnonzero(undecided)
    features = prepared.features.iloc[rows].reset_index(drop=True)
    ids = prepared.ids.iloc[rows].reset_index(drop=True)
    if len(rows) == 0:
        return pd.DataFrame({spec.id_column: pd.Series(dtype="string"), "probability": pd.Series(dtype=float),
                             "score": pd.Series(dtype="int64"), "grade": pd.Series(dtype="string")})
    return scorer.score_frame(features, ids, reasons=False)



@click.command("report")
@click.option("--opportunities", type=FILE, default=None, help="Opportunity export (CSV or Parquet); or --from-store.")
@click.option("--mapping", type=FILE, default=None, help="TOML column mapping for an export with other names.")
@click.option("--history", type=FILE, default=None, help="Stage history export (one row per stage entered).")
@click.option("--from-store", "from_store", is_flag=True, default=False,
              help="Report on the stored pipeline and the stage history the syncs built; the report's forecast is "
                   "saved, and the saved forecasts whose periods have ended are scored beside the backtest.")
@click.option("--leads", type=FILE, default=None,
              help="Lead export: its open leads are scored (the champion model, else the cold-start rules) and "
                   "shown by grade.")
@click.option("--as-of", "as_of", required=True, help="Report as of this date (YYYY-MM-DD): data known before it.")
@click.option("--horizon", default="1Q", show_default=True, help="30D, 6W, 3M or 1Q: the periods to forecast.")
@click.option("--target", type=float, default=None, help="Revenue target ($) over the horizon.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same numbers).")
@click.option("--sims", type=click.IntRange(min=100), default=None,
              help="Forecast simulations (default: the forecast_simulations setting, 10,000).")
@click.option("--backtest-months", type=click.IntRange(min=0), default=6, show_default=True,
              help="Replay the forecast as of the first of each of this many months before --as-of.")
@click.option("--backtest-sims", type=click.IntRange(min=100), default=1_000, show_default=True,
              help="Simulations per replayed month.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Past months replayed at once, each in a process of its own; default: every core the command "
                   "may use.")
@click.option("--health/--no-health", "health", default=None,
              help="Add (or leave out) the lead model's Model health section: drift and calibration on its logged "
                   "scores, as `leadcast monitor` reports them. Default: added when the store holds logged scores "
                   "of the champion.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for report.html and report.xlsx.")
@click.pass_context
def report_command(ctx: click.Context, opportunities: Path | None, mapping: Path | None, history: Path | None,
                   from_store: bool, leads: Path | None, as_of: str, horizon: str, target: float | None, seed: int,
                   sims: int | None, backtest_months: int, backtest_sims: int, workers: int | None,
                   health: bool | None, out: Path) -> None:
    """Write the leadership report: forecast with P10/P50/P90 and its measured accuracy, pipeline health, reps
    and products (report.html, one self-contained page, and report.xlsx)."""
    settings = settings_of(ctx)
    hz = parse_horizon(horizon)
    t = as_day(as_of, field="--as-of")
    if target is not None and (not np.isfinite(target) or target < 0):
        raise ForecastInputError(f"--target must be a non-negative amount in $, got {target}")
    check_source(opportunities, mapping, history, from_store)
    live = store = None
    mark = 0
    if from_store:
        from api.live import live_rows, stored_pipeline
        from api.stores import open_store

        store = open_store(settings)
        pipeline, mark = stored_pipeline(store)
        live = live_rows(store, now=t, opportunities=pipeline.opportunities)
    else:
        assert opportunities is not None
        pipeline = load_pipeline(opportunities, mapping=mapping, history=history)
        if pipeline.opportunities.empty:
            raise ForecastInputError(f"the pipeline is empty: {opportunities} has no opportunities")
    scores = None
    if leads is not None:
        from api.commands.scoring import where_models
        from api.serving import model_source
        from scoring.scorer import load_scorer  # heavy: imported only when leads are scored

        scorer = load_scorer(None, **model_source(settings))
        if scorer.kind == "rules":
            click.echo(f"no trained model {where_models(settings)}: scoring leads with the cold-start rules "
                       f"({scorer.version})", err=True)
        scores = score_open_leads(leads, scorer=scorer, as_of=t)
    from api.health_page import report_health_sections

    # before the long build, so an explicit --health that cannot be met fails at once
    extra = report_health_sections(settings, wanted=health)
    if extra:
        click.echo(f"adding the Model health of {len(extra)} lead model{'s' if len(extra) > 1 else ''} "
                   "(from the store's logged scores)", err=True)
    n_sims = sims if sims is not None else settings.forecast_simulations
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    # matplotlib and openpyxl load here, not when any other leadcast command starts.
    from forecasting.report import build_report, write_report
    from forecasting.report.build import REPORT_STEPS

    with click.progressbar(length=REPORT_STEPS, label="building the report", file=sys.stderr) as bar:
        report = build_report(pipeline, as_of=t, horizon=str(hz), rng=np.random.default_rng(seed), target=target,
                              leads_scores=scores, n_sims=n_sims, backtest_months=backtest_months,
                              backtest_sims=backtest_sims,
                              source="the store" if opportunities is None else opportunities.name,
                              generated_at=stamp, progress=lambda _step: bar.update(1), live=live,
                              extra_sections=extra, workers=workers or default_workers())
    html_path, xlsx_path = write_report(report, out)
    for sentence in report.summary:
        click.echo(f"- {sentence}")
    if store is not None:
        from api.live import snapshot_record
        from store.pipeline import save_snapshot

        with store:
            snapshot_id = save_snapshot(store, snapshot_record(report.forecast, mark=mark, seed=seed, source="report"))
        scored = 0 if live is None else len(live)
        click.echo(f"saved the report's forecast as forecast {snapshot_id}; {scored} past period(s) of saved "
                   "forecasts scored against what was booked")
    click.echo(f"wrote {html_path} and {xlsx_path}")


def register(group: click.Group) -> None:
    """Add the `report` command to the `leadcast` group."""
    group.add_command(report_command)
