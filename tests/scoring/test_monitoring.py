from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from crmdata.synthetic import generate_leads
from scoring.monitoring import PSI_ALERT, health, outcome_health, profile_feature, psi
from scoring.scorer import ModelScorer
from scoring.spec import Grades, ModelSpec, prepare
from scoring.training import TrainingResult


def test_psi_by_hand() -> None:
    # (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5) = 0.25 x 0.6931 + 0.25 x 0.4055 = 0.2747
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5))
    assert psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0
    # an empty bin is floored at 1e-4 instead of dividing by zero: (1e-4 - 0.5) ln(1e-4 / 0.5) + (1 - 0.5) ln 2
    assert psi([0.5, 0.5], [0.0, 1.0]) == pytest.approx((1e-4 - 0.5) * math.log(1e-4 / 0.5) + 0.5 * math.log(2))


def test_feature_profiles() -> None:
    numeric = profile_feature(pd.Series([1.0, 2.0, 3.0, 4.0, np.nan]), column="v", kind="numeric")
    # 4 present values: deciles 1.3, 1.6, ..., 3.7 cut them into bins holding one value each
    assert numeric["missing_rate"] == 0.2 and numeric["mean"] == 2.5 and sum(numeric["shares"]) == 1.0
    assert sorted(numeric["shares"], reverse=True)[:4] == [0.25] * 4
    text = profile_feature(pd.Series(["a", "a", "b", None]), column="c", kind="categorical")
    # shares of the present values: a 2/3, b 1/3, nothing left for other
    assert text["categories"] == ["a", "b"] and text["shares"] == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert text["known"] == ["a", "b"]


def test_outcome_health_by_hand() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    out = outcome_health(y=y, probability=p, grades=Grades(a=0.7, b=0.3, c=0.15),
                         base_rate_training=0.25, rng=np.random.default_rng(0), n_boot=20)
    # AUC: of the 4 (converted, not) pairs, 0.35 > 0.1, 0.8 > 0.1, 0.8 > 0.4 are ordered right, 0.35 < 0.4 not: 3/4.
    assert out["roc_auc"] == pytest.approx(0.75, abs=1e-15)
    # Brier: (0.1^2 + 0.4^2 + 0.65^2 + 0.2^2) / 4 = (0.01 + 0.16 + 0.4225 + 0.04) / 4 = 0.158125
    assert out["brier"] == pytest.approx(0.158125, abs=1e-15)
    # log loss: -(ln 0.9 + ln 0.6 + ln 0.35 + ln 0.8) / 4
    assert out["log_loss"] == pytest.approx(-(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.8)) / 4,
                                            abs=1e-15)
    # ECE over 10 bins, one lead each in bins 1, 3, 4, 8: (|0 - 0.1| + |1 - 0.35| + |0 - 0.4| + |1 - 0.8|) / 4
    assert out["ece"] == pytest.approx((0.1 + 0.65 + 0.4 + 0.2) / 4)
    assert out["base_rate"] == 0.5 and out["mean_probability"] == pytest.approx(0.4125)


@pytest.fixture(scope="module")
def scorer(trained: TrainingResult) -> ModelScorer:
    return ModelScorer(trained.trained)


def _health(scorer: ModelScorer, leads: pd.DataFrame) -> dict:
    spec: ModelSpec = scorer.spec
    prepared = prepare(leads, spec=spec, with_target=True)
    assert prepared.target is not None
    p = scorer.score_frame(prepared.features, prepared.ids, reasons=False)["probability"].to_numpy()
    return health(profile=scorer.trained.card["profile"], features=prepared.features, probability=p, spec=spec,
                  outcomes=(prepared.target, p), rng=np.random.default_rng(0), n_boot=50)


def test_the_same_population_raises_nothing(scorer: ModelScorer) -> None:
    report = _health(scorer, generate_leads(n=3000, seed=12).leads)
    assert report["alerts"] == []
    assert all(f["psi"] is None or f["psi"] < PSI_ALERT for f in report["features"])
    assert report["outcomes"]["ece"] < 0.05


def test_a_shifted_feature_and_a_doubled_conversion_rate_raise_alerts(scorer: ModelScorer) -> None:
    leads = generate_leads(n=3000, seed=12).leads
    rng = np.random.default_rng(3)
    leads["web_visits"] = leads["web_visits"] * 3
    # after training, a campaign doubles conversion: flip unconverted leads until the rate is 2x
    rate = leads["converted"].astype(bool).mean()
    flip = (~leads["converted"].astype(bool)) & (rng.random(len(leads)) < rate / (1 - rate))
    leads.loc[flip, "converted"] = True
    report = _health(scorer, leads)
    by_column = {f["column"]: f for f in report["features"]}
    assert by_column["web_visits"]["level"] == "alert"
    assert report["features"][0]["column"] == "web_visits"  # the most shifted first
    alerts = " | ".join(report["alerts"])
    assert "Website visits has shifted (PSI" in alerts and "its mean is now 3.0x the training mean" in alerts
    assert "calibration: these leads converted at" in alerts
    assert report["outcomes"]["base_rate"] == pytest.approx(2 * rate, abs=0.03)


