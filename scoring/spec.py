"""Model specs: which columns a scoring model reads, how, and why; and the typed frame they produce."""

from __future__ import annotations

import codecs
import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import numpy as np
import pandas as pd
from pydantic import AfterValidator, BeforeValidator, Field, PositiveFloat, WithJsonSchema, model_validator

from crmdata.contracts import LEAD
from crmdata.errors import DataValidationError, Problem
from crmdata.tomlfile import Check, TomlModel, read_toml, validated
from crmdata.values import (
    FALSE_VALUES,
    MAX_PROBLEMS,
    TRUE_VALUES,
    Kind,
    Refused,
    Rule,
    ValueProblem,
    parse_categories,
    parse_series,
    reader,
    shown,
    to_days,
)

FeatureKind = Literal["numeric", "categorical", "boolean", "timestamp"]
FeatureGroup = Literal["demographic", "firmographic", "behavioural", "engagement", "bant"]

SPECS_DIR = Path(__file__).resolve().parent / "specs"
ROW_ID = "row"  # the id of a lead when the spec names no id column: its 1-based row number
DEFAULT_SPEC = SPECS_DIR / "default.toml"


def _setstate_with_defaults(self: Any, state: list[Any]) -> None:
    """Restore a pickled spec object; fields added since it was saved take their defaults."""
    for f, value in itertools.zip_longest(fields(self), state, fillvalue=MISSING):
        if f is MISSING:
            break
        if value is MISSING:
            value = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[operator]
        object.__setattr__(self, f.name, value)


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """One input field: its column, kind, group, plain-words label and optional reason templates."""

    column: str
    kind: FeatureKind
    group: FeatureGroup
    label: str
    optional: bool = False
    reason: str | None = None
    reason_true: str | None = None
    reason_false: str | None = None
    reason_missing: str | None = None
    minimum: float | None = None
    maximum: float | None = None

    __setstate__ = _setstate_with_defaults


DerivedOp = Literal["ratio", "difference"]


@dataclass(frozen=True, slots=True)
class RatioSpec:
    """A derived field of two numeric features: numerator / denominator (`ratio`) or their difference."""

    name: str
    numerator: str
    denominator: str
    op: DerivedOp = "ratio"

    __setstate__ = _setstate_with_defaults


GradeMethod = Literal["absolute", "quantile", "base_rate"]
QUANTILE_SHARES = (0.10, 0.30, 0.60)  # default shares of leads graded A, A or B, A to C
BASE_RATE_MULTIPLES = (2.0, 1.0, 0.5)  # default cut-offs as multiples of the base rate


@dataclass(frozen=True, slots=True)
class Grades:
    """Probability cut-offs for grades A, B and C; below `c` is grade D.

    `method = "absolute"`: the cut-offs as written. `"quantile"`: `targets` are the shares of held-out leads
    graded A, A-B and A-C (cumulative from the top); `"base_rate"`: `targets` are multiples of the held-out
    conversion rate. Training turns the last two into probability cut-offs (`resolve_grades`).
    """

    a: float = 0.60
    b: float = 0.35
    c: float = 0.15
    method: GradeMethod = "absolute"
    targets: tuple[float, float, float] | None = None

    __setstate__ = _setstate_with_defaults

    def grade(self, probability: np.ndarray) -> np.ndarray:
        """Return the grade letter (A-D) of each probability."""
        if probability.ndim == 1 and probability.size <= 4:  # an API request: four comparisons, no numpy calls
            return np.asarray([self.letter(v) for v in probability.tolist()], dtype="<U1")
        out = np.full(probability.shape, "D", dtype="<U1")
        out[probability >= self.c] = "C"
        out[probability >= self.b] = "B"
        out[probability >= self.a] = "A"
        return out

    def letter(self, probability: float) -> str:
        """Return the grade letter of one probability, as `grade` does (A over B over C; NaN is D)."""
        return ("A" if probability >= self.a else "B" if probability >= self.b else "C" if probability >= self.c
                else "D")


