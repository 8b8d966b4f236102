"""The pipeline as known at a date: nothing from that day or later leaks in."""

from __future__ import annotations

import pandas as pd
import pytest

from crmdata.stages import DEFAULT_STAGES
from forecasting.errors import ForecastInputError
from forecasting.snapshot import require_history, snapshot
from tests.forecasting.conftest import MAVEN_STAGES, make_deals, make_history


@pytest.fixture
def deals() -> pd.DataFrame:
    return make_deals([
        {"opportunity_id": "d1", "amount": 10, "created_at": "2024-01-01", "stage": "Won", "closed_at": "2024-01-20",
         "won_amount": 12},
        {"opportunity_id": "d2", "amount": 20, "created_at": "2024-01-05", "stage": "Lost",
         "closed_at": "2024-02-10", "won_amount": 0},
        {"opportunity_id": "d3", "amount": 30, "created_at": "2024-01-10", "stage": "Engaging"},
        {"opportunity_id": "d4", "amount": 40, "created_at": "2024-02-01", "stage": "Won", "closed_at": "2024-02-05",
         "won_amount": 40},
        {"opportunity_id": "d5", "amount": 50, "stage": "Prospecting"},
    ])


def test_a_past_snapshot_keeps_what_was_known_then(deals: pd.DataFrame) -> None:
    snap = snapshot(deals, as_of=pd.Timestamp("2024-02-01"), stages=MAVEN_STAGES).set_index("opportunity_id")
    # d4 was created on the as-of day itself: the future. d5 has no creation date: never in a past snapshot.
    assert list(snap.index) == ["d1", "d2", "d3"]
    assert snap.loc["d1", "outcome"] == "won" and snap.loc["d1", "won_amount"] == 12
    # d2 was lost on Feb 10, after the as-of date: open then, in the earliest stage it must have passed.
    assert snap.loc["d2", "outcome"] == "open"
    assert snap.loc["d2", "stage"] == "Engaging" and bool(snap.loc["d2", "stage_inferred"])
    assert pd.isna(snap.loc["d2", "closed_at"]) and pd.isna(snap.loc["d2", "won_amount"])
    # Jan 5 -> Feb 1 is 27 days; Jan 10 -> Feb 1 is 22.
    assert snap.loc["d2", "age_days"] == 27 and snap.loc["d3", "days_in_stage"] == 22


def test_the_present_snapshot_includes_deals_without_a_date(deals: pd.DataFrame) -> None:
    snap = snapshot(deals, as_of=pd.Timestamp("2024-03-01"), stages=MAVEN_STAGES).set_index("opportunity_id")
    assert set(snap.index) == {"d1", "d2", "d3", "d4", "d5"}
    assert snap.loc["d5", "stage"] == "Prospecting" and snap.loc["d2", "outcome"] == "lost"


def test_stage_at_the_date_comes_from_the_history() -> None:
    deals = make_deals([
        {"opportunity_id": "h1", "amount": 10, "created_at": "2024-01-01", "stage": "won",
         "closed_at": "2024-02-01", "won_amount": 10},
    ], stages=DEFAULT_STAGES)
    history = make_history([("h1", "qualification", "2024-01-01"), ("h1", "contact", "2024-01-10"),
                            ("h1", "proposal", "2024-01-20"), ("h1", "won", "2024-02-01")])
    snap = snapshot(deals, as_of=pd.Timestamp("2024-01-15"), stages=DEFAULT_STAGES, history=history)
    row = snap.iloc[0]
    assert (row["stage"], row["outcome"], row["days_in_stage"]) == ("contact", "open", 5)  # Jan 10 -> Jan 15
    assert not row["stage_inferred"]


def test_an_as_of_date_before_all_data_is_refused_clearly(deals: pd.DataFrame) -> None:
    snap = snapshot(deals, as_of=pd.Timestamp("2020-01-01"), stages=MAVEN_STAGES)
    with pytest.raises(ForecastInputError, match="no opportunity was created before the as-of date 2020-01-01"):
        require_history(snap, as_of=pd.Timestamp("2020-01-01"))
    early = snapshot(deals, as_of=pd.Timestamp("2024-01-08"), stages=MAVEN_STAGES)
    with pytest.raises(ForecastInputError, match="only 0 deal"):
        require_history(early, as_of=pd.Timestamp("2024-01-08"))
