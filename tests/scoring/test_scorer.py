from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crmdata.errors import DataValidationError, LeadcastError
from scoring.artifacts import TrainedModel, save_trained
from scoring.scorer import ModelScorer, Reason, RulesScorer, describe, format_number, load_scorer
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
    as_json = scores[0].as_json()
    assert list(as_json) == ["id", "probability", "score", "grade", "reasons", "trend", "percentile"]  # the API item
    assert [r["contribution"] for r in as_json["reasons"]] == [r.contribution for r in scores[0].reasons or ()]
    for reason in as_json["reasons"]:
        assert set(reason) == {"feature", "text", "contribution"} and abs(reason["contribution"]) >= 1
    assert [r.contribution > 0 for r in scores[0].reasons or ()] == sorted(
        (r.contribution > 0 for r in scores[0].reasons or ()), reverse=True)  # positive ones first
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


def _top_reasons_one_by_one(contrib: np.ndarray, texts: np.ndarray, fields: list[FeatureSpec], top: int,
                            ) -> tuple[list[list[Reason]], list[list[Reason]]]:
    """Each lead's reasons picked lead by lead: the definition `_top_reasons` computes for all at once."""
    points = np.rint(contrib * 100).astype(np.int64)
    k = min(top, contrib.shape[1])
    positives, negatives = [], []
    for i in range(contrib.shape[0]):
        order_pos = np.argsort(-contrib[i], kind="stable")[:k]
        order_neg = np.argsort(contrib[i], kind="stable")[:k]
        positives.append([Reason(fields[j].column, str(texts[i, j]), int(points[i, j]))
                          for j in order_pos if points[i, j] >= 1])
        negatives.append([Reason(fields[j].column, str(texts[i, j]), int(points[i, j]))
                          for j in order_neg if points[i, j] <= -1])
    return positives, negatives


