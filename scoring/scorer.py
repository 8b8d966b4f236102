"""Scores for leads: probability, 0-100 score, grade A-D, plain-words reasons, and which model scored them.

`ModelScorer` serves a trained model (via the compiled numpy path); `RulesScorer` serves the cold-start
points model with the same output shape. Load either with `load_scorer`.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from crmdata.errors import DataValidationError, Problem
from crmdata.values import shown
from scoring.artifacts import ModelSource, TrainedModel, resolve_trained
from scoring.compiled import compile_pipeline
from scoring.features import LeadFeatures
from scoring.rules import RulesModel
from scoring.spec import FeatureSpec, ModelSpec, load_spec, prepare, prepare_records

TOP_REASONS = 5
FAST_RECORDS = 64
FEW_LEADS = 4  # up to this many leads have their reasons ranked in plain Python (see `_top_reasons_few`)
TEXT_CACHE = 20_000  # words for values seen often (categories, small counts); numbers are re-described
REASON_CACHE = 20_000  # reasons (field, words, points) seen often, shared as immutable objects
# Only short values and words are cached, so each cache stays under entries x a few hundred bytes (about 10 MB)
# whatever the values: a caller sending unique 8 MB categories must not grow the caches by 8 MB each.
CACHEABLE_CHARS = 256
REASONS_COLUMN = "reasons"  # score_frame(structured=True): each lead's Reason list, as LeadScore.reasons holds it


Trend = Literal["new", "improving", "steady", "declining"]


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason behind a score, in plain words, with its signed contribution in score points."""

    feature: str
    text: str
    contribution: float  # whole score points (an int), at least 1 away from 0

    def __str__(self) -> str:
        return f"{self.text}: {round(self.contribution):+d}"


# The one result type of scoring one lead: the library returns it and the API answers it (its OpenAPI schema is
# generated from these annotations). A plain dataclass, not a pydantic model, so the hot path pays no validation.
@dataclass(slots=True)
class LeadScore:
    """The score of one lead."""

    id: str | None
    probability: Annotated[float, Field(ge=0, le=1, description="Calibrated probability of converting.")]
    score: Annotated[int, Field(ge=0, le=100, description="The probability x 100, rounded.")]
    grade: str
    reasons: list[Reason] | None = None  # positive ones first, each side best first; None when not asked for
    warnings: Annotated[list[str] | None, Field(
        description="Present when something about this lead was not as in training, e.g. a category training "
                    "never saw (scored as 'other').")] = None
    trend: Annotated[Trend | None, Field(
        description="Against the lead's previous score already in the prediction log: improving (more than "
                    "trend_band_points higher, default 3), declining (more than that lower), steady (within), new "
                    "(no score stored yet). Null for leads without an id or when the log is off or unreachable."
    )] = None
    percentile: Annotated[float | None, Field(
        ge=0, le=100,
        description="Rank among the leads the same model version scored in the last 30 days (each lead's latest "
                    "score): the share scoring lower plus half of those scoring the same, in percent, one "
                    "decimal. Null when that model version has scored no lead in the window yet.")] = None

    @property
    def positive(self) -> list[Reason]:
        """Return the reasons that raise the score, best first."""
        return [r for r in self.reasons or () if r.contribution > 0]

    @property
    def negative(self) -> list[Reason]:
        """Return the reasons that lower the score, worst first."""
        return [r for r in self.reasons or () if r.contribution < 0]

    def as_json(self) -> dict[str, Any]:
        """Return the score as the API answers it: reasons only when asked for, warnings only when any;
        trend and percentile always (null unless the caller keeps a score history, as the service does)."""
        out: dict[str, Any] = {"id": self.id, "probability": self.probability, "score": self.score,
                               "grade": self.grade}
        if self.reasons is not None:
            out["reasons"] = [{"feature": r.feature, "text": r.text, "contribution": r.contribution}
                              for r in self.reasons]
        if self.warnings:
            out["warnings"] = self.warnings
        out["trend"] = self.trend
        out["percentile"] = self.percentile
        return out


