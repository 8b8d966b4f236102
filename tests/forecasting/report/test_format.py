"""Numbers written for people."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from forecasting.report import format as fmt


@pytest.mark.parametrize(("value", "text"), [
    (1_020_000, "$1.02M"),  # 1,020,000 / 1e6 = 1.02
    (210_000, "$210k"),
    (8_440, "$8.4k"),  # under $9,950: one decimal
    (950, "$950"),
    (999_600, "$1.00M"),  # rounds up into millions, never "$1000k"
    (-52_800, "-$53k"),
    (3_100_000_000, "$3.10B"),
    (None, "–"),
    (math.nan, "–"),
])
def test_money_is_compact(value: float | None, text: str) -> None:
    assert fmt.money(value) == text


def test_the_other_formats() -> None:
    assert fmt.pct(0.6437) == "64%"
    assert fmt.pct(0.6437, 1) == "64.4%"
    assert fmt.points(10.56) == "10.6%"
    assert fmt.points(8.5, signed=True) == "+8.5%"
    assert fmt.ratio(2.305396) == "2.31x"
    assert fmt.days(52.66) == "53 days"
    assert fmt.count(2409.0) == "2,409"
    assert fmt.dollars(1_894_551.4) == "$1,894,551"
    assert fmt.day(pd.Timestamp("2017-10-01")) == "1 Oct 2017"
    assert fmt.day(pd.NaT) == "–"
    assert not fmt.finite(pd.NA) and not fmt.finite(True) and fmt.finite("2.5")
