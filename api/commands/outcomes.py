"""Outcome commands: import what became of leads from a CRM export into the store."""

from __future__ import annotations

from pathlib import Path

import click
import pandas as pd

from api.commands import FILE, settings_of
from api.stores import open_store
from crmdata.loaders import load_outcomes
from scoring.spec import DEFAULT_SPEC, load_spec
from store.outcomes import Outcome, upsert_outcomes


@click.group()
def outcomes() -> None:
    """Record lead outcomes (converted or not, and when) in the store."""


@outcomes.command("import")
@click.argument("file", type=FILE)
@click.option("--spec", "spec_path", type=FILE, default=None,
              help=f"Model spec whose id and target columns the export uses; default {DEFAULT_SPEC.name}.")
@click.option("--converted-at", "converted_at", default="converted_at", show_default=True,
              help="Column holding when a lead converted (read when the export has it).")
@click.pass_context
def outcomes_import(ctx: click.Context, file: Path, spec_path: Path | None, converted_at: str) -> None:
    """Import the outcomes of a lead export (CSV or Parquet); safe to run again on the same or a newer export."""
    spec = load_spec(spec_path)
    table = load_outcomes(file, id_column=spec.id_column, target_column=spec.target.column,
                          positive=spec.target.positive, negative=spec.target.negative,
                          converted_at_column=converted_at, missing_values=spec.missing_values)
    frame = table.outcomes
    items = [Outcome(str(lead_id), bool(converted), None if pd.isna(at) else pd.Timestamp(at).to_pydatetime())
             for lead_id, converted, at in zip(frame["lead_id"], frame["converted"], frame["converted_at"],
                                               strict=True)]
    with open_store(settings_of(ctx)) as store:
        counts = upsert_outcomes(store, items, source="import")
    converted_count = int(frame["converted"].sum())
    click.echo(f"read {len(items):,} outcomes from {file.name} ({converted_count:,} converted, "
               f"{len(items) - converted_count:,} not; {table.undecided:,} undecided rows left out)")
    click.echo(f"stored in {store.shown_url}: {counts.inserted:,} new, {counts.updated:,} changed, "
               f"{counts.unchanged:,} unchanged")


def register(group: click.Group) -> None:
    """Add the outcome commands to the `leadcast` group."""
    group.add_command(outcomes)
