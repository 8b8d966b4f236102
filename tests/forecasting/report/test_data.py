"""The report's own figures on hand-made deals (see tests/forecasting/conftest.py: six_deals)."""

from __future__ import annotations

import pandas as pd
import pytest

from crmdata.errors import DataValidationError
from crmdata.loaders import Pipeline
from forecasting import metrics
from forecasting.periods import parse_horizon
from forecasting.report import data
from forecasting.snapshot import snapshot
from tests.forecasting.conftest import MAVEN_STAGES

AS_OF = pd.Timestamp("2024-04-01")


@pytest.fixture
def snap(six_deals: pd.DataFrame) -> pd.DataFrame:
    return snapshot(six_deals, as_of=AS_OF, stages=MAVEN_STAGES)


def test_past_periods_skip_months_before_the_first_close(snap: pd.DataFrame) -> None:
    out = data.past_periods(snap, as_of=AS_OF, horizon=parse_horizon("1M"), count=3)
    # January starts before the first close (Jan 11) so it is left out; February won nothing; March won d4 ($400).
    assert out["label"].tolist() == ["2024-02", "2024-03"]
    assert out["won_revenue"].tolist() == [0.0, 400.0]


def test_past_quarters_are_whole_quarters_before_as_of(six_deals: pd.DataFrame) -> None:
    t = pd.Timestamp("2024-07-15")
    snap = snapshot(six_deals, as_of=t, stages=MAVEN_STAGES)
    out = data.past_periods(snap, as_of=t, horizon=parse_horizon("1Q"), count=4)
    # Q2 is whole by Jul 15, Q3 is not; Q1 2024 starts before the first close, 2023 too.
    assert out["label"].tolist() == ["2024-Q2"]


def test_funnel_counts_open_deals_by_stage(snap: pd.DataFrame) -> None:
    out = data.funnel(snap, stages=MAVEN_STAGES)
    # d5 ($500) and d6 ($600) are open in Engaging; nobody is in Prospecting.
    assert out.to_dict(orient="list") == {"stage": ["Prospecting", "Engaging"], "open_deals": [0, 2],
                                          "open_value": [0.0, 1100.0]}


def test_group_table_ranks_by_velocity(snap: pd.DataFrame) -> None:
    out = data.group_table(snap, by="owner").set_index("owner")
    # A: won d1 ($120, 10 days) and d2 ($180, 20 days), d5 open: win rate 1, deal size 150, cycle 15,
    #    velocity 1 x 150 x 1 / 15 = $10/day.
    # B: lost d3, won d4 ($400, 30 days), d6 open: win rate 0.5, deal size 400, cycle 30, 1 x 400 x 0.5 / 30.
    assert out.loc["A", ["rank", "open_deals", "closed_deals", "won_deals"]].tolist() == [1, 1, 2, 2]
    assert out.loc["A", "sales_velocity_per_day"] == pytest.approx(10.0)
    assert out.loc["A", "open_pipeline"] == 500.0 and out.loc["A", "won_revenue"] == 300.0
    assert out.loc["B", "rank"] == 2
    assert out.loc["B", "win_rate"] == 0.5 and out.loc["B", "average_cycle_days"] == pytest.approx(30.0)
    assert out.loc["B", "sales_velocity_per_day"] == pytest.approx(400 * 0.5 / 30)