def format_number(value: float) -> str:
    """Write a number for people: whole numbers without decimals, others with up to 3 significant digits."""
    if abs(value - round(value)) < 1e-9:
        return f"{round(value):,d}"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def describe(f: FeatureSpec, value: Any) -> str:
    """Return the plain words for a field's value (a typed value: float, 0/1, category text or days ago)."""
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    if missing:
        if f.reason_missing:
            return f.reason_missing.format(label=f.label)
        return f"{f.label}: never" if f.kind == "timestamp" else f"{f.label}: unknown"
    if f.kind == "boolean":
        truthy = bool(value)
        chosen = f.reason_true if truthy else f.reason_false
        if chosen:
            return chosen.format(label=f.label)
        return f"{f.label}: {'yes' if truthy else 'no'}"
    if f.kind == "timestamp":
        days = round(float(value))
        template = f.reason or "{label}: {days} days ago"
        return template.format(label=f.label, days=days, value=days)
    shown = format_number(float(value)) if f.kind == "numeric" else str(value)
    return (f.reason or "{label}: {value}").format(label=f.label, value=shown)


# words(j, rows) -> (distinct words, each lead's index into them) for field j's value of those leads: the words
# are made once per distinct value, and Arrow assembles the reason strings from them without a Python string
# per lead.
Words = Callable[[int, np.ndarray], tuple[np.ndarray, np.ndarray]]


def lead_words(words: Words, j: int, rows: np.ndarray) -> np.ndarray:
    """Return field j's words for each of the leads `rows` (an object array)."""
    distinct, index = words(j, rows)
    return np.asarray(distinct[index])


class Scorer(Protocol):
    """What both the trained-model scorer and the cold-start scorer offer."""

    spec: ModelSpec
    kind: str
    version: str

    def score_frame(self, features: pd.DataFrame, ids: pd.Series, *, reasons: bool = True,
                    top: int = TOP_REASONS, structured: bool = False) -> pd.DataFrame:
        """Score spec-typed features; return id, probability, score, grade, reasons, model kind and version
        (with `structured`, also each lead's Reason list in REASONS_COLUMN)."""
        ...

    def score_records(self, records: Iterable[Mapping[str, Any]], *, reasons: bool = True,
                      top: int = TOP_REASONS) -> list[LeadScore]:
        """Validate and score JSON-like records (as the API receives them)."""
        ...


def _top_reasons(contrib: np.ndarray, texts: np.ndarray | Words, fields: list[FeatureSpec], top: int,
                 cache: dict[tuple[int, Any, int], Reason] | None = None, *,
                 word: Callable[[int, int], Any] | None = None) -> tuple[list[list[Reason]], list[list[Reason]]]:
    """Pick each lead's `top` positive and negative contributions (at least 1 point) and word them.

    `texts` is an (n, fields) array of words, or `words(j, rows)` (asked only for the reasons shown). With
    a `cache`, equal reasons (same field, words and points) share one immutable Reason object. `word(i, j)`,
    lead i's words for field j, is what a few leads are worded with (default: read from `texts`).
    """
    if contrib.shape[0] <= FEW_LEADS:
        return _top_reasons_few(contrib, word or _word_of(texts), fields, top, cache)
    points = np.rint(contrib * 100).astype(np.int64)
    k = min(top, contrib.shape[1])
    leads, cols, pts, counts = [], [], [], []
    for sign in (1, -1):
        # A stable order, so that ties keep field order; points grow with the contribution, so the reasons
        # of at least one point are the first ones of the order.
        order = np.argsort(-sign * contrib, axis=1, kind="stable")[:, :k]
        ranked = np.take_along_axis(points, order, axis=1)
        keep = sign * ranked >= 1
        ii, rr = np.nonzero(keep)  # lead by lead, best first
        leads.append(ii)
        cols.append(order[ii, rr])
        pts.append(ranked[ii, rr])
        counts.append(keep.sum(axis=1))
    ii, jj = np.concatenate(leads), np.concatenate(cols)
    words = np.empty(ii.size, dtype=object)
    if callable(texts):
        for j in np.unique(jj).tolist():
            at = np.flatnonzero(jj == j)
            words[at] = lead_words(texts, j, ii[at])
    else:
        words[:] = texts[ii, jj]
    made = _make_reasons(jj.tolist(), words.tolist(), np.concatenate(pts).tolist(), fields, cache)
    out: list[list[list[Reason]]] = []
    start = 0
    for count in counts:  # positives, then negatives: each lead's reasons are consecutive in `made`
        ends = (start + np.cumsum(count)).tolist()
        out.append([made[a:b] for a, b in zip([start, *ends[:-1]], ends, strict=True)])
        start = ends[-1] if ends else start
    return out[0], out[1]


