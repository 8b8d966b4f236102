"""`leadcast schemas`: write the JSON Schema of each TOML format leadcast reads, for editors to check files with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from api.settings import Settings
from crmdata.files import json_text, write_text
from crmdata.mapping import MappingFile
from crmdata.stages import StagesFile, StagesTable
from crmdata.tomlfile import json_schema
from scoring.rules import RulesFile
from scoring.spec import SpecFile

SCHEMAS_DIR = Path("docs/schemas")
# One entry per format: the model that reads it (the schema is generated from it, never written by hand).
FORMATS: dict[str, tuple[Any, str, str]] = {
    "spec": (SpecFile, "leadcast model spec",
             "Which columns of a lead table a scoring model reads, how, and why (scoring/specs/*.toml)."),
    "rules": (RulesFile, "leadcast cold-start rules",
              "A points model for when no trained model can be used yet (scoring/rules/*.toml)."),
    "mapping": (MappingFile, "leadcast column mapping",
                "How a CRM export's own columns and files become the leadcast contract (--mapping FILE)."),
    "stages": (StagesFile | StagesTable, "leadcast pipeline stages",
               "Open stages in pipeline order, and the stages that mean won and lost: a [stages] table, or its "
               "keys at the top of the file."),
    "settings": (Settings, "leadcast settings",
                 "The settings file given with `leadcast --settings FILE`; LEADCAST_<KEY> environment variables "
                 "override its keys."),
}


def schema_texts() -> dict[str, str]:
    """Return each format's file name (`spec.schema.json`) and its JSON Schema as text."""
    return {f"{name}.schema.json": json_text(json_schema(model, title=title, description=description))
            for name, (model, title, description) in FORMATS.items()}


@click.command("schemas")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=SCHEMAS_DIR, show_default=True,
              help="Folder to write <format>.schema.json into.")
def schemas(out: Path) -> None:
    """Write the JSON Schema of the spec, rules, mapping, stages and settings TOML formats (for editors)."""
    for name, text in schema_texts().items():
        write_text(out / name, text)
        click.echo(f"wrote {out / name}")


def register(group: click.Group) -> None:
    """Add the schemas command to the `leadcast` group."""
    group.add_command(schemas)
