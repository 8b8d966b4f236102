from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from store import Store, StoreError
from store.outcomes import Outcome, UpsertCounts, matured_outcomes, read_outcomes, upsert_outcomes
from store.schema import outcomes, predictions

DAY = datetime(2026, 11, 1)


def _prediction(lead_id: str, day: int, probability: float, version: str = "v1") -> dict[str, object]:
    return {"lead_id": lead_id, "scored_at": DAY + timedelta(days=day), "as_of": None, "model_name": "m",
            "model_version": version, "model_kind": "trained", "probability": probability,
            "score": round(probability * 100), "grade": "B", "reasons": None, "features": {}}


def test_an_upsert_is_idempotent_and_counts_what_it_changed(store: Store) -> None:
    first = [Outcome("L1", True, datetime(2026, 11, 5, 9)), Outcome("L2", False), Outcome("L3", True)]
    assert upsert_outcomes(store, first, source="api", now=DAY) == UpsertCounts(3, 0, 0)
    assert upsert_outcomes(store, first, source="api", now=DAY + timedelta(days=1)) == UpsertCounts(0, 0, 3)
    with store.begin() as conn:  # the repeat touched nothing, not even updated_at
        assert set(conn.execute(sa.select(outcomes.c.updated_at)).scalars()) == {DAY}
    # L2 converted after all; L3's time becomes known; L4 is new; L1 unchanged -> 1 new, 2 changed, 1 same
    second = [Outcome("L1", True, datetime(2026, 11, 5, 9)), Outcome("L2", True, datetime(2026, 11, 20)),
              Outcome("L3", True, datetime(2026, 11, 6)), Outcome("L4", False)]
    assert upsert_outcomes(store, second, source="import", now=DAY + timedelta(days=30)) == UpsertCounts(1, 2, 1)
    got = read_outcomes(store, lead_ids=["L1", "L2", "L3", "L4", "nobody"])
    assert got == {"L1": Outcome("L1", True, datetime(2026, 11, 5, 9)),
                   "L2": Outcome("L2", True, datetime(2026, 11, 20)),
                   "L3": Outcome("L3", True, datetime(2026, 11, 6)), "L4": Outcome("L4", False)}
    with store.begin() as conn:
        row = conn.execute(sa.select(outcomes).where(outcomes.c.lead_id == "L2")).one()
    assert (row.source, row.recorded_at, row.updated_at) == ("import", DAY, DAY + timedelta(days=30))


def test_a_lead_listed_twice_keeps_its_last_outcome_and_times_become_naive_utc(store: Store) -> None:
    paris = timezone(timedelta(hours=1))
    sent = [Outcome("L1", False), Outcome("L1", True, datetime(2026, 11, 5, 10, tzinfo=paris))]
    assert upsert_outcomes(store, sent, source="api") == UpsertCounts(1, 0, 0)
    # 10:00+01:00 is 09:00 UTC
    assert read_outcomes(store, lead_ids=["L1"])["L1"] == Outcome("L1", True, datetime(2026, 11, 5, 9))


def test_a_conversion_time_on_an_unconverted_lead_is_refused_naming_it(store: Store) -> None:
    with pytest.raises(StoreError, match=r"outcome 1 \(lead 'L2'\): converted_at is given but converted is false"):
        upsert_outcomes(store, [Outcome("L1", True), Outcome("L2", False, datetime(2026, 11, 5))], source="api")
    assert read_outcomes(store, lead_ids=["L1"]) == {}  # nothing of a refused request is kept


def test_many_outcomes_go_in_chunks(store: Store) -> None:
    many = [Outcome(f"L{i}", i % 3 == 0) for i in range(2_345)]
    assert upsert_outcomes(store, many, source="import") == UpsertCounts(2_345, 0, 0)
    with store.begin() as conn:  # i % 3 == 0 for i in 0..2344: 0, 3, ..., 2343 -> 782 converted
        assert conn.execute(sa.select(sa.func.count()).where(outcomes.c.converted)).scalar_one() == 782


def test_matured_outcomes_pair_each_lead_with_its_last_score_before_the_outcome(store: Store) -> None:
    with store.begin() as conn:
        conn.execute(predictions.insert(), [
            _prediction("L1", 0, 0.20), _prediction("L1", 2, 0.60), _prediction("L1", 6, 0.90),  # converts day 4
            _prediction("L2", 1, 0.30),  # no outcome yet: not matured
            _prediction("L3", 1, 0.10), _prediction("L3", 1, 0.15, version="v2"),  # lost, reported on day 9
        ])
    upsert_outcomes(store, [Outcome("L1", True, DAY + timedelta(days=4))], source="api", now=DAY + timedelta(days=7))
    upsert_outcomes(store, [Outcome("L3", False)], source="import", now=DAY + timedelta(days=9))
    latest = matured_outcomes(store)
    # L1: day 0 and day 2 came before the conversion on day 4, day 6 after it -> day 2's 0.60 is judged;
    # L3: one score per version, both before the report on day 9
    assert [(m.lead_id, m.model_version, m.probability, m.converted) for m in latest] == [
        ("L1", "v1", 0.60, True), ("L3", "v1", 0.10, False), ("L3", "v2", 0.15, False)]
    assert latest[0].converted_at == DAY + timedelta(days=4) and latest[1].converted_at is None
    assert latest[1].outcome_recorded_at == DAY + timedelta(days=9)
    every = matured_outcomes(store, model_version="v1", latest_only=False)
    assert [(m.lead_id, m.probability) for m in every] == [("L1", 0.20), ("L1", 0.60), ("L3", 0.10)]
    window = matured_outcomes(store, scored_from=DAY + timedelta(days=1), scored_to=DAY + timedelta(days=2))
    assert [(m.lead_id, m.model_version) for m in window] == [("L3", "v1"), ("L3", "v2")]  # days 1 <= t < 2
    assert matured_outcomes(store, model_name="other") == []


def test_a_restart_keeps_the_outcomes(database_url: str) -> None:
    first = Store(database_url, auto_upgrade=True)
    upsert_outcomes(first, [Outcome("L1", True, datetime(2026, 11, 5, tzinfo=UTC))], source="api")
    first.dispose()
    again = Store(database_url)  # a new process: no auto-upgrade, the schema is already at head
    assert read_outcomes(again, lead_ids=["L1"]) == {"L1": Outcome("L1", True, datetime(2026, 11, 5))}
    again.dispose()


def test_an_upgrade_from_0002_keeps_the_logged_predictions(database_url: str) -> None:
    store = Store(database_url)
    store.upgrade("0002")
    with store.engine.begin() as conn:
        conn.execute(predictions.insert(), [_prediction("L1", 0, 0.4)])
    assert store.upgrade("0003") == ("0002", "0003")
    with store.engine.begin() as conn:  # not store.begin(): later revisions may follow 0003
        assert conn.execute(sa.select(predictions.c.lead_id)).scalars().all() == ["L1"]
        assert conn.execute(sa.select(sa.func.count()).select_from(outcomes)).scalar_one() == 0
    store.dispose()
