"""The value layer: one table of rules, two backends (per value and per column) that agree on every value."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crmdata.values import (
    FALSE_VALUES,
    MAX_TEXT_LENGTH,
    TRUE_VALUES,
    Rule,
    ValueProblem,
    parse_categories,
    parse_series,
    parse_value,
)

RULES = [
    Rule("string"), Rule("string", missing_values=("Select", "n/a"), max_length=20),
    Rule("float"), Rule("float", non_negative=True), Rule("int", non_negative=True),
    Rule("bool"), Rule("bool", true_values=(*TRUE_VALUES, "ja"), false_values=(*FALSE_VALUES, "nein")),
    Rule("datetime"), Rule("datetime", missing_values=("never",)),
]

spellings = st.sampled_from([*TRUE_VALUES, *FALSE_VALUES, "ja", "nein", "maybe", "Select", "n/a", "never", "",
                             "NaN", "nan", "inf", "-Infinity", "1e400", "-5", "-0", "0.5", "1_000", " 12 ",
                             "2026-13-01", "2026-07-01T12:00:00+02:00", "0001-01-01", "9999-12-31T23:59:59-05:00",
                             "1677-09-21", "1677-09-22", "2262-04-11", "2262-04-12", "2024-02-29", "20240301"])
cased = spellings.flatmap(lambda s: st.sampled_from([s, s.upper(), f"  {s}\t", s.title()]))
aware = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                     timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-11))]))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.integers(),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30), cased,
    st.text(min_size=MAX_TEXT_LENGTH - 2, max_size=MAX_TEXT_LENGTH + 2, alphabet="ab "),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)), aware,
    st.dates(), aware.map(lambda d: d.isoformat()), st.dates().map(date.isoformat),
)
values = st.one_of(scalars, st.lists(scalars, max_size=2), st.dictionaries(st.text(max_size=3), scalars, max_size=2))


def per_value(value: Any, rule: Rule) -> tuple[str, Any]:
    try:
        return "ok", parse_value(value, rule)
    except ValueProblem as exc:
        return exc.message, exc.code


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return bool(a == b)


def per_column(series: pd.Series, rule: Rule) -> list[tuple[str, Any]]:
    parsed, refused = parse_series(series, rule)
    bad = {r.position: (r.message, r.code) for r in refused}
    out: list[tuple[str, Any]] = []
    for i, v in enumerate(parsed.tolist()):
        if i in bad:
            out.append(bad[i])
        elif rule.kind == "datetime":
            out.append(("ok", None if v is None else int(np.datetime64(v, "ns").astype(np.int64))))
        elif rule.kind == "string":
            out.append(("ok", v))
        else:
            out.append(("ok", None if math.isnan(v) else v))
    return out


def columns_of(batch: list[Any]) -> list[pd.Series]:
    """The ways a column reaches the layer: JSON records through pandas (dtype inferred), an object column,
    and, for text, pandas' string dtype (as CSV files are read)."""
    out = [pd.DataFrame.from_records([{"x": v} for v in batch], columns=["x"])["x"],
           pd.Series(batch, dtype=object)]
    if all(isinstance(v, str) or v is None for v in batch):
        out.append(pd.Series(batch, dtype="string"))
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(values, min_size=1, max_size=6), rule=st.sampled_from(RULES))
def test_both_backends_accept_and_refuse_the_same_values_with_the_same_message(batch: list[Any], rule: Rule) -> None:
    expected = [per_value(v, rule) for v in batch]
    for series in columns_of(batch):
        got = per_column(series, rule)
        assert len(got) == len(expected)
        for g, e, v in zip(got, expected, batch, strict=True):
            assert g[0] == e[0], (v, series.dtype, g, e)
            assert same(g[1], e[1]), (v, series.dtype, g, e)


flags = st.lists(st.sampled_from([True, False, None, math.nan]), min_size=1, max_size=8)
texts = st.lists(st.one_of(st.none(), st.sampled_from(["Select", " n/a ", "", "  ", "a\x00b", "x" * 21, " Acme "]),
                           st.text(max_size=22)), min_size=1, max_size=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.one_of(flags, texts), rule=st.sampled_from(RULES))
def test_the_whole_column_paths_of_json_flags_and_plain_text_read_as_each_value_does(batch: list[Any],
                                                                                    rule: Rule) -> None:
    # Columns of only true/false/null and of only text take a path of their own (read whole, not value by value).
    expected = [per_value(v, rule) for v in batch]
    for series in columns_of(batch):
        got = per_column(series, rule)
        for g, e, v in zip(got, expected, batch, strict=True):
            assert g[0] == e[0] and same(g[1], e[1]), (v, series.dtype, g, e)


