"""Benchmark: model health over 1 million logged predictions (issue 13). Targets: under 5 s on SQLite, under 2 s on
PostgreSQL, for the whole `store_health` call (what `leadcast monitor` and `GET /v1/models/monitoring` run):
the query of every lead's first score and its outcome (from first_scores, migrations 0007 and 0008), the feature
sample (on PostgreSQL read on a second connection meanwhile), PSI, calibration, bootstrap intervals. Printed,
never asserted: run with `make bench`. What is asserted is that the first scores and outcomes equal, bit for bit,
those the log joined with the outcomes gives (the query monitoring ran before 0007).

Process CPU is printed beside wall time (this machine is shared, wall time is noisy), and on PostgreSQL the
server's CPU too: the postmaster's children (the backend, any parallel workers, reaped or live), read from
/proc, since the server does the first-score and outcome work (store/monitoring.py). The rows are loaded by INSERT,
so the triggers of migrations 0007 and 0008 fill first_scores as the prediction log's writer does.
"""

from __future__ import annotations

import contextlib
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from api.monitoring import store_health
from api.settings import Settings
from api.stores import open_store
from scoring.artifacts import save_trained
from scoring.scorer import ModelScorer
from scoring.spec import load_spec, prepare
from scoring.training import train
from store import Store
from store.monitoring import logged_scores
from store.schema import outcomes, predictions
from tests.api.conftest import lead_records
from tests.drift import period

