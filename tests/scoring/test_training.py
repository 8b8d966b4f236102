from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from crmdata.errors import DataValidationError
from crmdata.synthetic import generate_leads
from scoring.spec import ModelSpec
from scoring.training import MIN_PER_CLASS, NotEnoughOutcomesError, train
from tests.scoring.conftest import FAST


def test_time_split_holds_out_the_newest_fifth(trained: object, leads: pd.DataFrame) -> None:
    from scoring.training import TrainingResult

    assert isinstance(trained, TrainingResult)
    card = trained.trained.card
    assert card["evaluation"]["kind"] == "time split"
    # 3000 leads -> ceil(0.2 x 3000) = 600 newest held out
    assert len(trained.holdout_ids) == 600 and card["rows"]["evaluated"] == 600
    newest = leads.sort_values("created_at").tail(600)["lead_id"]
    assert set(trained.holdout_ids) == set(newest)
    assert card["selected"] == trained.report["selected"]
    selected = trained.report["candidates"][card["selected"]]
    assert selected["log_loss"] == min(r["log_loss"] for r in trained.report["candidates"].values())
    assert "importance" in selected and len(selected["importance"]) == len(trained.trained.spec.features)
    assert "gender" in selected["fairness"]
    assert card["libraries"]["scikit-learn"]


def test_cross_validation_without_creation_time(leads: pd.DataFrame, spec: ModelSpec) -> None:
    result = train(leads.drop(columns=["created_at"]).head(1500), spec=spec,
                   params={**FAST, "candidates": ("linear",)})
    assert result.trained.card["evaluation"] == {"kind": "stratified cross-validation", "folds": 5,
                                                 "shuffle": True, "random_state": 0}
    assert len(result.holdout_ids) == 1500  # every lead is held out once


def test_refuses_below_the_minimum_and_points_to_the_rules(leads: pd.DataFrame, spec: ModelSpec) -> None:
    converted = leads[leads["converted"] == True].head(MIN_PER_CLASS - 5)  # noqa: E712
    unconverted = leads[leads["converted"] == False].head(200)  # noqa: E712
    with pytest.raises(NotEnoughOutcomesError) as exc:
        train(pd.concat([converted, unconverted]), spec=spec, params=FAST)
    message = str(exc.value)
    assert "5 more converted leads (have 35)" in message
    assert "scoring/rules/default.toml" in message


def test_bad_training_input(leads: pd.DataFrame, spec: ModelSpec) -> None:
    with pytest.raises(DataValidationError, match="'converted': column is missing"):
        train(leads.drop(columns=["converted"]), spec=spec)
    with pytest.raises(DataValidationError, match="one class only"):
        train(leads.assign(converted=False), spec=spec)
    odd = leads.astype({"converted": object})
    odd.loc[5, "converted"] = "maybe"
    with pytest.raises(DataValidationError) as exc:
        train(odd, spec=spec)
    assert (exc.value.problems[0].row, exc.value.problems[0].value) == (6, "maybe")
    strict = ModelSpec.from_dict({"name": "s", "id_column": "lead_id",
                                  "target": {"column": "converted", "positive": ["true"], "negative": ["false"]},
                                  "features": [{"column": "crm_score", "kind": "numeric", "group": "bant"}]})
    with pytest.raises(DataValidationError, match="'crm_score': column is missing"):
        train(leads, spec=strict)
    with pytest.raises(DataValidationError, match="protected column"):
        ModelSpec.from_dict({"name": "s", "id_column": "lead_id", "protected": ["gender"],
                             "target": {"column": "converted", "positive": ["true"]},
                             "features": [{"column": "gender", "kind": "categorical", "group": "demographic"}]})


@pytest.mark.slow
def test_synthetic_auc_near_the_best_possible_and_calibrated(spec: ModelSpec) -> None:
    data = generate_leads(n=20_000, seed=5)
    result = train(data.leads, spec=spec)
    truth = data.truth.set_index("lead_id")["true_probability"]
    best = roc_auc_score(result.holdout_y, truth.loc[result.holdout_ids.to_numpy()].to_numpy())
    metrics = result.trained.card["metrics"]["selected"]
    print(f"synthetic 20k: AUC {metrics['roc_auc']:.4f} vs best {best:.4f}, ECE {metrics['ece']:.4f}")
    assert metrics["roc_auc"] >= best - 0.01
    assert metrics["ece"] <= 0.03
    assert np.isclose(metrics["roc_auc"], roc_auc_score(result.holdout_y, result.holdout_p))


def test_optional_columns_absent_from_the_export(leads: pd.DataFrame, spec: ModelSpec) -> None:
    from scoring.compiled import CompiledModel
    from scoring.spec import prepare

    partial = leads.drop(columns=["country", "age", "last_engagement_at", "budget_stated", "purchase_timeframe"])
    result = train(partial.head(1500), spec=spec, params=FAST)
    pipeline = result.trained.pipeline
    assert result.trained.pipeline.named_steps["model"].empty_columns_.size >= 5
    # Scoring data that does have those columns gives the same answer: the model never learnt from them.
    features = prepare(leads.head(700), spec=spec).features
    compiled = CompiledModel(pipeline)
    base = compiled.features.encode(features)
    expected = pipeline.predict_proba(features)[:, 1]
    assert np.max(np.abs(compiled.proba(base) - expected)) < 1e-9
    assert np.allclose(expected, pipeline.predict_proba(prepare(partial.head(700), spec=spec).features)[:, 1])
    contrib = compiled.contributions(base)
    assert np.all(contrib[:, [f.column for f in spec.features].index("age")] == 0)


def test_fingerprint_in_chunks_is_the_whole_frames(leads: pd.DataFrame) -> None:
    import hashlib

    from scoring.training import fingerprint_frame

    whole = hashlib.sha256("|".join(map(str, leads.columns)).encode())
    whole.update(pd.util.hash_pandas_object(leads.astype(str), index=False).to_numpy().tobytes())
    assert fingerprint_frame(leads, chunk_rows=700) == fingerprint_frame(leads) == whole.hexdigest()

