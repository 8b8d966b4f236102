"""Stuck deals: open deals that have sat in their stage longer than deals that went on to win usually do."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from forecasting.errors import ForecastInputError
from forecasting.stage_model import StageModel

STUCK_COLUMNS = ("opportunity_id", "owner", "team", "product", "stage", "days_in_stage", "threshold_days",
                 "days_over", "amount", "win_probability", "value_at_risk")


def stuck_thresholds(
    model: StageModel, *, percentile: float = 80.0, overrides: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Return, per open stage, the days a deal may stay before it is stuck.

    Default: the `percentile`-th percentile of the days that deals which went on to win spent in the stage;
    `overrides` (stage -> days) replace it. A stage no won deal was ever seen in gets no threshold (NaN).
    """
    if not 0 < percentile < 100:
        raise ForecastInputError(f"stuck percentile must be between 0 and 100, got {percentile}")
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(model.stages.open))
    if unknown:
        raise ForecastInputError(
            f"stuck threshold given for unknown stage(s) {', '.join(unknown)}; open stages are "
            f"{', '.join(model.stages.open)}"
        )
    bad = {s: d for s, d in overrides.items() if not np.isfinite(d) or d < 0}
    if bad:
        raise ForecastInputError(f"stuck thresholds must be non-negative days: {bad}")
    out = {}
    for stage in model.stages.open:
        days = model.won_days.get(stage, np.zeros(0))
        out[stage] = float(np.percentile(days, percentile)) if len(days) else float("nan")
    out.update({s: float(d) for s, d in overrides.items()})
    return out


def find_stuck(snap: pd.DataFrame, *, model: StageModel, thresholds: Mapping[str, float]) -> pd.DataFrame:
    """Return the open deals whose days in their stage exceed the stage threshold, largest value at risk first.

    days_over = days_in_stage - threshold_days; value_at_risk ($) = amount x realisation x P(win | stage reached),
    the expected revenue the deal was worth in its stage before it stalled.
    """
    open_deals = snap[(snap["outcome"] == "open") & snap["days_in_stage"].notna()]
    limit = open_deals["stage"].map(lambda s: thresholds.get(s, np.nan)).astype(float)
    days = open_deals["days_in_stage"].astype(float)
    flagged = open_deals[(days > limit).to_numpy(bool)]
    if flagged.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in STUCK_COLUMNS})
    p = flagged["stage"].map(lambda s: model.stage_probability(s)).astype(float)
    amount = flagged["amount"].astype(float)
    out = pd.DataFrame({
        "opportunity_id": flagged["opportunity_id"].astype(str),
        "owner": flagged["owner"].astype(str),
        "team": flagged["team"].astype(object),
        "product": flagged["product"].astype(str),
        "stage": flagged["stage"].astype(str),
        "days_in_stage": flagged["days_in_stage"].astype(float),
        "threshold_days": limit[flagged.index].astype(float),
        "amount": amount,
        "win_probability": p,
    })
    out["days_over"] = out["days_in_stage"] - out["threshold_days"]
    out["value_at_risk"] = out["amount"] * model.realisation * out["win_probability"]
    out = out.sort_values(["value_at_risk", "days_over"], ascending=False, kind="stable")
    return out[list(STUCK_COLUMNS)].reset_index(drop=True)
