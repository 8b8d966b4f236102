"""Horizons parse strictly and split into calendar periods."""

from __future__ import annotations

import pandas as pd
import pytest

from forecasting.errors import ForecastInputError
from forecasting.periods import Horizon, parse_horizon, periods


@pytest.mark.parametrize(("text", "count", "unit"), [("30D", 30, "D"), ("6w", 6, "W"), (" 3M ", 3, "M"),
                                                     ("1Q", 1, "Q")])
def test_horizons_parse(text: str, count: int, unit: str) -> None:
    assert parse_horizon(text) == Horizon(count, unit)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["3X", "M3", "", "0M", "-1M", "1.5M", "40Q"])
def test_bad_horizons_are_refused_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ForecastInputError, match=r"horizon|three years"):
        parse_horizon(text)


def test_months_follow_the_calendar_and_the_first_may_be_partial() -> None:
    spans = periods(as_of=pd.Timestamp("2024-04-15"), horizon=parse_horizon("3M"))
    # Apr 15 -> May 1 is 16 days; then all of May (31) and June (30).
    assert [(p.start.date().isoformat(), p.days) for p in spans] == [
        ("2024-04-15", 16), ("2024-05-01", 31), ("2024-06-01", 30)]
    assert spans[1].label == "2024-05"


def test_quarters_weeks_and_days() -> None:
    q = periods(as_of=pd.Timestamp("2024-04-01"), horizon=parse_horizon("1Q"))
    assert (q[0].days, q[0].label) == (91, "2024-Q2")  # 30 + 31 + 30
    w = periods(as_of=pd.Timestamp("2024-04-01"), horizon=parse_horizon("2W"))
    assert [p.days for p in w] == [7, 7]
    d = periods(as_of=pd.Timestamp("2024-04-01"), horizon=parse_horizon("30D"))
    assert len(d) == 1 and d[0].end == pd.Timestamp("2024-05-01")
