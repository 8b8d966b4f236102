"""Replay history: forecast as of a series of past dates with what was known then, and score every method."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from crmdata.stages import StageConfig
from forecasting import metrics
from forecasting.errors import ForecastInputError
from forecasting.forecast import finite_or_none, monte_carlo, plan, stage_weighted, velocity_forecast
from forecasting.periods import Horizon, as_day, parse_horizon, periods

METHODS = ("monte_carlo_p50", "monte_carlo_mean", "velocity", "stage_weighted", "last_period", "trailing_3_mean",
           "pipeline_x_win_rate")
METHOD_LABELS = {
    "monte_carlo_p50": "Monte Carlo P50",
    "monte_carlo_mean": "Monte Carlo mean",
    "velocity": "Stage-weighted velocity",
    "stage_weighted": "Stage-weighted pipeline",
    "last_period": "Last period",
    "trailing_3_mean": "Mean of last 3 periods",
    "pipeline_x_win_rate": "Open pipeline x win rate",
}


@dataclass(frozen=True)
class BacktestRow:
    """One replayed as-of date: the actual won revenue ($) over the horizon and each method's forecast."""

    as_of: pd.Timestamp
    label: str
    actual: float
    forecasts: dict[str, float]
    p10: float
    p90: float

    @property
    def inside(self) -> bool:
        """Return whether the actual fell inside the Monte Carlo P10-P90 interval."""
        return self.p10 <= self.actual <= self.p90

    def to_dict(self) -> dict[str, object]:
        """Return JSON-ready values."""
        return {"as_of": self.as_of.date().isoformat(), "label": self.label, "actual": finite_or_none(self.actual),
                "forecasts": {k: finite_or_none(v) for k, v in self.forecasts.items()},
                "p10": finite_or_none(self.p10), "p90": finite_or_none(self.p90), "inside_p10_p90": self.inside}


@dataclass(frozen=True)
class MethodAccuracy:
    """Accuracy of one method over the replayed dates.

    mape = mean |forecast - actual| / actual x 100 (%); bias = mean (forecast - actual) / actual x 100 (%,
    positive = over-forecast); coverage = share of dates whose actual fell inside P10-P90 (Monte Carlo only).
    """

    method: str
    mape: float
    bias: float
    coverage: float | None
    n: int

    def to_dict(self) -> dict[str, object]:
        """Return JSON-ready values."""
        return {"method": self.method, "label": METHOD_LABELS.get(self.method, self.method),
                "mape": finite_or_none(self.mape), "bias": finite_or_none(self.bias),
                "coverage": finite_or_none(self.coverage), "n": self.n}


@dataclass(frozen=True)
class BacktestResult:
    """The replayed rows and the accuracy of each method."""

    horizon: str
    rows: tuple[BacktestRow, ...]
    accuracy: tuple[MethodAccuracy, ...]

    def method(self, name: str) -> MethodAccuracy:
        """Return the accuracy of one method."""
        for a in self.accuracy:
            if a.method == name:
                return a
        raise KeyError(name)

    def to_dict(self) -> dict[str, object]:
        """Return JSON-ready values."""
        return {"horizon": self.horizon, "rows": [r.to_dict() for r in self.rows],
                "accuracy": [a.to_dict() for a in self.accuracy]}

    def to_markdown(self) -> str:
        """Return the backtest table (one row per date) and the accuracy table, in Markdown."""
        head = ["period", "as of", "actual", "MC P10", "MC P50", "MC P90", "in P10-P90"]
        head += [METHOD_LABELS[m] for m in METHODS if m != "monte_carlo_p50"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            cells = [r.label, r.as_of.date().isoformat(), f"{r.actual:,.0f}", f"{r.p10:,.0f}",
                     f"{r.forecasts['monte_carlo_p50']:,.0f}", f"{r.p90:,.0f}", "yes" if r.inside else "no"]
            cells += [f"{r.forecasts[m]:,.0f}" for m in METHODS if m != "monte_carlo_p50"]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "| method | MAPE | bias | actual inside P10-P90 |", "|---|---|---|---|"]
        for a in self.accuracy:
            cov = f"{a.coverage * a.n:.0f} of {a.n}" if a.coverage is not None else "-"
            lines.append(f"| {METHOD_LABELS[a.method]} | {a.mape:.1f}% | {a.bias:+.1f}% | {cov} |")
        return "\n".join(lines) + "\n"


def as_of_dates(*, start: object, end: object, every: Horizon | str) -> list[pd.Timestamp]:
    """Return the dates from `start` up to and including `end`, one per `every` step (e.g. "1M": monthly)."""
    s, e = as_day(start, field="start"), as_day(end, field="end")
    if e < s:
        raise ForecastInputError(f"backtest end {e:%Y-%m-%d} is before its start {s:%Y-%m-%d}")
    step = parse_horizon(every) if isinstance(every, str) else every
    offset = {"D": pd.DateOffset(days=step.count), "W": pd.DateOffset(weeks=step.count),
              "M": pd.DateOffset(months=step.count), "Q": pd.DateOffset(months=3 * step.count)}[step.unit]
    out = []
    t = s
    while t <= e:
        out.append(t)
        t = as_day(t + offset)
    return out


