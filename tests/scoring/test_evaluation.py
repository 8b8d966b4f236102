from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scoring.evaluation import (
    best_f1_threshold,
    calibration_table,
    confusion,
    evaluate,
    expected_calibration_error,
    fairness,
    groups,
    leakage_warnings,
    lift_table,
    save_plots,
    single_field_auc,
)
from scoring.spec import Grades


def test_expected_calibration_error_by_hand() -> None:
    p = np.array([0.05, 0.05, 0.95, 0.95])
    y = np.array([0, 1, 1, 1])
    # bin 0: mean p 0.05, rate 0.5 -> |0.45| x 2/4; bin 9: mean p 0.95, rate 1 -> |0.05| x 2/4 => 0.25
    assert expected_calibration_error(y, p) == pytest.approx(0.25)
    table = calibration_table(y, p)
    assert [r["leads"] for r in table] == [2, 2] and table[0]["observed_rate"] == 0.5


def test_lift_and_gains_by_decile() -> None:
    p = np.linspace(1, 0, 100, endpoint=False)
    y = np.zeros(100, dtype=int)
    y[:10] = 1  # every conversion among the 10 highest scores
    y[50] = 1
    table = lift_table(y, p)
    # overall rate 11/100; decile 1 rate 10/10 -> lift 1/0.11 = 9.09; gains 10/11 then 11/11 from decile 6
    assert table[0]["lift"] == pytest.approx(1 / 0.11)
    assert table[0]["cumulative_gain"] == pytest.approx(10 / 11)
    assert table[5]["cumulative_gain"] == pytest.approx(1.0)


def test_threshold_and_confusion() -> None:
    p = np.array([0.9, 0.8, 0.7, 0.4, 0.2])
    y = np.array([1, 1, 0, 1, 0])
    # cut after 0.8: F1 = 4/(4+0+1) = 0.8; after 0.4: 6/(6+1+0) = 0.857 -> threshold 0.4
    assert best_f1_threshold(y, p) == 0.4
    c = confusion(y, p, 0.4)
    assert (c["tp"], c["fp"], c["fn"], c["tn"]) == (3, 1, 0, 1)
    assert c["f1"] == pytest.approx(6 / 7)


def test_fairness_four_fifths() -> None:
    p = np.array([0.9, 0.7, 0.1, 0.1] * 10 + [0.9, 0.1, 0.1, 0.1] * 10)
    y = np.zeros(80, dtype=int)
    groups = pd.DataFrame({"gender": ["f"] * 40 + ["m"] * 40})
    out = fairness(y, p, groups, grades=Grades())
    # A-grade rate (p >= 0.6): f 2/4 = 0.5, m 1/4 = 0.25 -> ratio 0.5, flagged (< 0.8)
    assert out["gender"]["four_fifths_ratio"] == pytest.approx(0.5)
    assert out["gender"]["flagged"] is True


