"""Model specs: which columns a scoring model reads, how, and why; and the typed frame they produce."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal, cast, get_args

import numpy as np
import pandas as pd

from crmdata.errors import DataValidationError, Problem
from crmdata.tomlfile import read_toml

FeatureKind = Literal["numeric", "categorical", "boolean", "timestamp"]
FeatureGroup = Literal["demographic", "firmographic", "behavioural", "engagement", "bant"]

SPECS_DIR = Path(__file__).resolve().parent / "specs"
DEFAULT_SPEC = SPECS_DIR / "default.toml"
TRUE_VALUES = ("true", "t", "yes", "y", "1", "1.0")
FALSE_VALUES = ("false", "f", "no", "n", "0", "0.0")
MAX_PROBLEMS = 1_000


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


@dataclass(frozen=True, slots=True)
class RatioSpec:
    """A derived ratio numerator / denominator of two numeric features."""

    name: str
    numerator: str
    denominator: str


@dataclass(frozen=True, slots=True)
class Grades:
    """Probability cut-offs for grades A, B and C; below `c` is grade D."""

    a: float = 0.60
    b: float = 0.35
    c: float = 0.15

    def grade(self, probability: np.ndarray) -> np.ndarray:
        """Return the grade letter (A-D) of each probability."""
        out = np.full(probability.shape, "D", dtype="<U1")
        out[probability >= self.c] = "C"
        out[probability >= self.b] = "B"
        out[probability >= self.a] = "A"
        return out


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
                 "recency_half_life_days", "rare_min_count", "grades", "model"}
        for key in sorted(set(data) - known):
            bad(key, "unknown key in spec")
        for key in ("name", "target", "id_column", "features"):
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
                        "reason_missing"}
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
            features.append(FeatureSpec(
                column=column, kind=raw["kind"], group=raw["group"], label=str(raw.get("label", column)),
                optional=bool(raw.get("optional", False)), reason=raw.get("reason"),
                reason_true=raw.get("reason_true"), reason_false=raw.get("reason_false"),
                reason_missing=raw.get("reason_missing"),
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
        grades_raw = data.get("grades", {})
        grades = Grades(**{k.lower(): float(v) for k, v in grades_raw.items()}) if isinstance(
            grades_raw, dict) and set(k.lower() for k in grades_raw) <= {"a", "b", "c"} else Grades()
        if isinstance(grades_raw, dict) and not set(k.lower() for k in grades_raw) <= {"a", "b", "c"}:
            bad("grades", "keys must be A, B and C (probability cut-offs)")
        if not 0 < grades.c < grades.b < grades.a < 1:
            bad("grades", "cut-offs must satisfy 0 < C < B < A < 1", f"{grades.a}, {grades.b}, {grades.c}")
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
            model=dict(model), source=source,
        )


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


def _plain_numbers(series: pd.Series) -> np.ndarray | None:
    """Return a copy of a plain numpy bool, integer or float column as float64; None for any other dtype.

    For these dtypes this is what the nullable round trip (`astype("Float64").astype("float64")`) gives,
    without its cost; missing values are exactly the NaNs.
    """
    dtype = series.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
        return np.array(series.to_numpy(), dtype=np.float64)
    return None


def _plain_text(distinct: list[Any]) -> bool:
    """Whether distinct values are all printable ASCII text, or all true/false: then Python's `str`, `strip`
    and `casefold` read each as pandas' string methods do, and equal values are the same text."""
    return all(type(u) is bool for u in distinct) or all(
        type(u) is str and u.isascii() and u.isprintable() for u in distinct)