def resolve_grades(grades: Grades, probability: np.ndarray, *, base_rate: float) -> tuple[Grades, list[str]]:
    """Return the grades with probability cut-offs fitted to held-out `probability`, and a warning per empty grade.

    quantile: cut-off = the (1 - share) quantile of the probabilities; base_rate: cut-off = multiple x rate
    (at most 0.99). Absolute cut-offs are kept as they are.
    """
    p = np.asarray(probability, dtype=np.float64)
    resolved = grades
    if grades.method == "quantile":
        shares = grades.targets or QUANTILE_SHARES
        cuts = [float(np.quantile(p, 1 - share)) for share in shares] if p.size else [0.6, 0.35, 0.15]
        resolved = replace(grades, a=cuts[0], b=cuts[1], c=cuts[2])
    elif grades.method == "base_rate":
        multiples = grades.targets or BASE_RATE_MULTIPLES
        cuts = [min(0.99, m * base_rate) for m in multiples]
        resolved = replace(grades, a=cuts[0], b=cuts[1], c=cuts[2])
    warnings = []
    if p.size:
        letters = resolved.grade(p)
        for letter, cut in zip("ABCD", (resolved.a, resolved.b, resolved.c, None), strict=True):
            if not (letters == letter).any():
                where = f"no held-out lead reaches {cut:.3f}" if cut is not None else \
                    f"every held-out lead is at or above {resolved.c:.3f}"
                warnings.append(
                    f"grade {letter} would be empty: {where} (held-out probabilities {p.min():.3f} to {p.max():.3f});"
                    ' set `[grades] method = "quantile"` or lower the cut-offs')
    return resolved, warnings


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """The outcome column and which of its values mean converted (positive) or not (negative)."""

    column: str
    positive: tuple[str, ...]
    negative: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Everything a model needs to know about a lead table; written as TOML, never as code."""

    name: str
    target: TargetSpec
    id_column: str
    features: tuple[FeatureSpec, ...]
    description: str = ""
    created_at_column: str | None = None
    as_of_column: str | None = None
    exclude: tuple[str, ...] = ()
    protected: tuple[str, ...] = ()
    missing_values: tuple[str, ...] = ()
    true_values: tuple[str, ...] = TRUE_VALUES
    false_values: tuple[str, ...] = FALSE_VALUES
    ratios: tuple[RatioSpec, ...] = ()
    recency_half_life_days: float = 14.0
    rare_min_count: int = 20
    grades: Grades = field(default_factory=Grades)
    model: Mapping[str, Any] = field(default_factory=dict)
    source: str = "spec"
    order_column: str | None = None
    rows_in_time_order: bool = False
    delimiter: str | None = None
    encoding: str = "utf-8-sig"
    decimal: str = "."
    date_format: str | None = None
    dayfirst: bool = False

    __setstate__ = _setstate_with_defaults

    @property
    def id_label(self) -> str:
        """Return the name of the id in outputs: the id column, or `row` when leads are numbered by row."""
        return self.id_column or ROW_ID

    @property
    def feature_columns(self) -> tuple[str, ...]:
        """Return the feature column names in spec order."""
        return tuple(f.column for f in self.features)

    @property
    def scored_columns(self) -> tuple[str, ...]:
        """Return every column `prepare` may read to score a lead (the target aside): id, features, times, order,
        protected columns; a file's other columns need not be read at all."""
        named = [self.id_column, *self.feature_columns, self.created_at_column, self.as_of_column, "as_of",
                 self.order_column, *self.protected]
        return tuple(dict.fromkeys(c for c in named if c))

    def feature(self, column: str) -> FeatureSpec:
        """Return the feature spec of `column`."""
        for f in self.features:
            if f.column == column:
                return f
        raise KeyError(column)

    @classmethod
    def from_file(cls, path: Path) -> ModelSpec:
        """Read a spec from a TOML file, reporting every malformed entry at once."""
        data = read_toml(path, what="spec", code="bad_spec")
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "spec") -> ModelSpec:
        """Build a spec from parsed TOML, checking that it is coherent (no leaks, no protected features)."""
        return validated(SpecFile, data, source=source, code="bad_spec").spec(source=source)


