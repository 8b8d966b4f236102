from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crmdata.errors import DataValidationError, LeadcastError
from scoring.artifacts import TrainedModel, save_trained
from scoring.scorer import ModelScorer, RulesScorer, describe, format_number, load_scorer
from scoring.spec import FeatureSpec, ModelSpec, prepare
from scoring.training import TrainingResult


def test_words_for_values() -> None:
    demo = FeatureSpec("demo", "boolean", "behavioural", "Demo", reason_true="Requested a demo")
    assert describe(demo, 1.0) == "Requested a demo"
    assert describe(demo, 0.0) == "Demo: no"
    quiet = FeatureSpec("seen", "timestamp", "engagement", "Email engagement",
                        reason="No email engagement for {days} days")
    assert describe(quiet, 44.6) == "No email engagement for 45 days"
    assert describe(quiet, None) == "Email engagement: never"
    visits = FeatureSpec("v", "numeric", "behavioural", "Visits", reason="{value} website visits")
    assert describe(visits, 3.0) == "3 website visits"
    assert format_number(1234.0) == "1,234" and format_number(0.4567) == "0.457" and format_number(123.4) == "123"


@pytest.fixture(scope="module")
def scorer(trained: TrainingResult) -> ModelScorer:
    return ModelScorer(trained.trained)


def test_score_frame_shape_and_meaning(scorer: ModelScorer, leads: pd.DataFrame) -> None:
    prepared = prepare(leads.head(200), spec=scorer.spec)
    out = scorer.score_frame(prepared.features, prepared.ids)
    assert list(out.columns) == ["lead_id", "probability", "score", "grade", "reasons_positive", "reasons_negative",
                                 "model_kind", "model_version"]
    # score = calibrated probability x 100, rounded: "72" means 72%
    assert (out["score"] == np.rint(out["probability"] * 100)).all()
    assert set(out["grade"]) <= set("ABCD")
    assert (out.loc[out["probability"] >= 0.6, "grade"] == "A").all()
    assert (out["model_kind"] == "model").all()
    row = out.iloc[int(np.argmax(out["reasons_positive"].str.len()))]
    first = row["reasons_positive"].split("; ")[0]
    assert first.rsplit(": ", 1)[1].startswith("+")


def test_records_and_frame_agree(scorer: ModelScorer, leads: pd.DataFrame) -> None:
    head = leads.head(20)
    records = head.astype(object).where(head.notna(), None).to_dict("records")
    for record in records:
        for key, value in record.items():
            if isinstance(value, pd.Timestamp):
                record[key] = value.isoformat()
    scores = scorer.score_records(records)
    prepared = prepare(head, spec=scorer.spec)
    frame = scorer.score_frame(prepared.features, prepared.ids)
    assert [s.probability for s in scores] == pytest.approx(frame["probability"].tolist(), abs=1e-6)
    as_dict = scores[0].as_dict()
    assert set(as_dict) == {"lead_id", "probability", "score", "grade", "model_kind", "model_version", "reasons"}
    for reason in as_dict["reasons"]["positive"]:
        assert reason["points"] >= 1 and reason["text"]
    with pytest.raises(DataValidationError, match="web_visits"):
        scorer.score_records([{**records[0], "web_visits": "lots"}])


def test_rules_scorer_same_shape(spec: ModelSpec, leads: pd.DataFrame) -> None:
    from scoring.rules import RulesModel

    rules = RulesScorer(RulesModel.from_file(), spec, reference_time="2026-07-01")
    prepared = prepare(leads.head(50), spec=spec)
    out = rules.score_frame(prepared.features, prepared.ids)
    assert (out["model_kind"] == "rules").all() and (out["model_version"] == "rules:default").all()
    assert ((out["probability"] >= 0) & (out["probability"] <= 1)).all()
    demo = prepared.features["demo_requested"].to_numpy() == 1
    assert out.loc[demo, "reasons_positive"].str.contains("Requested a demo").all()
    one = rules.score_records([{"lead_id": "x", "demo_requested": True, "last_activity_at": "2026-07-01"}])[0]
    # base 5 + demo 25 x 0.5**0 => 30; "never engaged" -6 => 24
    assert one.score == 24 and one.positive[0].text == "Requested a demo"


def test_load_scorer_falls_back_to_rules_only_when_no_model(tmp_path: Path, trained: TrainingResult) -> None:
    assert isinstance(load_scorer(models_dir=tmp_path), RulesScorer)
    with pytest.raises(LeadcastError, match="no model '7'"):
        load_scorer("7", models_dir=tmp_path)
    model = TrainedModel(trained.trained.pipeline, trained.trained.spec, dict(trained.trained.card),
                         trained.trained.train_ids, version="3")
    path = save_trained(model, models_dir=tmp_path, name="m", aliases=["champion"])
    assert isinstance(load_scorer(models_dir=tmp_path), ModelScorer)
    assert load_scorer(path, models_dir=tmp_path).version == "3"
    assert load_scorer("3", models_dir=tmp_path).version == "3"


def test_small_and_large_requests_take_different_paths_to_the_same_answer(scorer: ModelScorer,
                                                                          leads: pd.DataFrame) -> None:
    from scoring.scorer import FAST_RECORDS

    head = leads.head(FAST_RECORDS + 6)
    records = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in head.to_dict("records")]
    many = scorer.score_records(records)
    few = scorer.score_records(records[:5]) + scorer.score_records(records[5:10])
    assert [s.probability for s in few] == pytest.approx([s.probability for s in many[:10]], abs=1e-12)
    assert [[str(r) for r in s.positive] for s in few] == [[str(r) for r in s.positive] for s in many[:10]]
    bad = [{**records[0], "demo_requested": "sometimes", "last_activity_at": "yesterday"}]
    for batch in (bad, bad * (FAST_RECORDS + 1)):
        with pytest.raises(DataValidationError) as exc:
            scorer.score_records(batch)
        assert {p.field for p in exc.value.problems} == {"demo_requested", "last_activity_at"}


def test_rules_records_small_and_large_agree(spec: ModelSpec) -> None:
    from scoring.rules import RulesModel
    from scoring.scorer import FAST_RECORDS

    rules = RulesScorer(RulesModel.from_dict({"name": "t", "interest": [
        {"column": "last_activity_at", "older_than_days": 10, "points": 30, "reason": "Quiet since {value}"}]}),
        spec, reference_time="2026-07-01")
    record = {"lead_id": "x", "last_activity_at": "2026-06-01T12:00:00"}
    one = rules.score_records([record])[0]
    many = rules.score_records([record] * (FAST_RECORDS + 1))[0]
    # quiet for 29.5 days > 10 -> 30 points
    assert one.score == many.score == 30
    assert str(one.positive[0]) == str(many.positive[0]) == "Quiet since 2026-06-01: +30"
