"""The `leadcast` command line: thin click commands over the libraries."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from api.commands import data as data_commands
from api.commands import db as db_commands
from api.commands import forecasting as forecasting_commands
from api.commands import monitoring as monitoring_commands
from api.commands import outcomes as outcomes_commands
from api.commands import pipeline as pipeline_commands
from api.commands import report as report_commands
from api.commands import retraining as retraining_commands
from api.commands import schemas as schemas_commands
from api.commands import scoring as scoring_commands
from api.commands import service as service_commands
from api.commands import settings_of as settings_of
from api.settings import SettingsError, load_settings
from crmdata.errors import LeadcastError


class LeadcastGroup(click.Group):
    """A click group that turns known errors into a clear message and a non-zero exit, never a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        """Run the command, reporting user-fixable errors on stderr with exit code 2."""
        try:
            return super().invoke(ctx)
        except (LeadcastError, SettingsError) as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)


@click.group(cls=LeadcastGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--settings", "settings_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="TOML settings file (LEADCAST_* environment variables override it).")
@click.pass_context
def cli(ctx: click.Context, settings_file: Path | None) -> None:
    """Lead scoring and revenue forecasting for your CRM."""
    ctx.obj = load_settings(settings_file)


data_commands.register(cli)
scoring_commands.register(cli)
forecasting_commands.register(cli)
report_commands.register(cli)
monitoring_commands.register(cli)
retraining_commands.register(cli)
service_commands.register(cli)
db_commands.register(cli)
pipeline_commands.register(cli)
outcomes_commands.register(cli)
schemas_commands.register(cli)


def main() -> None:
    """Run the command line (the `leadcast` console script)."""
    cli(prog_name="leadcast")


if __name__ == "__main__":
    main()
    sys.exit(0)