def _strings(values: object) -> tuple[str, ...]:
    if isinstance(values, str | int | float | bool):
        values = [values]
    if not isinstance(values, list | tuple) or not all(isinstance(v, str | int | float | bool) for v in values):
        raise ValueError("must be a value or a list of values")
    return tuple(str(v).lower() if isinstance(v, bool) else str(v) for v in cast(list[object], values))


# A list of values (or one): numbers and true/false are read as the text they match in a table.
_VALUE = {"type": ["string", "number", "boolean"]}
Values = Annotated[tuple[str, ...], BeforeValidator(_strings),
                   WithJsonSchema({"anyOf": [{"type": "array", "items": _VALUE}, _VALUE]})]


class FeatureTable(TomlModel):
    """One `[[features]]` entry: an input field, its kind and group, and the words of its reasons."""

    column: str = Field(description="The column of the lead table.")
    kind: FeatureKind
    group: FeatureGroup
    label: str | None = Field(default=None, description="Plain-words name (default: the column).")
    optional: bool = Field(default=False, description="The column may be absent (then all missing).")
    reason: str | None = Field(default=None, description="Words of a reason: {label}, {value} (or {days}).")
    reason_true: str | None = Field(default=None, description="Words when a boolean is true.")
    reason_false: str | None = Field(default=None, description="Words when a boolean is false.")
    reason_missing: str | None = Field(default=None, description="Words when the value is missing.")
    min: float | None = Field(default=None, description="Numeric features: values below are refused.")
    max: float | None = Field(default=None, description="Numeric features: values above are refused.")

    @model_validator(mode="after")
    def _limits(self) -> FeatureTable:
        for key in ("min", "max"):
            if getattr(self, key) is not None and self.kind != "numeric":
                raise ValueError(f"`{key}` applies to numeric features only")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("`min` is above `max`")
        return self


class RatioTable(TomlModel):
    """One `[[ratios]]` entry: a derived field numerator / denominator of two numeric features."""

    name: str
    numerator: str
    denominator: str


class DerivedTable(TomlModel):
    """One `[[derived]]` entry: a derived field of two numeric features, their `ratio` or `difference`."""

    name: str
    op: DerivedOp
    left: str
    right: str


class TargetTable(TomlModel):
    """The `[target]` table: the outcome column and its values meaning converted or not."""

    column: str
    positive: Values = Field(description="Values meaning converted (case ignored).")
    negative: Values = Field(default=(), description="Values meaning not converted; others are refused.")

    @model_validator(mode="after")
    def _apart(self) -> TargetTable:
        if set(map(str.casefold, self.positive)) & set(map(str.casefold, self.negative)):
            raise ValueError("a value is both positive and negative")
        return self


class GradesTable(TomlModel):
    """The `[grades]` table: cut-offs A, B and C, or with `method` the shares or base-rate multiples to fit."""

    a: float | None = Field(default=None, alias="A")
    b: float | None = Field(default=None, alias="B")
    c: float | None = Field(default=None, alias="C")
    method: GradeMethod = "absolute"

    @model_validator(mode="after")
    def _ordered(self) -> GradesTable:
        grades = self.grades()
        if grades.method == "absolute" and not 0 < grades.c < grades.b < grades.a < 1:
            raise ValueError(f"cut-offs must satisfy 0 < C < B < A < 1 (value {grades.a}, {grades.b}, {grades.c})")
        targets = grades.targets or (0.0, 0.0, 0.0)
        if grades.method == "quantile" and not 0 < targets[0] < targets[1] < targets[2] < 1:
            raise ValueError("with method = quantile, A, B and C are the shares of leads graded A, A-B and A-C: "
                             f"0 < A < B < C < 1 (value {', '.join(map(str, targets))})")
        if grades.method == "base_rate" and not targets[0] > targets[1] > targets[2] > 0:
            raise ValueError("with method = base_rate, A, B and C are multiples of the base rate: A > B > C > 0 "
                             f"(value {', '.join(map(str, targets))})")
        return self

    def grades(self) -> Grades:
        """Return the grades, defaults filled in."""
        given = (self.a, self.b, self.c)
        if self.method == "absolute":
            a, b, c = (d if v is None else v for v, d in zip(given, (0.60, 0.35, 0.15), strict=True))
            return Grades(a=a, b=b, c=c)
        defaults = QUANTILE_SHARES if self.method == "quantile" else BASE_RATE_MULTIPLES
        targets = tuple(d if v is None else v for v, d in zip(given, defaults, strict=True))
        return Grades(method=self.method, targets=cast(tuple[float, float, float], targets))