def _parse(series: pd.Series, kind: FeatureKind, spec: ModelSpec, table: str, name: str,
           problems: list[Problem]) -> pd.Series:
    out: pd.Series
    if kind == "categorical":
        # Work on the distinct values only, and keep a Categorical: a million leads have a few categories.
        codes, uniques = pd.factorize(series, use_na_sentinel=True)
        clean = [str(u).strip() for u in uniques.tolist()]
        categories = list(dict.fromkeys(c for c in clean if c))
        position = {c: i for i, c in enumerate(categories)}
        remap = np.asarray([position.get(c, -1) for c in clean] + [-1], dtype=np.int64)
        categorical = pd.Categorical.from_codes(remap[codes], categories=pd.Index(categories, dtype=object))
        return pd.Series(categorical, index=series.index)
    numbers = _plain_numbers(series) if kind in ("numeric", "boolean") else None
    bad: np.ndarray | None = None  # rows given a value that does not parse, when known without pandas
    if kind == "numeric":
        # Infinity parses as a float but no model can use it: it is as wrong as text.
        if numbers is not None:
            infinite = np.isinf(numbers)
            numbers[infinite] = np.nan
            out = pd.Series(numbers, index=series.index, name=series.name, copy=False)
            bad = np.flatnonzero(infinite)  # NaN was missing already: only infinities were given and lost
        else:
            if pd.api.types.is_bool_dtype(series.dtype):
                out = series.astype("float64")
            elif pd.api.types.is_numeric_dtype(series.dtype):
                out = series.astype("Float64").astype("float64")
            else:
                out = pd.to_numeric(series.astype("string").str.strip(), errors="coerce").astype("float64")
            out[np.isinf(out.to_numpy())] = np.nan
        expected = "a number"
    elif kind == "boolean":
        if numbers is not None:
            invalid = ~np.isnan(numbers) & (numbers != 0.0) & (numbers != 1.0)
            numbers[invalid] = np.nan
            out = pd.Series(numbers, index=series.index, name=series.name, copy=False)
            bad = np.flatnonzero(invalid)
        elif pd.api.types.is_bool_dtype(series.dtype) or pd.api.types.is_numeric_dtype(series.dtype):
            numeric = series.astype("Float64")
            out = numeric.astype("float64")
            bad_value = series.notna() & ~numeric.isin([0.0, 1.0]).fillna(False)
            out[bad_value.to_numpy(bool)] = np.nan
        else:
            codes, uniques = pd.factorize(series, use_na_sentinel=True)
            distinct = uniques.tolist()
            if _plain_text(distinct):
                trues = {v.casefold() for v in spec.true_values}
                falses = {v.casefold() for v in spec.false_values}
                words = [str(u).strip().casefold() for u in distinct]
                meaning = np.asarray([0.0 if w in falses else 1.0 if w in trues else np.nan for w in words] + [np.nan])
                out = pd.Series(meaning[codes], index=series.index)
            else:
                text = series.astype("string").str.strip().str.casefold()
                parsed = np.full(len(series), np.nan)
                parsed[text.isin([v.casefold() for v in spec.true_values]).fillna(False).to_numpy(bool)] = 1.0
                parsed[text.isin([v.casefold() for v in spec.false_values]).fillna(False).to_numpy(bool)] = 0.0
                out = pd.Series(parsed, index=series.index)
        expected = f"true or false ({'/'.join(spec.true_values[:3])} or {'/'.join(spec.false_values[:3])})"
    else:
        if pd.api.types.is_datetime64_any_dtype(series.dtype):
            parsed_times = series
        else:
            parsed_times = pd.to_datetime(series.astype("string").str.strip(), errors="coerce", format="ISO8601",
                                          utc=True)
        if isinstance(parsed_times.dtype, pd.DatetimeTZDtype):
            parsed_times = parsed_times.dt.tz_convert("UTC").dt.tz_localize(None)
        out = pd.Series(parsed_times.astype("datetime64[ns]"))
        expected = "a date (ISO 8601, e.g. 2024-03-01 or 2024-03-01T10:00:00)"
    if bad is None:
        bad = np.flatnonzero(series.notna().to_numpy(bool) & out.isna().to_numpy(bool))
    problems += [Problem(table, name, f"is not {expected}", row=int(i) + 1, value=str(series.iloc[i]),
                         code="wrong_type") for i in bad[:MAX_PROBLEMS]]
    return out


def prepare(raw: pd.DataFrame, *, spec: ModelSpec, table: str = "input", with_target: bool = False) -> Prepared:
    """Type a raw lead table by the spec; raise a DataValidationError naming every bad field and row.

    Missing optional feature columns become empty; extra columns are ignored; placeholder values
    (`missing_values`) become missing. With `with_target`, rows whose outcome is empty are set aside
    (undecided leads) and counted in `rows_undecided`.
    """
    problems: list[Problem] = []
    frame = raw.reset_index(drop=True)
    needed = [spec.id_column] + ([spec.target.column] if with_target else [])
    needed += [f.column for f in spec.features if not f.optional]
    for name in needed:
        if name not in frame.columns:
            what = ("the target column" if name == spec.target.column else
                    "the id column" if name == spec.id_column else "a feature in the spec")
            problems.append(Problem(table, name, f"column is missing ({what}, spec {spec.source})",
                                    code="missing_column"))
    if problems:
        raise DataValidationError(problems, source=table)
    placeholders = ["", *spec.missing_values]
    used = [c for c in {spec.id_column, spec.target.column, spec.created_at_column, spec.as_of_column, "as_of",
                        *spec.feature_columns} if c and c in frame.columns]
    frame = frame.copy(deep=False)
    for column in used:
        values = frame[column]
        if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
            # Blank cells and placeholders such as "Select" mean "not known" (checked per distinct value).
            codes, uniques = pd.factorize(values, use_na_sentinel=True)
            if len(uniques) > 1_000:
                blank = values.astype("string").str.strip().isin(placeholders).fillna(False).to_numpy(bool)
            else:
                placeholder = np.asarray([str(u).strip() in placeholders for u in uniques.tolist()] + [False],
                                         dtype=bool)
                blank = placeholder[codes]
            if blank.any():
                frame[column] = values.mask(blank)
    ids = frame[spec.id_column].astype("string")
    for i in np.flatnonzero(ids.isna().to_numpy(bool))[:MAX_PROBLEMS]:
        problems.append(Problem(table, spec.id_column, "is empty; every lead needs an id", row=int(i) + 1,
                                code="missing_value"))
    target: np.ndarray | None = None
    keep = np.ones(len(frame), dtype=bool)
    if with_target:
        text = frame[spec.target.column].astype("string").str.strip().str.casefold()
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
            columns[f.column] = _parse(frame[f.column], f.kind, spec, table, f.column, problems)
        elif f.kind == "timestamp":
            columns[f.column] = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns]")
        elif f.kind == "categorical":
            columns[f.column] = pd.Series(None, index=frame.index, dtype=object)
        else:
            columns[f.column] = pd.Series(np.nan, index=frame.index, dtype="float64")
    created = None
    if spec.created_at_column and spec.created_at_column in frame.columns:
        created = _parse(frame[spec.created_at_column], "timestamp", spec, table, spec.created_at_column, problems)
    as_of = _as_of_column(spec, frame.columns)
    if as_of is not None:
        columns["as_of"] = _parse(frame[as_of], "timestamp", spec, table, as_of, problems)
    if problems:
        raise DataValidationError(problems, source=table)
    features = pd.DataFrame(columns, index=frame.index)
    protected = pd.DataFrame({p: frame[p].astype("string") for p in spec.protected if p in frame.columns},
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
    )


