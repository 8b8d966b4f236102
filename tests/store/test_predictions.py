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
        copy_rows(conn.connection.driver_connection, [{**row, "lead_id": "by-copy"}])
        raw = {r.lead_id: r[1:] for r in conn.execute(sa.text(
            "SELECT lead_id, scored_at, as_of, probability, score, grade, reasons::text, features::jsonb::text, "
            "reasons IS NULL FROM predictions ORDER BY lead_id"))}
    # Same values; a None reasons is JSON null (not SQL NULL) either way, as SQLAlchemy's JSON type stores it.
    assert raw["by-copy"] == raw["by-insert"]
    assert raw["by-copy"][-1] is False and raw["by-copy"][1] is None


def test_a_writer_behind_takes_everything_queued_in_one_write(store: Store) -> None:
    log = PredictionLog(store, interval_seconds=0.5)  # the default batch: up to 10,000 rows per write
    writes: list[int] = []
    write = log._write

    def counted(rows: list[dict[str, Any]]) -> None:
        writes.append(len(rows))
        write(rows)

    log._write = counted  # type: ignore[method-assign]
    for request in range(3):  # three requests of 1,000 rows, queued within the writer's 0.5 s wait
        log.record(1_000, lambda r=request: [_row(f"R{r}-{i}") for i in range(1_000)])
    assert log.flush(timeout=30)
    # 3 x 1,000 = 3,000 rows <= 10,000: one write (one request's rows per write could not keep up with scoring)
    assert writes == [3_000] and _count(store) == 3_000
    log.close()


def test_the_postgresql_writer_copies_without_a_transaction_around_it(store: Store) -> None:
    if store.is_sqlite:
        pytest.skip("SQLite's writer is one INSERT in a transaction: no round trips to save")
    begun: list[object] = []
    sa.event.listen(store.engine, "begin", lambda conn: begun.append(conn))
    log = PredictionLog(store, interval_seconds=0.01)
    log.record(2, lambda: [_row("A"), _row("B")])
    assert log.flush(timeout=30)
    assert begun == []  # the COPY ran in autocommit: no BEGIN before it, no COMMIT after it (two round trips)
    assert _count(store) == 2
    log.close()


GREENLETS = """
import sys, time
from gevent import monkey
monkey.patch_all()
from datetime import datetime
from store import Store
from store.predictions import PredictionLog

store = Store(sys.argv[1])
log = PredictionLog(store, interval_seconds=0.05)
row = {"lead_id": "G", "scored_at": datetime(2026, 12, 1), "as_of": None, "model_name": "m", "model_version": "1",
       "model_kind": "trained", "probability": 0.5, "score": 50, "grade": "B", "reasons": None, "features": {}}
for _ in range(40):  # 40 requests of 100 rows, each followed by 30 ms of scoring that never yields
    log.record(100, lambda: [row] * 100)
    end = time.perf_counter() + 0.03
    while time.perf_counter() < end:
        pass
print(log.written)  # before flushing: what the writer's greenlet wrote while the requests ran
log.close()
"""


def test_a_greenlet_writer_writes_while_requests_never_block(postgres_admin_url: str | None, tmp_path: Path) -> None:
    """Under gevent the writer is a greenlet: it must get turns from the requests themselves (a PostgreSQL
    write waits on the server, a yield each time), or it writes nothing while they keep the worker busy."""
    import subprocess
    import sys

    if postgres_admin_url is None:
        pytest.skip("no PostgreSQL server: an SQLite write never yields, so it never waits for a turn")
    from tests.postgres import create_database

    url = create_database(postgres_admin_url)
    with Store(url) as db:
        db.upgrade()
    script = tmp_path / "greenlets.py"
    script.write_text(GREENLETS)
    done = subprocess.run([sys.executable, str(script), url], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    # 40 x 100 = 4,000 rows queued over about 1.2 s; the writer wakes every 0.05 s. Without a turn per request
    # it wrote 0; with one, at least one batch of 100 is written before the loop ends.
    assert int(done.stdout.strip().splitlines()[-1]) >= 100, done.stdout


def test_a_row_the_database_refuses_is_dropped_and_counted_and_the_log_goes_on(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    if store.is_sqlite:
        pytest.skip("SQLite keeps a NUL in text; PostgreSQL's text cannot hold one")
    counted: list[int] = []
    log = PredictionLog(store, batch_rows=10, interval_seconds=0.01, max_backoff_seconds=0.02, on_drop=counted.append)
    with caplog.at_level(logging.ERROR, logger="leadcast.store"):
        # One batch of 3 rows, the middle one refused for its value: before, the batch was retried as an outage
        # forever and nothing after it was written.
        assert log.record(3, lambda: [_row("A"), _row("B\x00C"), _row("D")])
        assert log.flush(timeout=10)
        assert log.record(1, lambda: [_row("E")])
        assert log.flush(timeout=10)
    with store.begin() as conn:
        ids = sorted(conn.execute(sa.select(predictions.c.lead_id)).scalars())
    assert ids == ["A", "D", "E"] and counted == [1] and (log.written, log.dropped) == (3, 1)  # 4 sent - 1 refused
    assert "refused by the database and dropped" in caplog.text and "'B\\x00C'" in caplog.text
    log.close()


def test_a_batch_lost_to_a_bug_counts_as_dropped_and_not_as_written(store: Store,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    log = PredictionLog(store, batch_rows=10, interval_seconds=0.01)
    unserialisable = {**_row("B"), "features": {"x": object()}}  # JSON cannot hold it: a TypeError, not an outage
    with caplog.at_level(logging.WARNING, logger="leadcast.store"):
        assert log.record(2, lambda: [_row("A"), unserialisable])
        assert log.flush(timeout=10)
    assert log.record(1, lambda: [_row("C")])
    assert log.flush(timeout=10)
    # 3 rows sent: the batch of 2 is lost (dropped 2), C is written (1). Before, the lost 2 counted as written too.
    assert (_count(store), log.written, log.dropped) == (1, 1, 2)
    assert "2 row(s) could not be written and were dropped" in caplog.text
    assert "queue full" not in caplog.text  # the queue (capacity 100,000) never was: before, the drop said it was
    log.close()
