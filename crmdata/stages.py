"""Pipeline stages: their names, order, and which end a deal as won or lost."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from crmdata.tomlfile import read_toml

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
            raise ValueError("stages: need at least one open, one won and one lost stage")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"stages: names appear more than once: {', '.join(dupes)}")
        unknown = sorted(set(self.lead_stages) - set(names))
        if unknown:
            raise ValueError(f"stages: lead_stages not among the stages: {', '.join(unknown)}")

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
        """Build a config from a `[stages]` table (keys open, won, lost, lead_stages)."""
        unknown = set(data) - {"open", "won", "lost", "lead_stages"}
        if unknown:
            raise ValueError(f"stages: unknown keys {', '.join(sorted(unknown))}")
        kwargs: dict[str, tuple[str, ...]] = {}
        for key in ("open", "won", "lost", "lead_stages"):
            if key in data:
                value = data[key]
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ValueError(f"stages.{key}: must be a list of stage names")
                kwargs[key] = tuple(value)
        if "lead_stages" not in kwargs:
            defaults = cls()
            opens = kwargs.get("open", defaults.open)
            kwargs["lead_stages"] = tuple(s for s in defaults.lead_stages if s in opens) or opens[:1]
        return cls(**kwargs)

    @classmethod
    def from_file(cls, path: Path) -> StageConfig:
        """Read a TOML file with a `[stages]` table."""
        data = read_toml(path, what="stages", code="bad_stages")
        return cls.from_mapping(data.get("stages", data))


DEFAULT_STAGES = StageConfig()