class ModelSettings(TomlModel):
    """The `[model]` table: which candidates training compares, and their settings."""

    candidates: list[Literal["linear", "trees", "blend"]] | None = Field(default=None, min_length=1)
    calibration: Literal["sigmoid", "isotonic"] | None = None
    cv: int | None = None
    C: float | None = None
    n_knots: int | None = None
    learning_rate: float | None = None
    max_iter: int | None = None
    max_leaf_nodes: int | None = None
    min_samples_leaf: int | None = None
    l2_regularization: float | None = None
    random_state: int | None = None


def _delimiter(value: str | None) -> str | None:
    if value is not None and (len(value) != 1 or value in "\"\r\n"):
        raise ValueError("must be one character, e.g. \";\" or \"\\t\"")
    return value


def _encoding(value: str | None) -> str | None:
    if value is not None:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError("is not a known text encoding (e.g. utf-8, latin-1, cp1252)") from None
    return value


def _date_format(value: str | None) -> str | None:
    if value is not None and "%" not in value:
        raise ValueError("must be a strftime format, e.g. \"%d/%m/%Y\"")
    return value


class SpecFile(TomlModel):
    """A model spec: which columns of a lead table a model reads, how, and why."""

    name: str
    description: str = ""
    target: TargetTable
    id_column: str = Field(default="", description="The lead id column (empty: leads are numbered by row).")
    created_at_column: str | None = None
    as_of_column: str | None = Field(default=None, description="Each lead's reference time for recency.")
    features: list[FeatureTable] = Field(min_length=1)
    exclude: Values = Field(default=(), description="Columns never used (leaks, such as the stage).")
    protected: Values = Field(default=(), description="Columns only for the fairness report, never features.")
    missing_values: Values = Field(default=(), description="Placeholder values that mean missing.")
    true_values: Values = Field(default=TRUE_VALUES, description="Spellings of true (case ignored).")
    false_values: Values = Field(default=FALSE_VALUES, description="Spellings of false (case ignored).")
    ratios: list[RatioTable] = Field(default_factory=list)
    derived: list[DerivedTable] = Field(default_factory=list)
    recency_half_life_days: PositiveFloat = 14.0
    rare_min_count: int = 20
    grades: GradesTable = Field(default_factory=GradesTable)
    model: ModelSettings = Field(default_factory=ModelSettings)
    order_column: str | None = Field(default=None, description="The column that orders leads in time.")
    rows_in_time_order: bool = False
    delimiter: Annotated[str | None, AfterValidator(_delimiter)] = None
    encoding: Annotated[str | None, AfterValidator(_encoding)] = None
    decimal: Literal[".", ","] | None = None
    date_format: Annotated[str | None, AfterValidator(_date_format)] = None
    dayfirst: bool = False

    def checks(self) -> Iterator[Check]:
        """Yield each feature, ratio or setting that names a column it may not (leaks, protected, non-numeric)."""
        seen: set[str] = set()
        for i, f in enumerate(self.features):
            where = f"features[{i}].column"
            if f.column in seen:
                yield where, "column listed twice", f.column
            if f.column in self.protected:
                yield where, "is a protected column: it may appear only in the fairness report, never as a " \
                             "feature", f.column
            if f.column in self.exclude:
                yield where, "is also in `exclude`", f.column
            if f.column in (self.target.column, self.id_column):
                yield where, "is the target or id column; it cannot be a feature", f.column
            seen.add(f.column)
        numeric = {f.column for f in self.features if f.kind == "numeric"}
        for i, r in enumerate(self.ratios):
            for key, side in (("numerator", r.numerator), ("denominator", r.denominator)):
                if side not in numeric:
                    yield f"ratios[{i}].{key}", "numerator and denominator must be numeric features", side
        names = seen | {r.name for r in self.ratios}
        for i, d in enumerate(self.derived):
            for key, side in (("left", d.left), ("right", d.right)):
                if side not in numeric:
                    yield f"derived[{i}].{key}", "left and right must be numeric features", side
            if d.name in names:
                yield f"derived[{i}].name", "name is already a feature or derived field", d.name
            names.add(d.name)
        if self.order_column and self.order_column in seen:
            yield "order_column", "is a feature; the column that orders leads in time cannot also be one", \
                self.order_column
        if self.decimal == "," and self.delimiter == ",":
            yield "decimal", "cannot be the delimiter too", None

    def spec(self, *, source: str) -> ModelSpec:
        """Return the spec this file describes."""
        features = tuple(FeatureSpec(
            column=f.column, kind=f.kind, group=f.group, label=f.label or f.column, optional=f.optional,
            reason=f.reason, reason_true=f.reason_true, reason_false=f.reason_false,
            reason_missing=f.reason_missing, minimum=f.min, maximum=f.max) for f in self.features)
        ratios = (*(RatioSpec(r.name, r.numerator, r.denominator) for r in self.ratios),
                  *(RatioSpec(d.name, d.left, d.right, op=d.op) for d in self.derived))
        model = self.model.model_dump(exclude_unset=True)
        if "candidates" in model:
            model["candidates"] = tuple(model["candidates"])
        reading = self.model_dump(include={"delimiter", "encoding", "decimal", "date_format"}, exclude_none=True)
        return ModelSpec(
            name=self.name, description=self.description, target=TargetSpec(
                self.target.column, tuple(self.target.positive), tuple(self.target.negative)),
            id_column=self.id_column, features=features, created_at_column=self.created_at_column or None,
            as_of_column=self.as_of_column or None, exclude=tuple(self.exclude), protected=tuple(self.protected),
            missing_values=tuple(self.missing_values), true_values=tuple(self.true_values),
            false_values=tuple(self.false_values), ratios=ratios,
            recency_half_life_days=self.recency_half_life_days, rare_min_count=self.rare_min_count,
            grades=self.grades.grades(), model=model, source=source, order_column=self.order_column or None,
            rows_in_time_order=self.rows_in_time_order, dayfirst=self.dayfirst, **reading)