def test_velocity_trend_matches_a_snapshot_at_each_date(six_deals: pd.DataFrame, snap: pd.DataFrame) -> None:
    out = data.velocity_trend(snap, as_of=AS_OF, months=2, window_days=90).set_index("date")
    # Apr 1: d5, d6 open; closed Jan 2 - Mar 31: d1, d2, d4 won, d3 lost -> win rate 3/4, deal size 700 / 3,
    # cycle (10 + 20 + 30) / 3 = 20; velocity 2 x 233.33 x 0.75 / 20 = 17.5.
    assert out.loc[AS_OF, "open_deals"] == 2
    assert out.loc[AS_OF, "sales_velocity_per_day"] == pytest.approx(17.5)
    # Mar 1: d4 (closes Mar 2) and d5 open; closed Dec 2 - Feb 29: d1, d2 won, d3 lost -> 2/3, $150, 15 days;
    # velocity 2 x 150 x 2/3 / 15 = 13.33.
    t = pd.Timestamp("2024-03-01")
    assert out.loc[t, "open_deals"] == 2
    assert out.loc[t, "sales_velocity_per_day"] == pytest.approx(2 * 150 * (2 / 3) / 15)
    then = snapshot(six_deals, as_of=t, stages=MAVEN_STAGES)
    assert out.loc[t, "sales_velocity_per_day"] == pytest.approx(
        metrics.pipeline_velocity(then, start=t - pd.Timedelta(days=90), end=t))


@pytest.mark.parametrize(("horizon", "expected"), [
    # First win Jan 11; months before Jun 1 from Dec 1; every 1M horizon ends by Jun 1.
    ("1M", ["2024-02-01", "2024-03-01", "2024-04-01", "2024-05-01"]),
    # A quarter from Apr 1 or May 1 ends Jul 1, after the as-of date: its revenue is not known yet.
    ("1Q", ["2024-02-01", "2024-03-01"]),
])
def test_backtest_dates_only_score_known_revenue(six_deals: pd.DataFrame, horizon: str,
                                                 expected: list[str]) -> None:
    dates = data.backtest_dates(six_deals, as_of=pd.Timestamp("2024-06-01"), horizon=parse_horizon(horizon),
                                months=6)
    assert [d.date().isoformat() for d in dates] == expected


def test_lead_grades_count_each_grade() -> None:
    scores = pd.DataFrame({"score": [72, 65, 40, 10, 12], "grade": ["A", "A", "B", "D", "D"]})
    table, values, grades = data.lead_grades(scores)
    assert table["leads"].tolist() == [2, 1, 0, 2]
    assert table["share"].tolist() == [0.4, 0.2, 0.0, 0.4]
    assert table["mean_score"].iloc[0] == 68.5  # (72 + 65) / 2
    assert values.tolist() == [72.0, 65.0, 40.0, 10.0, 12.0] and grades.tolist() == ["A", "A", "B", "D", "D"]


def test_lead_grades_name_bad_rows() -> None:
    with pytest.raises(DataValidationError) as err:
        data.lead_grades(pd.DataFrame({"score": [50, 140], "grade": ["B", "E"]}))
    text = str(err.value)
    assert "row 2, field 'score'" in text and "row 2, field 'grade'" in text
    with pytest.raises(DataValidationError, match="field 'grade': column is missing"):
        data.lead_grades(pd.DataFrame({"score": [50]}))


@pytest.mark.parametrize("by", ["owner", "product", "product_category"])
def test_group_table_agrees_with_the_metrics_library(small_pipeline: Pipeline, by: str) -> None:
    p = small_pipeline
    snap = snapshot(p.opportunities, as_of=pd.Timestamp("2026-07-01"), stages=p.stages, history=p.history)
    out = data.group_table(snap, by=by).set_index(by)
    expected = pd.DataFrame({
        "open_pipeline": metrics.open_pipeline(snap, by=by),
        "won_revenue": metrics.won_revenue(snap, by=by),
        "win_rate": metrics.win_rate(snap, by=by),
        "average_deal_size": metrics.average_deal_size(snap, by=by),
        "average_cycle_days": metrics.average_cycle_days(snap, by=by),
        "sales_velocity_per_day": metrics.pipeline_velocity(snap, by=by),
    }).reindex(out.index)
    pd.testing.assert_frame_equal(out[expected.columns].astype(float), expected.fillna({
        "open_pipeline": 0.0, "won_revenue": 0.0}).astype(float), check_names=False, rtol=1e-12)
    assert out["closed_deals"].sum() == len(metrics.closed_in(snap))
    assert out["rank"].tolist() == list(range(1, len(out) + 1))
    velocity = out["sales_velocity_per_day"].dropna()
    assert velocity.is_monotonic_decreasing
