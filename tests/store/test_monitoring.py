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
    assert logged.scores["lead_id"].tolist() == IDS
    assert logged.scores["probability"].tolist() == [1 / (i + 3) for i in range(6)]  # bit for bit
    assert logged.scores["converted"].tolist() == [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    # SQLite's julianday() is a double of about 2.46e6 days: steps of 2.46e6 x 2.2e-16 days = about 47 us.
    assert logged.scores["scored_at"].dt.round("ms").tolist() == [T0 + timedelta(minutes=i) for i in range(6)]
    assert sorted(logged.features["lead_id"]) == sorted(IDS)
