"""One way to read a value: the rules and messages every way data enters (files, frames, JSON records) follows.

A rule (`Rule`) says what a field holds: text, a number, true/false or a date, whether it may be negative, how
long text may be, which spellings mean true or false and which placeholders mean "not known". `parse_value`
applies it to one value (the per-record hot path); `parse_series` applies it to a column. The column backend
reads text and mixed columns through `parse_value` itself, once per distinct value, and native numpy columns
(numbers, true/false, datetimes) with vectorised checks of the same rules; tests/crmdata/test_values.py checks
with hypothesis that both backends accept and refuse the same values with the same message.

Dates: ISO 8601 with or without an offset (an offset is converted to UTC; none means UTC), any year 1-9999
is read, but leadcast's tables hold datetime64[ns], so a date outside 1677-09-22 .. 2262-04-11 is refused
with its own message rather than wrapped or turned into a server error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd

Kind = Literal["string", "float", "int", "bool", "datetime"]

TRUE_VALUES: tuple[str, ...] = ("true", "t", "yes", "y", "1", "1.0")
FALSE_VALUES: tuple[str, ...] = ("false", "f", "no", "n", "0", "0.0")
MAX_TEXT_LENGTH = 1_000  # characters; a CRM field longer than this is a mistake or an attack, never a category
MAX_PROBLEMS = 1_000  # problems reported per table; the count of the rest is kept by the caller's summary
SHOWN_LENGTH = 60  # characters of an offending value echoed back in a problem

EPOCH = datetime(1970, 1, 1)
FIRST_DAY = pd.Timestamp.min.ceil("D").to_pydatetime()  # 1677-09-22: the first whole day datetime64[ns] holds
LAST_DAY = pd.Timestamp.max.floor("D").to_pydatetime()  # 2262-04-11 00:00
# A pipeline's dates (opportunities, stage changes, a forecast's as_of) are held to 1900-2099: pandas subtracts
# datetime64[ns] values, and a difference past 292 years overflows (a deal of 1678 against an as_of of 2258 was a
# 500); 200 years and a three-year horizon fit.
PIPELINE_FIRST_DAY = datetime(1900, 1, 1)
PIPELINE_LAST_DAY = datetime(2099, 12, 31)
# The largest amount of a deal: sums and squares of amounts over a pipeline stay finite (1.8e308 overflowed the
# forecast's variance to inf).
MAX_AMOUNT = 1e15
ISO_EXAMPLE = "ISO 8601, e.g. 2024-03-01 or 2024-03-01T10:00:00+02:00"


class ValueProblem(ValueError):
    """A value that breaks its rule: the message (as shown to users) and its machine code."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True, slots=True)
class Rule:
    """How to read one field: its kind and the spellings, placeholders and limits that apply to it."""

    kind: Kind
    non_negative: bool = False
    max_length: int = MAX_TEXT_LENGTH
    true_values: tuple[str, ...] = TRUE_VALUES
    false_values: tuple[str, ...] = FALSE_VALUES
    missing_values: tuple[str, ...] = ()
    date_format: str | None = None
    decimal: str = "."  # the decimal mark of numbers written as text ("," in much of Europe)
    dayfirst: bool = False  # dates like 31/12/2024 (day, month, year) besides ISO 8601
    minimum: float | None = None
    maximum: float | None = None

    def expected(self) -> str:
        """Return what a valid value is, in words (the end of every 'is not ...' message)."""
        if self.kind in ("float", "int"):
            return "a number"
        if self.kind == "bool":
            return f"true or false ({'/'.join(self.true_values[:3])} or {'/'.join(self.false_values[:3])})"
        if self.kind == "datetime":
            if self.date_format:
                return f"a date ({self.date_format})"
            return f"a date (day first, e.g. 31/12/2024, or {ISO_EXAMPLE})" if self.dayfirst else \
                f"a date ({ISO_EXAMPLE})"
        return "text"

    def type_code(self) -> str:
        """Return the code of a value of the wrong type for this rule."""
        return "bad_date" if self.kind == "datetime" else "wrong_type"


# The messages: every backend raises these and only these.
def not_expected(rule: Rule) -> ValueProblem:
    """Return the problem of a value that cannot be read as the rule's kind."""
    return ValueProblem(f"is not {rule.expected()}", rule.type_code())


def not_finite(rule: Rule) -> ValueProblem:
    """Return the problem of NaN or Infinity given as a value."""
    return ValueProblem("is not a finite number (NaN and Infinity are refused)", "wrong_type")


