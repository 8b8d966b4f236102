"""Live accuracy and deal flow, on tables small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crmdata.synthetic import generate_opportunities
from forecasting.forecast import forecast
from forecasting.live import deal_flow, live_accuracy, live_summary, stage_model_version

T = pd.Timestamp


def _deals(rows: list[tuple[str, str, float, str | None]]) -> pd.DataFrame:
    return pd.DataFrame({"opportunity_id": [r[0] for r in rows], "outcome": [r[1] for r in rows],
                         "amount": [r[2] for r in rows],
                         "expected_close_date": pd.to_datetime([r[3] for r in rows])})


def test_deal_flow_counts_each_kind_by_hand() -> None:
    before = _deals([
        ("A", "open", 100, "2026-03-15"), ("B", "open", 200, "2026-03-20"), ("C", "open", 300, "2026-05-01"),
        ("D", "open", 400, None), ("E", "open", 500, "2026-02-01"), ("F", "won", 50, None),
        ("H", "open", 10, None),
    ])
    after = _deals([
        ("A", "won", 100, "2026-03-15"),   # won
        ("B", "open", 200, "2026-04-10"),  # pushed past the period end (2026-04-01)
        ("C", "open", 300, "2026-03-30"),  # pulled in
        ("D", "open", 450, None),          # amount changed, +50
        ("E", "lost", 500, "2026-02-01"),  # lost
        ("F", "won", 50, None),            # closed before: no flow
        ("G", "open", 700, "2026-03-01"),  # new
        ("H", "open", 10, "2026-03-01"),   # no date before, now inside: pulled in
    ])
    flow = deal_flow(before, after, period_end=T("2026-04-01"))
    got = {k: (v.deals, v.amount) for k, v in flow.items.items()}
    assert got == {"new": (1, 700), "won": (1, 100), "lost": (1, 500), "pushed": (1, 200),
                   "pulled_in": (2, 310), "amount_changed": (1, 50)}
    assert flow.ids["pulled_in"] == ("C", "H")
    out = flow.to_dict(with_ids=True)
    assert out["period_end"] == "2026-04-01" and out["new"] == {"deals": 1, "amount": 700, "opportunity_ids": ["G"]}


def test_no_change_is_no_flow() -> None:
    same = _deals([("A", "open", 100, "2026-03-15"), ("B", "won", 5, None)])
    flow = deal_flow(same, same, period_end=T("2026-04-01"))
    assert all(v.deals == 0 and v.amount == 0 for v in flow.items.values())


def _snap(i: int, as_of: str, made: str, periods: list[tuple[str, str, float, float, float]]) -> dict[str, object]:
    return {"id": i, "as_of": T(as_of), "made_at": T(made),
            "periods": [{"label": s[:7], "start": s, "end": e, "p10": lo, "p50": mid, "p90": hi}
                        for s, e, lo, mid, hi in periods]}


def test_live_accuracy_judges_each_ended_period_by_the_forecast_made_for_it() -> None:
    deals = pd.DataFrame({
        "outcome": ["won", "won", "won", "lost", "open"],
        "closed_at": pd.to_datetime(["2026-01-10", "2026-01-20", "2026-02-05", "2026-01-15", None]),
        "won_amount": [1000.0, 500.0, 2000.0, 0.0, None],
    })
    saved = [
        _snap(1, "2026-01-01", "2025-12-31", [("2026-01-01", "2026-02-01", 1000, 1200, 2000),
                                              ("2026-02-01", "2026-03-01", 500, 1000, 1500)]),
        _snap(2, "2026-01-15", "2026-01-15", [("2026-01-15", "2026-02-01", 100, 600, 700),
                                              ("2026-02-01", "2026-03-01", 1000, 2500, 1900),
                                              ("2026-03-01", "2026-04-01", 0, 1, 2)]),
    ]
    rows = live_accuracy(saved, deals, now=T("2026-03-01"))
    # January (forecast 1): 1,000 + 500 won; P50 1,200 -> (1200 - 1500) / 1500 = -20%, inside 1,000-2,000.
    # Jan 15-31 (forecast 2): 500 won; P50 600 -> +20%, inside 100-700.
    # February: forecasts 1 and 2 both cover it; forecast 2 is the later as of: 2,000 won, P50 2,500 -> +25%,
    # above its P90 of 1,900. March has not ended by 2026-03-01: not scored.
    assert rows[["snapshot_id", "actual", "error_pct", "inside"]].values.tolist() == [
        [1, 1500.0, -20.0, True], [2, 500.0, 20.0, True], [2, 2000.0, 25.0, False]]
    summary = live_summary(rows)
    assert summary["periods"] == 3
    assert summary["mape"] == pytest.approx((20 + 20 + 25) / 3)
    assert summary["bias"] == pytest.approx((-20 + 20 + 25) / 3)
    assert summary["coverage"] == pytest.approx(2 / 3)


def test_a_period_with_nothing_won_is_listed_but_not_in_the_mape() -> None:
    deals = pd.DataFrame({"outcome": ["lost"], "closed_at": pd.to_datetime(["2026-01-10"]), "won_amount": [0.0]})
    rows = live_accuracy([_snap(1, "2026-01-01", "2026-01-01", [("2026-01-01", "2026-02-01", 0, 10, 20)])], deals,
                         now=T("2026-02-01"))
    assert rows["actual"].tolist() == [0.0] and rows["error_pct"].isna().all()
    assert live_summary(rows) == {"periods": 1, "mape": None, "bias": None, "coverage": 1.0}
    assert live_summary(live_accuracy([], deals, now=T("2026-02-01")))["periods"] == 0


def test_the_stage_model_version_follows_what_was_learnt_not_how_it_was_drawn() -> None:
    deals = generate_opportunities(n=300, seed=4).opportunities
    stages = generate_opportunities(n=300, seed=4).stages

    def version(as_of: str, sims: int, seed: int) -> str:
        result = forecast(deals, stages=stages, as_of=as_of, horizon="1M", n_sims=sims,
                          rng=np.random.default_rng(seed))
        return stage_model_version(result.to_dict()["model"])

    first = version("2026-06-01", 500, 0)
    assert first == version("2026-06-01", 800, 9)  # other draws, same model
    assert first != version("2026-05-01", 500, 0)  # learnt from less data
    assert first.startswith("sm-") and len(first) == 15
