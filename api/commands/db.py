"""Database commands: upgrade the store's schema, show where it stands."""

from __future__ import annotations

import click

from api.commands import settings_of
from api.stores import open_store


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


def register(group: click.Group) -> None:
    """Add the database commands to the `leadcast` group."""
    group.add_command(db)
