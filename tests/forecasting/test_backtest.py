"""Backtests: baselines by hand, and the real Maven replay against the accuracy the issue demands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crmdata.loaders import load_pipeline
from crmdata.synthetic import generate_opportunities
from forecasting.backtest import MethodAccuracy, as_of_dates, backtest, baselines
from forecasting.errors import ForecastInputError
from forecasting.periods import parse_horizon
from forecasting.snapshot import snapshot
from tests.forecasting.conftest import MAVEN_STAGES


def test_baselines_by_hand(six_deals: pd.DataFrame) -> None:
    t = pd.Timestamp("2024-04-01")
    snap = snapshot(six_deals, as_of=t, stages=MAVEN_STAGES)
    got = baselines(six_deals, as_of=t, horizon=parse_horizon("1M"), snap=snap)
    assert got["last_period"] == 400.0  # March: d4
    assert got["trailing_3_mean"] == pytest.approx((400 + 0 + 300) / 3)  # March, February (none), January
    assert got["pipeline_x_win_rate"] == pytest.approx(825.0)  # (500 + 600) open x 3/4


def test_as_of_dates_step_by_calendar_months() -> None:
    dates = as_of_dates(start="2017-04-01", end="2017-12-01", every="1M")
    assert len(dates) == 9 and dates[-1] == pd.Timestamp("2017-12-01")
    with pytest.raises(ForecastInputError, match="before its start"):
        as_of_dates(start="2017-04-01", end="2017-01-01", every="1M")


def test_backtest_scores_each_method(six_deals: pd.DataFrame) -> None:
    result = backtest(six_deals, stages=MAVEN_STAGES, dates=[pd.Timestamp("2024-02-01")], horizon="1M",
                      rng=np.random.default_rng(0), n_sims=500)
    row = result.rows[0]
    assert row.actual == 0.0  # nothing was won in February
    assert result.method("last_period").n == 0  # a zero actual has no percentage error


@pytest.mark.slow
def test_maven_monthly_backtest(maven_dir: Path, repo_root: Path) -> None:
    pipeline = load_pipeline(maven_dir / "sales_pipeline.csv",
                             mapping=repo_root / "docs" / "examples" / "maven-crm-mapping.toml")
    result = backtest(pipeline.opportunities, stages=pipeline.stages,
                      dates=as_of_dates(start="2017-04-01", end="2017-12-01", every="1M"), horizon="1M",
                      rng=np.random.default_rng(0), n_sims=10_000)
    print("\n" + result.to_markdown())
    # Actual won revenue, April: $721,932 and December: $1,131,573 (sum of close_value).
    assert result.rows[0].actual == 721_932 and result.rows[-1].actual == 1_131_573
    # The baselines the issue quotes: last month 39.9%, mean of three months 26.7%, pipeline x win rate 235%.
    assert result.method("last_period").mape == pytest.approx(39.9, abs=0.05)
    assert result.method("trailing_3_mean").mape == pytest.approx(26.7, abs=0.05)
    assert result.method("pipeline_x_win_rate").mape == pytest.approx(234.8, abs=0.05)
    mc = result.method("monte_carlo_p50")
    assert mc.mape <= 15.0
    assert mc.coverage is not None and round(mc.coverage * 9) >= 7


def test_accuracy_without_a_positive_actual_is_null_in_json() -> None:
    # MAPE divides by the actual: with no month above $0 it is undefined (NaN), which JSON cannot carry.
    acc = MethodAccuracy(method="monte_carlo_p50", mape=float("nan"), bias=float("nan"), coverage=0.5, n=0)
    assert acc.to_dict()["mape"] is None and acc.to_dict()["bias"] is None
    assert json.loads(json.dumps(acc.to_dict(), allow_nan=False))["coverage"] == 0.5


def test_processes_replay_the_same_numbers_as_one_process() -> None:
    # Each date draws from its own stream spawned from the seed, so two workers (two dates each) must give the
    # rows and accuracy of one process doing the four dates in turn, float for float.
    data = generate_opportunities(n=1500, seed=3)
    dates = [pd.Timestamp("2026-03-01"), pd.Timestamp("2026-04-01"), pd.Timestamp("2026-05-01"),
             pd.Timestamp("2026-06-01")]
    seen: list[pd.Timestamp] = []
    runs = {workers: backtest(data.opportunities, stages=data.stages, history=data.history, dates=dates,
                              horizon="1M", rng=np.random.default_rng(9), n_sims=300, workers=workers,
                              progress=seen.append if workers == 2 else None) for workers in (1, 2)}
    assert runs[2].rows == runs[1].rows and runs[2].accuracy == runs[1].accuracy
    assert seen == dates  # progress in date order
    assert len({r.p10 for r in runs[1].rows}) == 4


def test_a_date_a_worker_cannot_replay_fails_with_its_own_error() -> None:
    data = generate_opportunities(n=600, seed=4)
    first = data.opportunities["created_at"].min()
    too_early = (first - pd.Timedelta(days=40)).normalize()
    with pytest.raises(ForecastInputError, match="no opportunity was created before the as-of date"):
        backtest(data.opportunities, stages=data.stages, history=data.history,
                 dates=[pd.Timestamp("2026-05-01"), too_early], horizon="1M", rng=np.random.default_rng(0),
                 n_sims=200, workers=2)
    with pytest.raises(ForecastInputError, match="workers must be at least 1"):
        backtest(data.opportunities, stages=data.stages, dates=[too_early], horizon="1M",
                 rng=np.random.default_rng(0), workers=0)
