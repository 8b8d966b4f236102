"""Model specs: which columns a scoring model reads, how, and why; and the typed frame they produce."""

from __future__ import annotations

import codecs
import itertools
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, cast, get_args

import numpy as np
import pandas as pd

from crmdata.contracts import LEAD
from crmdata.errors import DataValidationError, Problem
from crmdata.tomlfile import read_toml
from crmdata.values import (
    FALSE_VALUES,
    MAX_PROBLEMS,
    TRUE_VALUES,
    Kind,
    Refused,
    Rule,
    ValueProblem,
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
        out = np.full(probability.shape, "D", dtype="<U1")
        out[probability >= self.c] = "C"
        out[probability >= self.b] = "B"
        out[probability >= self.a] = "A"
        return out


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
        problems: list[Problem] = []

        def bad(where: str, message: str, value: object = None) -> None:
            problems.append(Problem(source, where, message, value=None if value is None else str(value),
                                    code="bad_spec"))

        known = {"name", "description", "target", "id_column", "created_at_column", "as_of_column", "features",
                 "exclude", "protected", "missing_values", "true_values", "false_values", "ratios",
                 "recency_half_life_days", "rare_min_count", "grades", "model", "order_column",
                 "rows_in_time_order", "delimiter", "encoding", "decimal", "date_format", "dayfirst", "derived"}
        for key in sorted(set(data) - known):
            bad(key, "unknown key in spec")
        for key in ("name", "target", "features"):
            if key not in data:
                bad(key, "is required")
        target_raw = data.get("target", {})
        target = TargetSpec("", (), ())
        if isinstance(target_raw, dict):
            if "column" not in target_raw or "positive" not in target_raw:
                bad("target", "needs `column` and `positive` (and usually `negative`)")
            else:
                target = TargetSpec(str(target_raw["column"]), _strings(target_raw["positive"]),
                                    _strings(target_raw.get("negative", ())))
                if set(map(str.casefold, target.positive)) & set(map(str.casefold, target.negative)):
                    bad("target", "a value is both positive and negative")
        elif "target" in data:
            bad("target", "must be a table with `column`, `positive` and `negative`")
        exclude = _strings(data.get("exclude", ()))
        protected = _strings(data.get("protected", ()))
        id_column = str(data.get("id_column", ""))
        features: list[FeatureSpec] = []
        seen: set[str] = set()
        kinds, groups = get_args(FeatureKind), get_args(FeatureGroup)
        feature_keys = {"column", "kind", "group", "label", "optional", "reason", "reason_true", "reason_false",
                        "reason_missing", "min", "max"}
        for i, raw in enumerate(data.get("features", [])):
            where = f"features[{i}]"
            if not isinstance(raw, dict) or "column" not in raw or "kind" not in raw or "group" not in raw:
                bad(where, "needs `column`, `kind` and `group`")
                continue
            column = str(raw["column"])
            where = f"features[{i}] ({column})"
            for key in sorted(set(raw) - feature_keys):
                bad(where, f"unknown key {key!r}")
            if raw["kind"] not in kinds:
                bad(where, f"kind must be one of {', '.join(kinds)}", raw["kind"])
                continue
            if raw["group"] not in groups:
                bad(where, f"group must be one of {', '.join(groups)}", raw["group"])
                continue
            if column in seen:
                bad(where, "column listed twice")
            if column in protected:
                bad(where, "is a protected column: it may appear only in the fairness report, never as a feature")
            if column in exclude:
                bad(where, "is also in `exclude`")
            if column in (target.column, id_column):
                bad(where, "is the target or id column; it cannot be a feature")
            seen.add(column)
            limits: dict[str, float | None] = {"min": None, "max": None}
            for key in ("min", "max"):
                if key in raw:
                    value = raw[key]
                    if raw["kind"] != "numeric":
                        bad(where, f"`{key}` applies to numeric features only", value)
                    elif isinstance(value, bool) or not isinstance(value, int | float):
                        bad(where, f"`{key}` must be a number", value)
                    else:
                        limits[key] = float(value)
            if limits["min"] is not None and limits["max"] is not None and limits["min"] > limits["max"]:
                bad(where, "`min` is above `max`", f"{limits['min']} > {limits['max']}")
            features.append(FeatureSpec(
                column=column, kind=raw["kind"], group=raw["group"], label=str(raw.get("label", column)),
                optional=bool(raw.get("optional", False)), reason=raw.get("reason"),
                reason_true=raw.get("reason_true"), reason_false=raw.get("reason_false"),
                reason_missing=raw.get("reason_missing"), minimum=limits["min"], maximum=limits["max"],
            ))
        if "features" in data and not features:
            bad("features", "lists no usable feature")
        ratios: list[RatioSpec] = []
        numeric = {f.column for f in features if f.kind == "numeric"}
        for i, raw in enumerate(data.get("ratios", [])):
            try:
                ratio = RatioSpec(str(raw["name"]), str(raw["numerator"]), str(raw["denominator"]))
            except (KeyError, TypeError):
                bad(f"ratios[{i}]", "needs `name`, `numerator` and `denominator`")
                continue
            for side in (ratio.numerator, ratio.denominator):
                if side not in numeric:
                    bad(f"ratios[{i}]", "numerator and denominator must be numeric features", side)
            ratios.append(ratio)
        names = {f.column for f in features} | {r.name for r in ratios}
        for i, raw in enumerate(data.get("derived", [])):
            where = f"derived[{i}]"
            if not isinstance(raw, dict) or not {"name", "op", "left", "right"} <= set(raw):
                bad(where, "needs `name`, `op` (difference or ratio), `left` and `right`")
                continue
            for key in sorted(set(raw) - {"name", "op", "left", "right"}):
                bad(where, f"unknown key {key!r}")
            if raw["op"] not in get_args(DerivedOp):
                bad(where, f"op must be one of {', '.join(get_args(DerivedOp))}", raw["op"])
                continue
            for side in (raw["left"], raw["right"]):
                if side not in numeric:
                    bad(where, "left and right must be numeric features", side)
            if str(raw["name"]) in names:
                bad(where, "name is already a feature or derived field", raw["name"])
            names.add(str(raw["name"]))
            ratios.append(RatioSpec(str(raw["name"]), str(raw["left"]), str(raw["right"]), op=raw["op"]))
        grades = _grades(data.get("grades", {}), bad)
        model = data.get("model", {})
        tunable = {"candidates", "calibration", "cv", "C", "n_knots", "learning_rate", "max_iter", "max_leaf_nodes",
                   "min_samples_leaf", "l2_regularization", "random_state"}
        if not isinstance(model, dict):
            bad("model", "must be a table of model settings")
            model = {}
        for key in sorted(set(model) - tunable):
            bad(f"model.{key}", f"unknown model setting; known: {', '.join(sorted(tunable))}")
        if "calibration" in model and model["calibration"] not in ("sigmoid", "isotonic"):
            bad("model.calibration", "must be sigmoid or isotonic", model["calibration"])
        if "candidates" in model:
            model = {**model, "candidates": tuple(model["candidates"])}
            if not model["candidates"] or not set(model["candidates"]) <= {"linear", "trees", "blend"}:
                bad("model.candidates", "must list some of linear, trees, blend", model["candidates"])
        half_life = float(data.get("recency_half_life_days", 14.0))
        if half_life <= 0:
            bad("recency_half_life_days", "must be positive", half_life)
        reading = _reading(data, bad)
        order_column = data.get("order_column") or None
        if order_column is not None and order_column in seen:
            bad("order_column", "is a feature; the column that orders leads in time cannot also be one",
                order_column)
        if not isinstance(data.get("rows_in_time_order", False), bool):
            bad("rows_in_time_order", "must be true or false", data.get("rows_in_time_order"))
        if problems:
            raise DataValidationError(problems, source=source)
        return cls(
            name=str(data["name"]), description=str(data.get("description", "")), target=target,
            id_column=id_column, features=tuple(features),
            created_at_column=data.get("created_at_column") or None, as_of_column=data.get("as_of_column") or None,
            exclude=exclude, protected=protected, missing_values=_strings(data.get("missing_values", ())),
            true_values=_strings(data.get("true_values", TRUE_VALUES)),
            false_values=_strings(data.get("false_values", FALSE_VALUES)), ratios=tuple(ratios),
            recency_half_life_days=half_life, rare_min_count=int(data.get("rare_min_count", 20)), grades=grades,
            model=dict(model), source=source, order_column=order_column,
            rows_in_time_order=bool(data.get("rows_in_time_order", False)), **reading,
        )


def _grades(raw: object, bad: Callable[..., None]) -> Grades:
    """Read the `[grades]` table: cut-offs A, B, C and a method (absolute, quantile or base_rate)."""
    if not isinstance(raw, dict):
        bad("grades", "must be a table of A, B and C (and optionally `method`)")
        return Grades()
    method = raw.get("method", "absolute")
    if method not in get_args(GradeMethod):
        bad("grades.method", f"must be one of {', '.join(get_args(GradeMethod))}", method)
        return Grades()
    cuts = {k.lower(): v for k, v in raw.items() if k != "method"}
    if not set(cuts) <= {"a", "b", "c"}:
        bad("grades", "keys must be A, B, C and method")
        return Grades()
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in cuts.values()):
        bad("grades", "A, B and C must be numbers")
        return Grades()
    if method == "absolute":
        grades = Grades(a=float(cuts.get("a", 0.60)), b=float(cuts.get("b", 0.35)), c=float(cuts.get("c", 0.15)))
        if not 0 < grades.c < grades.b < grades.a < 1:
            bad("grades", "cut-offs must satisfy 0 < C < B < A < 1", f"{grades.a}, {grades.b}, {grades.c}")
        return grades
    defaults = dict(zip("abc", QUANTILE_SHARES if method == "quantile" else BASE_RATE_MULTIPLES, strict=True))
    targets = (float(cuts.get("a", defaults["a"])), float(cuts.get("b", defaults["b"])),
               float(cuts.get("c", defaults["c"])))
    if method == "quantile" and not 0 < targets[0] < targets[1] < targets[2] < 1:
        bad("grades", "with method = quantile, A, B and C are the shares of leads graded A, A-B and A-C: "
                      "0 < A < B < C < 1", ", ".join(map(str, targets)))
    if method == "base_rate" and not targets[0] > targets[1] > targets[2] > 0:
        bad("grades", "with method = base_rate, A, B and C are multiples of the base rate: A > B > C > 0",
            ", ".join(map(str, targets)))
    return Grades(method=method, targets=targets)


