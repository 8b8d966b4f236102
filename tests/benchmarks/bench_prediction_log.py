"""Benchmark: the hot-path cost of the prediction log (issue 12 item 3).

Targets: single-lead p50 with the log on within 0.3 ms of it off; a batch of 1,000 leads within 10%. Measured
in process through Flask's test client (the app's whole path: key lookup, scoring with reasons, the log's
enqueue, JSON), with the log's writer thread running in the same process as under gunicorn, so its share of
the GIL is in the figures. Requests alternate between the app with the log and the app without it, so drift in
the machine's load hits both alike (who goes first alternates too). Printed, never asserted: run with `make bench`.

Single leads are measured twice: each request a lead this worker never scored (its trend is a store lookup),
and a CRM re-scoring the same 50 leads (the worker's own latest score answers the trend). This process's CPU
time per request (all threads, so the log's writer too) is printed beside the wall time, which is noisy under
load; the database server's CPU is not in it.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from flask import Flask

from api.app import create_app
from api.settings import Settings
from api.stores import open_keys, open_store
from crmdata.synthetic import generate_leads
from scoring.artifacts import save_trained
from scoring.spec import load_spec
from scoring.training import train
from tests.api.conftest import lead_records

SINGLE, BATCH_REQUESTS, WARM = 600, 12, 50


def _app(home: Path, models: Path, *, log: bool, database_url: str | None) -> tuple[Flask, dict[str, str]]:
    settings = Settings(home=home, models_dir=models, prediction_log=log, database_url=database_url,
                        rate_limit_per_minute=10**8, rate_limit_burst=10**6, model_source="files")
    with open_store(settings) as store:
        store.upgrade()
    ring = open_keys(settings)
    with ring.store:
        key = ring.create(name="bench", scopes=("score",))
    return create_app(settings), {"Authorization": f"Bearer {key}"}


Timed = tuple[float, float, float]  # wall, CPU of the process (every thread), CPU of the request's own thread


def _time(app: Flask, headers: dict[str, str], body: Any) -> Timed:
    client = app.test_client()
    cpu, own, start = time.process_time(), time.thread_time(), time.perf_counter()
    response = client.post("/v1/leads/score", json=body, headers=headers)
    elapsed = time.perf_counter() - start
    assert response.status_code == 200, response.get_json()
    return elapsed, time.process_time() - cpu, time.thread_time() - own


def _alternate(pair: Any, bodies: list[Any], *, n: int, warm: int) -> dict[str, list[Timed]]:
    out: dict[str, list[Timed]] = {"on": [], "off": []}
    for i in range(warm + n):
        for name, app, headers in pair if i % 2 else pair[::-1]:  # alternate who goes first
            timed = _time(app, headers, bodies[i % len(bodies)])
            if i >= warm:
                out[name].append(timed)
    return out


def _p50(times: list[Timed]) -> tuple[float, float]:
    return statistics.median(t for t, _, _ in times) * 1000, statistics.mean(c for _, c, _ in times) * 1000


def _own(times: list[Timed]) -> float:
    """Return the mean CPU of the request's own thread in ms (the log writer's thread left out)."""
    return statistics.mean(c for _, _, c in times) * 1000


@pytest.mark.bench
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_bench_prediction_log_hot_path(tmp_path: Path, backend: str, postgres_admin_url: str | None) -> None:
    # Both apps keep their keys on the same kind of database, so the difference is the log (and the trend and
    # percentile it feeds), not where the key is looked up.
    database_url = off_url = None
    if backend == "postgresql":
        if postgres_admin_url is None:
            pytest.skip("no PostgreSQL server")
        from tests.postgres import create_database

        database_url, off_url = create_database(postgres_admin_url), create_database(postgres_admin_url)
    leads: pd.DataFrame = generate_leads(n=20_000, seed=3).leads
    trained = train(leads, spec=load_spec(), params={"cv": 3}).trained
    trained.version = "1"
    models = tmp_path / "models"
    save_trained(trained, models_dir=models, name="leadcast-lead-scoring", aliases=["champion"])
    shutil.copytree(models, tmp_path / "off-models")
    on, on_headers = _app(tmp_path / "on", models, log=True, database_url=database_url)
    off, off_headers = _app(tmp_path / "off", tmp_path / "off-models", log=False, database_url=off_url)
    records = lead_records(leads, 1_000)
    singles = [{"lead": {**r, "lead_id": f"B{i}"}} for i, r in enumerate(records)]
    batch = {"leads": records}
    pair = (("on", on, on_headers), ("off", off, off_headers))
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    fresh = _alternate(pair, singles, n=SINGLE, warm=WARM)
    again = _alternate(pair, singles[:50], n=SINGLE, warm=WARM)
    batches = _alternate(pair, [batch], n=BATCH_REQUESTS, warm=0)
    log = on.extensions["leadcast"].prediction_log
    assert log.flush(timeout=120)
    with on.extensions["leadcast"].store.begin() as conn:
        rows = conn.execute(sa.text("SELECT count(*) FROM predictions")).scalar()
    print(f"\nprediction log on {backend} ({load})")
    for what, times in (("single lead never scored before", fresh), ("single lead re-scored (50 leads)", again)):
        (on_ms, on_cpu), (off_ms, off_cpu) = _p50(times["on"]), _p50(times["off"])
        own_on, own_off = _own(times["on"]), _own(times["off"])
        print(f"  {what}: p50 {on_ms:.3f} ms on vs {off_ms:.3f} ms off ({on_ms - off_ms:+.3f} ms; target <= 0.3 ms); "
              f"CPU {on_cpu:.3f} vs {off_cpu:.3f} ms/request ({on_cpu - off_cpu:+.3f} ms), of the request's thread "
              f"{own_on:.3f} vs {own_off:.3f} ms ({own_on - own_off:+.3f} ms), "
              f"{SINGLE} requests each")
    (on_ms, on_cpu), (off_ms, off_cpu) = _p50(batches["on"]), _p50(batches["off"])
    print(f"  batch of 1,000: p50 {on_ms:.1f} ms on vs {off_ms:.1f} ms off ({(on_ms / off_ms - 1) * 100:+.1f}%; "
          f"target <= 10%); CPU {on_cpu:.1f} vs {off_cpu:.1f} ms/request ({(on_cpu / off_cpu - 1) * 100:+.1f}%), "
          f"{BATCH_REQUESTS} requests each")
    print(f"  {rows:,} rows written (expected {2 * (WARM + SINGLE) + BATCH_REQUESTS * 1000:,}), {log.dropped} dropped")
    log.close()
    on.extensions["leadcast"].store.dispose()
    off.extensions["leadcast"].store.dispose()
