"""Feature engineering as scikit-learn transformers, and the spec-driven lead featuriser built from them."""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from scoring.spec import ModelSpec

DAY_NS = 86_400 * 10**9


def to_days(values: Any) -> np.ndarray:
    """Convert timestamps (datetime64, pandas, ISO strings) or numbers to float days since 1970; NaN if missing."""
    arr = np.asarray(values)
    if arr.dtype.kind == "M":
        stamps = arr.astype("datetime64[ns]")
        out = stamps.astype(np.int64) / DAY_NS
        out[np.isnat(stamps)] = np.nan
        return out.astype(np.float64)
    if arr.dtype.kind in "fiub":
        return arr.astype(np.float64)
    parsed = pd.to_datetime(pd.Series(arr.ravel(), dtype=object), errors="coerce", format="ISO8601", utc=True)
    parsed = parsed.dt.tz_localize(None)
    return to_days(parsed.to_numpy(dtype="datetime64[ns]")).reshape(arr.shape)


def _allow_nan_tags(tags: Any) -> Any:
    tags.input_tags.allow_nan = True
    return tags


class RecencyDecay(TransformerMixin, BaseEstimator):
    """Turn last-activity times into interest that halves every `half_life_days` of silence.

    decay = 0.5 ** (age_days / half_life_days), age_days = reference - timestamp (>= 0); never seen -> 0.
    The reference time is, per row, a column named `as_of` when the frame has one; else `reference_time`;
    else the latest timestamp seen in fit (`reference_time_`). Numbers are read as days since 1970.
    """

    def __init__(self, half_life_days: float = 14.0, reference_time: Any = None) -> None:
        self.half_life_days = half_life_days
        self.reference_time = reference_time

    def _split(self, X: Any) -> tuple[Any, np.ndarray | None]:
        if isinstance(X, pd.DataFrame) and "as_of" in X.columns:
            return X.drop(columns=["as_of"]), to_days(X["as_of"].to_numpy())
        return X, None

    def _days(self, X: Any, *, reset: bool) -> np.ndarray:
        if isinstance(X, pd.DataFrame):
            if reset:
                self.feature_names_in_ = np.asarray(X.columns, dtype=object)
                self.n_features_in_ = X.shape[1]
            elif X.shape[1] != self.n_features_in_:
                raise ValueError(f"X has {X.shape[1]} features, but RecencyDecay expects {self.n_features_in_}")
            return np.column_stack([to_days(X[c].to_numpy()) for c in X.columns]) if X.shape[1] else \
                np.empty((len(X), 0))
        return np.asarray(validate_data(self, X, reset=reset, ensure_all_finite="allow-nan", dtype=np.float64))

    def fit(self, X: Any, y: Any = None) -> RecencyDecay:
        """Learn the reference time (latest timestamp seen) used when no other is given."""
        if not self.half_life_days > 0:
            raise ValueError(f"half_life_days must be positive, got {self.half_life_days}")
        X, _ = self._split(X)
        days = self._days(X, reset=True)
        finite = days[np.isfinite(days)]
        self.reference_time_ = float(finite.max()) if finite.size else 0.0
        return self

    def reference_days(self, n: int, as_of: np.ndarray | None = None) -> np.ndarray:
        """Return the reference time of each of `n` rows, in days since 1970."""
        if as_of is not None:
            ref = as_of.astype(np.float64)
            fallback = self._fixed_reference()
            return np.where(np.isnan(ref), fallback, ref)
        return np.full(n, self._fixed_reference())

    def _fixed_reference(self) -> float:
        if self.reference_time is not None:
            return float(to_days(np.array([pd.Timestamp(self.reference_time).to_datetime64()]))[0]) \
                if not isinstance(self.reference_time, int | float) else float(self.reference_time)
        return float(self.reference_time_)

    def transform(self, X: Any) -> np.ndarray:
        """Return the decayed interest of each timestamp column, in [0, 1]."""
        check_is_fitted(self)
        X, as_of = self._split(X)
        days = self._days(X, reset=False)
        ref = self.reference_days(len(days), as_of)
        age = np.clip(ref[:, None] - days, 0.0, None)
        return np.where(np.isnan(age), 0.0, 0.5 ** (age / self.half_life_days))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Return `<column>_decay` names."""
        names = getattr(self, "feature_names_in_", [f"x{i}" for i in range(self.n_features_in_)])
        return np.asarray([f"{n}_decay" for n in names], dtype=object)

    def __sklearn_tags__(self) -> Any:
        return _allow_nan_tags(super().__sklearn_tags__())


class RareCategoryGrouper(TransformerMixin, BaseEstimator):
    """Encode categories as codes 0..k-1 by frequency; rare and unseen values share the code k ("other").

    A value is kept when it occurs at least `min_count` times in fit (at most `max_categories` values).
    Missing values stay missing (NaN) so models can treat "unknown" on its own.
    """

    def __init__(self, min_count: int = 20, max_categories: int = 250) -> None:
        self.min_count = min_count
        self.max_categories = max_categories

    def fit(self, X: Any, y: Any = None) -> RareCategoryGrouper:
        """Learn, per column, the categories frequent enough to keep."""
        values = self._values(X, reset=True)
        self.categories_: list[np.ndarray] = []
        self.lookup_: list[dict[str, int]] = []
        for j in range(values.shape[1]):
            col = pd.Series(values[:, j], dtype=object).dropna()
            counts = col.astype(str).value_counts(sort=True)
            kept = counts[counts >= self.min_count].index[: self.max_categories]
            cats = np.asarray(sorted(kept, key=lambda c: (-counts[c], c)), dtype=object)
            self.categories_.append(cats)
            self.lookup_.append({c: i for i, c in enumerate(cats)})
        return self

    def _values(self, X: Any, *, reset: bool) -> np.ndarray:
        if isinstance(X, pd.DataFrame):
            if reset:
                self.feature_names_in_ = np.asarray(X.columns, dtype=object)
                self.n_features_in_ = X.shape[1]
            elif X.shape[1] != self.n_features_in_:
                raise ValueError(f"X has {X.shape[1]} features, but RareCategoryGrouper expects "
                                 f"{self.n_features_in_}")
            return X.astype(object).to_numpy()
        arr = np.asarray(validate_data(self, X, reset=reset, dtype=None, ensure_all_finite="allow-nan"))
        return arr.astype(object)

    def encode_column(self, j: int, values: Any) -> np.ndarray:
        """Return the codes of one column's values (missing -> NaN, rare or unseen -> "other")."""
        lookup = self.lookup_[j]
        other = float(len(lookup))
        if isinstance(values, pd.Categorical):
            mapped = np.asarray([lookup.get(str(c), other) for c in values.categories] + [np.nan], dtype=np.float64)
            return np.asarray(mapped[values.codes])
        if len(values) <= 64:
            # A few leads (an API request): plain dict look-ups beat building a Series.
            return np.asarray([np.nan if v is None or v is pd.NA or (isinstance(v, float) and v != v)
                               else lookup.get(v if isinstance(v, str) else str(v), other) for v in values],
                              dtype=np.float64)
        series = pd.Series(np.asarray(values, dtype=object), dtype=object)
        missing = series.isna().to_numpy(bool)
        codes = np.array(series.map(lookup).to_numpy(dtype=np.float64, na_value=np.nan))
        unmatched = np.flatnonzero(np.isnan(codes) & ~missing)
        for i in unmatched:
            # Non-text values (numbers used as categories) match by their text.
            codes[i] = lookup.get(str(series.iloc[i]), other)
        codes[missing] = np.nan
        return codes

    def transform(self, X: Any) -> np.ndarray:
        """Return category codes, one column per input column."""
        check_is_fitted(self)
        values = self._values(X, reset=False)
        if values.shape[1] == 0:
            return np.empty((len(values), 0))
        return np.column_stack([self.encode_column(j, values[:, j]) for j in range(values.shape[1])])

    def __sklearn_tags__(self) -> Any:
        tags = _allow_nan_tags(super().__sklearn_tags__())
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        return tags