def load_spec(path: Path | None = None) -> ModelSpec:
    """Read a spec file; without a path, the default spec for the leadcast lead contract."""
    return ModelSpec.from_file(path or DEFAULT_SPEC)


@dataclass(frozen=True)
class Prepared:
    """A lead table after the spec has typed it: features, outcome, ids, creation time, protected groups.

    `kept` holds the positions (in the raw table) of the rows kept: all of them, or those with an outcome.
    """

    features: pd.DataFrame
    ids: pd.Series
    target: np.ndarray | None
    created_at: pd.Series | None
    protected: pd.DataFrame
    rows_undecided: int = 0
    kept: np.ndarray | None = None
    order: np.ndarray | None = None  # the spec's `order_column` as floats (dates as days), NaN if missing
    notes: tuple[str, ...] = ()  # what the output should say about how the table was read


RULE_KINDS: dict[str, Kind] = {"numeric": "float", "categorical": "string", "boolean": "bool",
                               "timestamp": "datetime"}
_RULES: dict[int, tuple[ModelSpec, dict[str, Rule], dict[str, Callable[[Any], Any]]]] = {}


def rules_of(spec: ModelSpec) -> dict[str, Rule]:
    """Return the value rule of every column the spec reads: id, features, creation time and `as_of`.

    A feature named like a column of the lead contract takes that column's limits (non-negative counts).
    """
    return _cached_rules(spec)[0]