def _reading(data: Mapping[str, Any], bad: Callable[..., None]) -> dict[str, Any]:
    """Read the keys that say how the export is written: delimiter, encoding, decimal mark, date format."""
    out: dict[str, Any] = {}
    delimiter = data.get("delimiter")
    if delimiter is not None:
        if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\"\r\n":
            bad("delimiter", "must be one character, e.g. \";\" or \"\\t\"", delimiter)
        else:
            out["delimiter"] = delimiter
    encoding = data.get("encoding")
    if encoding is not None:
        try:
            codecs.lookup(str(encoding))
            out["encoding"] = str(encoding)
        except LookupError:
            bad("encoding", "is not a known text encoding (e.g. utf-8, latin-1, cp1252)", encoding)
    decimal = data.get("decimal")
    if decimal is not None:
        if decimal not in (".", ","):
            bad("decimal", "must be \".\" or \",\"", decimal)
        else:
            out["decimal"] = decimal
    if decimal == "," and delimiter == ",":
        bad("decimal", "cannot be the delimiter too")
    date_format = data.get("date_format")
    if date_format is not None:
        if not isinstance(date_format, str) or "%" not in date_format:
            bad("date_format", "must be a strftime format, e.g. \"%d/%m/%Y\"", date_format)
        else:
            out["date_format"] = date_format
    dayfirst = data.get("dayfirst")
    if dayfirst is not None:
        if not isinstance(dayfirst, bool):
            bad("dayfirst", "must be true or false", dayfirst)
        else:
            out["dayfirst"] = dayfirst
    return out


def _strings(values: object) -> tuple[str, ...]:
    if isinstance(values, str | int | float | bool):
        values = [values]
    return tuple(str(v).lower() if isinstance(v, bool) else str(v) for v in cast(list[object], values))


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
    values, refused = parse_series(series, rule, limit=MAX_PROBLEMS)
    problems += _problems(refused, table, name)
    if kind == "categorical":
        # Keep a Categorical: a million leads have a few categories.
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        categorical = pd.Categorical.from_codes(codes, categories=pd.Index(uniques, dtype=object))
        return pd.Series(categorical, index=series.index)
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
