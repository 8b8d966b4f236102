"""Forecast horizons ("30D", "6W", "3M", "1Q") and the calendar periods they cover."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from forecasting.errors import ForecastInputError

Unit = Literal["D", "W", "M", "Q"]
_HORIZON = re.compile(r"^\s*(\d+)\s*([DWMQdwmq])\s*$")
MAX_DAYS = 3 * 366


@dataclass(frozen=True, slots=True)
class Horizon:
    """A number of days, weeks, calendar months or calendar quarters."""

    count: int
    unit: Unit

    def __str__(self) -> str:
        return f"{self.count}{self.unit}"


@dataclass(frozen=True, slots=True)
class Period:
    """A half-open interval of days [start, end): start at midnight, end excluded."""

    start: pd.Timestamp
    end: pd.Timestamp

    @property
    def days(self) -> int:
        """Return the number of days in the period."""
        return int((self.end - self.start).days)

    @property
    def label(self) -> str:
        """Return a short label: the month or quarter when the period is a whole one, else the date range."""
        last = self.end - pd.Timedelta(days=1)
        if self.start.day == 1 and self.end.day == 1:
            if self.days <= 31:
                return f"{self.start:%Y-%m}"
            if self.start.month in (1, 4, 7, 10) and self.days <= 92:
                return f"{self.start.year}-Q{(self.start.month - 1) // 3 + 1}"
        return f"{self.start:%Y-%m-%d}..{last:%Y-%m-%d}"


def parse_horizon(text: str) -> Horizon:
    """Parse "30D", "6W", "3M" or "1Q" (case-insensitive) into a Horizon, or raise ForecastInputError."""
    match = _HORIZON.match(str(text))
    if not match:
        raise ForecastInputError(
            f"horizon {text!r} does not parse: write a whole number and a unit, D (days), W (weeks), "
            "M (calendar months) or Q (calendar quarters), e.g. 30D, 6W, 3M, 1Q", field="horizon"
        )
    count = int(match.group(1))
    unit: Unit = match.group(2).upper()  # type: ignore[assignment]
    if count < 1:
        raise ForecastInputError(f"horizon {text!r}: the count must be at least 1", field="horizon")
    approx_days = count * {"D": 1, "W": 7, "M": 31, "Q": 92}[unit]
    if approx_days > MAX_DAYS:
        raise ForecastInputError(f"horizon {text!r} is longer than three years; forecast a shorter horizon",
                                 field="horizon")
    return Horizon(count=count, unit=unit)


def as_day(value: object, *, field: str = "as_of") -> pd.Timestamp:
    """Return a date as a midnight Timestamp, or raise ForecastInputError naming the field."""
    try:
        stamp = pd.Timestamp(value)  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        raise ForecastInputError(f"{field} {value!r} is not a date (use YYYY-MM-DD)", field=field) from exc
    if pd.isna(stamp):
        raise ForecastInputError(f"{field} is empty; give a date (YYYY-MM-DD)", field=field)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert(None)
    return stamp.normalize()


def periods(*, as_of: pd.Timestamp, horizon: Horizon) -> list[Period]:
    """Split the horizon after `as_of` into periods.

    D: one period of `count` days; W: `count` periods of 7 days; M and Q: calendar months or quarters, the first
    one running from `as_of` to the end of its month or quarter (a partial period when as_of is mid-month).
    """
    start = as_day(as_of)
    if horizon.unit == "D":
        return [Period(start, start + pd.Timedelta(days=horizon.count))]
    if horizon.unit == "W":
        return [Period(start + pd.Timedelta(days=7 * i), start + pd.Timedelta(days=7 * (i + 1)))
                for i in range(horizon.count)]
    freq = "M" if horizon.unit == "M" else "Q"
    first = start.to_period(freq)
    out = []
    for i in range(horizon.count):
        p = first + i
        begin = max(p.start_time.normalize(), start)
        out.append(Period(begin, (p + 1).start_time.normalize()))
    return out