def _cached_rules(spec: ModelSpec) -> tuple[dict[str, Rule], dict[str, Callable[[Any], Any]]]:
    cached = _RULES.get(id(spec))
    if cached is not None and cached[0] is spec:
        return cached[1], cached[2]
    base = Rule("string", missing_values=spec.missing_values, true_values=spec.true_values,
                false_values=spec.false_values, date_format=spec.date_format, decimal=spec.decimal,
                dayfirst=spec.dayfirst)
    rules = {spec.id_column: base} if spec.id_column else {}
    for f in spec.features:
        contract = LEAD.column(f.column) if f.column in LEAD.names else None
        non_negative = bool(contract and contract.non_negative and f.kind == "numeric")
        rules[f.column] = replace(base, kind=RULE_KINDS[f.kind], non_negative=non_negative, minimum=f.minimum,
                                  maximum=f.maximum)
    for name in (spec.created_at_column, spec.as_of_column, "as_of"):
        if name and name not in rules:
            rules[name] = replace(base, kind="datetime")
    if len(_RULES) >= 64:
        _RULES.clear()
    readers = {name: reader(rule) for name, rule in rules.items()}
    _RULES[id(spec)] = (spec, rules, readers)
    return rules, readers


def _problems(refused: list[Refused], table: str, name: str) -> list[Problem]:
    return [Problem(table, name, r.message, row=r.position + 1, value=r.value, code=r.code) for r in refused]


def _parse(series: pd.Series, kind: FeatureKind, rule: Rule, table: str, name: str,
           problems: list[Problem]) -> pd.Series:
    if kind == "categorical":
        # Keep a Categorical: a million leads have a few categories.
        codes, uniques, refused = parse_categories(series, rule, limit=MAX_PROBLEMS)
        problems += _problems(refused, table, name)
        categorical = pd.Categorical.from_codes(codes, categories=pd.Index(uniques, dtype=object))
        return pd.Series(categorical, index=series.index)
    values, refused = parse_series(series, rule, limit=MAX_PROBLEMS)
    problems += _problems(refused, table, name)
    return pd.Series(values, index=series.index, name=series.name, copy=False)