def test_json_flags_with_nulls_are_read_whole() -> None:
    # An object column as records give it: [true, null, false] reads 1, NaN, 0 for a flag field; a count refuses
    # the two booleans (rows 0 and 2) and keeps the null as missing.
    column = pd.Series([True, None, False], dtype=object)
    values, refused = parse_series(column, Rule("bool"))
    assert values.tolist()[0::2] == [1.0, 0.0] and math.isnan(values[1]) and refused == []
    values, refused = parse_series(column, Rule("int", non_negative=True))
    assert np.isnan(values).all() and [(r.position, r.message) for r in refused] == [
        (0, "is not a number"), (2, "is not a number")]
    texts, refused = parse_series(pd.Series([" Acme ", "Select", "a\x00b"], dtype=object),
                                  Rule("string", missing_values=("Select",)))
    assert texts.tolist() == ["Acme", None, None] and [r.position for r in refused] == [2]


@pytest.mark.parametrize(("value", "rule", "message"), [
    ("maybe", Rule("bool"), "is not true or false (true/t/yes or false/f/no)"),
    ("2026-13-01", Rule("datetime"), "is not a date (ISO 8601, e.g. 2024-03-01 or 2024-03-01T10:00:00+02:00)"),
    ("inf", Rule("float"), "is not a finite number (NaN and Infinity are refused)"),
    (float("-inf"), Rule("float"), "is not a finite number (NaN and Infinity are refused)"),
    (-5, Rule("float", non_negative=True), "is negative; it must be 0 or more"),
    (True, Rule("float"), "is not a number"),
    ("x" * 1_001, Rule("string"), "is longer than 1,000 characters (the limit)"),
    ("0001-01-01T00:00:00+02:00", Rule("datetime"),
     "is a date outside 1677-09-22 to 2262-04-11, the dates leadcast handles"),
    ("9999-12-31", Rule("datetime"), "is a date outside 1677-09-22 to 2262-04-11, the dates leadcast handles"),
    ([[[]]], Rule("float"), "is a list; expected a number"),
    ({"a": 1}, Rule("string"), "is an object; expected text"),
])
def test_each_rule_has_one_message(value: Any, rule: Rule, message: str) -> None:
    with pytest.raises(ValueProblem) as exc:
        parse_value(value, rule)
    assert exc.value.message == message
    _, refused = parse_series(pd.Series([value], dtype=object), rule)
    assert [r.message for r in refused] == [message]


def test_offsets_are_converted_to_utc_and_numbers_in_text_fields_are_written_once() -> None:
    # 12:00 at +02:00 is 10:00 UTC: 1,782,900,000 s after 1970 (20,635 days x 86,400 + 36,000).
    ns = parse_value("2026-07-01T12:00:00+02:00", Rule("datetime"))
    assert ns == parse_value("2026-07-01T10:00:00Z", Rule("datetime")) == (20_635 * 86_400 + 36_000) * 10**9
    # The first and last days datetime64[ns] holds are read; the days around them are refused.
    assert parse_value("1677-09-22", Rule("datetime")) is not None
    assert parse_value("2262-04-11", Rule("datetime")) is not None
    assert parse_value(3, Rule("string")) == parse_value(3.0, Rule("string")) == "3"
    assert parse_value(" Select ", Rule("string", missing_values=("Select",))) is None
    # A deep array (1,000 levels) is refused without recursing into it.
    deep: list[Any] = []
    for _ in range(1_000):
        deep = [deep]
    _, refused = parse_series(pd.Series([deep, 1.0], dtype=object), Rule("float"))
    assert [(r.position, r.value) for r in refused] == [(0, "[...]")]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.one_of(texts, st.lists(values, min_size=1, max_size=6)),
       rule=st.sampled_from([r for r in RULES if r.kind == "string"]))
def test_categories_are_the_factorized_values_parse_series_reads(batch: list[Any], rule: Rule) -> None:
    # parse_categories reads a text column once per distinct value and merges equal readings; it must give
    # what factorizing parse_series's values gives, with the same refusals, for every way a column arrives.
    for series in columns_of(batch):
        values_read, refused = parse_series(series, rule)
        codes, uniques = pd.factorize(values_read, use_na_sentinel=True)
        got_codes, got_uniques, got_refused = parse_categories(series, rule)
        assert got_codes.tolist() == codes.tolist(), (batch, series.dtype)
        assert got_uniques == list(uniques)
        assert got_refused == refused


def test_categories_merge_equal_readings_in_order_of_first_appearance() -> None:
    # " b" and "b" read as "b"; "Select" is missing; "a\x00b" is refused (a NUL) and so missing too.
    column = pd.Series([" b", "a", "Select", "b", None, "a\x00b", "a "], dtype="string")
    codes, uniques, refused = parse_categories(column, Rule("string", missing_values=("Select",)))
    assert uniques == ["b", "a"]
    assert codes.tolist() == [0, 1, -1, 0, -1, -1, 1]
    assert [(r.position, r.code) for r in refused] == [(5, "nul_character")]