def test_the_bootstrap_metrics_equal_scikit_learns() -> None:
    from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

    from scoring.monitoring import FAST_METRICS

    rng = np.random.default_rng(4)
    y = (rng.random(500) < 0.3).astype(np.int64)
    p = np.round(rng.random(500), 2)  # rounded: ties, counted at half by both
    assert FAST_METRICS["roc_auc"](y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert FAST_METRICS["brier"](y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    assert FAST_METRICS["log_loss"](y, p) == pytest.approx(log_loss(y, np.clip(p, 1e-12, 1 - 1e-12)), abs=1e-9)
    # y = [1, 0, 1], p = [0.9, 0.2, 0.2]: pairs (pos, neg) = (0.9 > 0.2) 1 + (0.2 = 0.2) 0.5 = 1.5 of 2
    assert FAST_METRICS["roc_auc"](np.array([1, 0, 1]), np.array([0.9, 0.2, 0.2])) == 0.75


def test_unseen_categories_per_field_with_their_own_warning_and_alert(scorer: ModelScorer) -> None:
    leads = generate_leads(n=3000, seed=12).leads
    # every 4th lead from a source training never saw (750 / 3000 = 25% >= the 20% alert), every 10th an
    # unseen industry (300 / 3000 = 10%: a warning, between 5% and 20%)
    leads.loc[leads.index % 4 == 0, "source"] = "tiktok-campaign"
    leads.loc[leads.index % 10 == 0, "industry"] = "space mining"
    report = _health(scorer, leads)
    by_column = {f["column"]: f for f in report["features"]}
    assert by_column["source"]["unseen_share"] == pytest.approx(0.25)
    assert by_column["source"]["unseen_level"] == "alert"
    # the share is of the leads with a value: industry is missing for some, so 300 / (leads with an industry)
    present = int(leads["industry"].notna().sum())
    assert by_column["industry"]["unseen_share"] == pytest.approx(300 / present) and 0.05 < 300 / present < 0.2
    assert by_column["industry"]["unseen_level"] == "warning"
    assert report["unseen_categories"]["source"] == pytest.approx(0.25)
    assert report["unseen_categories"]["country"] == 0.0  # counted, and none unseen
    assert "web_visits" not in report["unseen_categories"]  # numbers have no categories
    assert any(a.startswith("25% of leads have a Source value training never saw") for a in report["alerts"])
    warned = f"{300 / present:.0%} of leads have a Industry value training never saw"
    assert any(w.startswith(warned) for w in report["warnings"])
    assert not any("Industry value" in a for a in report["alerts"])


def test_a_rare_category_and_a_new_one_are_unseen_alike_in_scoring_warnings_and_model_health(
        leads: pd.DataFrame, spec: ModelSpec) -> None:
    from scoring.scorer import kept_categories
    from scoring.training import train
    from tests.scoring.conftest import FAST

    training = leads.copy()
    # 5 leads from 'fax': rarer than rare_min_count (20), so not kept; the newest, so among the held-out
    # leads the profile is built on (its "known" values hold 'fax': counting against those would miss it)
    newest = training.sort_values(spec.created_at_column).index[-5:]
    training.loc[newest, "source"] = "fax"
    model = ModelScorer(train(training, spec=spec, params=FAST).trained)
    assert "fax" not in kept_categories(model.compiled.features)["source"]
    source = next(f for f in model.trained.card["profile"]["features"] if f["column"] == "source")
    assert "fax" in source["known"] and "fax" not in source["kept"]
    # 100 new leads: 8 from 'fax' (rare in training), 12 from 'carrier pigeon' (never seen), 80 from 'referral'.
    new = leads.head(100).copy()
    new["source"] = ["fax"] * 8 + ["carrier pigeon"] * 12 + ["referral"] * 80
    assert "referral" in kept_categories(model.compiled.features)["source"]
    records = new.drop(columns=[spec.target.column]).to_dict(orient="records")
    scored = model.score_records(records, reasons=False)  # what POST /v1/leads/score answers
    warned = [s.warnings for s in scored if any(w.startswith("Source:") for w in s.warnings or ())]
    assert len(warned) == 8 + 12
    prepared = prepare(new, spec=spec, with_target=True)
    assert model.unseen_counts(prepared.features) == {"Source 'fax'": 8, "Source 'carrier pigeon'": 12}
    report = _health(model, new)
    # model health: (8 + 12) / 100 leads with a source = 20%, the alert level
    assert report["unseen_categories"]["source"] == pytest.approx(0.20)
    assert {f["column"]: f for f in report["features"]}["source"]["unseen_level"] == "alert"