def negative(rule: Rule) -> ValueProblem:
    """Return the problem of a negative value in a field that counts or measures."""
    return ValueProblem("is negative; it must be 0 or more", "negative")


def below_minimum(rule: Rule) -> ValueProblem:
    """Return the problem of a number under the spec's minimum."""
    return ValueProblem(f"is below the minimum {_number_text(rule.minimum or 0.0)} set in the spec", "below_minimum")


def above_maximum(rule: Rule) -> ValueProblem:
    """Return the problem of a number over the spec's maximum."""
    return ValueProblem(f"is above the maximum {_number_text(rule.maximum or 0.0)} set in the spec", "above_maximum")


def too_long(rule: Rule) -> ValueProblem:
    """Return the problem of text over the length cap."""
    return ValueProblem(f"is longer than {rule.max_length:,} characters (the limit)", "too_long")


NUL_MESSAGE = "holds a NUL character (\\u0000), which no text may hold (PostgreSQL's text cannot store one)"


def holds_nul() -> ValueProblem:
    """Return the problem of text with a NUL character in it."""
    return ValueProblem(NUL_MESSAGE, "nul_character")


def out_of_range(rule: Rule) -> ValueProblem:
    """Return the problem of a date leadcast cannot hold."""
    return ValueProblem(f"is a date outside {FIRST_DAY:%Y-%m-%d} to {LAST_DAY:%Y-%m-%d}, the dates leadcast handles",
                        "bad_date")


def outside_pipeline() -> ValueProblem:
    """Return the problem of a pipeline date outside the years a pipeline may span."""
    return ValueProblem(f"is a date outside {PIPELINE_FIRST_DAY:%Y-%m-%d} to {PIPELINE_LAST_DAY:%Y-%m-%d}, the dates "
                        "a pipeline may hold", "bad_date")


def above_max_amount() -> ValueProblem:
    """Return the problem of an amount too large for a pipeline's sums."""
    return ValueProblem(f"is above {MAX_AMOUNT:,.0f}, the largest amount leadcast handles", "wrong_value")


def container(rule: Rule, value: object) -> ValueProblem:
    """Return the problem of a list or an object given where one value belongs."""
    what = "a list" if isinstance(value, list | tuple) else "an object"
    return ValueProblem(f"is {what}; expected {rule.expected()}", rule.type_code())


def shown(value: object) -> str:
    """Return a short, safe rendering of an offending value for a problem (never a huge or nested one)."""
    if isinstance(value, list | tuple):
        return "[...]"
    if isinstance(value, dict):
        return "{...}"
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= SHOWN_LENGTH else f"{text[:SHOWN_LENGTH]}... ({len(text):,} characters)"


def _casefolded(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v.casefold() for v in values)


@dataclass(frozen=True, slots=True)
class _Compiled:
    rule: Rule
    placeholders: frozenset[str]
    trues: frozenset[str]
    falses: frozenset[str]


_COMPILED: dict[Rule, _Compiled] = {}


def _compiled(rule: Rule) -> _Compiled:
    found = _COMPILED.get(rule)
    if found is None:
        found = _Compiled(rule, frozenset({"", *rule.missing_values}), _casefolded(rule.true_values),
                          _casefolded(rule.false_values))
        if len(_COMPILED) < 1_000:
            _COMPILED[rule] = found
    return found


def datetime_ns(value: datetime) -> int:
    """Return a datetime (naive means UTC) as nanoseconds since 1970 UTC; ValueProblem outside the range held."""
    if value.tzinfo is not None:
        offset = value.utcoffset() or timedelta(0)
        try:
            value = value.replace(tzinfo=None) - offset
        except OverflowError as exc:  # 0001-01-01T00:00+02:00 is in year 0
            raise out_of_range(Rule("datetime")) from exc
    if not FIRST_DAY <= value <= LAST_DAY:
        raise out_of_range(Rule("datetime"))
    return (value - EPOCH) // timedelta(microseconds=1) * 1_000


DAYFIRST_FORMATS = ("%d/%m/%Y", "%d/%m/%Y %H:%M", "%d/%m/%Y %H:%M:%S", "%d.%m.%Y", "%d.%m.%Y %H:%M",
                    "%d-%m-%Y", "%d-%m-%Y %H:%M", "%d/%m/%y")


