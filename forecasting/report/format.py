"""Numbers written for people: compact dollars, percentages, ratios and days, one rule for the whole report."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

DASH = "–"


def finite(x: Any) -> bool:
    """Return whether x is a real, finite number (not None, NaN, NA or infinite)."""
    if x is None or x is pd.NA or isinstance(x, bool):
        return False
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def money(x: Any) -> str:
    """Write dollars compactly: $950, $8.4k, $210k, $1.02M, $3.10B (a dash when unknown)."""
    if not finite(x):
        return DASH
    v = float(x)
    sign, a = ("-" if v < 0 else ""), abs(v)
    if round(a) >= 999_500_000:
        return f"{sign}${a / 1e9:.2f}B"
    if round(a) >= 999_500:
        return f"{sign}${a / 1e6:.2f}M"
    if round(a) >= 9_950:
        return f"{sign}${a / 1e3:.0f}k"
    if round(a) >= 1_000:
        return f"{sign}${a / 1e3:.1f}k"
    return f"{sign}${a:,.0f}"


def dollars(x: Any) -> str:
    """Write whole dollars with thousands separators: $1,234,567."""
    return f"${float(x):,.0f}" if finite(x) else DASH


def pct(x: Any, digits: int = 0) -> str:
    """Write a share (0.64) as a percentage (64%)."""
    return f"{float(x) * 100:.{digits}f}%" if finite(x) else DASH


def points(x: Any, digits: int = 1, *, signed: bool = False) -> str:
    """Write a value already in percent (12.3) as 12.3% (+12.3% when signed)."""
    if not finite(x):
        return DASH
    return f"{float(x):+.{digits}f}%" if signed else f"{float(x):.{digits}f}%"


def ratio(x: Any) -> str:
    """Write a coverage ratio (2.305) as 2.31x."""
    return f"{float(x):.2f}x" if finite(x) else DASH


def days(x: Any) -> str:
    """Write a duration in days (52.66) as 53 days."""
    return f"{float(x):,.0f} days" if finite(x) else DASH


def count(x: Any) -> str:
    """Write a count with thousands separators."""
    return f"{round(float(x)):,}" if finite(x) else DASH


def day(x: Any) -> str:
    """Write a date as 1 Oct 2017."""
    if x is None or x is pd.NA:
        return DASH
    t = pd.Timestamp(x)
    return DASH if pd.isna(t) else f"{t.day} {t:%b %Y}"
