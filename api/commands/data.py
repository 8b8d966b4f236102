"""Data commands: validate an export, generate the synthetic demo CRM."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from api.commands import FILE, settings_of
from crmdata.loaders import load_leads, load_pipeline, load_stage_history
from crmdata.mapping import ColumnMapping
from crmdata.synthetic import DEMO_STEPS, write_demo


@click.command()
@click.argument("table", type=click.Choice(["leads", "opportunities", "stage-history"]))
@click.argument("file", type=FILE)
@click.option("--mapping", type=FILE, default=None, help="TOML column mapping for an export with other names.")
def validate(table: str, file: Path, mapping: Path | None) -> None:
    """Check an export against its data contract; print one line per problem and exit 2 if any."""
    column_mapping = ColumnMapping.from_file(mapping) if mapping else None
    if table == "leads":
        frame = load_leads(file, mapping=column_mapping)
    elif table == "stage-history":
        frame = load_stage_history(file, mapping=column_mapping)
    else:
        pipeline = load_pipeline(file, mapping=column_mapping)
        frame = pipeline.opportunities
        counts = frame["outcome"].value_counts()
        click.echo(f"stages: open {', '.join(pipeline.stages.open)}; won {', '.join(pipeline.stages.won)}; "
                   f"lost {', '.join(pipeline.stages.lost)}")
        click.echo("outcomes: " + ", ".join(f"{k} {int(counts.get(k, 0))}" for k in ("open", "won", "lost")))
    click.echo(f"ok: {file} is a valid {table} table ({len(frame):,} rows)")


@click.command("demo-data")
@click.option("--leads", "n_leads", type=click.IntRange(min=1), default=20_000, show_default=True)
@click.option("--opportunities", "n_opportunities", type=click.IntRange(min=1), default=5_000, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default: the demo_dir setting, ./demo-data).")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True)
@click.pass_context
def demo_data(ctx: click.Context, n_leads: int, n_opportunities: int, seed: int, out: Path | None, fmt: str) -> None:
    """Generate a synthetic CRM (leads, opportunities, stage history, and the truth behind them)."""
    folder = out if out is not None else settings_of(ctx).resolved_demo_dir
    label = f"generating {n_leads:,} leads and {n_opportunities:,} opportunities"
    with click.progressbar(length=DEMO_STEPS, label=label, file=sys.stderr) as bar:
        manifest = write_demo(out=folder, leads=n_leads, opportunities=n_opportunities, seed=seed, fmt=fmt,
                              on_step=lambda _name: bar.update(1))
    click.echo(f"wrote the synthetic CRM (seed {seed}, as of {manifest['as_of']}) to {folder}:")
    files = manifest["files"]
    assert isinstance(files, dict)
    for name, info in files.items():
        click.echo(f"  {info['file']:<28} {info['rows']:>10,} rows  ({name})")
    click.echo(f"  lead conversion rate {manifest['lead_conversion_rate']:.1%}; manifest.json describes the run")


def register(group: click.Group) -> None:
    """Add the data commands to the `leadcast` group."""
    group.add_command(validate)
    group.add_command(demo_data)
