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
from forecasting.forecast import (
    BASELINES,
    QUANTILES,
    MethodInputs,
    finite_or_none,
    forecast_methods,
    method_label,
    monte_carlo,
    plan,
)
from forecasting.periods import Horizon, as_day, parse_horizon, periods
from parallel import process_pool, worker_state


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
        return {"method": self.method, "label": method_label(self.method),
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
        others = [m for m in forecast_methods() if m.name != "monte_carlo_p50"]
        head += [m.label for m in others]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            cells = [r.label, r.as_of.date().isoformat(), f"{r.actual:,.0f}", f"{r.p10:,.0f}",
                     f"{r.forecasts['monte_carlo_p50']:,.0f}", f"{r.p90:,.0f}", "yes" if r.inside else "no"]
            cells += [f"{r.forecasts[m.name]:,.0f}" for m in others]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "| method | MAPE | bias | actual inside P10-P90 |", "|---|---|---|---|"]
        for a in self.accuracy:
            cov = f"{a.coverage * a.n:.0f} of {a.n}" if a.coverage is not None else "-"
            lines.append(f"| {method_label(a.method)} | {a.mape:.1f}% | {a.bias:+.1f}% | {cov} |")
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


def baselines(opportunities: pd.DataFrame, *, as_of: pd.Timestamp, horizon: Horizon, snap: pd.DataFrame) -> dict[
        str, float]:
    """Return the naive forecasts for the horizon after as_of, computed on the snapshot `snap`.

    last_period: won revenue of the preceding window of the same length; trailing_3_mean: mean of the three
    preceding windows (a window with no wins counts as 0); pipeline_x_win_rate: open amount at as_of x (won /
    closed deals before as_of), with no timing (see `forecasting.forecast.BASELINES`).
    """
    return {f.__name__: f(snap, as_of=as_of, horizon=horizon) for f in BASELINES}


def _accuracy(rows: list[BacktestRow]) -> tuple[MethodAccuracy, ...]:
    actual = np.array([r.actual for r in rows])
    use = actual > 0
    out = []
    for m in forecast_methods():
        f = np.array([r.forecasts[m.name] for r in rows])
        err = (f[use] - actual[use]) / actual[use] * 100.0
        cov = float(np.mean([r.inside for r in rows])) if m.coverage else None
        out.append(MethodAccuracy(method=m.name, mape=float(np.mean(np.abs(err))) if use.any() else float("nan"),
                                  bias=float(np.mean(err)) if use.any() else float("nan"), coverage=cov,
                                  n=int(use.sum())))
    return tuple(out)


@dataclass(frozen=True)
class _Replay:
    """What every replayed date reads: the whole export and how to forecast from it."""

    opportunities: pd.DataFrame
    stages: StageConfig
    history: pd.DataFrame | None
    horizon: Horizon
    n_sims: int
    creation_window_days: int
    model_options: dict[str, Any] | None


def _replay(inputs: _Replay, date: pd.Timestamp, rng: np.random.Generator) -> BacktestRow:
    """Forecast the horizon after `date` with only what was known then; score it against what was won."""
    t = as_day(date)
    hz = inputs.horizon
    spans = periods(as_of=t, horizon=hz)
    end = spans[-1].end
    p = plan(inputs.opportunities, stages=inputs.stages, as_of=t, horizon=hz, history=inputs.history,
             creation_window_days=inputs.creation_window_days, model_options=inputs.model_options)
    sim = monte_carlo(p, n_sims=inputs.n_sims, rng=rng)
    total = sim.revenue.sum(axis=1)
    quantiles = np.percentile(total, QUANTILES)
    q10, q90 = quantiles[0], quantiles[2]
    method_inputs = MethodInputs(plan=p, opportunities=inputs.opportunities, horizon=hz, draws=total,
                                 quantiles=quantiles)
    forecasts = {m.name: m.total(method_inputs) for m in forecast_methods()}
    actual = float(metrics.won_revenue(inputs.opportunities, start=t, end=end))  # type: ignore[arg-type]
    label = spans[0].label if len(spans) == 1 else f"{spans[0].start:%Y-%m-%d}..{end:%Y-%m-%d}"
    return BacktestRow(as_of=t, label=label, actual=actual, forecasts=forecasts, p10=float(q10), p90=float(q90))


def _replay_in_worker(date: pd.Timestamp, rng: np.random.Generator) -> BacktestRow:
    return _replay(worker_state(), date, rng)


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
    workers: int = 1,
) -> BacktestResult:
    """Forecast the won revenue of the horizon after each date with only what was known then, and score it.

    The actual is the won revenue ($) closed in [date, end of horizon) in the full data, including deals created
    after the date. Every method of `forecasting.forecast.METHODS` is scored (P10-P90 coverage for the one
    marked `coverage`, Monte Carlo P50). Each date simulates from its own stream, spawned from `rng`, so the
    result is the same whether `workers` processes replay the dates at once or this one does them in turn.
    """
    if not dates:
        raise ForecastInputError("backtest needs at least one as-of date")
    if workers < 1:
        raise ForecastInputError(f"backtest workers must be at least 1, got {workers}")
    hz = parse_horizon(horizon) if isinstance(horizon, str) else horizon
    inputs = _Replay(opportunities, stages, history, hz, n_sims, creation_window_days, model_options)
    streams = rng.spawn(len(dates))
    rows = []
    if workers == 1 or len(dates) == 1:
        for date, stream in zip(dates, streams, strict=True):
            rows.append(_replay(inputs, date, stream))
            if progress is not None:
                progress(rows[-1].as_of)
    else:
        with process_pool(workers=min(workers, len(dates)), state=inputs, preload=[__name__]) as pool:
            for row in pool.map(_replay_in_worker, dates, streams):
                rows.append(row)
                if progress is not None:
                    progress(row.as_of)
    return BacktestResult(horizon=str(hz), rows=tuple(rows), accuracy=_accuracy(rows))