def _parse_date_text(text: str, rule: Rule) -> int:
    try:
        stamp = datetime.strptime(text, rule.date_format) if rule.date_format else datetime.fromisoformat(text)
    except ValueError as exc:
        if not rule.dayfirst or rule.date_format:
            raise not_expected(rule) from exc
        for fmt in DAYFIRST_FORMATS:
            try:
                stamp = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
        else:
            raise not_expected(rule) from exc
    try:
        return datetime_ns(stamp)
    except ValueProblem as exc:
        raise out_of_range(rule) from exc


def parse_value(value: Any, rule: Rule) -> Any:
    """Read one value by its rule; return None when missing, else str, float (0.0/1.0 for true/false) or
    int nanoseconds since 1970 UTC for dates. Raise a ValueProblem naming what is wrong."""
    return _parse(value, _compiled(rule))


def reader(rule: Rule) -> Callable[[Any], Any]:
    """Return `parse_value` bound to one rule, for loops over many values (the rule is prepared once)."""
    c = _compiled(rule)
    return lambda value: _parse(value, c)


def _parse(value: Any, c: _Compiled) -> Any:
    rule = c.rule
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    kind = rule.kind
    if isinstance(value, str):
        text = value.strip()
        if text in c.placeholders:
            return None
        if kind == "string":
            return _checked_text(text, rule)
        if kind == "bool":
            word = text.casefold()
            if word in c.trues:
                return 1.0
            if word in c.falses:
                return 0.0
            raise not_expected(rule)
        if kind == "datetime":
            return _parse_date_text(text, rule)
        if rule.decimal != "." and rule.decimal in text:
            text = text.replace(rule.decimal, ".", 1)
        try:
            number = float(text)
        except ValueError as exc:
            raise not_expected(rule) from exc
        return _check_number(number, rule)
    if isinstance(value, list | tuple | dict):
        raise container(rule, value)
    if isinstance(value, float | np.floating) and value != value:
        return None  # a frame's missing number
    if isinstance(value, np.datetime64) and np.isnat(value):
        return None
    if kind == "string":
        text = _number_text(value) if isinstance(value, int | float | np.integer | np.floating) else str(value).strip()
        return _checked_text(text, rule) or None
    if isinstance(value, bool | np.bool_):
        if kind == "bool":
            return 1.0 if value else 0.0
        raise not_expected(rule)  # true is not a count, a date or an amount
    if isinstance(value, int | float | np.integer | np.floating):
        if kind == "datetime":
            raise not_expected(rule)
        try:
            number = float(value)
        except OverflowError as exc:  # an integer beyond any float
            raise not_finite(rule) from exc
        if kind == "bool":
            if number == 1.0 or number == 0.0:
                return number
            raise not_expected(rule)
        return _check_number(number, rule)
    if kind == "datetime":
        if isinstance(value, pd.Timestamp):
            return datetime_ns(value.to_pydatetime(warn=False)) + value.nanosecond
        if isinstance(value, np.datetime64):
            return datetime_ns(value.astype("datetime64[us]").item())
        if isinstance(value, datetime):
            return datetime_ns(value)
        if isinstance(value, date):
            return datetime_ns(datetime(value.year, value.month, value.day))
    raise not_expected(rule)


def _checked_text(text: str, rule: Rule) -> str:
    """Return text within the length cap and free of NUL characters, else raise the ValueProblem."""
    if len(text) > rule.max_length:
        raise too_long(rule)
    if "\x00" in text:
        raise holds_nul()
    return text