class ActivityIndex(TransformerMixin, BaseEstimator):
    """Summarise activity counts in one index: the mean over columns of log(1 + count) / its mean in fit.

    index = (1/m) * sum_j log1p(max(x_j, 0)) / s_j, s_j = mean of log1p(max(x_j, 0)) in fit (1 if 0);
    a missing count counts as 0, so 1.0 means "as active as the average lead".
    """

    def fit(self, X: Any, y: Any = None) -> ActivityIndex:
        """Learn each column's average log-activity."""
        X = validate_data(self, X, reset=True, ensure_all_finite="allow-nan", dtype=np.float64)
        logs = np.log1p(np.clip(np.nan_to_num(X, nan=0.0), 0.0, None))
        scale = logs.mean(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Return the index, one column."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=np.float64)
        logs = np.log1p(np.clip(np.nan_to_num(X, nan=0.0), 0.0, None))
        return np.asarray((logs / self.scale_).mean(axis=1, keepdims=True))

    def __sklearn_tags__(self) -> Any:
        return _allow_nan_tags(super().__sklearn_tags__())


class LinearBasis(TransformerMixin, BaseEstimator):
    """Expand a feature matrix for a linear model: piecewise-linear splines, missing indicators, one-hot.

    Numeric column x: z = sign(x) log1p(|x|); basis [z, max(0, z - k_1), ..., max(0, z - k_q)] at quantile
    knots k, missing imputed by the median z plus an indicator when missing occurred in fit; every output
    standardised by its fit mean and standard deviation. Categorical columns (codes) become one-hot columns
    of the codes seen in fit (a missing or unseen code is all zeros). `fit_transform` returns the basis as
    `fit_dtype` (float32 halves training's widest matrix); `transform` always returns float64, so scoring
    is exact.
    """

    SCALING_BLOCK = 8_192  # rows per pass when measuring the scaling (a few float64 copies of one block)

    def __init__(self, categorical: tuple[int, ...] = (), n_knots: int = 4, fit_dtype: str = "float64") -> None:
        self.categorical = categorical
        self.n_knots = n_knots
        self.fit_dtype = fit_dtype

    def fit(self, X: Any, y: Any = None) -> LinearBasis:
        """Learn knots, medians, codes and scaling."""
        self._fit_raw(X)
        return self

    def _fit_raw(self, X: Any, dtype: Any = np.float64, rows: np.ndarray | None = None,
                 blocks: bool = False) -> Any:
        """Learn knots, medians, codes and scaling; return the unstandardised basis of X (or of its `rows`).

        With `blocks`, the basis is expanded a block of rows at a time to measure the scaling, and X returned.
        """
        X = validate_data(self, X, reset=True, ensure_all_finite="allow-nan", dtype=np.float64)
        cats = set(self.categorical)
        self.medians_ = np.zeros(X.shape[1])
        self.knots_: list[np.ndarray] = []
        self.has_missing_ = np.zeros(X.shape[1], dtype=bool)
        self.codes_: list[np.ndarray] = []
        if hasattr(self, "slices_"):
            del self.slices_
        for j in range(X.shape[1]):
            col = X[:, j] if rows is None else X[rows, j]
            finite = col[~np.isnan(col)]
            self.has_missing_[j] = finite.size < col.size
            if j in cats:
                self.codes_.append(np.unique(finite))
                self.knots_.append(np.empty(0))
                continue
            self.codes_.append(np.empty(0))
            z = np.sign(finite) * np.log1p(np.abs(finite))
            self.medians_[j] = float(np.median(z)) if z.size else 0.0
            if z.size and self.n_knots > 0:
                qs = np.quantile(z, np.linspace(0, 1, self.n_knots + 2)[1:-1])
                knots = np.unique(qs)
                knots = knots[(knots > z.min()) & (knots < z.max())]
            else:
                knots = np.empty(0)
            self.knots_.append(knots)
        self._set_slices(X.shape[1])
        if blocks:
            self._fit_scaling(X.shape[0], lambda start, stop: self._expand_block(X, start, stop, dtype))
            return X
        raw = self._expand(X, dtype, rows)
        self._fit_scaling(raw.shape[0], lambda start, stop: raw[start:stop])
        return raw

    def _fit_scaling(self, n_rows: int, block: Callable[[int, int], np.ndarray]) -> None:
        # Mean and standard deviation accumulated in float64 over row blocks: `raw.std` would hold a centred
        # copy of the widest matrix, and float32 sums over a million rows lose digits. `block(start, stop)`
        # returns those rows of the unstandardised basis, C-ordered.
        n = max(n_rows, 1)
        width = self.slices_[-1].stop if self.slices_ else 0
        total = np.zeros(width)
        for start in range(0, n_rows, self.SCALING_BLOCK):
            total += block(start, start + self.SCALING_BLOCK).sum(axis=0, dtype=np.float64)
        self.mean_ = total / n
        squares = np.zeros(width)
        for start in range(0, n_rows, self.SCALING_BLOCK):
            centred = block(start, start + self.SCALING_BLOCK).astype(np.float64) - self.mean_
            squares += np.einsum("ij,ij->j", centred, centred)
        std = np.sqrt(squares / n)
        self.scale_ = np.where(std > 1e-12, std, 1.0)

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        """Learn the basis and return it standardised as `fit_dtype`, expanding X once (the widest matrix)."""
        return self.fit_transform_rows(X, None)

    def fit_transform_rows(self, X: Any, rows: np.ndarray | None) -> np.ndarray:
        """Return `fit_transform(X[rows])` without a copy of those rows of X: each column is taken alone.

        Cross-validation fits a basis per fold; `X[train]` was a second model matrix in memory (a quarter
        of a GB at a million leads) while that fold's basis was built.
        """
        out = self._fit_raw(X, np.dtype(getattr(self, "fit_dtype", "float64")), rows)
        out -= self.mean_.astype(out.dtype)
        out /= self.scale_.astype(out.dtype)
        return out

    def fit_blocks(self, X: Any) -> BasisBlocks:
        """Learn as `fit_transform` does; return the standardised basis as blocks of rows built when read.

        The final fit of a million leads held the whole float32 basis (0.66 GB) beside the model matrix; a
        reader of these blocks holds one block, each the rows of `fit_transform(X)` bit for bit.
        """
        return BasisBlocks(self, self._fit_raw(X, np.dtype(getattr(self, "fit_dtype", "float64")), blocks=True))

    def _standardised_block(self, X: np.ndarray, start: int, stop: int) -> np.ndarray:
        out = self._expand_block(X, start, stop, np.dtype(getattr(self, "fit_dtype", "float64")))
        out -= self.mean_.astype(out.dtype)
        out /= self.scale_.astype(out.dtype)
        return out

    def expand_column(self, j: int, col: np.ndarray) -> np.ndarray:
        """Return the (unstandardised) basis columns of input column `j`."""
        out = np.empty((col.shape[0], self._width(j)))
        self._fill_column(j, col, out)
        return out

    def _fill_column(self, j: int, col: np.ndarray, out: np.ndarray) -> None:
        # Written into the caller's block in place: a category of a hundred codes as a float64 one-hot
        # temporary, then stacked, held two extra copies of its block of the widest matrix.
        missing = np.isnan(col)
        if j in set(self.categorical):
            codes = self.codes_[j]
            np.equal(col[:, None], codes[None, :], out=out[:, :codes.size], casting="unsafe")
            if self.has_missing_[j]:
                out[:, -1] = missing
            return
        z = np.sign(col) * np.log1p(np.abs(col))
        z = np.where(missing, self.medians_[j], z)
        out[:, 0] = z
        if self.knots_[j].size:
            out[:, 1:1 + self.knots_[j].size] = np.maximum(z[:, None] - self.knots_[j][None, :], 0.0)
        if self.has_missing_[j]:
            out[:, -1] = missing

    def column_slices(self) -> list[slice]:
        """Return, per input column, the slice of output columns it expands to."""
        check_is_fitted(self, "scale_")
        return list(self.slices_)

    def _width(self, j: int) -> int:
        if j in set(self.categorical):
            return self.codes_[j].size + int(self.has_missing_[j])
        return 1 + self.knots_[j].size + int(self.has_missing_[j])

    def _set_slices(self, n_columns: int) -> None:
        if not hasattr(self, "slices_"):
            edges = np.cumsum([0, *[self._width(j) for j in range(n_columns)]])
            self.slices_ = [slice(int(a), int(b)) for a, b in itertools.pairwise(edges)]

    def _expand_block(self, X: np.ndarray, start: int, stop: int, dtype: Any) -> np.ndarray:
        """Return rows start:stop of `_expand(X, dtype)`, the same values bit for bit, as a C-ordered block."""
        self._set_slices(X.shape[1])
        stop = min(stop, X.shape[0])
        out = np.empty((stop - start, self.slices_[-1].stop if self.slices_ else 0), dtype=dtype)
        for j, sl in enumerate(self.slices_):
            # Each value is computed from its own input value alone, so a block's rows are those of the whole.
            self._fill_column(j, X[start:stop, j], out[:, sl])
        return out

    def _expand(self, X: np.ndarray, dtype: Any = np.float64, rows: np.ndarray | None = None) -> np.ndarray:
        # One output array filled column block by column block: a million leads expand to hundreds of
        # columns, and stacking separate blocks would hold that matrix twice.
        self._set_slices(X.shape[1])
        width = self.slices_[-1].stop if self.slices_ else 0
        out = np.empty((X.shape[0] if rows is None else rows.size, width), dtype=dtype)
        for j, sl in enumerate(self.slices_):
            self._fill_column(j, X[:, j] if rows is None else X[rows, j], out[:, sl])
        return out

    def transform(self, X: Any) -> np.ndarray:
        """Return the standardised basis."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=np.float64)
        out = self._expand(np.asarray(X))
        out -= self.mean_  # in place: no second and third copy of the widest matrix
        out /= self.scale_
        return out

    def __sklearn_tags__(self) -> Any:
        return _allow_nan_tags(super().__sklearn_tags__())


class BasisBlocks:
    """The standardised basis of a matrix, read a block of rows at a time (`LinearBasis.fit_blocks`)."""

    def __init__(self, basis: LinearBasis, X: np.ndarray) -> None:
        self.basis = basis
        self.X = X
        self.shape = (X.shape[0], basis.slices_[-1].stop if basis.slices_ else 0)

    def block(self, start: int, stop: int) -> np.ndarray:
        """Return rows start:stop of the standardised basis, as `fit_transform` returns them."""
        return self.basis._standardised_block(self.X, start, stop)


Base = dict[str, np.ndarray]
_LARGEST = np.finfo(np.float64).max


@dataclass(frozen=True)
class Column:
    """One column of the model matrix: its name, the input fields it is computed from, and what else it needs."""

    name: str
    reads: tuple[str, ...]
    categorical: bool = False
    option: tuple[str, ...] = ()  # what the computation needs beyond the fields: a group, kinds, an operator


class Inputs:
    """One batch's encoded fields and fitted values, with the arrays several derived columns share made once."""

    __slots__ = ("_memo", "base", "fitted", "half_life")

    def __init__(self, base: Base, *, half_life: float, fitted: Mapping[str, np.ndarray]) -> None:
        self.base = base
        self.half_life = half_life
        self.fitted = fitted
        self._memo: dict[tuple[str, ...], np.ndarray] = {}

    def halving(self, stamp: str) -> np.ndarray:
        """Return 0.5 ** (days ago / half-life) of a timestamp field (NaN where never seen)."""
        key = ("halving", stamp)
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = 0.5 ** (self.base[stamp] / self.half_life)
        return found

    def index(self, group: str, members: tuple[str, ...]) -> np.ndarray:
        """Return a group's activity index: mean over its fields of log1p(count) / the field's fit mean."""
        key = ("index", group)
        found = self._memo.get(key)
        if found is None:
            counts = _columns([self.base[c] for c in members])
            # log1p(clip(nan_to_num(counts), 0, None)): missing -> 0 (fmax skips a NaN), +inf -> the largest
            # float, below 0 -> 0. The mean as sum / count, as np.mean computes it, without its Python layer.
            counts = np.minimum(np.fmax(counts, 0.0), _LARGEST)
            found = self._memo[key] = (np.log1p(counts) / self.fitted[group]).sum(axis=1) / len(members)
        return found


@dataclass(frozen=True)
class DerivedFeature:
    """A kind of model-matrix column, declared once: the columns a spec gives it and how each is computed.

    `columns(spec)` names the output columns and the fields each reads; `compute(column, inputs)` returns one
    float per lead; `learn(column, base)`, when set, returns values fitted on the training leads, by key, that
    `compute` finds in `inputs.fitted`. The layout, `derive`, the reasons (through the fields a column reads)
    and the model card all read `DERIVED`.
    """

    name: str
    description: str
    columns: Callable[[ModelSpec], list[Column]]
    compute: Callable[[Column, Inputs], np.ndarray]
    learn: Callable[[Column, Base], Mapping[str, np.ndarray]] | None = None


def _field_columns(spec: ModelSpec) -> list[Column]:
    return [Column(f.column, (f.column,), categorical=kind == "categorical")
            for kind in ("numeric", "boolean", "categorical") for f in spec.features if f.kind == kind]


def _stamp_columns(suffix: str) -> Callable[[ModelSpec], list[Column]]:
    def columns(spec: ModelSpec) -> list[Column]:
        return [Column(f"{f.column} ({suffix})", (f.column,)) for f in spec.features if f.kind == "timestamp"]
    return columns


def _decay(column: Column, inputs: Inputs) -> np.ndarray:
    stamp = column.reads[0]
    return np.where(np.isnan(inputs.base[stamp]), 0.0, inputs.halving(stamp))


def _index_groups(spec: ModelSpec) -> list[tuple[str, list[str]]]:
    groups = []
    for group in ("engagement", "behavioural"):
        cols = [f.column for f in spec.features if f.group == group and f.kind in ("numeric", "boolean")]
        if len(cols) >= 2:
            groups.append((group, cols))
    return groups


def _index_columns(spec: ModelSpec) -> list[Column]:
    out = []
    for group, members in _index_groups(spec):
        out.append(Column(f"{group} index", tuple(members), option=(group,)))
        stamps = [f.column for f in spec.features if f.group == group and f.kind == "timestamp"]
        if stamps:
            out.append(Column(f"{group} index, decayed", (*members, stamps[0]), option=(group, stamps[0])))
    return out


def _index(column: Column, inputs: Inputs) -> np.ndarray:
    group = column.option[0]
    if len(column.option) == 1:
        return inputs.index(group, column.reads)
    stamp = column.option[1]
    index = inputs.index(group, column.reads[:-1])
    return np.asarray(index * np.where(np.isnan(inputs.base[stamp]), 1.0, inputs.halving(stamp)))


def _learn_index(column: Column, base: Base) -> Mapping[str, np.ndarray]:
    if len(column.option) > 1:
        return {}  # the decayed index reuses its group's scale
    return {column.option[0]: ActivityIndex().fit(np.column_stack([base[c] for c in column.reads])).scale_}


def _bant_columns(spec: ModelSpec) -> list[Column]:
    fields = [f for f in spec.features if f.group == "bant"]
    if len(fields) < 2:
        return []
    return [Column("BANT completeness", tuple(f.column for f in fields), option=tuple(f.kind for f in fields))]


def _bant(column: Column, inputs: Inputs) -> np.ndarray:
    # (fields, leads) at once: a number or flag is known when positive, a category when present.
    values = np.array([inputs.base[c] for c in column.reads], dtype=np.float64, ndmin=2)
    counted = np.asarray([kind in ("numeric", "boolean") for kind in column.option])[:, None]
    known = np.where(np.isnan(values), 0.0, np.where(counted, values > 0, 1.0))
    return np.asarray(known.sum(axis=0) / len(column.reads))


def _spec_derived_columns(spec: ModelSpec) -> list[Column]:
    return [Column(r.name, (r.numerator, r.denominator), option=(getattr(r, "op", "ratio"),)) for r in spec.ratios]


def _spec_derived(column: Column, inputs: Inputs) -> np.ndarray:
    num, den = inputs.base[column.reads[0]], inputs.base[column.reads[1]]
    # Finite inputs can overflow (1e308 / 1e-167): that result is kept at the largest float, as a field of that
    # size is, since an inf from finite values made the linear part a nan (a 500). An infinite input stays inf.
    with np.errstate(over="ignore"):
        if column.option[0] == "difference":
            out = np.asarray(num - den)  # missing when either side is
        else:
            out = np.divide(num, den, out=np.full(num.shape, np.nan), where=den > 0)
    infinite = np.isinf(out)
    if not infinite.any():
        return out
    overflowed = infinite & np.isfinite(num) & np.isfinite(den)
    if overflowed.any():
        out = np.where(overflowed, np.copysign(np.finfo(np.float64).max, out), out)
    return out


# The model matrix, column kind by column kind, in this order. Adding a derived feature = one entry here.
DERIVED: tuple[DerivedFeature, ...] = (
    DerivedFeature("field", "each numeric, boolean (0/1) and categorical (code) field as it is",
                   _field_columns, lambda column, inputs: inputs.base[column.reads[0]]),
    DerivedFeature("days ago", "days from each timestamp to the reference time (missing if never)",
                   _stamp_columns("days ago"), lambda column, inputs: inputs.base[column.reads[0]]),
    DerivedFeature("recency decay", "0.5 ** (days ago / half-life) of each timestamp; never seen = 0",
                   _stamp_columns("decayed interest"), _decay),
    DerivedFeature("activity index", "per engagement/behavioural group of 2+ counts: mean of log(1 + count) / "
                   "its training mean, and again times the decay of the group's first timestamp",
                   _index_columns, _index, learn=_learn_index),
    DerivedFeature("BANT completeness", "the share of the 2+ BANT fields known and positive",
                   _bant_columns, _bant),
    DerivedFeature("spec-derived", "each `[[derived]]` field of the spec: numerator / denominator (missing when "
                   "the denominator is 0 or missing) or their difference", _spec_derived_columns, _spec_derived),
)


def matrix_columns(spec: ModelSpec) -> list[tuple[DerivedFeature, Column]]:
    """Return the featuriser's output columns, each with the declaration that computes it, fixed by the spec."""
    return [(d, column) for d in DERIVED for column in d.columns(spec)]


def feature_layout(spec: ModelSpec) -> list[tuple[str, bool]]:
    """Return the featuriser's output columns as (name, is_categorical), fixed by the spec alone."""
    return [(column.name, column.categorical) for _, column in matrix_columns(spec)]


def describe_columns(spec: ModelSpec) -> list[dict[str, Any]]:
    """Return the model matrix's columns as the model card lists them: name, derived feature, fields read."""
    return [{"name": column.name, "feature": d.name, "reads": list(column.reads)}
            for d, column in matrix_columns(spec)]


@dataclass(frozen=True)
class _Layout:
    """What `LeadFeatures.derive` computes, worked out once from the spec (see `matrix_columns`)."""

    spec: ModelSpec
    plan: tuple[tuple[Callable[[Column, Inputs], np.ndarray], Column], ...]

    @classmethod
    def of(cls, spec: ModelSpec) -> _Layout:
        return cls(spec, tuple((d.compute, column) for d, column in matrix_columns(spec)))


_LAYOUTS: weakref.WeakKeyDictionary[Any, _Layout] = weakref.WeakKeyDictionary()


def _layout_of(features: Any) -> _Layout:
    """Return the derive layout of a LeadFeatures, kept beside it (not in it, so never pickled with it)."""
    layout = _LAYOUTS.get(features)
    if layout is None or layout.spec is not features.spec:
        layout = _Layout.of(features.spec)
        _LAYOUTS[features] = layout
    return layout


def _columns(parts: list[np.ndarray]) -> np.ndarray:
    """Return the 1-d arrays as the columns of a C-ordered matrix (what np.column_stack returns, faster)."""
    n = parts[0].shape[0]
    if n <= 32:
        return np.ascontiguousarray(np.array(parts).T)
    out = np.empty((n, len(parts)), dtype=np.result_type(*parts))
    for k, part in enumerate(parts):
        out[:, k] = part
    return out


class LeadFeatures(TransformerMixin, BaseEstimator):
    """Turn a spec-typed lead frame into the model matrix (layout: `feature_layout(spec)`).

    Each input field is first encoded to one float per lead (numbers; booleans 0/1; categories as codes
    from a RareCategoryGrouper; timestamps as days before the reference time), then the columns declared
    in `DERIVED` are computed from those: recency decay, engagement and behaviour indexes, BANT
    completeness, the spec's derived fields. `index_scales_` holds what those declarations learned in fit
    (today only the activity indexes' scales, hence the name, kept so models pickled before still load).
    Missing optional columns are all-missing; extra columns are ignored. `neutral_` holds each field's
    typical encoded value (median, or most frequent category), the baseline that reasons compare to.
    Fields entirely empty in fit (`absent_fields_`) are read as empty afterwards as well.
    """

    def __init__(self, spec: ModelSpec, half_life_days: float | None = None) -> None:
        self.spec = spec
        self.half_life_days = half_life_days

    def _half_life(self) -> float:
        return float(self.half_life_days or self.spec.recency_half_life_days)

    @staticmethod
    def columns_of(X: pd.DataFrame | Mapping[str, Any]) -> Mapping[str, Any]:
        """Return a name -> values mapping of a frame or a dict of columns."""
        if isinstance(X, pd.DataFrame):
            return {c: X[c].array if isinstance(X[c].dtype, pd.CategoricalDtype) else X[c].to_numpy()
                    for c in X.columns}
        return X

    def fit(self, X: pd.DataFrame, y: Any = None) -> LeadFeatures:
        """Learn category codes, the reference time, index scales and each field's neutral value."""
        self._fit_base(X)
        return self

    def fit_transform(self, X: pd.DataFrame, y: Any = None, **fit_params: Any) -> np.ndarray:
        """Learn as `fit` does and return the model matrix, encoding the fields once."""
        # `fit(X).transform(X)` encoded every field twice: twice the time, and a second set of encoded
        # columns (a float64 array per field) in memory while the matrix was built.
        return self.derive(self._fit_base(X))

    def _fit_base(self, X: pd.DataFrame) -> Base:
        """Learn what `fit` learns; return the encoded fields, as `encode` returns them after fit."""
        cols = self.columns_of(X)
        n = len(next(iter(cols.values()))) if cols else 0
        spec = self.spec
        cat_fields = [f.column for f in spec.features if f.kind == "categorical"]
        self.grouper_ = RareCategoryGrouper(min_count=spec.rare_min_count).fit(
            pd.DataFrame({c: _get(cols, c, n, object) for c in cat_fields}))
        stamps = [f.column for f in spec.features if f.kind == "timestamp"]
        self.recency_ = RecencyDecay(half_life_days=self._half_life()).fit(
            pd.DataFrame({c: to_days(_get(cols, c, n, "time")) for c in stamps}))
        self.index_scales_: dict[str, np.ndarray] = {}
        self.absent_fields_: tuple[str, ...] = ()
        base = self.encode(cols)
        # A field never filled in during fit is ignored later too, so derived features mean the same thing.
        self.absent_fields_ = tuple(f.column for f in spec.features if np.isnan(base[f.column]).all())
        for d, column in matrix_columns(spec):
            if d.learn is not None:
                self.index_scales_.update(d.learn(column, base))
        self.neutral_: dict[str, float] = {}
        for f in spec.features:
            values = base[f.column]
            finite = values[~np.isnan(values)]
            if not finite.size:
                self.neutral_[f.column] = np.nan
            elif f.kind in ("categorical", "boolean"):
                uniq, counts = np.unique(finite, return_counts=True)
                self.neutral_[f.column] = float(uniq[np.argmax(counts)])
            else:
                self.neutral_[f.column] = float(np.median(finite))
        self.layout_ = feature_layout(spec)
        self.n_features_out_ = len(self.layout_)
        for name in self.absent_fields_:
            base[name] = np.full(n, np.nan)  # as `encode` fills them now that they are known (already all NaN)
        return base

    def encode(self, X: pd.DataFrame | Mapping[str, Any]) -> Base:
        """Encode each input field to floats: numbers, 0/1, category codes, days before the reference."""
        cols = self.columns_of(X)
        n = len(next(iter(cols.values()))) if cols else 0
        spec = self.spec
        out: Base = {}
        cat_index = 0
        as_of = cols.get("as_of")
        ref = self.recency_.reference_days(n, None if as_of is None else to_days(as_of))
        for f in spec.features:
            if f.kind == "categorical":
                raw = cols.get(f.column)
                values = raw if isinstance(raw, pd.Categorical) else _get(cols, f.column, n, object)
                out[f.column] = self.grouper_.encode_column(cat_index, values)
                cat_index += 1
            elif f.kind == "timestamp":
                days = to_days(_get(cols, f.column, n, "time"))
                out[f.column] = np.maximum(ref - days, 0.0)  # np.clip(x, 0, None), without its Python layer
            else:
                out[f.column] = np.asarray(_get(cols, f.column, n, np.float64), dtype=np.float64)
        for name in getattr(self, "absent_fields_", ()):
            out[name] = np.full(n, np.nan)
        return out

    def derive(self, base: Base) -> np.ndarray:
        """Build the model matrix from encoded fields, one column per declared column (see `DERIVED`)."""
        inputs = Inputs(base, half_life=self._half_life(), fitted=self.index_scales_)
        parts = [compute(column, inputs) for compute, column in _layout_of(self).plan]
        n = len(next(iter(base.values()))) if base else 0
        return _columns(parts) if parts else np.empty((n, 0))

    def derive_columns(self, base: Base, columns: Sequence[int]) -> np.ndarray:
        """Build only the listed model-matrix columns, one row per column: (len(columns), leads).

        `base` needs only the fields those columns read; each value is the one `derive` computes.
        """
        inputs = Inputs(base, half_life=self._half_life(), fitted=self.index_scales_)
        plan = _layout_of(self).plan
        return np.array([plan[k][0](plan[k][1], inputs) for k in columns], dtype=np.float64, ndmin=2)

    def transform(self, X: pd.DataFrame | Mapping[str, Any]) -> np.ndarray:
        """Return the model matrix."""
        check_is_fitted(self, "layout_")
        return self.derive(self.encode(X))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Return the output column names."""
        return np.asarray([name for name, _ in feature_layout(self.spec)], dtype=object)

    def column_fields(self) -> list[frozenset[str]]:
        """Return, per output column, the input fields it is computed from (same order as the layout)."""
        return [frozenset(column.reads) for _, column in matrix_columns(self.spec)]


def _get(cols: Mapping[str, Any], name: str, n: int, dtype: Any) -> np.ndarray:
    if name in cols:
        raw = cols[name]
        if dtype is object:
            return np.asarray(raw, dtype=object)
        values = np.asarray(raw)
        if dtype == "time":
            return values
        if values.dtype.kind == "M":
            return values
        if values.dtype == object:
            return np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=np.float64)
        return values.astype(np.float64)
    return np.full(n, None if dtype is object else np.nan, dtype=object if dtype is object else np.float64)
