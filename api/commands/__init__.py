"""Click commands, one module per resource; each module's `register(group)` adds its commands."""

from __future__ import annotations

from pathlib import Path

import click

from api.settings import Settings

FILE = click.Path(dir_okay=False, path_type=Path)


def settings_of(ctx: click.Context) -> Settings:
    """Return the settings the `leadcast` group read once at start-up."""
    obj = ctx.find_root().obj
    assert isinstance(obj, Settings)
    return obj