def prepare(raw: pd.DataFrame, *, spec: ModelSpec, table: str = "input", with_target: bool = False) -> Prepared:
    """Type a raw lead table by the spec; raise a DataValidationError naming every bad field and row.

    Missing optional feature columns become empty; extra columns are ignored; placeholder values
    (`missing_values`) become missing. With `with_target`, rows whose outcome is empty are set aside
    (undecided leads) and counted in `rows_undecided`.
    """
    problems: list[Problem] = []
    frame = raw.reset_index(drop=True)
    needed = ([spec.id_column] if spec.id_column else []) + ([spec.target.column] if with_target else [])
    needed += [f.column for f in spec.features if not f.optional]
    for name in needed:
        if name not in frame.columns:
            what = ("the target column" if name == spec.target.column else
                    "the id column" if name == spec.id_column else "a feature in the spec")
            problems.append(Problem(table, name, f"column is missing ({what}, spec {spec.source})",
                                    code="missing_column"))
    if problems:
        hint = _delimiter_hint(frame, spec, table)
        raise DataValidationError([hint] if hint else problems, source=table)
    rules = rules_of(spec)
    frame = frame.copy(deep=False)
    notes: list[str] = []
    if spec.id_column:
        id_values, refused = parse_series(frame[spec.id_column], rules[spec.id_column])
        problems += _problems(refused, table, spec.id_column)
        ids = pd.Series(id_values, index=frame.index, dtype="string")
        empty = np.array(ids.isna().to_numpy(bool))
        empty[[r.position for r in refused]] = False  # refused, not empty: reported once
        for i in np.flatnonzero(empty)[:MAX_PROBLEMS]:
            problems.append(Problem(table, spec.id_column, "is empty; every lead needs an id", row=int(i) + 1,
                                    code="missing_value"))
    else:
        ids = pd.Series(np.arange(1, len(frame) + 1).astype(str), index=frame.index, dtype="string")
        notes.append(f"the spec names no id column: leads are identified by their row number ('{ROW_ID}', 1 = the "
                     "first data row)")
    target: np.ndarray | None = None
    keep = np.ones(len(frame), dtype=bool)
    if with_target:
        target_values, refused = parse_series(frame[spec.target.column],
                                              Rule("string", missing_values=spec.missing_values))
        problems += _problems(refused, table, spec.target.column)
        text = pd.Series(target_values, dtype="string").str.casefold()
        pos = text.isin([v.casefold() for v in spec.target.positive]).fillna(False).to_numpy(bool)
        neg = text.isin([v.casefold() for v in spec.target.negative]).fillna(False).to_numpy(bool)
        empty = text.isna().to_numpy(bool) | (text == "").fillna(True).to_numpy(bool)
        if spec.target.negative:
            outside = ~pos & ~neg & ~empty
            allowed = ", ".join([*spec.target.positive, *spec.target.negative])
            problems += [Problem(table, spec.target.column, f"value outside the spec (expected one of {allowed})",
                                 row=int(i) + 1, value=str(frame[spec.target.column].iloc[i]),
                                 code="wrong_value") for i in np.flatnonzero(outside)[:MAX_PROBLEMS]]
        keep = ~empty
        target = pos[keep].astype(np.int64)
    columns: dict[str, pd.Series] = {}
    for f in spec.features:
        if f.column in frame.columns:
            columns[f.column] = _parse(frame[f.column], f.kind, rules[f.column], table, f.column, problems)
        elif f.kind == "timestamp":
            columns[f.column] = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns]")
        elif f.kind == "categorical":
            columns[f.column] = pd.Series(None, index=frame.index, dtype=object)
        else:
            columns[f.column] = pd.Series(np.nan, index=frame.index, dtype="float64")
    created = None
    if spec.created_at_column and spec.created_at_column in frame.columns:
        created = _parse(frame[spec.created_at_column], "timestamp", rules[spec.created_at_column], table,
                         spec.created_at_column, problems)
    as_of = _as_of_column(spec, frame.columns)
    if as_of is not None:
        columns["as_of"] = _parse(frame[as_of], "timestamp", rules[as_of], table, as_of, problems)
    order = None
    if spec.order_column and spec.order_column in frame.columns:
        order = _order_values(frame[spec.order_column], rules, spec, table, problems)
    if problems:
        raise DataValidationError(problems, source=table)
    features = pd.DataFrame(columns, index=frame.index)
    protected = pd.DataFrame({p: pd.Series(parse_series(frame[p], Rule("string"))[0], index=frame.index,
                                           dtype="string") for p in spec.protected if p in frame.columns},
                             index=frame.index)
    if with_target:
        if target is None or len(target) == 0:
            raise DataValidationError([Problem(table, spec.target.column, "no lead has an outcome",
                                               code="no_outcome")], source=table)
        classes = set(np.unique(target).tolist())
        if len(classes) < 2:
            missing = "converted" if 1 not in classes else "unconverted"
            raise DataValidationError([Problem(
                table, spec.target.column,
                f"has one class only: no {missing} lead (positive values: {', '.join(spec.target.positive)})",
                code="one_class")], source=table)
    sel = np.flatnonzero(keep)
    return Prepared(
        features=features.iloc[sel].reset_index(drop=True),
        ids=ids.iloc[sel].reset_index(drop=True),
        target=target,
        created_at=None if created is None else created.iloc[sel].reset_index(drop=True),
        protected=protected.iloc[sel].reset_index(drop=True),
        rows_undecided=int((~keep).sum()),
        kept=sel,
        order=None if order is None else order[sel],
        notes=tuple(notes),
    )