def _word_of(texts: np.ndarray | Words) -> Callable[[int, int], Any]:
    """Return word(i, j), lead i's words for field j, from an (n, fields) array or `words(j, rows)`."""
    if callable(texts):
        return lambda i, j: lead_words(texts, j, np.asarray([i]))[0]
    return lambda i, j: texts[i, j]


def _top_reasons_few(contrib: np.ndarray, word: Callable[[int, int], Any], fields: list[FeatureSpec], top: int,
                     cache: dict[tuple[int, Any, int], Reason] | None,
                     ) -> tuple[list[list[Reason]], list[list[Reason]]]:
    """`_top_reasons` for a few leads in plain Python: the same reasons, in the same order.

    A request of one lead spends more time in numpy's per-call overhead (argsort, take_along_axis, nonzero on
    a 1 x fields array) than in the work itself. Python's sort is stable as the stable argsort is, and
    round() rounds half to even as np.rint does. `word(i, j)` gives lead i's words for field j.
    """
    k = min(top, contrib.shape[1])
    out: tuple[list[list[Reason]], list[list[Reason]]] = ([], [])
    for i, row in enumerate(contrib.tolist()):
        for sign, into in ((1, out[0]), (-1, out[1])):
            order = sorted(range(len(row)), key=lambda j: -sign * row[j])[:k]
            chosen = []
            for j in order:
                pts = round(row[j] * 100)
                if sign * pts < 1:
                    break  # points follow the contribution's order: no later field has a point either
                chosen.append((j, pts))
            if not chosen:
                into.append([])
                continue
            jj = [j for j, _ in chosen]
            words = [word(i, j) for j in jj]
            into.append(_make_reasons(jj, words, [p for _, p in chosen], fields, cache))
    return out


def _make_reasons(jj: list[int], words: list[Any], pts: list[int], fields: list[FeatureSpec],
                  cache: dict[tuple[int, Any, int], Reason] | None) -> list[Reason]:
    if cache is None:
        return [Reason(fields[j].column, str(w), p) for j, w, p in zip(jj, words, pts, strict=True)]

    def new(key: tuple[int, Any, int]) -> Reason:
        j, w, p = key
        reason = Reason(fields[j].column, str(w), p)
        if len(cache) < REASON_CACHE and len(reason.text) <= CACHEABLE_CHARS:
            cache[key] = reason
        return reason

    known = cache.get
    return [known(key) or new(key) for key in zip(jj, words, pts, strict=True)]


POINT_TEXT = pa.array([f": {v:+d}" for v in range(-100, 101)], type=pa.string())
POINT_TEXT_SIZE = len(POINT_TEXT)


def _reason_strings(contrib: np.ndarray, words: Words, top: int) -> tuple[pd.api.extensions.ExtensionArray,
                                                                          pd.api.extensions.ExtensionArray]:
    """Return, per lead, its top positive and negative reasons as "words: +n; words: +m" strings.

    `words(j, rows)` returns the words for field j's value of the given leads; it is asked only for the
    reasons shown. Each distinct piece ("words: +n") is built once, and each lead's "; "-joined list is
    assembled by Arrow's string kernels in one pass over all leads: a Python string operation per lead and
    rank cost about 10 us a lead, a piece built per reason 1.7 us.
    """
    n = contrib.shape[0]
    points = np.clip(np.rint(contrib * 100), -100, 100).astype(np.int64)
    k = min(top, contrib.shape[1])
    out = []
    for sign in (1, -1):
        order = np.argsort(-sign * contrib, axis=1, kind="stable")[:, :k]
        pts = np.take_along_axis(points, order, axis=1)
        keep = sign * pts >= 1
        ii, rr = np.nonzero(keep)  # lead by lead, best first
        jj = order[ii, rr]
        # Each field's distinct words once, end to end in one Arrow array (the reasons grouped by field with
        # one stable sort, not a scan of all of them per field).
        distinct, index, size = [], np.empty(ii.size, dtype=np.int64), 0
        by_field = np.argsort(jj, kind="stable")
        fields_shown, starts = np.unique(jj[by_field], return_index=True)
        bounds = [*starts.tolist(), ii.size]
        for j, a, b in zip(fields_shown.tolist(), bounds[:-1], bounds[1:], strict=True):
            at = by_field[a:b]
            table, codes = words(j, ii[at])
            index[at] = codes + size
            distinct.append(table)
            size += len(table)
        dictionary = pa.array(np.concatenate(distinct) if distinct else [], type=pa.string())
        # Each distinct (words, points) piece once; every reason takes its own.
        piece_codes, piece_keys = pd.factorize(index * POINT_TEXT_SIZE + (pts[ii, rr] + 100))
        piece_keys = np.asarray(piece_keys, dtype=np.int64)
        table = pc.binary_join_element_wise(dictionary.take(pa.array(piece_keys // POINT_TEXT_SIZE)),
                                            POINT_TEXT.take(pa.array(piece_keys % POINT_TEXT_SIZE)), "")
        pieces = table.take(pa.array(piece_codes))
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(keep.sum(axis=1), out=offsets[1:])
        joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), pieces), "; ")
        out.append(pd.array(joined, dtype="str"))
    return out[0], out[1]


