"""Forecasts: hand-checked velocity and stage-weighted numbers, a JSON-ready result, clear refusals, and a
Monte Carlo whose mean lands on the revenue the synthetic generator really closes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from crmdata.stages import DEFAULT_STAGES
from crmdata.synthetic import generate_opportunities
from forecasting.errors import ForecastInputError
from forecasting.forecast import forecast, monte_carlo, new_deal_means, plan, stage_weighted, velocity_forecast
from tests.forecasting.conftest import MAVEN_STAGES


def test_velocity_and_stage_weighted_by_hand(six_deals: pd.DataFrame) -> None:
    p = plan(six_deals, stages=MAVEN_STAGES, as_of="2024-03-03", horizon="30D")
    # Open: d5 ($500) and d6 ($600) in Engaging; P(win | Engaging) = 3 won / 4 closed = 0.75.
    assert stage_weighted(p) == pytest.approx(825.0)  # (500 + 600) x 0.75
    # Velocity: 2 deals x $233.33 average deal x 0.75 / 20 days to win = $17.50 a day, for 20 of the 30 days.
    assert velocity_forecast(p).tolist() == pytest.approx([350.0])


@pytest.fixture(scope="module")
def synthetic() -> tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp]:
    data = generate_opportunities(n=1500, seed=11)
    return data.opportunities, data.history, data.as_of


def test_forecast_result_is_complete_and_json_ready(synthetic: tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp]) -> None:
    deals, history, as_of = synthetic
    result = forecast(deals, stages=DEFAULT_STAGES, history=history,
                      as_of=as_of, horizon="3M", target=0.0, by="owner", n_sims=2000,
                      rng=np.random.default_rng(0))
    assert len(result.periods) == 3
    for p in (*result.periods, result.total):
        assert 0 <= p.p10 <= p.p50 <= p.p90
    assert result.probability_of_target == 1.0  # every simulated total reaches $0
    assert result.total.mean == pytest.approx(sum(p.mean for p in result.periods), rel=1e-9)
    assert len(result.drivers) == 10 and result.drivers[0].spread_share >= result.drivers[-1].spread_share
    assert result.groups and {g.group for g in result.groups} >= set(deals.loc[deals["outcome"] == "open", "owner"])
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["as_of"] == "2026-07-01" and data["periods"][0]["start"] == "2026-07-01"
    assert set(data) >= {"periods", "total", "stage_weighted", "probability_of_target", "drivers", "stuck",
                         "metrics", "model", "groups"}
    again = forecast(deals, stages=DEFAULT_STAGES, history=history,
                     as_of=as_of, horizon="3M", n_sims=2000, rng=np.random.default_rng(0))
    assert again.total.p50 == pytest.approx(result.total.p50)  # seeded: the same numbers


def test_bad_input_is_refused_with_a_clear_message(six_deals: pd.DataFrame) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ForecastInputError, match="no opportunity was created before the as-of date 2019-01-01"):
        forecast(six_deals, stages=MAVEN_STAGES, as_of="2019-01-01", horizon="1M", rng=rng)
    with pytest.raises(ForecastInputError, match="horizon '3X' does not parse"):
        forecast(six_deals, stages=MAVEN_STAGES, as_of="2024-03-03", horizon="3X", rng=rng)
    with pytest.raises(ForecastInputError, match="pipeline is empty"):
        forecast(six_deals.iloc[0:0], stages=MAVEN_STAGES, as_of="2024-03-03", horizon="1M", rng=rng)
    with pytest.raises(ForecastInputError, match="target must be a non-negative"):
        forecast(six_deals, stages=MAVEN_STAGES, as_of="2024-03-03", horizon="1M", target=-5, rng=rng)
    with pytest.raises(ForecastInputError, match="not a date"):
        forecast(six_deals, stages=MAVEN_STAGES, as_of="someday", horizon="1M", rng=rng)


@pytest.mark.slow
def test_monte_carlo_mean_matches_what_the_generator_closes() -> None:
    errors = []
    for seed in range(1, 7):
        data = generate_opportunities(n=40_000, seed=seed)
        p = plan(data.opportunities, stages=data.stages, history=data.history, as_of=data.as_of, horizon="6W")
        mean = monte_carlo(p, n_sims=2000, rng=np.random.default_rng(seed)).revenue.sum(axis=1).mean()
        truth = data.truth
        won = truth[(truth["final_outcome"] == "won") & (truth["final_closed_at"] >= data.as_of)
                    & (truth["final_closed_at"] < p.periods[-1].end)]
        errors.append(mean / float(won["final_won_amount"].sum()) - 1)
    print(f"\nMonte Carlo mean vs generated revenue, 6 weeks, per seed: {np.round(errors, 3)}; "
          f"average {np.mean(errors):+.3f}")
    assert abs(np.mean(errors)) <= 0.03


@pytest.mark.slow
def test_replayed_forecasts_match_what_the_generator_closed() -> None:
    # The report's backtest on the demo CRM (5,000 deals): as of the first of January to June 2026, with only
    # what was known then, forecast the won revenue up to the end of the quarter, and compare the expected value
    # (open deals' value x odds + new deals' count x mean size) with what the generator's truth closed.
    # With every product's timing pulled towards the stage's (200 deal-days per age bin and quarter phase) this
    # was +9.7% on average (6 seeds x 6 months), while the forward test above looked right; a CRM Enterprise deal
    # ($48k, 1.6x the stage durations) created in the quarter was credited with the pace of the fast products.
    errors = []
    enterprise_new = np.zeros(2)  # (expected, generated) wins within the quarter of Enterprise deals created in it
    for seed in range(1, 7):
        data = generate_opportunities(n=5000, seed=seed)
        truth = data.truth
        for month in range(1, 7):
            t = pd.Timestamp(2026, month, 1)
            p = plan(data.opportunities, stages=data.stages, history=data.history, as_of=t, horizon="1Q")
            end = p.periods[-1].end
            won = truth[(truth["final_outcome"] == "won") & (truth["final_closed_at"] >= t)
                        & (truth["final_closed_at"] < end)]
            expected = float((p.values @ p.probs).sum() + new_deal_means(p).sum())
            errors.append(expected / float(won["final_won_amount"].sum()) - 1)
            if month in (1, 4):
                created = truth[(truth["created_at"] >= t) & (truth["product"] == "CRM Enterprise")]
                enterprise_new += [p.new_counts[p.new_segments.index("CRM Enterprise")].sum(),
                                   int(created["opportunity_id"].isin(won["opportunity_id"]).sum())]
    print(f"\nreplayed expected vs generated revenue, 1Q, 6 seeds x 6 months: mean {np.mean(errors):+.3f}; "
          f"CRM Enterprise new-deal wins expected {enterprise_new[0]:.1f}, generated {enterprise_new[1]:.0f}")
    assert abs(np.mean(errors)) <= 0.05  # -1.1% (was +9.7%)
    # 26 such wins in the 12 quarters replayed; the pooled pace expected 54.5, the product's own 28.6.
    assert enterprise_new[0] <= 1.3 * enterprise_new[1]
