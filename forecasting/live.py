"""Forecasts checked live: saved forecasts against the revenue booked once their periods end, deal flow between
two saved forecasts, and the version of the stage model behind a forecast."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from forecasting import metrics

LIVE_COLUMNS = ("snapshot_id", "made_at", "as_of", "label", "start", "end", "actual", "p10", "p50", "p90",
                "inside", "error_pct")
FLOW_KINDS = ("new", "won", "lost", "pushed", "pulled_in", "amount_changed")


def stage_model_version(model: dict[str, Any]) -> str:
    """Return a fingerprint of what a forecast's stage model learned (ModelSummary.to_dict()): the same data and
    options give the same version."""
    learned = dict(model)
    for drawn in ("simulations", "exact_deals", "normal_deals"):  # how it simulated, not what it learned
        learned.pop(drawn, None)
    digest = hashlib.sha256(json.dumps(learned, sort_keys=True, allow_nan=False).encode()).hexdigest()
    return f"sm-{digest[:12]}"


def live_accuracy(saved: Sequence[dict[str, Any]], opportunities: pd.DataFrame, *, now: pd.Timestamp) -> pd.DataFrame:
    """Return one row per forecast period that has ended by `now`, scored against the revenue won in it.

    Each period is judged by the forecast made for it at the time: of the saved forecasts covering the period,
    the one with the latest as-of date on or before the period's start (then the latest made). `saved`: dicts with
    id, made_at, as_of and periods (label, start, end, p10, p50, p90); `opportunities` in the contract, as known
    now. error_pct = (P50 - actual) / actual x 100 (None when nothing was won); inside: P10 <= actual <= P90.
    """
    t = pd.Timestamp(now)
    chosen: dict[tuple[pd.Timestamp, pd.Timestamp], tuple[tuple[Any, ...], dict[str, Any], dict[str, Any]]] = {}
    for snap in saved:
        as_of = pd.Timestamp(snap["as_of"])
        for period in snap["periods"]:
            start, end = pd.Timestamp(period["start"]), pd.Timestamp(period["end"])
            if end > t or as_of > start:
                continue
            rank = (as_of, pd.Timestamp(snap["made_at"]), int(snap["id"]))
            if (start, end) not in chosen or rank > chosen[(start, end)][0]:
                chosen[(start, end)] = (rank, snap, period)
    rows = []
    for (start, end), (_, snap, period) in sorted(chosen.items(), key=lambda item: item[0]):
        actual = float(metrics.won_revenue(opportunities, start=start, end=end))  # type: ignore[arg-type]
        p10, p50, p90 = (float(period[k]) for k in ("p10", "p50", "p90"))
        rows.append({
            "snapshot_id": int(snap["id"]), "made_at": pd.Timestamp(snap["made_at"]),
            "as_of": pd.Timestamp(snap["as_of"]), "label": str(period["label"]), "start": start, "end": end,
            "actual": actual, "p10": p10, "p50": p50, "p90": p90, "inside": bool(p10 <= actual <= p90),
            "error_pct": (p50 - actual) / actual * 100 if actual > 0 else None,
        })
    return pd.DataFrame(rows, columns=list(LIVE_COLUMNS))


def live_summary(rows: pd.DataFrame) -> dict[str, Any]:
    """Return the MAPE and bias (percent, periods with revenue) and the share inside P10-P90 of scored periods."""
    errors = rows["error_pct"].dropna().astype(float) if len(rows) else pd.Series(dtype=float)
    return {
        "periods": len(rows),
        "mape": float(errors.abs().mean()) if len(errors) else None,
        "bias": float(errors.mean()) if len(errors) else None,
        "coverage": float(rows["inside"].astype(bool).mean()) if len(rows) else None,
    }


@dataclass(frozen=True)
class FlowItem:
    """Deals of one kind of flow: how many, and their amount ($; for amount_changed, the net change)."""

    deals: int
    amount: float


@dataclass(frozen=True)
class DealFlow:
    """How the pipeline moved between two forecasts, judged against the earlier one's horizon end."""

    period_end: pd.Timestamp
    items: dict[str, FlowItem]
    ids: dict[str, tuple[str, ...]]

    def to_dict(self, *, with_ids: bool = False) -> dict[str, Any]:
        """Return JSON-ready values (the deal ids of each kind on request)."""
        out: dict[str, Any] = {"period_end": self.period_end.date().isoformat()}
        for kind in FLOW_KINDS:
            item = self.items[kind]
            out[kind] = {"deals": item.deals, "amount": item.amount}
            if with_ids:
                out[kind]["opportunity_ids"] = list(self.ids[kind])
        return out


def deal_flow(before: pd.DataFrame, after: pd.DataFrame, *, period_end: pd.Timestamp) -> DealFlow:
    """Return the deal flow from `before` to `after` (opportunity_id, outcome, amount, expected_close_date).

    new: in `after` only. Of the deals open in `before`: won and lost, closed so in `after`; of those open in
    both, pushed (expected to close before `period_end`, now on or after it), pulled_in (expected on or after it,
    or with no date, now before it), amount_changed (amount differs; the net change). Amounts are `before`'s,
    except for new deals (theirs).
    """
    end = pd.Timestamp(period_end)
    b = before.set_index(before["opportunity_id"].astype(str))
    a = after.set_index(after["opportunity_id"].astype(str))
    common = b.index.intersection(a.index, sort=False)
    new_ids = a.index.difference(b.index, sort=False)
    b_open = b.loc[common, "outcome"].astype(str) == "open"
    a_out = a.loc[common, "outcome"].astype(str)
    both_open = b_open & (a_out == "open")
    b_close = pd.to_datetime(b.loc[common, "expected_close_date"])
    a_close = pd.to_datetime(a.loc[common, "expected_close_date"])
    b_amount = pd.to_numeric(b.loc[common, "amount"]).astype(float)
    a_amount = pd.to_numeric(a.loc[common, "amount"]).astype(float)
    masks = {
        "won": b_open & (a_out == "won"),
        "lost": b_open & (a_out == "lost"),
        "pushed": both_open & (b_close < end).fillna(False) & (a_close >= end).fillna(False),
        "pulled_in": both_open & ~(b_close < end).fillna(False) & (a_close < end).fillna(False),
        "amount_changed": both_open & ~((b_amount == a_amount) | (b_amount.isna() & a_amount.isna())),
    }
    items = {"new": FlowItem(len(new_ids), float(pd.to_numeric(a.loc[new_ids, "amount"]).astype(float)
                                                 .fillna(0).sum()))}
    ids = {"new": tuple(sorted(new_ids))}
    for kind, mask in masks.items():
        mask = mask.to_numpy(bool)
        chosen = common[mask]
        if kind == "amount_changed":
            amount = float(np.nansum(a_amount.to_numpy()[mask]) - np.nansum(b_amount.to_numpy()[mask]))
        else:
            amount = float(np.nansum(b_amount.to_numpy()[mask]))
        items[kind] = FlowItem(int(mask.sum()), amount)
        ids[kind] = tuple(sorted(chosen))
    return DealFlow(period_end=end, items=items, ids=ids)