def kept_categories(features: LeadFeatures) -> dict[str, list[str]]:
    """Return, per categorical field, the categories the model keeps (seen at least `rare_min_count` times).

    The one definition of an unseen category, for scoring and model health alike: a present value outside
    these, new or too rare in training, which the model scores as "other" (`unseen_mask`).
    """
    cats = [f.column for f in features.spec.features if f.kind == "categorical"]
    return {c: list(features.grouper_.lookup_[j]) for j, c in enumerate(cats)}


def unseen_mask(values: pd.Series, kept: Collection[str]) -> np.ndarray:
    """Return, per value, whether it is an unseen category: present, and its text not among `kept`.

    The grouper encodes a value by its text the same way, so this marks exactly the values coded "other".
    """
    text = values.astype("string")
    return np.asarray(text.notna() & ~text.isin(list(kept)), dtype=bool)


def unseen_categories(features: LeadFeatures, base: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return, per categorical field with any, the positions of leads whose value training did not keep.

    Such a value (new, or too rare in training) is scored as "other"; the caller says so to the user. Read off
    the codes already computed for scoring: the "other" code is the code of every value `unseen_mask` marks
    for `kept_categories` (the grouper's own lookup).
    """
    out: dict[str, np.ndarray] = {}
    cats = [f.column for f in features.spec.features if f.kind == "categorical"]
    for j, column in enumerate(cats):
        if column in features.absent_fields_ or column not in base:
            continue
        codes, other = base[column], len(features.grouper_.lookup_[j])
        if codes.size == 1:  # one lead (an API request): a float comparison, not a numpy call
            if float(codes[0]) == other:
                out[column] = np.zeros(1, dtype=np.int64)
            continue
        rows = np.flatnonzero(codes == other)
        if rows.size:
            out[column] = rows
    return out


def unseen_warning(label: str, value: Any) -> str:
    """Return the warning of one lead's category that training did not keep."""
    return f"{label}: '{shown(value)}' was not seen in training (or too rarely); scored as 'other'"


def _frame_out(ids: pd.Series, id_column: str, p: np.ndarray, score: np.ndarray, grade: np.ndarray,
               pos: pd.api.extensions.ExtensionArray | None, neg: pd.api.extensions.ExtensionArray | None,
               kind: str, version: str, structured: list[list[Reason]] | None = None) -> pd.DataFrame:
    out = pd.DataFrame({id_column: ids.to_numpy(), "probability": np.round(p, 6), "score": score,
                        "grade": grade})
    if pos is not None and neg is not None:
        out["reasons_positive"] = pos
        out["reasons_negative"] = neg
    out["model_kind"] = kind
    out["model_version"] = version
    if structured is not None:
        out[REASONS_COLUMN] = pd.Series(structured, index=out.index, dtype=object)
    return out


def _reason_lists(contrib: np.ndarray, texts: np.ndarray | Words, fields: list[FeatureSpec], top: int,
                  cache: dict[tuple[int, Any, int], Reason] | None = None) -> list[list[Reason]]:
    """Return each lead's reasons as `score_records` gives them: positives best first, then negatives."""
    pos, neg = _top_reasons(contrib, texts, fields, top, cache)
    return [p + n for p, n in zip(pos, neg, strict=True)]


def records_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Turn JSON-like records into a raw frame (values kept as given)."""
    rows = list(records)
    if not rows:
        raise DataValidationError([Problem("records", "-", "no lead to score", code="empty")], source="records")
    return pd.DataFrame.from_records(rows)


class ModelScorer:
    """Score with a trained model: calibrated probability, reasons by neutral-value comparison."""

    kind = "model"

    def __init__(self, trained: TrainedModel) -> None:
        self.trained = trained
        self.spec = trained.spec
        self.version = trained.version
        self.compiled = compile_pipeline(trained.pipeline)
        self.fields = list(self.spec.features)
        self._text_cache: dict[tuple[int, Any], str] = {}
        self._reason_cache: dict[tuple[int, Any, int], Reason] = {}

    def _words(self, base: Mapping[str, np.ndarray], features: pd.DataFrame) -> Words:
        """Return words(j, rows): the words for field j's value of those leads, described once per value."""
        fields = self.fields

        def words(j: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            f = fields[j]
            if f.kind == "categorical":
                codes, uniques = pd.factorize(features[f.column].iloc[rows], use_na_sentinel=True)
                table = np.asarray([self._describe(j, f, u) for u in uniques] + [self._describe(j, f, None)],
                                   dtype=object)
                return table, np.where(codes < 0, len(uniques), codes)  # a missing value: the last words
            values = np.asarray(base[f.column][rows], dtype=np.float64)
            if f.kind == "timestamp":
                values = np.rint(values)
            uniq, inverse = np.unique(values, return_inverse=True)
            table = np.asarray([self._describe(j, f, None if u != u else u) for u in uniq.tolist()], dtype=object)
            return table, inverse.ravel()

        return words

    def _describe(self, j: int, f: FeatureSpec, value: Any) -> str:
        key = (j, value)
        found = self._text_cache.get(key)
        if found is None:
            found = describe(f, value)
            short = len(found) <= CACHEABLE_CHARS and not (isinstance(value, str) and len(value) > CACHEABLE_CHARS)
            if len(self._text_cache) < TEXT_CACHE and short:
                self._text_cache[key] = found
        return found

    def _score(self, features: pd.DataFrame, reasons: bool) -> tuple[np.ndarray, np.ndarray | None, Any]:
        base = self.compiled.features.encode(features)
        if not reasons:
            return self.compiled.proba(base), None, None
        p, contrib = self.compiled.proba_and_contributions(base)
        return p, contrib, base

    def score_frame(self, features: pd.DataFrame, ids: pd.Series, *, reasons: bool = True,
                    top: int = TOP_REASONS, structured: bool = False) -> pd.DataFrame:
        """Score spec-typed features; return id, probability, score, grade, reasons, model kind and version
        (with `structured`, also each lead's Reason list in REASONS_COLUMN, e.g. for the prediction log)."""
        p, contrib, base = self._score(features, reasons)
        pos = neg = kept = None
        if contrib is not None:
            words = self._words(base, features)
            pos, neg = _reason_strings(contrib, words, top)
            if structured:  # the same ranking as the strings; built only when asked, since it costs objects
                kept = _reason_lists(contrib, words, self.fields, top, self._reason_cache)
        score = np.clip(np.rint(p * 100), 0, 100).astype(np.int64)
        return _frame_out(ids, self.spec.id_label, p, score, self.spec.grades.grade(p), pos, neg, self.kind,
                          self.version, kept)

    def score_records(self, records: Iterable[Mapping[str, Any]], *, reasons: bool = True,
                      top: int = TOP_REASONS) -> list[LeadScore]:
        """Validate and score JSON-like records (as the API receives them).

        Up to FAST_RECORDS records take the compiled path (no pandas: well under a millisecond per lead);
        more go through the same frame path as batch files. Both validate by the same rules.
        """
        rows = list(records)
        if not rows:
            raise DataValidationError([Problem("records", "-", "no lead to score", code="empty")], source="records")
        if len(rows) > FAST_RECORDS:
            prepared = prepare(records_frame(rows), spec=self.spec, table="records")
            base = self.compiled.features.encode(prepared.features)
            p, contrib = self._score_base(base, reasons)
            pos, neg = (_top_reasons(contrib, self._words(base, prepared.features), self.fields, top,
                                     self._reason_cache) if contrib is not None else (None, None))
            scored = _lead_scores(prepared.ids.tolist(), p, pos, neg, self.spec)
            return self._warn_unseen(scored, base, prepared.features)
        columns, ids = prepare_records(rows, spec=self.spec)
        base = self.compiled.features.encode(columns)
        pos = neg = None
        if not reasons:
            p = self.compiled.proba(base)
        else:
            p, contrib = self.compiled.proba_and_contributions(base)
            pos, neg = _top_reasons(contrib, self._record_words(base, columns), self.fields, top, self._reason_cache,
                                    word=self._record_word(base, columns))
        return self._warn_unseen(_lead_scores(ids, p, pos, neg, self.spec), base, columns)

    def _score_base(self, base: dict[str, np.ndarray], reasons: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if not reasons:
            return self.compiled.proba(base), None
        return self.compiled.proba_and_contributions(base)

    def _warn_unseen(self, scored: list[LeadScore], base: Mapping[str, np.ndarray],
                     columns: pd.DataFrame | Mapping[str, Any]) -> list[LeadScore]:
        """Add a warning to each lead with a category training did not keep."""
        for column, rows in unseen_categories(self.compiled.features, base).items():
            label = self.spec.feature(column).label
            values = columns[column]
            for i in rows.tolist():
                value = values.iloc[i] if isinstance(values, pd.Series) else values[i]
                scored[i].warnings = [*(scored[i].warnings or ()), unseen_warning(label, value)]
        return scored

    def unseen_counts(self, features: pd.DataFrame) -> dict[str, int]:
        """Return how many leads of a spec-typed frame had each (field label, value) training did not keep."""
        lf = self.compiled.features
        cats = [f.column for f in self.spec.features if f.kind == "categorical"]
        # Only the category codes are needed: encode those columns alone (a fraction of scoring's cost).
        base = {c: lf.grouper_.encode_column(j, features[c].array if isinstance(features[c].dtype, pd.CategoricalDtype)
                                             else features[c].to_numpy(dtype=object))
                for j, c in enumerate(cats) if c in features.columns}
        counts: dict[str, int] = {}
        for column, rows in unseen_categories(lf, base).items():
            label = self.spec.feature(column).label
            for value, n in features[column].iloc[rows].astype(str).value_counts().items():
                key = f"{label} '{shown(value)}'"
                counts[key] = counts.get(key, 0) + int(n)
        return counts

    def _record_word(self, base: Mapping[str, np.ndarray], columns: Mapping[str, np.ndarray],
                     ) -> Callable[[int, int], str]:
        """Return word(i, j): record i's words for field j, for records typed by `prepare_records`."""
        fields = self.fields

        def word(i: int, j: int) -> str:
            f = fields[j]
            if f.kind == "categorical":
                value: Any = columns[f.column][i]  # as given, stripped
            else:
                raw = float(base[f.column][i])
                value = None if math.isnan(raw) else (float(round(raw)) if f.kind == "timestamp" else raw)
            return self._describe(j, f, value)

        return word

    def _record_words(self, base: Mapping[str, np.ndarray], columns: Mapping[str, np.ndarray]) -> Words:
        """Return words(j, rows) for records typed by `prepare_records` (categories as given, stripped)."""
        word = self._record_word(base, columns)

        def words(j: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            out = np.empty(rows.size, dtype=object)
            for k, i in enumerate(rows.tolist()):
                out[k] = word(i, j)
            return out, np.arange(rows.size)

        return words


def _lead_scores(ids: pd.Series | list[str], p: np.ndarray, pos: list[list[Reason]] | None,
                 neg: list[list[Reason]] | None, spec: ModelSpec) -> list[LeadScore]:
    id_list = ids.tolist() if isinstance(ids, pd.Series) else ids
    probabilities = np.asarray(p, dtype=np.float64).tolist()
    if len(probabilities) <= FEW_LEADS and all(0.0 <= v <= 1.0 for v in probabilities):
        # A request of a lead or a few: round() halves to even as np.rint does, and p * 100 needs no clip.
        scores = [round(v * 100) for v in probabilities]
        grades = [spec.grades.letter(v) for v in probabilities]
    else:
        scores = np.clip(np.rint(p * 100), 0, 100).astype(np.int64).tolist()
        grades = spec.grades.grade(p).tolist()
    if pos is None or neg is None:
        return [LeadScore(id=str(id_list[i]), probability=probabilities[i], score=scores[i], grade=grades[i])
                for i in range(len(probabilities))]
    return [LeadScore(id=str(id_list[i]), probability=probabilities[i], score=scores[i], grade=grades[i],
                      reasons=pos[i] + neg[i]) for i in range(len(probabilities))]


class RulesScorer:
    """Score with the cold-start points model; the same output shape, `model_kind = "rules"`."""

    kind = "rules"

    def __init__(self, rules: RulesModel, spec: ModelSpec, *, reference_time: Any = None) -> None:
        # A rule on a field the spec does not read would score every lead as lacking it and say so in a reason.
        self.rules = rules.for_columns(spec.feature_columns)
        self.spec = spec
        self.version = f"rules:{rules.name}"
        self.reference_time = reference_time

    def _score(self, features: pd.DataFrame, reasons: bool) -> tuple[np.ndarray, np.ndarray | None, Any]:
        total, each = self.rules.points(features, reference_time=self.reference_time)
        if not reasons:
            return total / 100.0, None, None
        rules = self.rules.rules

        def words(k: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            rule = rules[k]
            codes, uniques = pd.factorize(features[rule.column].iloc[rows], use_na_sentinel=True)
            table = np.asarray([_rule_text(rule.reason, u) for u in uniques] + [_rule_text(rule.reason, None)],
                               dtype=object)
            return table, np.where(codes < 0, len(uniques), codes)

        text = words
        return total / 100.0, each / 100.0, text

    def _fields(self) -> list[FeatureSpec]:
        return [FeatureSpec(column=r.column, kind="numeric", group=self.spec.feature(r.column).group, label=r.reason)
                for r in self.rules.rules]

    def score_frame(self, features: pd.DataFrame, ids: pd.Series, *, reasons: bool = True,
                    top: int = TOP_REASONS, structured: bool = False) -> pd.DataFrame:
        """Score spec-typed features with the rules (`structured`: as `ModelScorer.score_frame`)."""
        p, each, text = self._score(features, reasons)
        pos, neg = _reason_strings(each, text, top) if each is not None else (None, None)
        kept = _reason_lists(each, text, self._fields(), top) if each is not None and structured else None
        score = np.clip(np.rint(p * 100), 0, 100).astype(np.int64)
        return _frame_out(ids, self.spec.id_label, p, score, self.spec.grades.grade(p), pos, neg, self.kind,
                          self.version, kept)

    def score_records(self, records: Iterable[Mapping[str, Any]], *, reasons: bool = True,
                      top: int = TOP_REASONS) -> list[LeadScore]:
        """Validate and score JSON-like records with the rules."""
        rows = list(records)
        if not rows:
            raise DataValidationError([Problem("records", "-", "no lead to score", code="empty")], source="records")
        if len(rows) > FAST_RECORDS:
            prepared = prepare(records_frame(rows), spec=self.spec, table="records")
            features, ids = prepared.features, prepared.ids
        else:
            columns, id_list = prepare_records(rows, spec=self.spec)
            for f in self.spec.features:
                if f.kind == "timestamp":  # back to dates, as the frame path has them, for the words
                    columns[f.column] = pd.to_datetime(columns[f.column] * 86_400e9, unit="ns").to_numpy()
            features, ids = pd.DataFrame(columns), pd.Series(id_list, dtype=object)
        p, each, words = self._score(features, reasons)
        pos = neg = None
        if each is not None:
            texts = np.column_stack([lead_words(words, k, np.arange(len(p))) for k in range(len(self.rules.rules))])
            pos, neg = _top_reasons(each, texts, self._fields(), top)
        return _lead_scores(ids, p, pos, neg, self.spec)


def _rule_text(template: str, value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        shown = "unknown"
    elif isinstance(value, np.datetime64 | pd.Timestamp | dt.datetime):
        shown = str(pd.Timestamp(value).date())
    elif isinstance(value, float | np.floating | int | np.integer):
        shown = format_number(float(value))
    else:
        shown = str(value)
    return template.format(value=shown)


def load_scorer(
    ref: str | Path | None = None,
    *,
    models_dir: Path,
    source: ModelSource = "files",
    registered_model_name: str = "leadcast-lead-scoring",
    tracking_uri: str | None = None,
    spec_path: Path | None = None,
    rules_path: Path | None = None,
    reference_time: Any = None,
) -> Scorer:
    """Return the scorer to use: a trained model (`ref`: alias, version or .joblib path; default the champion)
    from the local registry or the MLflow registry (`source`), its artifact checked by SHA-256; the cold-start
    rules only when no champion exists at all and no `ref` is given. A champion that exists but cannot be
    loaded raises a `ModelError`, never a silent fall back to the rules."""
    trained = resolve_trained(ref, source=source, models_dir=models_dir,
                              registered_model_name=registered_model_name, tracking_uri=tracking_uri)
    if trained is None:
        return RulesScorer(RulesModel.from_file(rules_path), load_spec(spec_path), reference_time=reference_time)
    return ModelScorer(trained)
