"""Cold-start scoring: a points model read from a rules file, for when no trained model can be used yet.

Fit points describe who the lead is (firmographic, demographic, BANT); interest points describe what it
did, and each interest signal fades with a half-life since its timestamp:
points = rule points * 0.5 ** (days since timestamp / half_life_days). Positive points are capped per
group (`[caps]`); score = clip(base + fit + interest, 0, 100) and probability = score / 100 (a rough
guide, not a calibrated probability; outputs say `model_kind = "rules"`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field, PositiveFloat, model_validator

from crmdata.errors import LeadcastError
from crmdata.tomlfile import Check, TomlModel, read_toml, validated
from scoring.features import to_days

RULES_DIR = Path(__file__).resolve().parent / "rules"
DEFAULT_RULES = RULES_DIR / "default.toml"


class RulesMismatchError(LeadcastError):
    """Raised when the cold-start rules read none of the fields a lead table has."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One points rule: a condition on a column and the points (and words) it gives."""

    group: str
    column: str
    reason: str
    points: float = 0.0
    equals: Any = None
    within: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    per_unit: float | None = None
    max_points: float | None = None
    missing: bool | None = None
    older_than_days: float | None = None
    timestamp: str | None = None
    half_life_days: float | None = None


@dataclass(frozen=True)
class RulesModel:
    """A parsed rules file."""

    name: str
    rules: tuple[Rule, ...]
    caps: Mapping[str, float]
    base_points: float = 0.0
    source: str = "rules"

    @classmethod
    def from_file(cls, path: Path | None = None) -> RulesModel:
        """Read a rules TOML file (default: the rules shipped for the lead contract)."""
        path = path or DEFAULT_RULES
        data = read_toml(path, what="rules", code="bad_rules")
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "rules") -> RulesModel:
        """Build rules from parsed TOML, reporting every malformed rule."""
        parsed = validated(RulesFile, data, source=source, code="bad_rules")
        rules = tuple(Rule(group=group, column=r.column, reason=r.reason, points=r.points or 0.0, equals=r.equals,
                           within=tuple(str(v) for v in r.within), min=r.min, max=r.max, per_unit=r.per_unit,
                           max_points=r.max_points, missing=r.missing, older_than_days=r.older_than_days,
                           timestamp=r.timestamp, half_life_days=r.half_life_days)
                      for group, table in (("fit", parsed.fit), ("interest", parsed.interest)) for r in table)
        return cls(name=parsed.name, rules=rules, caps=dict(parsed.caps), base_points=parsed.base_points,
                   source=source)

    def for_columns(self, columns: Iterable[str]) -> RulesModel:
        """Return the rules whose condition reads one of `columns`, so no rule scores or explains a field the
        data lacks (a missing timestamp only fades a rule, as an unknown time does); raise RulesMismatchError
        when no rule is left."""
        have = set(columns)
        kept = tuple(r for r in self.rules if r.column in have)
        if not kept:
            read = ", ".join(dict.fromkeys(r.column for r in self.rules))
            raise RulesMismatchError(
                f"the cold-start rules '{self.name}' ({self.source}) read {read}; the data has "
                f"{', '.join(sorted(have)) or 'no fields'}, and none is shared: write rules for these fields "
                "(--rules FILE, see docs/scoring.md) or train a model")
        return self if kept == self.rules else replace(self, rules=kept)

    def points(self, frame: pd.DataFrame, *, reference_time: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Return (n,) total points in [0, 100] and (n, rules) each rule's points after decay and caps.

        `frame` is spec-typed (booleans 0/1, timestamps datetime64); a column it lacks counts as missing.
        The reference time is the `as_of` column when present, else `reference_time`, else now (UTC).
        """
        n = len(frame)
        if "as_of" in frame.columns:
            ref = to_days(frame["as_of"].to_numpy())
        else:
            stamp = pd.Timestamp(reference_time) if reference_time is not None else pd.Timestamp.now("UTC")
            if stamp.tzinfo is not None:
                stamp = stamp.tz_convert("UTC").tz_localize(None)
            ref = np.full(n, to_days(np.array([stamp.to_datetime64()]))[0])
        each = np.zeros((n, len(self.rules)))
        for k, rule in enumerate(self.rules):
            each[:, k] = _rule_points(rule, frame, ref)
        for group, cap in self.caps.items():
            cols = [k for k, r in enumerate(self.rules) if r.group == group]
            if not cols:
                continue
            positive = np.clip(each[:, cols], 0, None)
            total = positive.sum(axis=1)
            shrink = np.where(total > cap, cap / np.maximum(total, 1e-12), 1.0)
            each[:, cols] = np.where(each[:, cols] > 0, each[:, cols] * shrink[:, None], each[:, cols])
        total = np.clip(self.base_points + each.sum(axis=1), 0.0, 100.0)
        return total, each


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame.columns:
        return frame[name]
    return pd.Series(np.nan, index=frame.index, dtype="float64")


def _rule_points(rule: Rule, frame: pd.DataFrame, ref: np.ndarray) -> np.ndarray:
    col = _column(frame, rule.column)
    missing = col.isna().to_numpy(bool)
    if rule.missing is not None:
        hit = missing if rule.missing else ~missing
        pts = np.where(hit, rule.points, 0.0)
    elif rule.older_than_days is not None:
        age = ref - to_days(col.to_numpy())
        pts = np.where(missing | (age > rule.older_than_days), rule.points, 0.0)
    elif rule.per_unit is not None:
        values = pd.to_numeric(col, errors="coerce").fillna(0.0).to_numpy(np.float64)
        pts = np.clip(values, 0, None) * rule.per_unit
        if rule.max_points is not None:
            pts = np.minimum(pts, rule.max_points)
    else:
        hit = ~missing
        if rule.equals is not None:
            if isinstance(rule.equals, bool):
                hit &= pd.to_numeric(col, errors="coerce").to_numpy(np.float64) == float(rule.equals)
            else:
                hit &= (col.astype("string").str.casefold() == str(rule.equals).casefold()).fillna(False).to_numpy(bool)
        if rule.within:
            hit &= col.astype("string").str.casefold().isin([v.casefold() for v in rule.within]).fillna(
                False).to_numpy(bool)
        if rule.min is not None or rule.max is not None:
            values = pd.to_numeric(col, errors="coerce").to_numpy(np.float64)
            if rule.min is not None:
                hit &= values >= rule.min
            if rule.max is not None:
                hit &= values <= rule.max
        pts = np.where(hit, rule.points, 0.0)
    if rule.timestamp is not None and rule.half_life_days is not None:
        age = np.clip(ref - to_days(_column(frame, rule.timestamp).to_numpy()), 0.0, None)
        # A signal with no known time has no recency to credit; count it at half weight.
        decay = np.where(np.isnan(age), 0.5, 0.5 ** (age / rule.half_life_days))
        pts = pts * decay
    return np.asarray(pts, dtype=np.float64)


Number = float  # the file models are strict: an int or a float, never text or true/false


class RuleTable(TomlModel):
    """One `[[fit]]` or `[[interest]]` rule: a condition on a column, the points it gives, and the words."""

    column: str = Field(description="The lead field the condition reads.")
    reason: str = Field(description="The words shown when the rule gives points; {value} is the lead's value.")
    points: Number | None = Field(default=None, description="Points given when the condition holds.")
    per_unit: Number | None = Field(default=None, description="Points per unit of the value (instead of points).")
    max_points: Number | None = Field(default=None, description="At most this many points from `per_unit`.")
    equals: str | Number | bool | None = Field(default=None, description="The condition: the value equals this.")
    within: list[str] = Field(default_factory=list, alias="in",
                              description="The condition: the value is one of these (case ignored).")
    min: Number | None = Field(default=None, description="The condition: the value is at least this.")
    max: Number | None = Field(default=None, description="The condition: the value is at most this.")
    missing: bool | None = Field(default=None, description="The condition: the value is missing (true) or given.")
    older_than_days: Number | None = Field(default=None, description="The condition: the time is older than this "
                                                                     "(or unknown).")
    timestamp: str | None = Field(default=None, description="Interest rules: the field whose time fades the points.")
    half_life_days: PositiveFloat | None = Field(default=None, description="Days for the points to fade by half.")

    @model_validator(mode="after")
    def _gives_points(self) -> RuleTable:
        if self.points is None and self.per_unit is None:
            raise ValueError("needs `points` or `per_unit`")
        return self


class InterestTable(RuleTable):
    """One `[[interest]]` rule: what the lead did; with a timestamp, its points fade with a half-life."""

    @model_validator(mode="after")
    def _fades(self) -> InterestTable:
        if self.timestamp is not None and self.half_life_days is None:
            raise ValueError("an interest rule with a timestamp needs half_life_days")
        return self


class RulesFile(TomlModel):
    """A cold-start rules file: score = clip(base_points + fit + interest, 0, 100)."""

    name: str = "rules"
    base_points: Number = Field(default=0.0, description="Points every lead starts with.")
    caps: dict[str, Number] = Field(default_factory=dict, description="At most this many positive points per group "
                                                                     "(fit, interest).")
    fit: list[RuleTable] = Field(default_factory=list, description="Who the lead is.")
    interest: list[InterestTable] = Field(default_factory=list, description="What the lead did.")

    def checks(self) -> Iterator[Check]:
        """Yield a problem when the file has no rule at all."""
        if not self.fit and not self.interest:
            yield "-", "no rules found ([[fit]] or [[interest]] tables)", None