def _order_values(series: pd.Series, rules: Mapping[str, Rule], spec: ModelSpec, table: str,
                  problems: list[Problem]) -> np.ndarray:
    """Read the order column as numbers, or else as dates (in days); a value that is neither is a problem."""
    base = next(iter(rules.values()), Rule("string"))
    numbers, refused = parse_series(series, replace(base, kind="float"))
    if not refused:
        return np.asarray(numbers, dtype=np.float64)
    stamps, refused_dates = parse_series(series, replace(base, kind="datetime"))
    if not refused_dates:
        days = np.asarray(stamps, dtype="datetime64[ns]")
        out = days.astype(np.int64) / 86_400e9
        out[np.isnat(days)] = np.nan
        return np.asarray(out, dtype=np.float64)
    name = str(spec.order_column)
    problems += [Problem(table, name, "is neither a number nor a date; the order column must order leads in time",
                         row=r.position + 1, value=r.value, code="wrong_type") for r in refused[:MAX_PROBLEMS]]
    return np.full(len(series), np.nan)


def _delimiter_hint(frame: pd.DataFrame, spec: ModelSpec, table: str) -> Problem | None:
    """Return one problem saying which delimiter the file seems to use, when the header reads as one column."""
    if len(frame.columns) > 2:
        return None
    header = "".join(map(str, frame.columns))
    for mark, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe"), (",", "comma")):
        if mark != (spec.delimiter or ",") and header.count(mark) >= 2:
            shown_mark = "\\t" if mark == "\t" else mark
            return Problem(table, "-", f"the header reads as {len(frame.columns)} column(s) but holds "
                           f"{header.count(mark)} {name}s: the file seems to be {name}-separated; "
                           f"set `delimiter = \"{shown_mark}\"` in the spec ({spec.source})",
                           value=shown(header), code="wrong_delimiter")
    return None


def _as_of_column(spec: ModelSpec, columns: Any) -> str | None:
    """Return the column holding each lead's reference time: the spec's, else one named `as_of`."""
    for name in (spec.as_of_column, "as_of"):
        if name and name in columns:
            return name
    return None


def prepare_records(records: list[Mapping[str, Any]], *, spec: ModelSpec, table: str = "records",
                    ) -> tuple[dict[str, np.ndarray], list[str]]:
    """Type JSON-like records by the spec without pandas (the per-request path); the same rules as `prepare`.

    Returns columns ready for `LeadFeatures.encode` (timestamps as days since 1970) and the lead ids;
    raises a DataValidationError naming every bad field and record.
    """
    problems: list[Problem] = []
    _, readers = _cached_rules(spec)
    n = len(records)
    columns: dict[str, np.ndarray] = {}

    def read(name: str) -> list[Any]:
        out: list[Any] = []
        bad = 0
        parse = readers[name]
        for i, record in enumerate(records):
            try:
                out.append(parse(record.get(name)))
            except ValueProblem as exc:
                out.append(None)
                if bad < MAX_PROBLEMS:
                    problems.append(Problem(table, name, exc.message, row=i + 1, value=shown(record.get(name)),
                                            code=exc.code))
                bad += 1
        return out

    if spec.id_column:
        id_values = read(spec.id_column)
        refused = {p.row for p in problems}
        empty = [i for i, v in enumerate(id_values) if v is None and i + 1 not in refused]
        for i in empty[:MAX_PROBLEMS]:
            problems.append(Problem(table, spec.id_column, "is empty; every lead needs an id", row=i + 1,
                                    code="missing_value"))
        ids = ["" if v is None else v for v in id_values]
    else:
        ids = [str(i + 1) for i in range(n)]  # no id column in the spec: the record's position, 1-based
    for f in spec.features:
        values = read(f.column)
        if f.kind == "categorical":
            out = np.empty(n, dtype=object)
            out[:] = values
        elif f.kind == "timestamp":
            out = np.asarray([to_days(v) for v in values], dtype=np.float64)
        else:
            out = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
        columns[f.column] = out
    if spec.created_at_column and spec.created_at_column not in columns:
        read(spec.created_at_column)
    as_of = _as_of_column(spec, {k for r in records for k in r})
    if as_of is not None:
        columns["as_of"] = np.asarray([to_days(v) for v in read(as_of)], dtype=np.float64)
    if problems:
        raise DataValidationError(problems, source=table)
    return columns, ids