def _window_before(t: pd.Timestamp, horizon: Horizon, back: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Return the window of the horizon's length that ends `back - 1` such windows before t."""
    if horizon.unit in ("M", "Q"):
        months = horizon.count * (3 if horizon.unit == "Q" else 1)
        return as_day(t - pd.DateOffset(months=months * back)), as_day(t - pd.DateOffset(months=months * (back - 1)))
    days = horizon.count * (7 if horizon.unit == "W" else 1)
    return t - pd.Timedelta(days=days * back), t - pd.Timedelta(days=days * (back - 1))


def baselines(opportunities: pd.DataFrame, *, as_of: pd.Timestamp, horizon: Horizon, snap: pd.DataFrame) -> dict[
        str, float]:
    """Return the naive forecasts for the horizon after as_of.

    last_period: won revenue of the preceding window of the same length; trailing_3_mean: mean of the three
    preceding windows (a window with no wins counts as 0); pipeline_x_win_rate: open amount at as_of x (won /
    closed deals before as_of), with no timing.
    """
    def won_in(window: tuple[pd.Timestamp, pd.Timestamp]) -> float:
        return float(metrics.won_revenue(snap, start=window[0], end=window[1]))  # type: ignore[arg-type]

    wr = float(metrics.win_rate(snap))  # type: ignore[arg-type]
    pipe = float(metrics.open_pipeline(snap))  # type: ignore[arg-type]
    return {
        "last_period": won_in(_window_before(as_of, horizon, 1)),
        "trailing_3_mean": float(np.mean([won_in(_window_before(as_of, horizon, b)) for b in (1, 2, 3)])),
        "pipeline_x_win_rate": pipe * (wr if np.isfinite(wr) else 0.0),
    }


def _accuracy(rows: list[BacktestRow]) -> tuple[MethodAccuracy, ...]:
    actual = np.array([r.actual for r in rows])
    use = actual > 0
    out = []
    for m in METHODS:
        f = np.array([r.forecasts[m] for r in rows])
        err = (f[use] - actual[use]) / actual[use] * 100.0
        cov = float(np.mean([r.inside for r in rows])) if m == "monte_carlo_p50" else None
        out.append(MethodAccuracy(method=m, mape=float(np.mean(np.abs(err))) if use.any() else float("nan"),
                                  bias=float(np.mean(err)) if use.any() else float("nan"), coverage=cov,
                                  n=int(use.sum())))
    return tuple(out)


def backtest(
    opportunities: pd.DataFrame,
    *,
    stages: StageConfig,
    dates: list[pd.Timestamp],
    horizon: Horizon | str,
    rng: np.random.Generator,
    history: pd.DataFrame | None = None,
    n_sims: int = 4000,
    creation_window_days: int = 182,
    model_options: dict[str, Any] | None = None,
    progress: Callable[[pd.Timestamp], None] | None = None,
) -> BacktestResult:
    """Forecast the won revenue of the horizon after each date with only what was known then, and score it.

    The actual is the won revenue ($) closed in [date, end of horizon) in the full data, including deals created
    after the date. Methods: Monte Carlo P50 and mean (P10-P90 coverage), velocity, stage-weighted pipeline and
    the baselines (see `baselines`).
    """
    if not dates:
        raise ForecastInputError("backtest needs at least one as-of date")
    hz = parse_horizon(horizon) if isinstance(horizon, str) else horizon
    rows = []
    for date in dates:
        t = as_day(date)
        spans = periods(as_of=t, horizon=hz)
        end = spans[-1].end
        p = plan(opportunities, stages=stages, as_of=t, horizon=hz, history=history,
                 creation_window_days=creation_window_days, model_options=model_options)
        sim = monte_carlo(p, n_sims=n_sims, rng=rng)
        total = sim.revenue.sum(axis=1)
        q10, q50, q90 = np.percentile(total, [10, 50, 90])
        forecasts = {
            "monte_carlo_p50": float(q50),
            "monte_carlo_mean": float(total.mean()),
            "velocity": float(velocity_forecast(p).sum()),
            "stage_weighted": stage_weighted(p),
            **baselines(opportunities, as_of=t, horizon=hz, snap=p.snap),
        }
        actual = float(metrics.won_revenue(opportunities, start=t, end=end))  # type: ignore[arg-type]
        label = spans[0].label if len(spans) == 1 else f"{spans[0].start:%Y-%m-%d}..{end:%Y-%m-%d}"
        rows.append(BacktestRow(as_of=t, label=label, actual=actual, forecasts=forecasts, p10=float(q10),
                                p90=float(q90)))
        if progress is not None:
            progress(t)
    return BacktestResult(horizon=str(hz), rows=tuple(rows), accuracy=_accuracy(rows))
