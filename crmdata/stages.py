"""Pipeline stages: their names, order, and which end a deal as won or lost."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from crmdata.tomlfile import TomlModel, problems_of, read_toml, validated

Outcome = Literal["open", "won", "lost"]


@dataclass(frozen=True, slots=True)
class StageConfig:
    """Ordered open stages, then the stages that mean won and lost."""

    open: tuple[str, ...] = ("lead_generation", "qualification", "contact", "proposal", "closing")
    won: tuple[str, ...] = ("won", "retention")
    lost: tuple[str, ...] = ("lost",)
    lead_stages: tuple[str, ...] = field(default=("lead_generation", "qualification", "contact"))

    def __post_init__(self) -> None:
        names = [*self.open, *self.won, *self.lost]
        if not self.open or not self.won or not self.lost:
            raise ValueError("need at least one open, one won and one lost stage")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"names appear more than once: {', '.join(dupes)}")
        unknown = sorted(set(self.lead_stages) - set(names))
        if unknown:
            raise ValueError(f"lead_stages not among the stages: {', '.join(unknown)}")

    @property
    def all(self) -> tuple[str, ...]:
        """Return every stage name, open ones in pipeline order first."""
        return (*self.open, *self.won, *self.lost)

    def outcome(self, stage: str) -> Outcome:
        """Return whether a stage is open, won or lost."""
        if stage in self.won:
            return "won"
        if stage in self.lost:
            return "lost"
        if stage in self.open:
            return "open"
        raise KeyError(stage)

    def order(self, stage: str) -> int:
        """Return the position of an open stage in the pipeline (won stages come after every open stage)."""
        if stage in self.open:
            return self.open.index(stage)
        return len(self.open)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> StageConfig:
        """Build a config from a `[stages]` table (keys open, won, lost, lead_stages); raise ValueError naming
        each key that is wrong (`stages.open: ...`)."""
        try:
            return StagesTable.model_validate(data).config()
        except ValidationError as exc:
            lines = [f"stages{'' if p.field == '-' else '.' + p.field}: {p.message}"
                     for p in problems_of(exc, model=StagesTable, source="stages", code="bad_stages")]
            raise ValueError("; ".join(lines)) from exc

    @classmethod
    def from_file(cls, path: Path) -> StageConfig:
        """Read a TOML file with a `[stages]` table (or the table's keys at the top)."""
        data = read_toml(path, what="stages", code="bad_stages")
        model: type[StagesFile | StagesTable] = StagesFile if "stages" in data else StagesTable
        parsed = validated(model, data, source=str(path), code="bad_stages")
        return (parsed.stages if isinstance(parsed, StagesFile) else parsed).config()


Names = list[str]


class StagesTable(TomlModel):
    """The `[stages]` table: open stages in pipeline order, then the stages that mean won and lost."""

    open: Names | None = Field(default=None, description="Open stages in pipeline order (default: "
                                                         "lead_generation, qualification, contact, proposal, closing).")
    won: Names | None = Field(default=None, description="Stages that end a deal as won (default: won, retention).")
    lost: Names | None = Field(default=None, description="Stages that end a deal as lost (default: lost).")
    lead_stages: Names | None = Field(
        default=None, description="Open stages a lead is in before it becomes a deal (default: the default lead "
                                  "stages among `open`, else the first open stage).")

    @model_validator(mode="after")
    def _coherent(self) -> StagesTable:
        self.config()  # StageConfig's own rules (one of each kind, no name twice), reported at this table
        return self

    def config(self) -> StageConfig:
        """Return the stage config, defaults filled in."""
        defaults = DEFAULT_STAGES
        opens = tuple(self.open) if self.open is not None else defaults.open
        lead = (tuple(self.lead_stages) if self.lead_stages is not None
                else tuple(s for s in defaults.lead_stages if s in opens) or opens[:1])
        return StageConfig(open=opens, won=tuple(self.won) if self.won is not None else defaults.won,
                           lost=tuple(self.lost) if self.lost is not None else defaults.lost, lead_stages=lead)


class StagesFile(TomlModel):
    """A stages file: one `[stages]` table."""

    stages: StagesTable


DEFAULT_STAGES = StageConfig()
