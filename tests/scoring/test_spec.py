from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crmdata.errors import DataValidationError
from scoring.spec import SPECS_DIR, Grades, ModelSpec, load_spec, prepare


def minimal(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "name": "t", "id_column": "id", "target": {"column": "won", "positive": ["yes"], "negative": ["no"]},
        "protected": ["gender"], "exclude": ["stage"], "missing_values": ["Select"],
        "features": [
            {"column": "visits", "kind": "numeric", "group": "behavioural"},
            {"column": "demo", "kind": "boolean", "group": "behavioural"},
            {"column": "industry", "kind": "categorical", "group": "firmographic"},
            {"column": "seen", "kind": "timestamp", "group": "engagement", "optional": True},
        ],
    }
    data.update(overrides)
    return data


def codes(exc: pytest.ExceptionInfo[DataValidationError]) -> set[tuple[str, str]]:
    return {(p.field, p.code) for p in exc.value.problems}


def test_shipped_specs_load() -> None:
    for path in sorted(SPECS_DIR.glob("*.toml")):
        spec = ModelSpec.from_file(path)
        assert spec.features, path
    default = load_spec()
    assert "gender" in default.protected and "gender" not in default.feature_columns
    assert {"stage", "converted_at"} <= set(default.exclude)


def test_spec_refuses_protected_excluded_and_target_features() -> None:
    features = [
        {"column": "gender", "kind": "categorical", "group": "demographic"},
        {"column": "stage", "kind": "categorical", "group": "behavioural"},
        {"column": "won", "kind": "boolean", "group": "bant"},
    ]
    with pytest.raises(DataValidationError) as exc:
        ModelSpec.from_dict(minimal(features=features))
    assert [str(p) for p in exc.value.problems] == [
        "spec, field 'features[0].column': is a protected column: it may appear only in the fairness report, never "
        "as a feature (value 'gender')",
        "spec, field 'features[1].column': is also in `exclude` (value 'stage')",
        "spec, field 'features[2].column': is the target or id column; it cannot be a feature (value 'won')"]
    # The shape is checked first: a wrong kind is named with its key path, every such error at once.
    with pytest.raises(DataValidationError) as exc:
        ModelSpec.from_dict(minimal(features=[*features, {"column": "x", "kind": "text", "group": "bant"},
                                              {"column": "y", "kind": "numeric", "group": "bant", "min": "3"}]))
    assert [str(p) for p in exc.value.problems] == [
        "spec, field 'features[3].kind': must be one of numeric, categorical, boolean, timestamp (value 'text')",
        "spec, field 'features[4].min': must be a valid number (value '3')"]


def test_spec_checks_grades_and_unknown_keys() -> None:
    with pytest.raises(DataValidationError) as exc:
        ModelSpec.from_dict(minimal(grades={"A": 0.3, "B": 0.5, "C": 0.1}, colour="red"))
    assert {("grades", "bad_spec"), ("colour", "bad_spec")} <= codes(exc)


def test_spec_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="does not exist"):
        ModelSpec.from_file(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = ")
    with pytest.raises(DataValidationError, match="not valid TOML"):
        ModelSpec.from_file(bad)


def test_grades_cut_offs() -> None:
    grades = Grades(a=0.6, b=0.35, c=0.15)
    got = grades.grade(np.array([0.0, 0.149, 0.15, 0.349, 0.35, 0.599, 0.6, 1.0]))
    assert got.tolist() == ["D", "D", "C", "C", "B", "B", "A", "A"]
    # A request's few probabilities take the plain-Python path: the same letters, and NaN is D as in numpy.
    few = np.array([0.149, 0.15, 0.6, np.nan])
    assert grades.grade(few).tolist() == ["D", "C", "A", "D"]
    assert grades.grade(np.concatenate([few, few])).tolist() == ["D", "C", "A", "D"] * 2
    assert [grades.letter(v) for v in (0.0, 0.35, 0.599, 1.0)] == ["D", "B", "B", "A"]


def raw_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "id": ["a", "b", "c", "d"],
        "won": ["yes", "no", "", "no"],
        "visits": ["3", "0", "1.5", "Select"],
        "demo": ["true", "no", "Y", ""],
        "industry": [" software ", "Select", "retail", None],
        "extra": ["x", "y", "z", "w"],
    })


def test_prepare_types_values_and_sets_aside_undecided() -> None:
    spec = ModelSpec.from_dict(minimal())
    prepared = prepare(raw_frame(), spec=spec, with_target=True)
    # Row c has an empty outcome: set aside and counted, not dropped silently.
    assert prepared.rows_undecided == 1
    assert prepared.ids.tolist() == ["a", "b", "d"]
    assert prepared.target is not None and prepared.target.tolist() == [1, 0, 0]
    f = prepared.features
    assert f["visits"].tolist()[:2] == [3.0, 0.0] and np.isnan(f["visits"].iloc[2])  # "Select" -> missing
    assert f["demo"].tolist()[:2] == [1.0, 0.0] and np.isnan(f["demo"].iloc[2])
    assert f["industry"].astype(object).where(f["industry"].notna(), None).tolist() == ["software", None, None]
    assert "extra" not in f.columns
    assert f["seen"].isna().all()  # optional column absent -> all missing


def test_prepare_reports_every_bad_value_with_row() -> None:
    spec = ModelSpec.from_dict(minimal())
    raw = raw_frame().assign(visits=["3", "many", "1", "2"], demo=["maybe", "no", "yes", "no"],
                             won=["yes", "no", "perhaps", "no"])
    with pytest.raises(DataValidationError) as exc:
        prepare(raw, spec=spec, with_target=True)
    found = {(p.field, p.row, p.value) for p in exc.value.problems}
    assert found == {("visits", 2, "many"), ("demo", 1, "maybe"), ("won", 3, "perhaps")}


def test_prepare_missing_columns_and_one_class() -> None:
    spec = ModelSpec.from_dict(minimal())
    with pytest.raises(DataValidationError) as exc:
        prepare(raw_frame().drop(columns=["won", "visits"]), spec=spec, with_target=True)
    messages = {p.field: p.message for p in exc.value.problems}
    assert "target column" in messages["won"]
    assert "feature in the spec" in messages["visits"]
    with pytest.raises(DataValidationError, match="one class only: no converted lead"):
        prepare(raw_frame().assign(won="no"), spec=spec, with_target=True)
    # Scoring needs no target column at all.
    assert len(prepare(raw_frame().drop(columns=["won"]), spec=spec).ids) == 4


def test_spec_model_settings_are_checked() -> None:
    spec = ModelSpec.from_dict(minimal(model={"min_samples_leaf": 15, "candidates": ["linear"]}))
    assert spec.model == {"min_samples_leaf": 15, "candidates": ("linear",)}
    with pytest.raises(DataValidationError) as exc:
        ModelSpec.from_dict(minimal(model={"depth": 3, "calibration": "magic"}))
    assert {("model.depth", "bad_spec"), ("model.calibration", "bad_spec")} <= codes(exc)


