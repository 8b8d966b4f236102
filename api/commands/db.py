"""Database commands: upgrade the store's schema, show where it stands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click

from api.commands import settings_of
from api.stores import open_store
from store.leads import purge_predictions


@click.group()
def db() -> None:
    """Manage the store (the database_url setting; default an SQLite file home/leadcast.db)."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Bring the store's schema to the newest migration (safe to run again, and from several hosts at once)."""
    with open_store(settings_of(ctx)) as store:
        before, after = store.upgrade()
    if before == after:
        click.echo(f"{store.shown_url} is up to date at revision {after}")
    else:
        click.echo(f"upgraded {store.shown_url} from revision {before or 'none (empty)'} to {after}")


@db.command("current")
@click.pass_context
def db_current(ctx: click.Context) -> None:
    """Print the store's schema revision and the newest one this code ships."""
    with open_store(settings_of(ctx)) as store:
        current, head = store.current_revision(), store.head_revision()
    state = "up to date" if current == head else "behind: run `leadcast db upgrade`"
    click.echo(f"{store.shown_url}: revision {current or 'none (empty)'}, code {head} ({state})")


@db.command("purge")
@click.option("--older-than-days", "days", type=click.IntRange(min=1), default=None,
              help="Remove predictions logged more than this many days ago; default the retention_days setting.")
@click.pass_context
def db_purge(ctx: click.Context, days: int | None) -> None:
    """Remove old predictions from the prediction log (run it daily, from cron or a timer)."""
    settings = settings_of(ctx)
    days = days if days is not None else settings.retention_days
    if days is None:
        raise click.UsageError("set the retention_days setting or pass --older-than-days")
    before = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=days)
    with open_store(settings) as store:
        removed = purge_predictions(store, before=before)
    click.echo(f"removed {removed:,} predictions logged before {before:%Y-%m-%d %H:%M} UTC "
               f"({days} days) from {store.shown_url}")


def register(group: click.Group) -> None:
    """Add the database commands to the `leadcast` group."""
    group.add_command(db)
