from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from store import Store, StoreUnavailable
from store.predictions import PredictionLog
from store.schema import predictions


def _row(lead_id: str, probability: float = 0.5) -> dict[str, Any]:
    return {"lead_id": lead_id, "scored_at": datetime(2026, 12, 1, 10), "as_of": datetime(2026, 12, 1),
            "model_name": "m", "model_version": "1", "model_kind": "trained", "probability": probability,
            "score": round(probability * 100), "grade": "B", "reasons": [{"feature": "x", "contribution": 3}],
            "features": {"web_visits": 4}}


def _count(store: Store) -> int:
    with store.begin() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(predictions)).scalar_one())


def test_rows_are_written_in_batches_and_read_back_as_sent(store: Store) -> None:
    log = PredictionLog(store, batch_rows=4)
    for i in range(10):  # 10 requests of 1 row, then one of 3
        assert log.record(1, lambda i=i: [_row(f"L{i}", i / 10)])
    assert log.record(3, lambda: [_row("M", 0.25)] * 3)
    assert log.flush(timeout=10)
    assert (_count(store), log.written, log.dropped) == (13, 13, 0)
    with store.begin() as conn:
        row = conn.execute(sa.select(predictions).where(predictions.c.lead_id == "L7")).one()
    assert (row.probability, row.score, row.grade, row.features) == (0.7, 70, "B", {"web_visits": 4})
    assert row.reasons == [{"feature": "x", "contribution": 3}] and row.as_of == datetime(2026, 12, 1)
    log.close()


class FlakyStore(Store):
    """A store whose writes fail while `down` is set (the real faults are in the PostgreSQL test below)."""

    down = True

    def begin(self) -> Any:
        if self.down:
            raise StoreUnavailable("the database is down (test)")
        return super().begin()


def test_rows_wait_while_the_database_is_down_and_the_overflow_is_counted(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    store = FlakyStore(f"sqlite:///{tmp_path / 'p.db'}", auto_upgrade=True)
    counted: list[int] = []
    log = PredictionLog(store, capacity=4, batch_rows=2, interval_seconds=0.01, max_backoff_seconds=0.02,
                        on_drop=counted.append)
    with caplog.at_level(logging.WARNING, logger="leadcast.store"):
        assert log.record(2, lambda: [_row("A"), _row("B")])
        time.sleep(0.2)  # the writer took A and B and is retrying them: they no longer count in the queue
        assert log.record(3, lambda: [_row("C"), _row("D"), _row("E")])
        assert log.record(2, lambda: [_row("F"), _row("G")]) is False  # 3 queued + 2 > 4
        assert log.record(1, lambda: [_row("H")])  # 3 + 1 <= 4: room again for a smaller request
    assert "queue full" in caplog.text and "retrying" in caplog.text
    store.down = False
    assert log.flush(timeout=10)
    with store.begin() as conn:
        ids = sorted(conn.execute(sa.select(predictions.c.lead_id)).scalars())
    assert ids == ["A", "B", "C", "D", "E", "H"] and counted == [2] and log.dropped == 2
    log.close()
    store.dispose()



def test_copy_stores_each_row_as_the_insert_would(store: Store) -> None:
    if store.is_sqlite:
        pytest.skip("COPY is the PostgreSQL writer's; SQLite's writer is the INSERT itself")
    from store.predictions import copy_rows

    row = {**_row("C1"), "as_of": None, "reasons": None, "features": {"web_visits": 4, "source": "web, \"ads\"\t\\"}}
    with store.begin() as conn:
        conn.execute(predictions.insert(), [{**row, "lead_id": "by-insert"}])
        copy_rows(conn, [{**row, "lead_id": "by-copy"}])
        raw = {r.lead_id: r[1:] for r in conn.execute(sa.text(
            "SELECT lead_id, scored_at, as_of, probability, score, grade, reasons::text, features::jsonb::text, "
            "reasons IS NULL FROM predictions ORDER BY lead_id"))}
    # Same values; a None reasons is JSON null (not SQL NULL) either way, as SQLAlchemy's JSON type stores it.
    assert raw["by-copy"] == raw["by-insert"]
    assert raw["by-copy"][-1] is False and raw["by-copy"][1] is None
