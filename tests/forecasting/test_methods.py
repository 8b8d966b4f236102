"""A forecast method declared once, in forecasting.forecast.METHODS, reaches every consumer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecasting import forecast as forecast_module
from forecasting.backtest import backtest
from forecasting.forecast import ForecastMethod, MethodInputs, Plan, forecast
from forecasting.report.build import _backtest_tables
from tests.forecasting.conftest import MAVEN_STAGES


def _toy_total(m: MethodInputs) -> float:
    return 1234.0


def _toy_per_period(p: Plan) -> np.ndarray:
    return np.full(len(p.periods), 10.0)


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> ForecastMethod:
    method = ForecastMethod("toy", "Toy method", _toy_total, per_period=_toy_per_period, period_label="toy per period")
    monkeypatch.setattr(forecast_module, "METHODS", (*forecast_module.METHODS, method))
    return method


def test_a_declared_method_is_backtested_and_shown_in_the_report_table(six_deals: pd.DataFrame,
                                                                       toy: ForecastMethod) -> None:
    # March 2024 replayed: d4 ($400) was won then, so the toy's constant 1234 is (1234 - 400) / 400 = +208.5%.
    result = backtest(six_deals, stages=MAVEN_STAGES, dates=[pd.Timestamp("2024-03-01")], horizon="1M",
                      rng=np.random.default_rng(0), n_sims=500)
    assert result.rows[0].actual == 400.0
    assert result.rows[0].forecasts["toy"] == 1234.0
    accuracy = result.method("toy")
    assert accuracy.bias == pytest.approx(208.5) and accuracy.mape == pytest.approx(208.5)
    assert accuracy.coverage is None  # only the method marked `coverage` is scored on P10-P90
    assert "| Toy method |" in result.to_markdown()
    replay, scores = _backtest_tables(result.to_dict())
    assert ("f_toy", "Toy method") in [(c.key, c.header) for c in replay.columns]
    assert "Toy method" in scores.frame["label"].tolist()


def test_a_declared_method_reaches_each_period_and_the_api_schema(six_deals: pd.DataFrame,
                                                                  toy: ForecastMethod) -> None:
    from api.schemas import period_out

    result = forecast(six_deals, stages=MAVEN_STAGES, as_of="2024-03-01", horizon="2M", rng=np.random.default_rng(0),
                      n_sims=500)
    periods = [p.to_dict() for p in result.periods]
    assert [p["toy"] for p in periods] == [10.0, 10.0]
    assert result.total.to_dict()["toy"] == 20.0  # 10 per period x 2 months
    schema = period_out()
    assert "toy" in schema.model_fields and "velocity" in schema.model_fields
    schema.model_validate(periods[0])  # what the forecast writes is what the schema describes