def test_evaluate_and_plots(tmp_path: object) -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(size=500)
    y = (rng.uniform(size=500) < p).astype(int)
    report = evaluate(y, p, grades=Grades(), protected=pd.DataFrame({"g": rng.choice(["a", "b"], 500)}))
    assert {"roc_auc", "pr_auc", "brier", "log_loss", "ece", "lift", "calibration", "confusion", "fairness"} <= set(
        report)
    assert sum(g["leads"] for g in report["grades"].values()) == 500
    report["importance"] = {"a": 0.1, "b": 0.02}
    from pathlib import Path

    paths = save_plots(report, Path(str(tmp_path)), title="t")
    assert [p.name for p in paths] == ["calibration.png", "gains.png", "scores.png", "importance.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_fairness_bands_a_numeric_protected_field() -> None:
    ages = pd.Series([str(float(a)) for a in range(100)] + [None], dtype="string")  # as the spec hands them over
    p = np.where(np.arange(101) < 50, 0.9, 0.1)  # ages 0-49 grade A, 50-99 and the unknown one not
    y = np.zeros(101, dtype=int)
    out = fairness(y, p, pd.DataFrame({"age": ages}), grades=Grades())["age"]
    # quintile edges ("higher" method: positions 0, 19.8, 39.6, 59.4, 79.2, 99 rounded up) = 0, 20, 40, 60, 80, 99
    assert [(g["group"], g["leads"]) for g in out["groups"]] == [
        ("[0, 20)", 20), ("[20, 40)", 20), ("[40, 60)", 20), ("[60, 80)", 20), ("[80, 99]", 20), ("(missing)", 1)]
    # A-grade rates: 1, 1, 10/20 = 0.5 (ages 40-49), 0, 0 -> min 0 / max 1 = 0 over the bands of >= 20 leads
    assert [g["a_grade_rate"] for g in out["groups"][:5]] == [1.0, 1.0, 0.5, 0.0, 0.0]
    assert out["four_fifths_ratio"] == 0.0 and out["flagged"] is True


def test_fairness_keeps_few_numeric_values_as_groups() -> None:
    out = fairness(np.zeros(40, dtype=int), np.full(40, 0.5), pd.DataFrame({"tier": ["1", "2", "3", "4"] * 10}),
                   grades=Grades())["tier"]
    assert [g["group"] for g in out["groups"]] == ["1", "2", "3", "4"]  # 4 values <= 10: not banded


def test_single_field_auc_out_of_fold() -> None:
    y = np.array([0, 1] * 50)
    features = pd.DataFrame({
        "leak": pd.Categorical(np.where(y == 1, "won-call", "no-call")),  # the outcome, recorded after contact
        "id": pd.Categorical([f"L{i}" for i in range(100)]),  # unique: never seen in the other folds
        "visits": np.where(y == 1, 5.0, 1.0),
        "noise": np.zeros(100),
    })
    auc = single_field_auc(features, y)
    # every test lead of "won-call" gets (k + prior) / (k + 1) > every "no-call" lead's prior / (m + 1):
    # the field alone ranks perfectly
    assert auc["leak"] == 1.0 and auc["visits"] == 1.0
    # a constant field scores each lead by its fold's prior alone: no ranking within a fold
    assert auc["noise"] < 0.6 and auc["id"] < 0.6
    warnings = leakage_warnings(auc, labels={"leak": "Call result"})
    assert len(warnings) == 2 and warnings[0].startswith("possible leak: 'Call result' (leak) alone ranks")
    assert "AUC 1.000" in warnings[0] and "`exclude`" in warnings[0]


@pytest.mark.slow
def test_training_warns_of_a_field_that_leaks_the_outcome(leads: pd.DataFrame) -> None:
    from crmdata.tomlfile import read_toml
    from scoring.spec import DEFAULT_SPEC, ModelSpec
    from scoring.training import train

    data = read_toml(DEFAULT_SPEC, what="spec", code="bad_spec")
    data["features"] = [*data["features"], {"column": "call_outcome", "kind": "categorical", "group": "bant",
                                            "label": "Call outcome"}]
    spec = ModelSpec.from_dict(data)
    leaky = leads.assign(call_outcome=np.where(leads["converted"].astype(bool), "interested", "no answer"))
    result = train(leaky, spec=spec, params={"cv": 3, "max_iter": 30, "candidates": ("linear",)})
    assert result.trained.card["field_auc"]["call_outcome"] == 1.0
    # A perfect field also empties grades B and C (warned too); the leak warning names that field alone.
    assert [w.split(" alone")[0] for w in result.report["warnings"] if w.startswith("possible leak")] == [
        "possible leak: 'Call outcome' (call_outcome)"]


def test_groups_give_each_codes_values_in_their_original_order() -> None:
    # codes 2, 0, 2, 1, 0: code 0 at rows 1 and 4, code 1 at row 3, code 2 at rows 0 and 2; code 3 has none.
    order, slices = groups(np.array([2, 0, 2, 1, 0]), 4)
    assert order.tolist() == [1, 4, 3, 0, 2]
    assert [(s.start, s.stop) for s in slices] == [(0, 2), (2, 3), (3, 5), (5, 5)]
    # ECE from the groups: bins 0 (p 0.05, 0.05; y 0, 1) and 9 (p 0.95; y 1): 2/3 x |0.5 - 0.05| + 1/3 x 0.05.
    assert expected_calibration_error(np.array([0, 1, 1]), np.array([0.05, 0.05, 0.95])) == pytest.approx(
        2 / 3 * 0.45 + 1 / 3 * 0.05, abs=1e-15)
