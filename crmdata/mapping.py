"""Column mappings: how a CRM export's own column names and files become the leadcast contract."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from crmdata.contracts import Contract
from crmdata.errors import Problem
from crmdata.stages import StageConfig, StagesTable
from crmdata.tomlfile import TomlModel, read_toml, validated

Normalize = Literal["exact", "casefold", "alnum"]


@dataclass(frozen=True, slots=True)
class Join:
    """Enrich the export from another file beside it, matching `on` (a contract column) to `key`."""

    file: Path
    on: str
    key: str
    columns: Mapping[str, str]
    normalize: Normalize = "exact"
    fill: Literal["missing", "overwrite"] = "missing"


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    """Rename source columns to contract columns, parse dates and booleans, join lookups, set stages."""

    columns: Mapping[str, str] = field(default_factory=dict)
    stages: StageConfig | None = None
    joins: tuple[Join, ...] = ()
    date_format: str | None = None
    dayfirst: bool = False
    missing_values: tuple[str, ...] = ()
    true_values: tuple[str, ...] = ()
    false_values: tuple[str, ...] = ()
    source: str = "mapping"

    @classmethod
    def from_file(cls, path: Path) -> ColumnMapping:
        """Read a TOML mapping; relative file names in `[[joins]]` are looked up beside the export."""
        data = read_toml(path, what="mapping", code="bad_mapping")
        return cls.from_dict(data, base=path.parent, source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base: Path | None = None, source: str = "mapping") -> ColumnMapping:
        """Build a mapping from parsed TOML, reporting every malformed entry."""
        parsed = validated(MappingFile, data, source=source, code="bad_mapping")
        return cls(
            columns=dict(parsed.columns),
            stages=None if parsed.stages is None else parsed.stages.config(),
            joins=tuple(Join(file=Path(j.file), on=j.on, key=j.key, columns=dict(j.columns), normalize=j.normalize,
                             fill=j.fill) for j in parsed.joins),
            date_format=parsed.date_format,
            dayfirst=parsed.dayfirst,
            missing_values=tuple(parsed.missing_values),
            true_values=tuple(parsed.true_values),
            false_values=tuple(parsed.false_values),
            source=source,
        )

    def check_against(self, contract: Contract) -> list[Problem]:
        """Return a problem for every mapped or joined column that the contract does not define."""
        problems = [
            Problem(self.source, f"columns.{target}", f"not a column of the {contract.name} contract",
                    code="bad_mapping")
            for target in self.columns
            if target not in contract.names
        ]
        for i, join in enumerate(self.joins):
            problems += [
                Problem(self.source, f"joins[{i}].columns.{target}",
                        f"not a column of the {contract.name} contract", code="bad_mapping")
                for target in join.columns
                if target not in contract.names
            ]
        return problems


class JoinTable(TomlModel):
    """One `[[joins]]` entry: enrich the export from another file, matching `on` to that file's `key`."""

    file: str = Field(description="The lookup file (CSV), relative to the export's folder.")
    on: str = Field(description="The contract column of the export to match.")
    key: str = Field(description="The lookup file's column holding the same values.")
    columns: dict[str, str] = Field(description="Contract column = lookup file's column, for each value taken.")
    normalize: Normalize = Field(default="exact", description="How values are compared: exactly, ignoring case "
                                                               "(casefold), or letters and digits only (alnum).")
    fill: Literal["missing", "overwrite"] = Field(default="missing", description="Fill only missing values, or "
                                                                                  "overwrite the export's.")


class MappingFile(TomlModel):
    """A column mapping: how a CRM export's columns and files become the leadcast contract."""

    description: str = ""
    columns: dict[str, str] = Field(default_factory=dict, description="Contract column = the export's column.")
    stages: StagesTable | None = Field(default=None, description="The export's stage names.")
    joins: list[JoinTable] = Field(default_factory=list, description="Lookup files joined to the export.")
    date_format: str | None = Field(default=None, description="strftime format of the export's dates.")
    dayfirst: bool = Field(default=False, description="Read 01/02/2024 as 1 February.")
    missing_values: list[str] = Field(default_factory=list, description="Values that mean missing.")
    true_values: list[str] = Field(default_factory=list, description="Extra spellings of true.")
    false_values: list[str] = Field(default_factory=list, description="Extra spellings of false.")
