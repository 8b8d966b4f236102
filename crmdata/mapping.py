"""Column mappings: how a CRM export's own column names and files become the leadcast contract."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from crmdata.contracts import Contract
from crmdata.errors import DataValidationError, Problem
from crmdata.stages import StageConfig
from crmdata.tomlfile import read_toml

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
        problems: list[Problem] = []
        known = {"columns", "stages", "joins", "date_format", "dayfirst", "missing_values", "true_values",
                 "false_values", "description"}
        for key in sorted(set(data) - known):
            problems.append(Problem(source, key, "unknown key in mapping", code="bad_mapping"))
        columns = data.get("columns", {})
        if not isinstance(columns, dict) or not all(isinstance(v, str) for v in columns.values()):
            problems.append(Problem(source, "columns", "must be a table of contract column = source column",
                                    code="bad_mapping"))
            columns = {}
        stages = None
        if "stages" in data:
            try:
                stages = StageConfig.from_mapping(data["stages"])
            except (ValueError, TypeError) as exc:
                problems.append(Problem(source, "stages", str(exc), code="bad_mapping"))
        joins: list[Join] = []
        for i, raw in enumerate(data.get("joins", [])):
            where = f"joins[{i}]"
            missing = [k for k in ("file", "on", "key", "columns") if k not in raw]
            if missing:
                problems.append(Problem(source, where, f"missing keys: {', '.join(missing)}", code="bad_mapping"))
                continue
            normalize = raw.get("normalize", "exact")
            fill = raw.get("fill", "missing")
            if normalize not in ("exact", "casefold", "alnum"):
                problems.append(Problem(source, f"{where}.normalize", "must be exact, casefold or alnum",
                                        value=str(normalize), code="bad_mapping"))
                continue
            if fill not in ("missing", "overwrite"):
                problems.append(Problem(source, f"{where}.fill", "must be missing or overwrite",
                                        value=str(fill), code="bad_mapping"))
                continue
            file = Path(raw["file"])
            joins.append(Join(file=file, on=raw["on"], key=raw["key"], columns=dict(raw["columns"]),
                              normalize=normalize, fill=fill))
        if problems:
            raise DataValidationError(problems, source=source)
        return cls(
            columns=dict(columns),
            stages=stages,
            joins=tuple(joins),
            date_format=data.get("date_format"),
            dayfirst=bool(data.get("dayfirst", False)),
            missing_values=tuple(data.get("missing_values", ())),
            true_values=tuple(data.get("true_values", ())),
            false_values=tuple(data.get("false_values", ())),
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
