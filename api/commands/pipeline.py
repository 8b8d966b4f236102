"""The stored pipeline from the command line: sync an export into the store, list saved forecasts, deal flow."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click
import pandas as pd

from api.commands import FILE, settings_of
from api.stores import open_store
from crmdata.loaders import load_pipeline
from forecasting.errors import ForecastInputError
from forecasting.live import FLOW_KINDS

FLOW_TEXT = {"new": "new deals", "won": "won", "lost": "lost", "pushed": "pushed past the period end",
             "pulled_in": "pulled into the period", "amount_changed": "amount changed (net)"}


def parse_observed(text: str | None) -> datetime | None:
    """Return --at as naive UTC (None when not given); refuse what is not a date or a time."""
    if text is None:
        return None
    try:
        stamp = pd.Timestamp(text)
    except ValueError as exc:
        raise ForecastInputError(f"--at {text!r} is not a date or time (e.g. 2026-12-01 or 2026-12-01T02:00Z)",
                                 field="at") from exc
    if pd.isna(stamp):
        raise ForecastInputError(f"--at {text!r} is not a date or time", field="at")
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.to_pydatetime()


@click.group("sync")
def sync_group() -> None:
    """Bring the stored pipeline up to date from a CRM export."""


@sync_group.command("opportunities")
@click.argument("file", type=FILE)
@click.option("--mapping", type=FILE, default=None, help="TOML column mapping (and stages) of the export.")
@click.option("--at", "at", default=None,
              help="When the export was taken (default: now): the time of a change whose record gives no date.")
@click.pass_context
def sync_opportunities_command(ctx: click.Context, file: Path, mapping: Path | None, at: str | None) -> None:
    """Diff an opportunity export against the store; store what changed, each change of stage, amount, expected
    close date, owner or outcome as an event (the stage history an export lacks), and print it."""
    from api.live import sync

    observed = parse_observed(at)
    pipeline = load_pipeline(file, mapping=mapping)
    with open_store(settings_of(ctx)) as store:
        result = sync(store, pipeline.opportunities, stages=pipeline.stages, source=file.name, observed_at=observed)
    click.echo(f"synced {result.received:,} opportunities from {file.name} into {store.shown_url}")
    click.echo(f"  new {result.created:,}, changed {result.updated:,}, unchanged {result.unchanged:,}; "
               f"{result.absent:,} stored deal(s) not in this export were kept")
    moved = ", ".join(f"{name} {n:,}" for name, n in result.changes.items() if n) or "none"
    click.echo(f"  changes by field: {moved}")
    for change in result.examples:
        click.echo(f"    {change['opportunity_id']}: {change['field']} {change['old'] or '-'} -> "
                   f"{change['new'] or '-'}")


@click.group("forecasts")
def forecasts_group() -> None:
    """The forecasts saved from the store (every `forecast --from-store`, `report --from-store`, GET /v1/forecast)."""


@forecasts_group.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.pass_context
def list_command(ctx: click.Context, limit: int) -> None:
    """List saved forecasts, newest first."""
    from store.pipeline import list_snapshots

    with open_store(settings_of(ctx)) as store:
        rows, total = list_snapshots(store, limit=limit)
    click.echo(f"{total:,} saved forecast(s)")
    for r in rows:
        t = r["total"]
        click.echo(f"  {r['id']:>5}  made {r['made_at']:%Y-%m-%d %H:%M}  as of {r['as_of']:%Y-%m-%d}  "
                   f"{r['horizon']:<4} P10 ${t['p10']:,.0f}  P50 ${t['p50']:,.0f}  P90 ${t['p90']:,.0f}  "
                   f"{r['stage_model_version']}  ({r['source']})")


@forecasts_group.command("flow")
@click.argument("from_id", type=click.IntRange(min=1))
@click.argument("to_id", type=click.IntRange(min=1), required=False)
@click.pass_context
def flow_command(ctx: click.Context, from_id: int, to_id: int | None) -> None:
    """Print the deal flow from one saved forecast to another (default: to the pipeline as stored now)."""
    from api.live import flow

    with open_store(settings_of(ctx)) as store:
        moved, first, second = flow(store, from_id=from_id, to_id=to_id)
    until = "the pipeline now" if second is None else f"forecast {second['id']}"
    click.echo(f"deal flow from forecast {first['id']} to {until}, against the period end "
               f"{moved.period_end:%Y-%m-%d}")
    for kind in FLOW_KINDS:
        item = moved.items[kind]
        click.echo(f"  {FLOW_TEXT[kind]:<28} {item.deals:>7,} deals  ${item.amount:,.0f}")


def register(group: click.Group) -> None:
    """Add the `sync` and `forecasts` groups to the `leadcast` group."""
    group.add_command(sync_group)
    group.add_command(forecasts_group)
