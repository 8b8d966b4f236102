from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crmdata.errors import DataValidationError
from scoring.rules import DEFAULT_RULES, RulesMismatchError, RulesModel
from scoring.scorer import RulesScorer
from scoring.spec import ModelSpec


def rules() -> RulesModel:
    return RulesModel.from_dict({
        "name": "t", "base_points": 5, "caps": {"fit": 20},
        "fit": [
            {"column": "job", "in": ["vp", "cto"], "points": 15, "reason": "Senior ({value})"},
            {"column": "employees", "min": 100, "points": 10, "reason": "{value} employees"},
            {"column": "student", "equals": True, "points": -20, "reason": "Student"},
        ],
        "interest": [
            {"column": "demo", "equals": True, "points": 40, "timestamp": "seen", "half_life_days": 10,
             "reason": "Requested a demo"},
            {"column": "pricing", "per_unit": 4, "max_points": 12, "reason": "{value} pricing visits"},
            {"column": "seen", "older_than_days": 30, "points": -6, "reason": "Quiet since {value}"},
        ],
    })


def frame() -> pd.DataFrame:
    return pd.DataFrame({
        "job": ["vp", "intern", None], "employees": [500.0, 10.0, np.nan], "student": [0.0, 1.0, np.nan],
        "demo": [1.0, 1.0, 0.0], "pricing": [2.0, 10.0, np.nan],
        "seen": pd.to_datetime(["2024-06-30", "2024-06-10", None]),
    })


def test_points_by_hand() -> None:
    total, each = rules().points(frame(), reference_time="2024-06-30")
    # lead 0: fit 15 + 10 = 25 capped to 20 (each x 20/25: 12 and 8); demo 40 x 0.5**0 = 40; pricing 2 x 4 = 8
    #         => 5 + 20 + 40 + 8 = 73
    assert each[0].tolist() == [12.0, 8.0, 0.0, 40.0, 8.0, 0.0]
    # lead 1: student -20 (negatives are not capped); demo 40 x 0.5**(20/10) = 10; pricing min(40, 12) = 12
    #         => 5 - 20 + 10 + 12 = 7
    assert each[1].tolist() == [0.0, 0.0, -20.0, 10.0, 12.0, 0.0]
    # lead 2: nothing known, never seen -> quiet -6 => 5 - 6 = -1, clipped to 0
    assert total.tolist() == [73.0, 7.0, 0.0]


def test_as_of_column_sets_the_reference() -> None:
    f = frame().assign(as_of=pd.to_datetime(["2024-07-10"] * 3))
    _, each = rules().points(f)
    assert each[0, 3] == 20.0  # demo 40 x 0.5**(10/10)


def test_default_rules_load_and_bad_rules_are_reported() -> None:
    assert RulesModel.from_file(DEFAULT_RULES).rules
    with pytest.raises(DataValidationError) as exc:
        RulesModel.from_dict({"fit": [{"column": "a"}, {"column": "b", "reason": "x", "points": 1, "colour": 2}],
                              "interest": [{"column": "c", "reason": "x", "points": 1, "timestamp": "t"}]})
    messages = [str(p) for p in exc.value.problems]
    assert messages == [
        "rules, field 'fit[0].reason': is required",
        # a rule allows 13 keys, more than are listed whole: the message names the close spelling only
        "rules, field 'fit[1].colour': unknown key; did you mean column? (value '2')",
        "rules, field 'interest[0]': an interest rule with a timestamp needs half_life_days"]


def foreign_spec(*columns: str) -> ModelSpec:
    """A spec for an export that is not the lead contract: an id, an outcome and the given numeric fields."""
    return ModelSpec.from_dict({
        "name": "foreign", "id_column": "id", "target": {"column": "won", "positive": ["yes"], "negative": ["no"]},
        "features": [{"column": c, "kind": "numeric", "group": "behavioural"} for c in columns],
    })


def test_rules_keep_only_the_fields_the_data_has() -> None:
    kept = rules().for_columns(["pricing", "seen", "other"])
    # of the six rules, only "pricing" (per unit) and "seen" (older than 30 days) read a field that is there
    assert [r.column for r in kept.rules] == ["pricing", "seen"]
    assert rules().for_columns(["job", "employees", "student", "demo", "pricing", "seen"]) == rules()


def test_an_export_sharing_no_field_with_the_rules_is_refused_by_name() -> None:
    with pytest.raises(RulesMismatchError) as exc:
        RulesScorer(RulesModel.from_file(), foreign_spec("clicks", "minutes"))
    message = str(exc.value)
    assert "job_level" in message and "web_visits" in message  # what the rules read
    assert "clicks, minutes" in message  # what the data has
    assert "write rules for these fields" in message and "train a model" in message


def test_no_reason_names_a_field_the_export_lacks() -> None:
    scorer = RulesScorer(RulesModel.from_file(), foreign_spec("web_visits", "clicks"), reference_time="2026-07-01")
    [lead] = scorer.score_records([{"id": "a", "web_visits": 6, "clicks": 2}])
    # only the web_visits rule is left: 6 visits x 1 point = 6, faded to half since the spec has no
    # last_activity_at to date them: 3; plus the base 5 => 8
    assert lead.score == 8
    assert [(r.feature, r.contribution) for r in (*lead.positive, *lead.negative)] == [("web_visits", 3)]


def test_rules_with_text_for_numbers_are_refused_by_key(tmp_path: Path) -> None:
    # Before the pydantic reader, `caps = { fit = "lots" }` escaped as a bare ValueError (a traceback in the CLI)
    # and `min = "3"` was kept as text, to fail at scoring time.
    path = tmp_path / "rules.toml"
    path.write_text('base_points = 5\n[caps]\nfit = "lots"\n'
                    '[[fit]]\ncolumn = "employees"\nmin = "3"\npoints = 4\nreason = "Big"\n')
    with pytest.raises(DataValidationError) as exc:
        RulesModel.from_file(path)
    assert [str(p) for p in exc.value.problems] == [
        f"{path}, field 'caps.fit': must be a valid number (value 'lots')",
        f"{path}, field 'fit[0].min': must be a valid number (value '3')"]
