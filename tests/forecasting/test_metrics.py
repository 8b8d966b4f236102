"""The brief's metrics, each checked against numbers worked out by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from forecasting import metrics as m
from forecasting.errors import ForecastInputError


def test_brief_lead_generation_pace_examples() -> None:
    # $250 a day: 250 x 30 = $7,500 in a 30-day month; 250 x 30 x 6 = $45,000 in six such months.
    assert m.pace_target(daily_target=250, days=30) == 7_500
    assert m.pace_target(daily_target=250, days=6 * 30) == 45_000


def test_brief_average_deal_size_example() -> None:
    # 10 won deals worth $1,000 in all: 1,000 / 10 = $100 a deal.
    deals = pd.DataFrame({"outcome": ["won"] * 10, "closed_at": pd.Timestamp("2024-01-02"),
                          "won_amount": [100.0] * 10})
    assert m.average_deal_size(deals) == pytest.approx(100.0)


def test_customer_acquisition_cost() -> None:
    # $1,000 / 10 customers = $100 each; $1,000 / 100 customers = $10 each.
    assert m.customer_acquisition_cost(spend=1_000, new_customers=10) == 100.0
    assert m.customer_acquisition_cost(spend=1_000, new_customers=100) == 10.0
    with pytest.raises(ForecastInputError, match="new_customers"):
        m.customer_acquisition_cost(spend=1_000, new_customers=0)


def test_brief_growth_and_velocity_examples() -> None:
    # (12,000 - 10,000) / 10,000 x 100 = 20%.
    assert m.revenue_growth(previous=10_000, current=12_000) == pytest.approx(20.0)
    # 40 x 25,000 x 0.25 / 90 = 250,000 / 90 = 2,777.78 $/day.
    assert m.sales_velocity(opportunities=40, deal_size=25_000, win_rate=0.25, cycle_days=90) == pytest.approx(
        2_777.78, abs=0.005)


def test_coverage_and_lifetime_value() -> None:
    assert m.pipeline_coverage(pipeline=300_000, target=100_000) == 3.0
    assert m.required_coverage(win_rate=0.25) == 4.0  # 1 / 0.25
    # $100 a month x 80% margin / 5% monthly churn = 80 / 0.05 = $1,600; retention 95% is the same churn.
    assert m.customer_lifetime_value(revenue_per_period=100, gross_margin=0.8, churn_rate=0.05) == pytest.approx(1600)
    assert m.customer_lifetime_value(revenue_per_period=100, gross_margin=0.8, retention_rate=0.95) == pytest.approx(
        1600)
    with pytest.raises(ForecastInputError, match="exactly one"):
        m.customer_lifetime_value(revenue_per_period=100, gross_margin=0.8)
    with pytest.raises(ForecastInputError, match="target"):
        m.pipeline_coverage(pipeline=1, target=-5)


def test_frame_metrics_overall(six_deals: pd.DataFrame) -> None:
    # Won 120 + 180 + 400 = 700 over 3 deals; 3 won of 4 closed; won cycles 10, 20, 30 days.
    assert m.average_deal_size(six_deals) == pytest.approx(700 / 3)
    assert m.win_rate(six_deals) == 0.75
    assert m.average_cycle_days(six_deals) == pytest.approx(20.0)
    assert m.average_cycle_days(six_deals, outcomes=("won", "lost")) == pytest.approx(22.5)  # (10+20+30+30)/4
    assert m.open_pipeline(six_deals) == 1_100.0  # 500 + 600
    # 2 open x 233.33 x 0.75 / 20 days = 17.5 $/day.
    assert m.pipeline_velocity(six_deals) == pytest.approx(17.5)


def test_frame_metrics_for_a_period_and_by_owner(six_deals: pd.DataFrame) -> None:
    january = {"start": "2024-01-01", "end": "2024-02-01"}
    assert m.win_rate(six_deals, **january) == 1.0  # d1 and d2 closed won in January
    assert m.won_revenue(six_deals, **january) == 300.0
    by_owner = m.average_deal_size(six_deals, by="owner")
    assert isinstance(by_owner, pd.Series)
    assert by_owner.to_dict() == {"A": 150.0, "B": 400.0}  # A: (120+180)/2; B: 400/1
    assert m.win_rate(six_deals, by="owner").to_dict() == {"A": 1.0, "B": 0.5}  # type: ignore[union-attr]
    with pytest.raises(ForecastInputError, match="group by 'colour'"):
        m.win_rate(six_deals, by="colour")


def test_revenue_by_month_fills_empty_months(six_deals: pd.DataFrame) -> None:
    monthly = m.revenue_by_period(six_deals, freq="M")
    assert monthly.to_dict() == {pd.Period("2024-01"): 300.0, pd.Period("2024-02"): 0.0,
                                 pd.Period("2024-03"): 400.0}


def test_product_mix(six_deals: pd.DataFrame) -> None:
    mix = m.product_mix(six_deals, start="2024-01-01", end="2024-04-01")
    # X: d1, d2, d6 created; d1, d2 won (300). Y: d3, d4, d5 created; d4 won (400), d3 lost.
    assert mix.loc["X", ["created", "won", "lost"]].tolist() == [3, 2, 0]
    assert mix.loc["Y", ["created", "won", "lost"]].tolist() == [3, 1, 1]
    assert mix["won_revenue"].tolist() == [300.0, 400.0]
    assert mix.loc["X", "revenue_share"] == pytest.approx(300 / 700)


def test_lead_generation_pace_and_shortfall(six_deals: pd.DataFrame) -> None:
    # February 2024 has 29 days; by Feb 16, 15 days elapsed; created in [Feb 1, Feb 16): d4 400 + d5 500 = 900.
    pace = m.lead_generation_pace(six_deals, daily_target=100, start="2024-02-01", end="2024-03-01",
                                  as_of="2024-02-16")
    assert (pace.period_days, pace.days_elapsed) == (29, 15)
    assert pace.period_target == 2_900  # 100 x 29
    assert pace.target_to_date == 1_500  # 100 x 15
    assert pace.actual_to_date == 900
    assert pace.shortfall == 600  # 1,500 - 900
    assert pace.daily_needed == pytest.approx((2_900 - 900) / 14)
    ahead = m.lead_generation_pace(six_deals, daily_target=10, start="2024-02-01", end="2024-03-01",
                                   as_of="2024-02-16")
    assert ahead.shortfall == 0.0  # 900 made against 150 due