ROWS, DISTINCT, CHUNK = 1_000_000, 20_000, 20_000
CALLS = 3  # store_health calls timed; the first also loads the model file
TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int, *, children: bool) -> float:
    """Return a process's user + system CPU seconds from /proc (with `children`, also its reaped children's)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    used = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)
    return used / TICKS


def server_cpu(store: Store) -> float | None:
    """Return the CPU seconds the PostgreSQL server has used so far (the postmaster's children, live and reaped),
    or None when the server is not a process of this machine that /proc shows."""
    with store.begin() as conn:
        backend = int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar())
    try:
        status = Path(f"/proc/{backend}/status").read_text()
        postmaster = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
        live = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
        total = _cpu_seconds(postmaster, children=True)
        for pid in live:
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                total += _cpu_seconds(int(pid), children=False)
    except (FileNotFoundError, PermissionError, StopIteration):
        return None
    return total


@pytest.mark.bench
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_bench_monitor_over_a_million_logged_predictions(tmp_path: Path, backend: str,
                                                         postgres_admin_url: str | None) -> None:
    database_url = None
    if backend == "postgresql":
        if postgres_admin_url is None:
            pytest.skip("no PostgreSQL server: install PostgreSQL (initdb, pg_ctl) or set LEADCAST_TEST_POSTGRES_URL")
        from tests.postgres import create_database

        database_url = create_database(postgres_admin_url)
    spec = load_spec()
    first = period(1, n=3000)
    trained = train(first, spec=spec, params={"cv": 3, "max_iter": 30}).trained
    trained.version = "1"
    models = tmp_path / "models"
    save_trained(trained, models_dir=models, name="leadcast-lead-scoring", aliases=["champion"])
    settings = Settings(home=tmp_path, models_dir=models, database_url=database_url, model_source="files")
    leads = period(2, n=3 * DISTINCT, base_rate=float(first["converted"].astype(bool).mean())).head(DISTINCT)
    prepared = prepare(leads, spec=spec)
    p = ModelScorer(trained).score_frame(prepared.features, prepared.ids, reasons=False)["probability"].to_numpy()
    grades = spec.grades.grade(p)
    records = lead_records(leads, len(leads))
    converted = leads["converted"].to_numpy(dtype=bool)
    columns = set(spec.feature_columns)
    features = [{k: v for k, v in r.items() if k in columns} for r in records]
    start_at = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=200)
    loaded = time.perf_counter()
    with open_store(settings) as store:
        store.upgrade()
        with store.begin() as conn:
            for copy in range(ROWS // DISTINCT):
                when = start_at + timedelta(minutes=copy)
                rows = [{"lead_id": f"{r['lead_id']}-{copy}", "scored_at": when, "as_of": when,
                         "model_name": "leadcast-lead-scoring", "model_version": "1", "model_kind": "model",
                         "probability": float(p[i]), "score": round(float(p[i]) * 100), "grade": str(grades[i]),
                         "reasons": None, "features": features[i]} for i, r in enumerate(records)]
                for part in range(0, len(rows), CHUNK):
                    conn.execute(predictions.insert(), rows[part:part + CHUNK])
                conn.execute(outcomes.insert(), [
                    {"lead_id": f"{r['lead_id']}-{copy}", "converted": True, "converted_at": when, "source": "api",
                     "recorded_at": when, "updated_at": when} for i, r in enumerate(records) if converted[i]])
            count = conn.execute(sa.select(sa.func.count()).select_from(predictions)).scalar()
        if backend == "postgresql":
            # What autovacuum does to a table this size within a minute of a bulk load (its threshold is 20% of
            # the rows changed): statistics, and the visibility map that lets the covering index be read alone.
            with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("VACUUM ANALYZE predictions"))
                conn.execute(sa.text("VACUUM ANALYZE outcomes"))
                conn.execute(sa.text("VACUUM ANALYZE first_scores"))
        loaded = time.perf_counter() - loaded
        now = datetime.now(UTC)
        server = server_cpu(store) if backend == "postgresql" else None
        started, cpu = time.perf_counter(), time.process_time()
        logged = logged_scores(store, model_name="leadcast-lead-scoring", model_version="1", since=None, now=now,
                               maturity_days=settings.outcome_maturity_days)
        query_s, query_cpu = time.perf_counter() - started, time.process_time() - cpu
        server_at = server_cpu(store) if server is not None else None
        calls: list[tuple[float, float, float | None]] = []  # wall, process CPU, server CPU of each call
        for _ in range(CALLS):
            before = server_cpu(store) if server_at is not None else None
            started, cpu = time.perf_counter(), time.process_time()
            report = store_health(settings, store, now=now)
            wall, used = time.perf_counter() - started, time.process_time() - cpu
            after = server_cpu(store) if before is not None else None
            calls.append((wall, used, None if after is None or before is None else after - before))
        total_s, total_cpu, server_total = sorted(calls)[CALLS // 2]  # the median call by wall time
        server_query = server_at - server if server_at is not None and server is not None else None
        # The same report from the log itself: a window from before the first score reads every row the way
        # monitoring did before first_scores, and must give the same answer to the last bit.
        from_log = logged_scores(store, model_name="leadcast-lead-scoring", model_version="1",
                                 since=start_at - timedelta(days=1), now=now,
                                 maturity_days=settings.outcome_maturity_days)
        assert from_log.rows == logged.rows
        pd.testing.assert_frame_equal(from_log.scores, logged.scores, check_exact=True)
        pd.testing.assert_frame_equal(from_log.features, logged.features, check_exact=True)
    if backend == "postgresql":
        from tests.postgres import drop_database

        drop_database(postgres_admin_url, database_url)
    target = 5.0 if backend == "sqlite" else 2.0
    print(f"\nmonitor on {backend}: {count:,} logged predictions ({len(logged.scores):,} leads, "
          f"{report['leads_matured']:,} matured, {report['features_sampled']:,} feature rows sampled) in "
          f"{total_s:.2f} s wall (the median of {CALLS} calls: {', '.join(f'{c[0]:.2f}' for c in calls)} s), "
          f"{total_cpu:.2f} s CPU of this process"
          f"{'' if server_total is None else f' + {server_total:.2f} s CPU of the server'} (target < {target:.0f} s); "
          f"before it the store's queries alone {query_s:.2f} s wall, {query_cpu:.2f} s CPU"
          f"{'' if server_query is None else f' + {server_query:.2f} s server CPU'}; loading the rows took "
          f"{loaded:.0f} s; "
          f"{len(report['alerts'])} alerts; load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
