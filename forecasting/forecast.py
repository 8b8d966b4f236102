"""Revenue forecasts as of any date: stage-weighted pipeline, stage-weighted velocity, deal-level Monte Carlo."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from crmdata.stages import StageConfig
from forecasting import metrics
from forecasting.errors import ForecastInputError
from forecasting.montecarlo import Simulation, simulate
from forecasting.periods import Horizon, Period, as_day, parse_horizon, periods
from forecasting.snapshot import last_known_date, require_history, snapshot
from forecasting.stage_model import StageModel, StageStats, fit_stage_model
from forecasting.stuck import find_stuck, stuck_thresholds

QUANTILES = (10, 50, 90)


def finite_or_none(x: float | None) -> float | None:
    """Return `x` as a float, or None when it is missing, NaN or infinite (JSON has no NaN)."""
    """Return a JSON-ready float (None for NaN or None)."""
    if x is None:
        return None
    x = float(x)
    return None if not np.isfinite(x) else x


@dataclass(frozen=True)
class PeriodForecast:
    """Forecast won revenue ($) of one period: Monte Carlo P10/P50/P90 and mean, and each method of `METHODS`
    that forecasts per period (`methods`, by name: today the velocity forecast)."""

    label: str
    start: pd.Timestamp
    end: pd.Timestamp
    p10: float
    p50: float
    p90: float
    mean: float
    methods: Mapping[str, float]
    from_open_deals: float
    from_new_deals: float

    def to_dict(self) -> dict[str, Any]:
        """Return JSON-ready values (ISO dates; `end` is excluded); each per-period method is a key of its own."""
        d: dict[str, Any] = {"label": self.label, "start": self.start.date().isoformat(),
                             "end": self.end.date().isoformat()}
        d |= {k: finite_or_none(getattr(self, k)) for k in ("p10", "p50", "p90", "mean")}
        d |= {k: finite_or_none(v) for k, v in self.methods.items()}
        d |= {k: finite_or_none(getattr(self, k)) for k in ("from_open_deals", "from_new_deals")}
        return d


@dataclass(frozen=True)
class DealDriver:
    """An open deal and its share of the variance of the horizon's revenue."""

    opportunity_id: str
    owner: str
    product: str
    stage: str
    amount: float
    win_probability: float
    expected: float
    spread_share: float

    def to_dict(self) -> dict[str, Any]:
        """Return JSON-ready values."""
        return {k: finite_or_none(v) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class GroupForecast:
    """Forecast revenue ($) over the whole horizon for one group (an owner, a product...)."""

    group: str
    open_deals: int
    pipeline: float
    stage_weighted: float
    p10: float
    p50: float
    p90: float
    mean: float

    def to_dict(self) -> dict[str, Any]:
        """Return JSON-ready values."""
        return {k: finite_or_none(v) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class ModelSummary:
    """What the forecast learned and how it simulated."""

    realisation: float
    average_deal_size: float
    dispersion: float
    creation_rate_per_day: float
    creation_window_days: int
    open_deals: int
    amounts_imputed: int
    simulations: int
    exact_deals: int
    normal_deals: int
    stages: tuple[StageStats, ...]

    def to_dict(self) -> dict[str, Any]:
        """Return JSON-ready values."""
        d = asdict(self)
        d["stages"] = [{k: finite_or_none(v) if isinstance(v, float) else v for k, v in asdict(s).items()}
                       for s in self.stages]
        return {k: finite_or_none(v) if isinstance(v, float) else v for k, v in d.items()}


@dataclass(frozen=True)
class ForecastResult:
    """Everything a forecast as of one date says; `to_dict()` is JSON-ready (the API and reports use it)."""

    as_of: pd.Timestamp
    horizon: str
    periods: tuple[PeriodForecast, ...]
    total: PeriodForecast
    stage_weighted: float
    target: float | None
    probability_of_target: float | None
    drivers: tuple[DealDriver, ...]
    stuck: pd.DataFrame
    stuck_thresholds: dict[str, float]
    metrics: dict[str, float]
    model: ModelSummary
    by: str | None = None
    groups: tuple[GroupForecast, ...] = ()
    backtest: dict[str, Any] | None = None
    warnings: tuple[str, ...] = field(default=())

    def with_backtest(self, summary: dict[str, Any]) -> ForecastResult:
        """Return a copy carrying a backtest summary (forecasting.backtest.BacktestResult.to_dict())."""
        return replace(self, backtest=summary)

    def to_dict(self) -> dict[str, Any]:
        """Return the whole result as plain floats, strings, lists and dicts (dates in ISO format)."""
        stuck_records = [
            {k: (finite_or_none(float(v)) if isinstance(v, (float, np.floating)) else (None if pd.isna(v) else str(v)))
             for k, v in row.items()}
            for row in self.stuck.to_dict(orient="records")
        ]
        return {
            "as_of": self.as_of.date().isoformat(),
            "horizon": self.horizon,
            "periods": [p.to_dict() for p in self.periods],
            "total": self.total.to_dict(),
            "stage_weighted": finite_or_none(self.stage_weighted),
            "target": finite_or_none(self.target),
            "probability_of_target": finite_or_none(self.probability_of_target),
            "drivers": [d.to_dict() for d in self.drivers],
            "stuck": stuck_records,
            "stuck_thresholds": {k: finite_or_none(v) for k, v in self.stuck_thresholds.items()},
            "metrics": {k: finite_or_none(v) for k, v in self.metrics.items()},
            "model": self.model.to_dict(),
            "by": self.by,
            "groups": [g.to_dict() for g in self.groups],
            "backtest": self.backtest,
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class Plan:
    """The inputs of every forecast method at one as-of date."""

    as_of: pd.Timestamp
    periods: tuple[Period, ...]
    snap: pd.DataFrame
    model: StageModel
    open_deals: pd.DataFrame
    values: np.ndarray
    probs: np.ndarray
    new_counts: np.ndarray
    new_amounts: tuple[np.ndarray, ...]
    new_segments: tuple[str, ...]
    creation_rate: float
    creation_window_days: int
    amounts_imputed: int


def _deal_values(open_deals: pd.DataFrame, snap: pd.DataFrame, model: StageModel) -> tuple[np.ndarray, int]:
    """Return amount x realisation per open deal; a missing amount takes its product's median, else the
    average deal size."""
    amount = open_deals["amount"].astype(float)
    missing = amount.isna()
    if missing.any():
        medians = snap.groupby(snap["product"].astype(object))["amount"].median().astype(float)
        filled = open_deals["product"].astype(object).map(medians).astype(float)
        fallback = model.average_deal_size / model.realisation if model.realisation else model.average_deal_size
        amount = amount.fillna(filled).fillna(fallback)
    return amount.to_numpy(float) * model.realisation, int(missing.sum())


def period_index(days: np.ndarray, bounds: list[int]) -> np.ndarray:
    """Sum daily columns into periods whose first days are `bounds` (offsets from the as-of date)."""
    return np.add.reduceat(days, bounds, axis=1) if days.shape[1] else np.zeros((days.shape[0], len(bounds)))


def plan(
    opportunities: pd.DataFrame,
    *,
    stages: StageConfig,
    as_of: object,
    horizon: Horizon | str,
    history: pd.DataFrame | None = None,
    creation_window_days: int = 182,
    model_options: dict[str, Any] | None = None,
) -> Plan:
    """Rebuild the pipeline known at `as_of`, fit the stage model on it and turn it into per-period odds.

    probs[i, k] = P(open deal i wins in period k | its stage, product and days in stage), from the timing walk.
    new_counts[g, k] = creation rate of product g (deals/day over the last `creation_window_days`, times last
    year's seasonal ratio when known) x sum over creation days c in the horizon of P(created on c, wins in k).
    """
    if opportunities.empty:
        raise ForecastInputError("the pipeline is empty: the input has no opportunities")
    if creation_window_days < 1:
        raise ForecastInputError(f"creation window must be at least 1 day, got {creation_window_days}")
    t = as_day(as_of)
    hz = parse_horizon(horizon) if isinstance(horizon, str) else horizon
    spans = periods(as_of=t, horizon=hz)
    snap = snapshot(opportunities, as_of=t, stages=stages, history=history)
    require_history(snap, as_of=t)
    model = fit_stage_model(snap, stages=stages, as_of=t, history=history, **(model_options or {}))
    open_deals = snap[snap["outcome"] == "open"].reset_index(drop=True)
    values, imputed = _deal_values(open_deals, snap, model)
    total_days = int((spans[-1].end - t).days)
    bounds = [int((p.start - t).days) for p in spans]
    probs = np.zeros((len(open_deals), len(spans)))
    days_in = open_deals["days_in_stage"].astype(float).fillna(0).clip(lower=0).to_numpy().astype(np.int64)
    seg = model.segment_by
    seg_of = _labels(open_deals, seg)
    stage_of = open_deals["stage"].astype(object).to_numpy()
    for stage, segment in sorted(set(zip(stage_of, seg_of, strict=True)), key=str):
        rows = np.flatnonzero((stage_of == stage) & (seg_of == segment))
        uniq, inverse = np.unique(days_in[rows], return_inverse=True)
        daily, _ = model.win_profile(str(stage), uniq, start=t, days=total_days,
                                     segment=None if seg is None else str(segment))
        probs[rows] = period_index(daily, bounds)[inverse]
    created = snap["created_at"]
    first_created = created.min()
    window = int(min(creation_window_days, max(1, (t - first_created).days))) if pd.notna(first_created) else 1
    recent = snap[(created >= t - pd.Timedelta(days=window)).fillna(False).astype(bool)]
    season = creation_season(created, as_of=t, window_days=window, horizon_days=total_days)
    rate = len(recent) / window * season
    fallback_pool = recent["amount"].astype(float).dropna().to_numpy()
    if len(fallback_pool) == 0:
        fallback_pool = snap["amount"].astype(float).dropna().to_numpy()
    recent_seg = _labels(recent, seg)
    counts, pools, names = [], [], []
    # New deals per segment (product): its own creation rate, deal sizes and cycle.
    for segment in sorted(set(recent_seg), key=str):
        mine = recent[recent_seg == segment]
        new_daily, _ = model.entering(model.entry, start=t, days=total_days,
                                      segment=None if seg is None else str(segment))
        counts.append(len(mine) / window * season * period_index(new_daily, bounds).sum(axis=0))
        pool = mine["amount"].astype(float).dropna().to_numpy()
        pools.append((pool if len(pool) else fallback_pool) * model.realisation)
        names.append(str(segment))
    new_counts = np.vstack(counts) if counts else np.zeros((0, len(spans)))
    return Plan(as_of=t, periods=tuple(spans), snap=snap, model=model, open_deals=open_deals, values=values,
                probs=probs, new_counts=new_counts, new_amounts=tuple(pools), new_segments=tuple(names),
                creation_rate=rate, creation_window_days=window, amounts_imputed=imputed)


def creation_season(created: pd.Series, *, as_of: pd.Timestamp, window_days: int, horizon_days: int) -> float:
    """Return how much faster deals were created in the horizon than in the window before it, one year earlier.

    factor = (deals created in [T - 365, T - 365 + H) / H) / (deals created in [T - 365 - W, T - 365) / W),
    bounded to [0.5, 2]; 1 when the data do not reach back a year and a window.
    """
    year = pd.Timedelta(days=365)
    first = created.min()
    if pd.isna(first) or first > as_of - year - pd.Timedelta(days=window_days):
        return 1.0
    then = as_of - year
    ahead = int(((created >= then) & (created < then + pd.Timedelta(days=horizon_days))).sum()) / horizon_days
    before = int(((created >= then - pd.Timedelta(days=window_days)) & (created < then)).sum()) / window_days
    return float(np.clip(ahead / before, 0.5, 2.0)) if before > 0 and ahead > 0 else 1.0


def _labels(frame: pd.DataFrame, column: str | None) -> np.ndarray:
    """Return a column as object labels ("(none)" when empty), or one label for all rows without a column."""
    if column is None or column not in frame.columns:
        return np.full(len(frame), "(all)", dtype=object)
    values = frame[column].astype(object)
    return values.where(values.notna(), "(none)").to_numpy()


def new_deal_means(p: Plan) -> np.ndarray:
    """Return the expected revenue ($) per period of deals not yet created: sum over segments of count x mean."""
    out = np.zeros(len(p.periods))
    for row, pool in zip(p.new_counts, p.new_amounts, strict=True):
        out += row * (pool.mean() if len(pool) else 0.0)
    return out


def stage_weighted(p: Plan) -> float:
    """Return the classic stage-weighted pipeline ($): sum over open deals of amount x P(win | stage), blind to
    timing (all of it is counted, whenever it would close)."""
    probs = p.open_deals["stage"].map(lambda s: p.model.stage_probability(str(s))).astype(float).fillna(0)
    return float((p.open_deals["amount"].astype(float).fillna(0) * probs).sum())


def velocity_forecast(p: Plan) -> np.ndarray:
    """Return the stage-weighted velocity forecast ($ per period).

    For each open stage s: N_s open deals x average deal size x P(win | s) flows out evenly over the mean days
    from entering s to a win, L_s, starting at the as-of date: revenue in a period = N_s x ADS x p_s / L_s x
    (days of the period within [0, L_s)). Summed over stages; what would flow after the horizon is cut.
    """
    out = np.zeros(len(p.periods))
    counts = p.open_deals["stage"].astype(object).value_counts()
    for stage, n in counts.items():
        stat = p.model.stat(str(stage))
        length = stat.mean_days_to_win
        if not np.isfinite(length) or not np.isfinite(stat.win_probability):
            st = p.model.stat(p.model.entry)
            length = st.mean_days_to_win
        if not np.isfinite(length):
            continue
        length = max(length, 1.0)
        prob = stat.win_probability if np.isfinite(stat.win_probability) else 0.0
        flow = n * p.model.average_deal_size * prob / length
        for k, per in enumerate(p.periods):
            lo, hi = (per.start - p.as_of).days, (per.end - p.as_of).days
            out[k] += flow * max(0.0, min(hi, length) - lo)
    return out


def monte_carlo(p: Plan, *, n_sims: int, rng: np.random.Generator, dispersion: float | None = None) -> Simulation:
    """Simulate won revenue per period from a plan (see forecasting.montecarlo.simulate)."""
    if n_sims < 100:
        raise ForecastInputError(f"need at least 100 simulations for P10/P90, got {n_sims}")
    return simulate(values=p.values, probs=p.probs, new_counts=p.new_counts, new_amounts=list(p.new_amounts),
                    n_sims=n_sims, rng=rng, dispersion=p.model.dispersion if dispersion is None else dispersion)


def _drivers(p: Plan, *, top: int) -> tuple[DealDriver, ...]:
    """Return the open deals with the largest share of the variance of the horizon total, a^2 P (1 - P)."""
    if len(p.values) == 0:
        return ()
    prob = p.probs.sum(axis=1)
    var = p.values**2 * prob * (1 - prob)
    total = var.sum()
    order = np.argsort(-var, kind="stable")[:top]
    d = p.open_deals
    return tuple(DealDriver(
        opportunity_id=str(d["opportunity_id"].iloc[i]), owner=str(d["owner"].iloc[i]),
        product=str(d["product"].iloc[i]), stage=str(d["stage"].iloc[i]), amount=float(p.values[i]),
        win_probability=float(prob[i]), expected=float(p.values[i] * prob[i]),
        spread_share=float(var[i] / total) if total > 0 else 0.0,
    ) for i in order)


def _key_metrics(p: Plan, *, target: float | None) -> dict[str, float]:
    """Return the headline metrics over what was known at the as-of date."""
    snap = p.snap
    wr = float(metrics.win_rate(snap))  # type: ignore[arg-type]
    pipe = float(metrics.open_pipeline(snap))  # type: ignore[arg-type]
    out = {
        "open_deals": float(len(p.open_deals)),
        "open_pipeline": pipe,
        "win_rate": wr,
        "average_deal_size": float(metrics.average_deal_size(snap)),  # type: ignore[arg-type]
        "average_cycle_days": float(metrics.average_cycle_days(snap)),  # type: ignore[arg-type]
        "sales_velocity_per_day": float(metrics.pipeline_velocity(snap)),  # type: ignore[arg-type]
        "required_coverage": metrics.required_coverage(win_rate=wr) if 0 < wr <= 1 else float("nan"),
        "creation_rate_per_day": p.creation_rate,
    }
    if target:
        out["pipeline_coverage"] = metrics.pipeline_coverage(pipeline=pipe, target=target)
    return out


def _summary(label: str, start: pd.Timestamp, end: pd.Timestamp, draws: np.ndarray, methods: dict[str, float],
             from_open: float, from_new: float) -> PeriodForecast:
    q = np.percentile(draws, QUANTILES)
    return PeriodForecast(label=label, start=start, end=end, p10=float(q[0]), p50=float(q[1]), p90=float(q[2]),
                          mean=float(draws.mean()), methods=methods, from_open_deals=from_open,
                          from_new_deals=from_new)


def _groups(p: Plan, *, by: str, n_sims: int, rng: np.random.Generator) -> tuple[GroupForecast, ...]:
    """Simulate each group's own open deals and its share of each segment's new deals over the horizon."""
    if by not in p.open_deals.columns:
        raise ForecastInputError(f"cannot group by '{by}': no such column (try owner, team, region, product, "
                                 "product_category)", field="by")
    keys = _labels(p.open_deals, by)
    window = pd.Timedelta(days=p.creation_window_days)
    recent = p.snap[(p.snap["created_at"] >= p.as_of - window).fillna(False).astype(bool)]
    recent_keys = _labels(recent, by)
    recent_seg = _labels(recent, p.model.segment_by)
    probs_stage = p.open_deals["stage"].map(lambda s: p.model.stage_probability(str(s))).astype(float).fillna(0)
    out = []
    for group in sorted(set(keys) | set(recent_keys), key=str):
        rows = keys == group
        shares = np.array([
            float(((recent_seg == s) & (recent_keys == group)).sum()) / max(int((recent_seg == s).sum()), 1)
            for s in p.new_segments
        ])
        sim = simulate(values=p.values[rows], probs=p.probs[rows],
                       new_counts=p.new_counts * shares[:, None] if len(shares) else p.new_counts,
                       new_amounts=list(p.new_amounts), n_sims=n_sims, rng=rng, dispersion=p.model.dispersion)
        total = sim.revenue.sum(axis=1)
        q = np.percentile(total, QUANTILES)
        amount = p.open_deals.loc[rows, "amount"].astype(float).fillna(0)
        out.append(GroupForecast(group=str(group), open_deals=int(rows.sum()), pipeline=float(amount.sum()),
                                 stage_weighted=float((amount * probs_stage[rows]).sum()), p10=float(q[0]),
                                 p50=float(q[1]), p90=float(q[2]), mean=float(total.mean())))
    return tuple(sorted(out, key=lambda g: -g.mean))


def forecast(
    opportunities: pd.DataFrame,
    *,
    stages: StageConfig,
    as_of: object,
    horizon: Horizon | str,
    rng: np.random.Generator,
    history: pd.DataFrame | None = None,
    target: float | None = None,
    by: str | None = None,
    n_sims: int = 10_000,
    top: int = 10,
    creation_window_days: int = 182,
    stuck_percentile: float = 80.0,
    stuck_overrides: dict[str, float] | None = None,
) -> ForecastResult:
    """Forecast won revenue ($) per period of `horizon` after `as_of`, using only what was known at as_of.

    Returns the Monte Carlo P10/P50/P90 and mean per period and over the horizon, the velocity forecast per
    period, the stage-weighted pipeline (horizon total), P(total >= target), the deals that drive the spread,
    the stuck deals and the key metrics.
    """
    if target is not None and (not np.isfinite(target) or target < 0):
        raise ForecastInputError(f"target must be a non-negative amount in $, got {target}")
    if by is not None and by not in opportunities.columns:
        raise ForecastInputError(f"cannot group by '{by}': no such column (try owner, team, region, product, "
                                 "product_category)", field="by")
    p = plan(opportunities, stages=stages, as_of=as_of, horizon=horizon, history=history,
             creation_window_days=creation_window_days)
    sim = monte_carlo(p, n_sims=n_sims, rng=rng)
    by_period = {m.name: m.per_period(p) for m in METHODS if m.per_period is not None}
    open_mean = p.values @ p.probs
    new_mean = new_deal_means(p)
    per = tuple(
        _summary(span.label, span.start, span.end, sim.revenue[:, k], {n: float(v[k]) for n, v in by_period.items()},
                 float(open_mean[k]), float(new_mean[k]))
        for k, span in enumerate(p.periods)
    )
    total = _summary(str(horizon), p.periods[0].start, p.periods[-1].end, sim.revenue.sum(axis=1),
                     {n: float(v.sum()) for n, v in by_period.items()}, float(open_mean.sum()),
                     float(new_mean.sum()))
    prob_target = float((sim.revenue.sum(axis=1) >= target).mean()) if target is not None else None
    thresholds = stuck_thresholds(p.model, percentile=stuck_percentile, overrides=stuck_overrides)
    stuck = find_stuck(p.snap, model=p.model, thresholds=thresholds)
    groups = _groups(p, by=by, n_sims=min(n_sims, 4000), rng=rng) if by else ()
    warnings = []
    last = last_known_date(opportunities)
    if last is not None and (p.as_of - last).days > 31:
        warnings.append(f"the as-of date is {(p.as_of - last).days} days after the export's last date "
                        f"({last:%Y-%m-%d}); deals created or closed since are unknown")
    if p.amounts_imputed:
        warnings.append(f"{p.amounts_imputed} open deal(s) have no amount; their product's median amount was used")
    model = ModelSummary(
        realisation=p.model.realisation, average_deal_size=p.model.average_deal_size,
        dispersion=p.model.dispersion, creation_rate_per_day=p.creation_rate,
        creation_window_days=p.creation_window_days, open_deals=len(p.open_deals), amounts_imputed=p.amounts_imputed,
        simulations=n_sims, exact_deals=sim.exact_deals, normal_deals=sim.normal_deals, stages=p.model.stats,
    )
    return ForecastResult(
        as_of=p.as_of, horizon=str(horizon), periods=per, total=total, stage_weighted=stage_weighted(p),
        target=target, probability_of_target=prob_target, drivers=_drivers(p, top=top), stuck=stuck,
        stuck_thresholds=thresholds, metrics=_key_metrics(p, target=target), model=model, by=by, groups=groups,
        warnings=tuple(warnings),
    )


@dataclass(frozen=True)
class MethodInputs:
    """What a forecast method may read at one as-of date: the plan, the export, and the simulated horizon totals."""

    plan: Plan
    opportunities: pd.DataFrame
    horizon: Horizon
    draws: np.ndarray  # Monte Carlo won revenue ($) of the whole horizon, one per simulation
    quantiles: np.ndarray  # np.percentile(draws, QUANTILES), computed once


@dataclass(frozen=True)
class ForecastMethod:
    """A forecast method, declared once: its name, its label, and the pure function of its horizon total ($).

    `per_period`, when set, also forecasts each period: every forecast then shows it per period under `name`
    (the API schema and the report's period table follow), titled `period_label`. `coverage` marks the method
    whose backtest also scores P10-P90 coverage. The forecast, the backtest, the API schema and the report all
    read `METHODS`, so adding a method is one entry there.
    """

    name: str
    label: str
    total: Callable[[MethodInputs], float]
    per_period: Callable[[Plan], np.ndarray] | None = None
    period_label: str = ""
    coverage: bool = False


def _window_before(t: pd.Timestamp, horizon: Horizon, back: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Return the window of the horizon's length that ends `back - 1` such windows before t."""
    if horizon.unit in ("M", "Q"):
        months = horizon.count * (3 if horizon.unit == "Q" else 1)
        return as_day(t - pd.DateOffset(months=months * back)), as_day(t - pd.DateOffset(months=months * (back - 1)))
    days = horizon.count * (7 if horizon.unit == "W" else 1)
    return t - pd.Timedelta(days=days * back), t - pd.Timedelta(days=days * (back - 1))


def _won_before(snap: pd.DataFrame, *, as_of: pd.Timestamp, horizon: Horizon, back: int) -> float:
    start, end = _window_before(as_of, horizon, back)
    return float(metrics.won_revenue(snap, start=start, end=end))  # type: ignore[arg-type]


def last_period(snap: pd.DataFrame, *, as_of: pd.Timestamp, horizon: Horizon) -> float:
    """Return the won revenue ($) of the window of the horizon's length just before the as-of date."""
    return _won_before(snap, as_of=as_of, horizon=horizon, back=1)


def trailing_3_mean(snap: pd.DataFrame, *, as_of: pd.Timestamp, horizon: Horizon) -> float:
    """Return the mean won revenue ($) of the three preceding windows (a window with no wins counts as 0)."""
    return float(np.mean([_won_before(snap, as_of=as_of, horizon=horizon, back=b) for b in (1, 2, 3)]))


def pipeline_x_win_rate(snap: pd.DataFrame, *, as_of: pd.Timestamp, horizon: Horizon) -> float:
    """Return the open amount at the as-of date x (won / closed deals before it), with no timing."""
    wr = float(metrics.win_rate(snap))  # type: ignore[arg-type]
    pipe = float(metrics.open_pipeline(snap))  # type: ignore[arg-type]
    return pipe * (wr if np.isfinite(wr) else 0.0)


Baseline = Callable[..., float]
BASELINES: tuple[Baseline, ...] = (last_period, trailing_3_mean, pipeline_x_win_rate)


def _baseline(f: Baseline) -> Callable[[MethodInputs], float]:
    return lambda m: f(m.plan.snap, as_of=m.plan.as_of, horizon=m.horizon)


# Every forecast method, in the order tables show them. Adding a method = one entry here.
METHODS: tuple[ForecastMethod, ...] = (
    ForecastMethod("monte_carlo_p50", "Monte Carlo P50", lambda m: float(m.quantiles[1]), coverage=True),
    ForecastMethod("monte_carlo_mean", "Monte Carlo mean", lambda m: float(m.draws.mean())),
    ForecastMethod("velocity", "Stage-weighted velocity", lambda m: float(velocity_forecast(m.plan).sum()),
                   per_period=velocity_forecast, period_label="velocity forecast"),
    ForecastMethod("stage_weighted", "Stage-weighted pipeline", lambda m: stage_weighted(m.plan)),
    ForecastMethod("last_period", "Last period", _baseline(last_period)),
    ForecastMethod("trailing_3_mean", "Mean of last 3 periods", _baseline(trailing_3_mean)),
    ForecastMethod("pipeline_x_win_rate", "Open pipeline x win rate", _baseline(pipeline_x_win_rate)),
)


def forecast_methods() -> tuple[ForecastMethod, ...]:
    """Return the declared forecast methods (read at call time, so every consumer sees the same list)."""
    return METHODS


def method_label(name: str) -> str:
    """Return a method's label, or its name for a method no longer declared (an old saved backtest)."""
    return next((m.label for m in METHODS if m.name == name), name)