def _number_text(value: int | float | np.integer | np.floating) -> str:
    """Write a number given where text belongs, read as JSON's double (RFC 8259): 3 and 3.0 are both "3"."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    try:
        number = float(value)
    except OverflowError:
        return str(value)
    return str(int(number)) if number.is_integer() else str(number)


def _check_number(number: float, rule: Rule) -> float:
    if not math.isfinite(number):
        raise not_finite(rule)
    if rule.non_negative and number < 0:
        raise negative(rule)
    if rule.minimum is not None and number < rule.minimum:
        raise below_minimum(rule)
    if rule.maximum is not None and number > rule.maximum:
        raise above_maximum(rule)
    return number


@dataclass(frozen=True, slots=True)
class Refused:
    """A value a column refused: its 0-based position, the problem and the value as shown to users."""

    position: int
    message: str
    code: str
    value: str


def _native_numbers(series: pd.Series) -> np.ndarray | None:
    dtype = series.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
        return np.array(series.to_numpy(), dtype=np.float64)
    if isinstance(dtype, pd.api.extensions.ExtensionDtype) and dtype.kind in "biuf":
        return np.array(series.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
    return None


def _is_bool_dtype(series: pd.Series) -> bool:
    return pd.api.types.is_bool_dtype(series.dtype)


def parse_series(series: pd.Series, rule: Rule, *, limit: int = MAX_PROBLEMS) -> tuple[np.ndarray, list[Refused]]:
    """Read a column by its rule: return its values and the refused ones (at most `limit`).

    Values come back as an object array of str/None (text), float64 with NaN (numbers, true/false as 0/1) or
    datetime64[ns] with NaT (dates, UTC). A refused value becomes missing.
    """
    n = len(series)
    refused: list[Refused] = []
    kind = rule.kind
    if kind != "string" and kind != "datetime":
        numbers = _native_numbers(series)
        if numbers is not None:
            return _vector_numbers(series, numbers, rule, limit)
        flags = _json_flags(series)
        if flags is not None:
            return _vector_numbers(series, flags, rule, limit, is_bool=True)
    if kind == "datetime" and pd.api.types.is_datetime64_any_dtype(series.dtype):
        return _vector_dates(series, rule, limit)
    text = _text_codes(series, rule, limit)
    if text is not None:
        codes, table, refused = text
        return _typed(table[codes], kind), refused
    # Mixed values from JSON (numbers, true/false, text, lists): one at a time, never hashed (True == 1).
    raw = series.to_numpy(dtype=object)
    table_list, bad = _read_each(raw.tolist(), reader(rule))
    parsed = np.asarray([*table_list, None], dtype=object)[:n]
    for i in sorted(bad)[:limit]:
        refused.append(_refusal(i, bad[i], raw[i]))
    return _typed(parsed, kind), refused


def parse_categories(series: pd.Series, rule: Rule, *,
                     limit: int = MAX_PROBLEMS) -> tuple[np.ndarray, list[Any], list[Refused]]:
    """Read a text column by its rule as categories: each value's code (-1 if missing), the distinct values
    as `parse_series` reads them (in order of first appearance), and the refused values.

    The same values as factorizing `parse_series`'s output, without hashing a Python string per row: a text
    column is factorized once, its distinct values read, and equal readings (" a" and "a") merged.
    """
    text = _text_codes(series, rule, limit) if rule.kind == "string" else None
    if text is None:
        values, refused = parse_series(series, rule, limit=limit)
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        return np.asarray(codes), list(uniques), refused
    codes, table, refused = text
    merged, distinct = pd.factorize(table, use_na_sentinel=True)  # the table's last entry, None: missing
    return np.asarray(merged[codes]), list(distinct), refused


def _text_codes(series: pd.Series, rule: Rule, limit: int,
                ) -> tuple[np.ndarray, np.ndarray, list[Refused]] | None:
    """Read a text column once per distinct value: (each row's index into the table, the table of read values
    ending in None for missing, refused); None if the column holds other than text and missing values."""
    raw: np.ndarray | None = None
    if not isinstance(series.dtype, pd.StringDtype):
        raw = series.to_numpy(dtype=object)
        if not _hashable_text(raw):
            return None
    # Text columns (CSV exports): read each distinct value once.
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    codes = np.where(codes < 0, len(uniques), codes)
    distinct = uniques.tolist()
    plain = _plain_texts(distinct, _compiled(rule)) if rule.kind == "string" else None
    table: list[Any]
    table, bad = (list[Any](plain), {}) if plain is not None else _read_each(distinct, reader(rule))
    table.append(None)
    refused: list[Refused] = []
    if bad:
        raw = series.to_numpy(dtype=object) if raw is None else raw
        failed = np.zeros(len(table), dtype=bool)
        failed[list(bad)] = True
        for i in np.flatnonzero(failed[codes])[:limit]:
            refused.append(_refusal(int(i), bad[int(codes[i])], raw[i]))
    return codes, np.asarray(table, dtype=object), refused


def _json_flags(series: pd.Series) -> np.ndarray | None:
    """Return an object column of only true, false and missing (None, NaN: JSON's booleans and nulls) as 1/0/NaN, read
    as `_parse` reads each; else None. A column of records' values is that, one bool object at a time otherwise."""
    if series.dtype != object:
        return None
    values = series.to_numpy(dtype=object).tolist()
    if not all(v is True or v is False or v is None or (type(v) is float and v != v) for v in values):
        return None
    return np.fromiter((1.0 if v is True else 0.0 if v is False else math.nan for v in values), np.float64,
                       len(values))


def _plain_texts(values: list[Any], c: _Compiled) -> list[str] | None:
    """Return distinct text values stripped, as `_parse` reads them, when none is then a placeholder, too long or
    holding a NUL (checked over all of them at once); else None, to read them one by one for their problems."""
    if not all(type(v) is str for v in values):
        return None
    out = [v.strip() for v in values]
    if not c.placeholders.isdisjoint(out) or "\x00" in "".join(out):
        return None
    if out and max(map(len, out)) > c.rule.max_length:
        return None
    return out


def _hashable_text(raw: np.ndarray) -> bool:
    return all(type(v) is str or v is None or (type(v) is float and v != v) for v in raw.tolist())


def _read_each(values: list[Any], parse: Callable[[Any], Any]) -> tuple[list[Any], dict[int, ValueProblem]]:
    out: list[Any] = []
    bad: dict[int, ValueProblem] = {}
    for i, v in enumerate(values):
        try:
            out.append(parse(v))
        except ValueProblem as exc:
            out.append(None)
            bad[i] = exc
    return out, bad


def _refusal(position: int, problem: ValueProblem, value: object) -> Refused:
    return Refused(position, problem.message, problem.code, shown(value))


def _typed(parsed: np.ndarray, kind: Kind) -> np.ndarray:
    if kind == "string":
        return parsed
    missing = np.fromiter((v is None for v in parsed.tolist()), dtype=bool, count=parsed.size)
    if kind == "datetime":
        ns = np.where(missing, 0, parsed).astype(np.int64)
        out = ns.view("datetime64[ns]").copy()
        out[missing] = np.datetime64("NaT")
        return out
    floats = np.where(missing, np.nan, parsed).astype(np.float64)
    return floats


def _vector_numbers(series: pd.Series, numbers: np.ndarray, rule: Rule, limit: int, *,
                    is_bool: bool | None = None) -> tuple[np.ndarray, list[Refused]]:
    is_bool = _is_bool_dtype(series) if is_bool is None else is_bool
    problems: list[tuple[np.ndarray, ValueProblem]] = []
    if rule.kind == "bool":
        wrong = ~np.isnan(numbers) & (numbers != 0.0) & (numbers != 1.0)
        problems.append((wrong, not_expected(rule)))
    elif is_bool:
        wrong = ~np.isnan(numbers)
        problems.append((wrong, not_expected(rule)))
    else:
        infinite = np.isinf(numbers)
        problems.append((infinite, not_finite(rule)))
        if rule.non_negative:
            problems.append((numbers < 0, negative(rule)))  # NaN < 0 is False; -inf is reported as infinite
            problems[-1] = (problems[-1][0] & ~infinite, problems[-1][1])
        # The first problem found is the one reported, as `_check_number` reports it.
        flagged = infinite | (numbers < 0 if rule.non_negative else False)
        if rule.minimum is not None:
            problems.append(((numbers < rule.minimum) & ~flagged, below_minimum(rule)))
            flagged = flagged | problems[-1][0]
        if rule.maximum is not None:
            problems.append(((numbers > rule.maximum) & ~flagged, above_maximum(rule)))
    refused: list[Refused] = []
    raw = None
    for mask, problem in problems:
        if mask.any():
            raw = series.to_numpy(dtype=object) if raw is None else raw
            refused += [_refusal(int(i), problem, raw[i]) for i in np.flatnonzero(mask)[:limit]]
            numbers[mask] = np.nan
    refused.sort(key=lambda r: r.position)
    return numbers, refused[:limit]


def _vector_dates(series: pd.Series, rule: Rule, limit: int) -> tuple[np.ndarray, list[Refused]]:
    values = series
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    stamps = values.to_numpy()
    if stamps.dtype == np.dtype("datetime64[ns]"):
        return stamps.copy(), []
    # Another unit (a Parquet file, pandas 3's microseconds) can hold dates datetime64[ns] cannot.
    low, high = np.datetime64(FIRST_DAY, "us"), np.datetime64(LAST_DAY, "us")
    wide = stamps.astype("datetime64[us]")
    outside = ~np.isnat(wide) & ((wide < low) | (wide > high))
    refused = [_refusal(int(i), out_of_range(rule), wide[i]) for i in np.flatnonzero(outside)[:limit]]
    wide[outside] = np.datetime64("NaT")
    return wide.astype("datetime64[ns]"), refused


def to_days(ns: int | None) -> float:
    """Return nanoseconds since 1970 as days (NaN when missing), as the frame path computes them."""
    return math.nan if ns is None else ns / 86_400e9
