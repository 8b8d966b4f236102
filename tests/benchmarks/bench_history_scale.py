"""Benchmark: one lead's score history with millions of logged predictions (issue 12 item 9), printed, never asserted.

Target: one lead's history (`GET /v1/leads/{id}/scores`' query, the newest 50) in under 10 ms with 10 million
logged predictions, on SQLite and PostgreSQL. The rows are made by the database itself (`generate_series` on
PostgreSQL, a recursive CTE on SQLite) with the indexes dropped and built again after the load, the fastest
bulk load either has; the load's time is printed. The sizes grow in steps (LEADCAST_BENCH_HISTORY_ROWS, a
comma-separated list of totals, default 1,000,000 and 10,000,000) so the growth of the lookup is shown. Each
lead has rows / LEADS_PER_ROWS scores spread over a year, as a CRM that re-scores its leads would leave them.
"""

from __future__ import annotations

import os
import random
import resource
import statistics
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from store import Store
from store.history import lead_scores
from store.schema import predictions

ROWS_PER_LEAD = 20  # 10M predictions = 500,000 leads with 20 scores each
LOOKUPS = 300
SIZES = [int(s) for s in os.environ.get("LEADCAST_BENCH_HISTORY_ROWS", "1000000,10000000").split(",")]
COLUMNS = ("lead_id, scored_at, as_of, model_name, model_version, model_kind, probability, score, grade, reasons, "
           "features")

PG_LOAD = sa.text(f"""
INSERT INTO predictions ({COLUMNS})
SELECT 'L' || (g % :leads), timestamp '2026-01-01' + g * interval '3 seconds', NULL, 'leadcast-lead-scoring',
       '1', 'trained', (g % 100) / 100.0, g % 100, 'C', 'null'::json,
       '{{"source": "web", "web_visits": 3}}'::json
FROM generate_series(CAST(:start AS bigint), CAST(:stop AS bigint) - 1) AS g
""")
SQLITE_LOAD = sa.text(f"""
WITH RECURSIVE g(x) AS (SELECT :start UNION ALL SELECT x + 1 FROM g WHERE x < :stop - 1)
INSERT INTO predictions ({COLUMNS})
SELECT 'L' || (x % :leads), strftime('%Y-%m-%d %H:%M:%f', '2026-01-01', '+' || (x * 3) || ' seconds'), NULL,
       'leadcast-lead-scoring', '1', 'trained', (x % 100) / 100.0, x % 100, 'C', 'null',
       '{{"source": "web", "web_visits": 3}}'
FROM g
""")


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def _load(store: Store, *, start: int, stop: int, leads: int) -> None:
    """Add predictions start..stop-1 (lead = number mod `leads`) with the table's indexes dropped meanwhile."""
    with store.begin() as conn:
        for index in predictions.indexes:
            index.drop(conn)
        conn.execute(PG_LOAD if not store.is_sqlite else SQLITE_LOAD, {"start": start, "stop": stop, "leads": leads})
        for index in predictions.indexes:
            index.create(conn)
    with store.begin() as conn:
        conn.execute(sa.text("ANALYZE" if store.is_sqlite else "ANALYZE predictions"))


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


@pytest.mark.bench
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_bench_one_leads_history_among_millions(tmp_path: Path, backend: str, postgres_admin_url: str | None) -> None:
    if backend == "postgresql":
        if postgres_admin_url is None:
            pytest.skip("no PostgreSQL server")
        from tests.postgres import create_database

        url = create_database(postgres_admin_url)
    else:
        url = f"sqlite:///{tmp_path / 'history.db'}"
    store = Store(url)
    store.upgrade()
    loaded = 0
    leads = max(SIZES) // ROWS_PER_LEAD  # the same leads at every size: each gains scores as the log grows
    print(f"\none lead's history on {backend} ({_uptime()})")
    for size in SIZES:
        wall, cpu = time.perf_counter(), _cpu()
        _load(store, start=loaded, stop=size, leads=leads)
        print(f"  loaded {size - loaded:,} rows (to {size:,}) in {time.perf_counter() - wall:.1f} s wall, "
              f"{_cpu() - cpu:.1f} s CPU of this process (the rest is the database's)")
        loaded = size
        rng = random.Random(size)
        picks = [f"L{rng.randrange(leads)}" for _ in range(LOOKUPS)]
        lead_scores(store, lead_id=picks[0], limit=50)  # the pool's first connection is not the lookup's cost
        times, cpu = [], _cpu()
        for lead_id in picks:
            started = time.perf_counter()
            page, _ = lead_scores(store, lead_id=lead_id, limit=50)
            times.append((time.perf_counter() - started) * 1000)
        per = size // leads
        assert len(page) == min(per, 50)
        times.sort()
        print(f"  {size:,} predictions, {per} per lead: history of one lead (newest 50) p50 "
              f"{statistics.median(times):.2f} ms, p99 {times[int(len(times) * 0.99)]:.2f} ms wall, "
              f"{(_cpu() - cpu) / LOOKUPS * 1000:.2f} ms CPU each, over {LOOKUPS} random leads "
              f"[target < 10 ms]")
    store.dispose()
