"""Stage probabilities, conversions, durations and the timing hazards, on pipelines small enough to count."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crmdata.stages import DEFAULT_STAGES
from forecasting.snapshot import snapshot
from forecasting.stage_model import Hazards, fit_hazards, fit_stage_model, segment_strength
from tests.forecasting.conftest import MAVEN_STAGES, make_deals, make_history

T = pd.Timestamp("2024-03-01")


@pytest.fixture
def staged() -> tuple[pd.DataFrame, pd.DataFrame]:
    deals = make_deals([
        {"opportunity_id": "a", "amount": 100, "created_at": "2024-01-01", "stage": "won", "closed_at": "2024-01-31",
         "won_amount": 90},
        {"opportunity_id": "b", "amount": 100, "created_at": "2024-01-02", "stage": "lost",
         "closed_at": "2024-01-20", "won_amount": 0},
        {"opportunity_id": "c", "amount": 100, "created_at": "2024-01-03", "stage": "lost",
         "closed_at": "2024-01-08", "won_amount": 0},
        {"opportunity_id": "d", "amount": 100, "created_at": "2024-01-04", "stage": "proposal",
         "stage_entered_at": "2024-01-25"},
    ], stages=DEFAULT_STAGES)
    history = make_history([
        ("a", "qualification", "2024-01-01"), ("a", "contact", "2024-01-05"), ("a", "proposal", "2024-01-15"),
        ("a", "closing", "2024-01-25"), ("a", "won", "2024-01-31"),
        ("b", "qualification", "2024-01-02"), ("b", "contact", "2024-01-10"), ("b", "lost", "2024-01-20"),
        ("c", "qualification", "2024-01-03"), ("c", "lost", "2024-01-08"),
        ("d", "qualification", "2024-01-04"), ("d", "contact", "2024-01-14"), ("d", "proposal", "2024-01-25"),
    ])
    return deals, history


def test_win_probability_by_stage_reached(staged: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    deals, history = staged
    snap = snapshot(deals, as_of=T, stages=DEFAULT_STAGES, history=history)
    model = fit_stage_model(snap, stages=DEFAULT_STAGES, as_of=T, history=history)
    assert model.entry == "qualification"
    # Reached qualification: won a, lost b and c -> 1/3; contact: a won, b lost -> 1/2; proposal, closing: a -> 1.
    assert model.stage_probability("qualification") == pytest.approx(1 / 3)
    assert model.stage_probability("contact") == pytest.approx(1 / 2)
    assert model.stage_probability("proposal") == 1.0
    # qualification -> contact: a, b, d moved on of a, b, c, d decided = 3/4; contact -> proposal: a, d of a, b, d.
    assert model.stat("qualification").conversion_to_next == pytest.approx(3 / 4)
    assert model.stat("contact").conversion_to_next == pytest.approx(2 / 3)
    # d still sits in proposal, undecided: proposal -> closing counts a only, 1/1.
    assert model.stat("proposal").conversion_to_next == 1.0
    # a, the won deal, spent 4 days in qualification, 10 in contact, 10 in proposal, 6 in closing.
    assert model.won_days["qualification"].tolist() == [4.0]
    assert model.won_days["contact"].tolist() == [10.0]
    assert model.won_days["closing"].tolist() == [6.0]
    assert model.stat("closing").mean_days_to_win == 6.0
    assert model.realisation == pytest.approx(0.9)  # 90 booked of 100 in the pipeline


def test_hazards_use_delayed_entry_and_censoring() -> None:
    # Four deals created Jan 2; the first close in the data is Jan 4, so days before it are not at risk.
    entries = pd.DataFrame({
        "entered_at": pd.to_datetime(["2024-01-02"] * 4),
        "closed_at": pd.to_datetime(["2024-01-04", "2024-01-07", None, None]),
        "outcome": ["won", "lost", "open", "open"],
    })
    hz, _ = fit_hazards(entries, as_of=pd.Timestamp("2024-01-12"), observed_from=pd.Timestamp("2024-01-04"),
                        bin_days=10, seasonal_prior=0.0, cohort_prior=float("inf"))
    # At risk (ages 2.. in bin 0, January = quarter phase 0): won deal 1 day (its close day), lost deal 4 days
    # (Jan 4-7), open deals 8 days each (Jan 4-11): 1 + 4 + 8 + 8 = 21 deal-days, one win and one loss.
    assert hz.won[0, 0] == pytest.approx(1 / 21)
    assert hz.lost[0, 0] == pytest.approx(1 / 21)


def test_segments_borrow_from_their_stage_only_as_much_as_they_are_alike() -> None:
    # Empirical Bayes by hand. The stage's hazards: win 0.1 a day, never lose. In January (quarter phase 0)
    # segment A had 20 deals for 5 days each, all won on the 5th: 100 deal-days, 20 exits where the stage's
    # hazards expect 100 x 0.1 = 10. Segment B had 10 deals open for 10 days: 100 deal-days, no exit, 10 expected.
    # phi = ((20 - 10)^2 - 20 + (0 - 10)^2 - 0) / (10^2 + 10^2) = 180 / 200 = 0.9, so m = 1 / 0.9 pseudo-exits
    # and each segment's own rate counts X / (X + m) = 10 / (10 + 1.11) = 0.9: A wins 0.1 x (1 + 0.9 x (20 / 10 -
    # 1)) = 0.19 a day, B 0.1 x (1 + 0.9 x (0 / 10 - 1)) = 0.01, in every quarter phase.
    stage = Hazards(365, np.full((1, 3), 0.1), np.zeros((1, 3)), 30)
    day, t = pd.Timestamp("2024-01-01"), pd.Timestamp("2024-01-11")
    a = pd.DataFrame({"entered_at": [day] * 20, "closed_at": [day + pd.Timedelta(days=4)] * 20,
                      "outcome": ["won"] * 20})
    b = pd.DataFrame({"entered_at": [day] * 10, "closed_at": [pd.NaT] * 10, "outcome": ["open"] * 10})
    m = segment_strength([a, b], prior=stage, as_of=t, observed_from=day, bin_days=365)
    assert m.tolist() == pytest.approx([1 / 0.9])
    fit_a, _ = fit_hazards(a, as_of=t, observed_from=day, bin_days=365, prior=stage, prior_strength=m)
    fit_b, _ = fit_hazards(b, as_of=t, observed_from=day, bin_days=365, prior=stage, prior_strength=m)
    assert fit_a.won[0].tolist() == pytest.approx([0.19] * 3) and not fit_a.lost.any()
    assert fit_b.won[0].tolist() == pytest.approx([0.01] * 3)
    # Segments that differ no more than chance says (each as the stage expects: 10 deals won on their 10th day,
    # 100 deal-days, 10 exits, 10 expected: (10 - 10)^2 - 10 < 0) take the stage's hazards as they are.
    c = pd.DataFrame({"entered_at": [day] * 10, "closed_at": [day + pd.Timedelta(days=9)] * 10,
                      "outcome": ["won"] * 10})
    alike = segment_strength([c, c], prior=stage, as_of=t, observed_from=day, bin_days=365)
    assert alike.tolist() == [float("inf")]
    fit_c, _ = fit_hazards(c, as_of=t, observed_from=day, bin_days=365, prior=stage, prior_strength=alike)
    assert fit_c.won[0].tolist() == pytest.approx([0.1] * 3)


def test_time_spent_lowers_the_win_probability() -> None:
    # Won deals closed after 10-14 days; a deal open 60 days is past anything a winner ever took.
    rows = [{"opportunity_id": f"w{i}", "amount": 100, "created_at": f"2024-01-{1 + i:02d}", "stage": "Won",
             "closed_at": f"2024-01-{11 + i + (i % 5):02d}", "won_amount": 100} for i in range(10)]
    rows += [{"opportunity_id": f"l{i}", "amount": 100, "created_at": f"2024-01-{1 + i:02d}", "stage": "Lost",
              "closed_at": f"2024-01-{6 + i:02d}", "won_amount": 0} for i in range(5)]
    rows += [{"opportunity_id": "old", "amount": 100, "created_at": "2023-12-01", "stage": "Engaging"},
             {"opportunity_id": "new", "amount": 100, "created_at": "2024-01-30", "stage": "Engaging"}]
    deals = make_deals(rows)
    t = pd.Timestamp("2024-02-01")
    snap = snapshot(deals, as_of=t, stages=MAVEN_STAGES)
    model = fit_stage_model(snap, stages=MAVEN_STAGES, as_of=t)
    fresh, stale = model.win_probability("Engaging", np.array([2, 62]), start=t)
    assert model.stage_probability("Engaging") == pytest.approx(10 / 15)
    assert fresh > 0.5
    assert stale == 0.0
