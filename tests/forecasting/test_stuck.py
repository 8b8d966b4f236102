"""Stuck deals: the threshold comes from how long winners stayed; the flag finds the generator's stuck deals."""

from __future__ import annotations

import pandas as pd
import pytest

from crmdata.synthetic import generate_opportunities
from forecasting.errors import ForecastInputError
from forecasting.snapshot import snapshot
from forecasting.stage_model import fit_stage_model
from forecasting.stuck import find_stuck, stuck_thresholds
from tests.forecasting.conftest import MAVEN_STAGES, make_deals

T = pd.Timestamp("2024-06-01")


@pytest.fixture
def pipeline() -> pd.DataFrame:
    # Five winners took 10, 20, 30, 40, 50 days in Engaging; one deal was lost; three are open.
    rows = [{"opportunity_id": f"w{d}", "amount": 600, "created_at": "2024-01-01", "stage": "Won",
             "closed_at": (pd.Timestamp("2024-01-01") + pd.Timedelta(days=d)).date().isoformat(),
             "won_amount": 600} for d in (10, 20, 30, 40, 50)]
    rows.append({"opportunity_id": "l1", "amount": 600, "created_at": "2024-01-01", "stage": "Lost",
                 "closed_at": "2024-01-15", "won_amount": 0})
    for name, days in (("ok", 41), ("late", 43), ("stale", 100)):
        created = (T - pd.Timedelta(days=days)).date().isoformat()
        rows.append({"opportunity_id": name, "owner": "Rep", "amount": 600, "created_at": created,
                     "stage": "Engaging"})
    return make_deals(rows)


def test_threshold_is_the_80th_percentile_of_winners_days(pipeline: pd.DataFrame) -> None:
    snap = snapshot(pipeline, as_of=T, stages=MAVEN_STAGES)
    model = fit_stage_model(snap, stages=MAVEN_STAGES, as_of=T)
    limits = stuck_thresholds(model)
    # 80th percentile of 10..50 (linear): position 0.8 x 4 = 3.2 -> 40 + 0.2 x 10 = 42 days.
    assert limits["Engaging"] == pytest.approx(42.0)
    stuck = find_stuck(snap, model=model, thresholds=limits).set_index("opportunity_id")
    assert list(stuck.index) == ["stale", "late"]  # equal value at risk: the longer overdue first
    assert stuck.loc["late", "days_over"] == pytest.approx(1.0)  # 43 - 42
    assert stuck.loc["stale", "days_over"] == pytest.approx(58.0)  # 100 - 42
    # Value at risk: 600 x realisation 1 x P(win | Engaging) = 600 x 5/6 = 500.
    assert stuck.loc["stale", "value_at_risk"] == pytest.approx(500.0)
    assert stuck.loc["stale", "owner"] == "Rep"


def test_thresholds_can_be_overridden_per_stage(pipeline: pd.DataFrame) -> None:
    snap = snapshot(pipeline, as_of=T, stages=MAVEN_STAGES)
    model = fit_stage_model(snap, stages=MAVEN_STAGES, as_of=T)
    limits = stuck_thresholds(model, overrides={"Engaging": 99})
    assert list(find_stuck(snap, model=model, thresholds=limits)["opportunity_id"]) == ["stale"]
    with pytest.raises(ForecastInputError, match="unknown stage"):
        stuck_thresholds(model, overrides={"Negotiating": 5})
    with pytest.raises(ForecastInputError, match="percentile"):
        stuck_thresholds(model, percentile=120)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_flag_finds_the_generated_stuck_deals(seed: int) -> None:
    data = generate_opportunities(n=8000, seed=seed)
    snap = snapshot(data.opportunities, as_of=data.as_of, stages=data.stages, history=data.history)
    model = fit_stage_model(snap, stages=data.stages, as_of=data.as_of, history=data.history)
    flagged = set(find_stuck(snap, model=model, thresholds=stuck_thresholds(model))["opportunity_id"])
    open_ids = snap.loc[snap["outcome"] == "open", "opportunity_id"]
    truly = set(open_ids[data.truth.set_index("opportunity_id").loc[open_ids, "stuck"].to_numpy(bool)])
    hits = len(flagged & truly)
    precision, recall = hits / len(flagged), hits / len(truly)
    print(f"\nseed {seed}: stuck precision {precision:.3f}, recall {recall:.3f} ({len(truly)} stuck deals)")
    assert precision >= 0.9
    assert recall >= 0.9
