from __future__ import annotations

from datetime import datetime, timedelta

from store import Store
from store.monitoring import logged_scores
from store.schema import outcomes, predictions

T0 = datetime(2026, 6, 1)
# Ids a CSV transfer could mangle: a comma, a quote, a line break, leading zeros, an empty-looking value.
IDS = ["a,b", 'say "hi"', "line\nbreak", "007", "NULL", "ünï"]


def _row(lead_id: str, minute: int, probability: float) -> dict[str, object]:
    return {"lead_id": lead_id, "scored_at": T0 + timedelta(minutes=minute), "as_of": None, "model_name": "m",
            "model_version": "1", "model_kind": "trained", "probability": probability,
            "score": round(probability * 100), "grade": "B", "reasons": None, "features": {"web_visits": minute}}


def test_logged_scores_read_every_id_and_probability_exactly(store: Store) -> None:
    empty = logged_scores(store, model_name="m", model_version="1", since=None, now=T0, maturity_days=90)
    assert empty.rows == 0 and empty.scores.empty
    # Each lead scored at minute i with p = 1/(i+3) (not exact in decimal), then rescored later (not its first).
    rows = [_row(lead, i, 1 / (i + 3)) for i, lead in enumerate(IDS)] + [_row(IDS[0], 100, 0.99)]
    with store.begin() as conn:
        conn.execute(predictions.insert(), rows)
        conn.execute(outcomes.insert(), [{"lead_id": IDS[1], "converted": True, "converted_at": T0,
                                          "recorded_at": T0, "updated_at": T0, "source": "api"},
                                         {"lead_id": IDS[3], "converted": False, "converted_at": None,
                                          "recorded_at": T0, "updated_at": T0, "source": "api"}])
    # 100 days on, every first score (minutes 0-5) is past the 90-day window: converted only IDS[1].
    logged = logged_scores(store, model_name="m", model_version="1", since=None, now=T0 + timedelta(days=100),
                           maturity_days=90)
    assert logged.rows == 7
    assert logged.scores["probability"].tolist() == [1 / (i + 3) for i in range(6)]  # bit for bit, in time order
    assert logged.scores["converted"].tolist() == [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    # SQLite's julianday() is a double of about 2.46e6 days: steps of 2.46e6 x 2.2e-16 days = about 47 us.
    assert logged.scores["scored_at"].dt.round("ms").tolist() == [T0 + timedelta(minutes=i) for i in range(6)]
    assert sorted(logged.features["lead_id"]) == sorted(IDS)


def test_the_first_score_of_a_lead_is_its_earliest_by_time_then_id_within_the_window(store: Store) -> None:
    # Written in this order (ids 1-6):
    #   a at minute 10 p=0.1; a at minute 5 p=0.2 (written later, scored earlier: a's first);
    #   b at minute 7 p=0.3 and again at minute 7 p=0.4 (a tie in time: the lower id, p=0.3, is b's first);
    #   c at minute 1 p=0.5, then at minute 20 p=0.6; another version's row for a at minute 0 (not this one's).
    rows = [_row("a", 10, 0.1), _row("a", 5, 0.2), _row("b", 7, 0.3), _row("b", 7, 0.4), _row("c", 1, 0.5),
            _row("c", 20, 0.6), {**_row("a", 0, 0.9), "model_version": "2"}]
    with store.begin() as conn:
        conn.execute(predictions.insert(), rows)
        conn.execute(outcomes.insert(), [{"lead_id": "b", "converted": True, "converted_at": T0,
                                          "recorded_at": T0, "updated_at": T0, "source": "api"}])
    # Now = minute 30 with a 15-minute window: c (first at minute 1) and a (minute 5) matured unconverted,
    # b converted; in time order c (1), a (5), b (7).
    now = T0 + timedelta(minutes=30)
    logged = logged_scores(store, model_name="m", model_version="1", since=None, now=now, maturity_days=15 / 1440)
    assert logged.rows == 6
    assert logged.scores["probability"].tolist() == [0.5, 0.2, 0.3]
    assert logged.scores["converted"].tolist() == [0.0, 0.0, 1.0]
    # A 27-minute window: only c (29 minutes old) has matured; a (25 minutes old) may still convert.
    open_ = logged_scores(store, model_name="m", model_version="1", since=None, now=now, maturity_days=27 / 1440)
    assert [str(v) for v in open_.scores["converted"].tolist()] == ["0.0", "nan", "1.0"]
    # Since minute 6: a's first in the window is minute 10 (p=0.1), c's minute 20 (p=0.6); 4 rows in it.
    since = logged_scores(store, model_name="m", model_version="1", since=T0 + timedelta(minutes=6), now=now,
                          maturity_days=15 / 1440)
    assert since.rows == 4
    assert since.scores["probability"].tolist() == [0.3, 0.1, 0.6]
    assert sorted(since.features["lead_id"]) == ["a", "b", "c"]