def _as_of_column(spec: ModelSpec, columns: Any) -> str | None:
    """Return the column holding each lead's reference time: the spec's, else one named `as_of`."""
    for name in (spec.as_of_column, "as_of"):
        if name and name in columns:
            return name
    return None


EPOCH = datetime(1970, 1, 1)


def _days_of(value: Any) -> float | None:
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, np.datetime64):
        return None if np.isnat(value) else float(value.astype("datetime64[ns]").astype(np.int64)) / 86_400e9
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        text = value.strip()
        value = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    if not isinstance(value, datetime):
        raise ValueError(value)
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return (value - EPOCH).total_seconds() / 86_400.0


def prepare_records(records: list[Mapping[str, Any]], *, spec: ModelSpec, table: str = "records",
                    ) -> tuple[dict[str, np.ndarray], list[str]]:
    """Type JSON-like records by the spec without pandas (the per-request path); same rules as `prepare`.

    Returns columns ready for `LeadFeatures.encode` (timestamps as days since 1970) and the lead ids;
    raises a DataValidationError naming every bad field and record.
    """
    problems: list[Problem] = []
    placeholders = {"", *spec.missing_values}
    trues = {v.casefold() for v in spec.true_values}
    falses = {v.casefold() for v in spec.false_values}
    n = len(records)
    columns: dict[str, np.ndarray] = {}
    ids: list[str] = []
    for i, record in enumerate(records):
        value = record.get(spec.id_column)
        if value is None or (isinstance(value, str) and value.strip() in placeholders):
            problems.append(Problem(table, spec.id_column, "is empty; every lead needs an id", row=i + 1,
                                    code="missing_value"))
            ids.append("")
        else:
            ids.append(str(value))
    for f in spec.features:
        out = np.empty(n, dtype=object) if f.kind == "categorical" else np.full(n, np.nan)
        for i, record in enumerate(records):
            value = record.get(f.column)
            if value is None or (isinstance(value, float) and value != value):
                out[i] = None if f.kind == "categorical" else np.nan
                continue
            if isinstance(value, str):
                value = value.strip()
                if value in placeholders:
                    out[i] = None if f.kind == "categorical" else np.nan
                    continue
            try:
                if f.kind == "categorical":
                    out[i] = value if isinstance(value, str) else str(value)
                elif f.kind == "numeric":
                    number = float(value)
                    if not math.isfinite(number):
                        raise ValueError(value)
                    out[i] = number
                elif f.kind == "boolean":
                    if isinstance(value, bool | int | float | np.bool_) and float(value) in (0.0, 1.0):
                        out[i] = float(value)
                    elif isinstance(value, str) and value.casefold() in trues:
                        out[i] = 1.0
                    elif isinstance(value, str) and value.casefold() in falses:
                        out[i] = 0.0
                    else:
                        raise ValueError(value)
                else:
                    out[i] = _days_of(value)
            except (ValueError, TypeError, OverflowError):
                expected = {"numeric": "a number", "boolean": "true or false",
                            "timestamp": "a date (ISO 8601)", "categorical": "text"}[f.kind]
                problems.append(Problem(table, f.column, f"is not {expected}", row=i + 1, value=str(value),
                                        code="wrong_type"))
        columns[f.column] = out
    as_of = _as_of_column(spec, {k for r in records for k in r})
    if as_of is not None:
        days = np.full(n, np.nan)
        for i, record in enumerate(records):
            value = record.get(as_of)
            if value is None or value == "":
                continue
            try:
                days[i] = _days_of(value)
            except (ValueError, TypeError):
                problems.append(Problem(table, as_of, "is not a date (ISO 8601)", row=i + 1, value=str(value),
                                        code="wrong_type"))
        columns["as_of"] = days
    if problems:
        raise DataValidationError(problems, source=table)
    return columns, ids