@pytest.mark.parametrize("top", [1, 3, 5, 12])
def test_top_reasons_for_all_leads_at_once_match_lead_by_lead(top: int) -> None:
    from scoring.scorer import _top_reasons

    rng = np.random.default_rng(top)
    contrib = np.round(rng.normal(0, 0.04, (400, 9)), 3)  # rounded: ties, and values on the 0.5-point edge
    contrib[:, 4] = contrib[:, 2]
    contrib[::7] = 0.0
    fields = [FeatureSpec(f"f{j}", "numeric", "behavioural", f"F{j}") for j in range(9)]
    texts = np.array([[f"lead {i} field {j}" for j in range(9)] for i in range(400)], dtype=object)
    expected = _top_reasons_one_by_one(contrib, texts, fields, top)
    assert _top_reasons(contrib, texts, fields, top) == expected
    asked: list[int] = []

    def words(j: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        asked.append(j)
        return np.asarray(texts[rows, j]), np.arange(rows.size)

    cache: dict[tuple[int, object, int], Reason] = {}
    first = _top_reasons(contrib, words, fields, top, cache)
    assert first == expected
    assert len(asked) == len(set(asked))  # each field's words asked for once, for the reasons shown only
    second = _top_reasons(contrib, words, fields, top, cache)
    assert second == expected
    shown = list(zip(itertools.chain(*first[0]), itertools.chain(*second[0]), strict=True))
    assert shown and all(a is b for a, b in shown)  # equal reasons are one shared (immutable) object


def test_reason_strings_of_leads_with_no_negative_reason_at_all() -> None:
    from scoring.scorer import _reason_strings

    # Lead 0: +0.20 is 20 points, -0.001 rounds to 0 points; lead 1: +0.05 is 5 points. No negative reason in
    # the whole chunk, so the negative side has no field to word (it raised a ValueError from zip).
    contrib = np.array([[0.2, -0.001], [0.05, 0.0]])

    def words(j: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray([f"field {j}"], dtype=object), np.zeros(rows.size, dtype=np.int64)

    positive, negative = _reason_strings(contrib, words, 5)
    assert list(positive) == ["field 0: +20", "field 0: +5"]
    assert list(negative) == ["", ""]


def test_many_records_get_their_top_contributions_in_words(scorer: ModelScorer, leads: pd.DataFrame) -> None:
    from scoring.scorer import FAST_RECORDS, records_frame

    head = leads.head(3 * FAST_RECORDS)
    records = [{str(k): (None if pd.isna(v) else v) for k, v in r.items()} for r in head.to_dict("records")]
    scores = scorer.score_records(records)
    prepared = prepare(records_frame(records), spec=scorer.spec, table="records")
    base = scorer.compiled.features.encode(prepared.features)
    p = scorer.compiled.proba(base)
    contrib = scorer.compiled.contributions(base, p)
    fields = list(scorer.spec.features)

    def value(i: int, f: FeatureSpec) -> object:
        if f.kind == "categorical":
            raw = prepared.features[f.column].iloc[i]
            return None if pd.isna(raw) else raw
        number = float(base[f.column][i])
        return None if np.isnan(number) else (float(np.rint(number)) if f.kind == "timestamp" else number)

    texts = np.array([[describe(f, value(i, f)) for f in fields] for i in range(len(records))], dtype=object)
    positive, negative = _top_reasons_one_by_one(contrib, texts, fields, 5)
    assert [s.id for s in scores] == prepared.ids.tolist()
    assert [s.probability for s in scores] == pytest.approx(p.tolist(), abs=1e-12)
    assert [s.positive for s in scores] == positive
    assert [s.negative for s in scores] == negative
    assert [s.score for s in scores] == [int(min(100, max(0, round(x * 100)))) for x in p.tolist()]


def test_few_leads_get_the_same_reasons_as_many(monkeypatch: pytest.MonkeyPatch) -> None:
    import scoring.scorer as scorer_module

    fields = [FeatureSpec(column=f"f{j}", kind="numeric", group="g", label=f"F{j}") for j in range(7)]
    # Ties (0.2 twice), half points (0.005 -> 0 and 0.015 -> 2, rounded half to even as np.rint does), a field
    # under one point (0.004) and all-zero rows: every ordering rule the numpy path follows.
    contrib = np.asarray([[0.2, -0.1, 0.2, 0.005, 0.015, -0.004, -0.3],
                          [0.0] * 7,
                          [-0.015, -0.025, 0.1, 0.0, 0.5, -0.5, 0.01]])
    texts = np.asarray([[f"lead {i} field {j}" for j in range(7)] for i in range(3)], dtype=object)
    few = scorer_module._top_reasons(contrib, texts, fields, 3)
    monkeypatch.setattr(scorer_module, "FEW_LEADS", 0)
    many = scorer_module._top_reasons(contrib, texts, fields, 3)
    assert few == many
    # lead 0, positives: 0.2 (f0), 0.2 (f2, after f0: stable), 0.015 -> 2 points (f4); negatives: f6, f1
    assert [(r.feature, r.contribution) for r in few[0][0]] == [("f0", 20), ("f2", 20), ("f4", 2)]
    assert [(r.feature, r.contribution) for r in few[1][0]] == [("f6", -30), ("f1", -10)]
    assert few[0][1] == [] and few[1][1] == []
    # lead 2: -0.025 rounds to -2 (half to even), -0.015 to -2
    assert [(r.feature, r.contribution) for r in few[1][2]] == [("f5", -50), ("f1", -2), ("f0", -2)]


def test_a_lead_gets_the_same_reasons_alone_through_the_api_path_as_in_a_batch(scorer: ModelScorer,
                                                                              leads: pd.DataFrame) -> None:
    # The batch writes "words: +n; words: +m" per side; the API answers Reason objects. For each of 40 leads
    # scored alone (the one-record path), its reasons written out must be the batch's strings for that lead.
    head = leads.head(40)
    prepared = prepare(head, spec=scorer.spec)
    batch = scorer.score_frame(prepared.features, prepared.ids)
    records = [{str(k): (None if pd.isna(v) else (v.isoformat() if isinstance(v, pd.Timestamp) else v))
                for k, v in r.items()} for r in head.to_dict("records")]
    shown = 0
    for i, record in enumerate(records):
        (alone,) = scorer.score_records([record])
        assert "; ".join(map(str, alone.positive)) == batch["reasons_positive"].iloc[i]
        assert "; ".join(map(str, alone.negative)) == batch["reasons_negative"].iloc[i]
        shown += len(alone.reasons or ())
    assert shown >= 40 * 3  # most leads have several reasons, so the comparison is not of empty strings
