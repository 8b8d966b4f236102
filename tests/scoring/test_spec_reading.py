"""Issue 14 items 3 and 4: specs that read what analysts get, and grades that fit the data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from crmdata.errors import DataValidationError
from crmdata.loaders import read_raw
from scoring.features import LeadFeatures
from scoring.spec import Grades, ModelSpec, prepare, prepare_records, resolve_grades


def spec_of(**extra: Any) -> ModelSpec:
    data: dict[str, Any] = {
        "name": "export", "target": {"column": "won", "positive": ["ja"], "negative": ["nein"]},
        "features": [
            {"column": "visits", "kind": "numeric", "group": "behavioural", "min": 0, "max": 100},
            {"column": "spend", "kind": "numeric", "group": "behavioural"},
            {"column": "stadt", "kind": "categorical", "group": "demographic"},
            {"column": "seen", "kind": "timestamp", "group": "behavioural"},
        ],
        **extra,
    }
    return ModelSpec.from_dict(data)


EXPORT = "visits;spend;stadt;seen;won\n3,5;10;Köln;31/12/2024;ja\n7;2,25;Zürich;01/02/2025;nein\n"


def test_a_semicolon_latin1_export_with_decimal_commas_and_day_first_dates(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_bytes(EXPORT.encode("latin-1"))
    spec = spec_of(delimiter=";", encoding="latin-1", decimal=",", dayfirst=True)
    raw = read_raw(path, missing_values=spec.missing_values, delimiter=spec.delimiter, encoding=spec.encoding)
    prepared = prepare(raw, spec=spec, with_target=True)
    assert prepared.features["visits"].tolist() == [3.5, 7.0]
    assert prepared.features["spend"].tolist() == [10.0, 2.25]
    assert prepared.features["stadt"].astype(str).tolist() == ["Köln", "Zürich"]
    assert prepared.features["seen"].tolist() == [pd.Timestamp("2024-12-31"), pd.Timestamp("2025-02-01")]
    # no id column: leads are numbered by row, and the output says so
    assert prepared.ids.tolist() == ["1", "2"] and spec.id_label == "row"
    assert any("row number" in note for note in prepared.notes)


def test_a_date_format_reads_that_format_only(tmp_path: Path) -> None:
    spec = spec_of(date_format="%m/%d/%Y")
    frame = pd.DataFrame({"visits": ["1"], "spend": ["2"], "stadt": ["x"], "seen": ["12/31/2024"], "won": ["ja"]})
    assert prepare(frame, spec=spec).features["seen"].tolist() == [pd.Timestamp("2024-12-31")]
    with pytest.raises(DataValidationError) as exc:
        prepare(frame.assign(seen="2024-12-31"), spec=spec)
    [problem] = exc.value.problems
    assert (problem.field, problem.row, problem.message) == ("seen", 1, "is not a date (%m/%d/%Y)")


def test_a_semicolon_file_without_the_key_gets_one_hint_not_a_wall(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_bytes(EXPORT.encode("utf-8"))
    spec = spec_of()
    with pytest.raises(DataValidationError) as exc:
        prepare(read_raw(path), spec=spec, with_target=True)
    [problem] = exc.value.problems  # not 5 "column is missing" lines
    assert problem.code == "wrong_delimiter"
    assert "4 semicolons" in problem.message and 'set `delimiter = ";"` in the spec' in problem.message


def test_min_and_max_are_checked_like_the_other_rules() -> None:
    spec = spec_of()
    frame = pd.DataFrame({"visits": ["5", "150", "-1"], "spend": ["1"] * 3, "stadt": ["a"] * 3,
                          "seen": [None] * 3})
    with pytest.raises(DataValidationError) as exc:
        prepare(frame, spec=spec)
    found = [(p.field, p.row, p.message, p.value) for p in exc.value.problems]
    assert found == [("visits", 2, "is above the maximum 100 set in the spec", "150"),
                     ("visits", 3, "is below the minimum 0 set in the spec", "-1")]
    # the per-request path refuses the same value with the same words
    with pytest.raises(DataValidationError) as exc:
        prepare_records([{"visits": 150}], spec=spec)
    assert [(p.field, p.row, p.message) for p in exc.value.problems] == [
        ("visits", 1, "is above the maximum 100 set in the spec")]
    # native numbers (a Parquet column) take the vectorised path: same problems
    with pytest.raises(DataValidationError) as exc:
        prepare(frame.assign(visits=[5.0, 150.0, -1.0]), spec=spec)
    assert [(p.row, p.message) for p in exc.value.problems] == [
        (2, "is above the maximum 100 set in the spec"), (3, "is below the minimum 0 set in the spec")]


def test_derived_difference_and_ratio_declared_in_the_spec() -> None:
    spec = spec_of(derived=[{"name": "net", "op": "difference", "left": "visits", "right": "spend"},
                            {"name": "per", "op": "ratio", "left": "spend", "right": "visits"}])
    frame = pd.DataFrame({"visits": ["5", "4", None], "spend": ["3", "8", "1"], "stadt": ["a"] * 3,
                          "seen": [None] * 3})
    features = prepare(frame, spec=spec).features
    matrix = LeadFeatures(spec).fit(features).transform(features)
    layout = [name for name, _ in LeadFeatures(spec).fit(features).layout_]
    net, per = matrix[:, layout.index("net")], matrix[:, layout.index("per")]
    # 5 - 3 = 2, 4 - 8 = -4, missing - 1 = missing; 3 / 5 = 0.6, 8 / 4 = 2, 1 / missing = missing
    assert net[:2].tolist() == [2.0, -4.0] and np.isnan(net[2])
    assert per[:2].tolist() == [0.6, 2.0] and np.isnan(per[2])


@pytest.mark.parametrize(("extra", "where"), [
    ({"decimal": ";"}, "decimal"), ({"delimiter": ";;"}, "delimiter"), ({"encoding": "klingon"}, "encoding"),
    ({"dayfirst": "yes"}, "dayfirst"), ({"date_format": "dd/mm/yyyy"}, "date_format"),
    ({"derived": [{"name": "x", "op": "product", "left": "visits", "right": "spend"}]}, "derived[0].op"),
    ({"derived": [{"name": "x", "op": "ratio", "left": "stadt", "right": "spend"}]}, "derived[0].left"),
    ({"grades": {"method": "quantile", "A": 0.5, "B": 0.3}}, "grades"),
    ({"grades": {"method": "deciles"}}, "grades.method"),
    ({"order_column": "visits"}, "order_column"),
])
def test_bad_reading_keys_are_spec_errors(extra: dict[str, Any], where: str) -> None:
    with pytest.raises(DataValidationError) as exc:
        spec_of(**extra)
    assert where in [p.field for p in exc.value.problems]


def test_feature_min_max_must_be_numbers_on_numeric_fields() -> None:
    with pytest.raises(DataValidationError) as exc:
        ModelSpec.from_dict({"name": "x", "target": {"column": "y", "positive": ["1"]}, "features": [
            {"column": "a", "kind": "categorical", "group": "behavioural", "min": 1},
            {"column": "b", "kind": "numeric", "group": "behavioural", "min": 5, "max": 1}]})
    assert [p.message for p in exc.value.problems] == ["`min` applies to numeric features only",
                                                       "`min` is above `max`"]


def test_quantile_grades_cut_at_the_shares_of_held_out_leads() -> None:
    p = np.arange(1, 101) / 100  # 0.01 .. 1.00
    grades, warnings = resolve_grades(Grades(method="quantile", targets=(0.1, 0.3, 0.6)), p, base_rate=0.5)
    # np.quantile, linear: 0.9 -> 0.90 + 0.1 x 0.01 = 0.901; 0.7 -> 0.703; 0.4 -> 0.406
    assert (grades.a, grades.b, grades.c) == pytest.approx((0.901, 0.703, 0.406))
    letters = grades.grade(p)
    assert [int((letters == g).sum()) for g in "ABCD"] == [10, 20, 30, 40] and warnings == []


def test_base_rate_grades_are_multiples_of_the_rate() -> None:
    grades, _ = resolve_grades(Grades(method="base_rate", targets=(2.0, 1.0, 0.5)), np.linspace(0, 0.5, 11),
                               base_rate=0.1)
    assert (grades.a, grades.b, grades.c) == pytest.approx((0.2, 0.1, 0.05))


def test_an_empty_grade_is_warned() -> None:
    p = np.linspace(0.05, 0.30, 26)  # a 10% base-rate list: nothing reaches B (0.35) or A (0.60)
    grades, warnings = resolve_grades(Grades(), p, base_rate=0.1)
    assert grades == Grades()
    assert [w.split(":")[0] for w in warnings] == ["grade A would be empty", "grade B would be empty"]
    assert "no held-out lead reaches 0.600 (held-out probabilities 0.050 to 0.300)" in warnings[0]


def test_the_grades_table_reads_a_method_with_default_shares() -> None:
    spec = spec_of(grades={"method": "quantile", "A": 0.2})
    assert spec.grades.method == "quantile" and spec.grades.targets == (0.2, 0.3, 0.6)
    assert spec_of(grades={"A": 0.7, "B": 0.4, "C": 0.1}).grades == Grades(0.7, 0.4, 0.1)
