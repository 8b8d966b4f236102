"""Scoring latency while a maximal forecast runs, with forecasts in their pool and in the worker (issue 10 item 6).

Target: p50 and p99 within 20% of idle (ratio <= 1.20) with the pool. Printed, never asserted. Two gevent workers
(the default), the forecast's cells set as max_forecast_cells so it is the largest the server allows; the run
with forecast_processes = 0 (the forecast in the worker, as before the pool) is printed beside it. CPU time of
this process and the load average are printed too: wall time is noisy on a shared machine.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from crmdata.stages import DEFAULT_STAGES
from crmdata.synthetic import generate_opportunities
from tests.api.conftest import lead_records, sample_leads, trained_dir  # noqa: F401
from tests.benchmarks.conftest import record_ratio
from tests.reliability.edge_support import LatencyProbe, Served, cpu_seconds, percentile, pool_processes, serve

pytestmark = pytest.mark.bench

DEALS, SIMULATIONS, HORIZON, PERIODS = 20_000, 5_000, "3M", 3
IDLE_SECONDS = 10.0
FORECASTS, DURING_SECONDS = 3, 10.0


def server_cpu(served: Served) -> float:
    """Return the CPU seconds the server's processes (master, workers, pool processes) have used so far."""
    pids = [p for ps in pool_processes(served).values() for p in ps] + list(pool_processes(served))
    return sum(cpu_seconds(p) for p in pids)


@pytest.mark.parametrize("processes", [1, 0])
def test_scoring_latency_while_a_maximal_forecast_runs(tmp_path: Path, trained_dir: Path,  # noqa: F811
                                                      sample_leads: pd.DataFrame, processes: int) -> None:  # noqa: F811
    frame = generate_opportunities(n=DEALS, seed=3).opportunities
    records: list[dict[str, Any]] = json.loads(frame.to_json(orient="records", date_format="iso"))
    cells = sum(r["stage"] in DEFAULT_STAGES.open for r in records) * SIMULATIONS * PERIODS
    request = {"opportunities": records, "as_of": "2026-07-01", "horizon": HORIZON, "simulations": SIMULATIONS}
    small = {**request, "opportunities": records[:50], "simulations": 100}
    leads = lead_records(sample_leads, 50)
    settings = (f"workers = 2\nmax_forecast_cells = {cells}\nforecast_processes = {processes}\n"
                "forecast_timeout_seconds = 600\n")
    with serve(tmp_path, trained_dir, settings=settings) as served:
        with served.client() as client:  # start each worker's pool process before measuring
            for _ in range(4):
                assert client.call("POST", "/v1/forecast", small)[0] == 200
        with LatencyProbe(served, leads, seconds=IDLE_SECONDS) as idle:
            pass
        took: list[float] = []

        def forecast() -> None:
            # Back to back, at least FORECASTS of them and DURING_SECONDS in all: one forecast of ~1 s gave a few
            # hundred samples, whose p99 is the 4th-slowest answer and swung from 1.1x to 2.2x between runs.
            with served.client(timeout=900) as other:
                begun = time.perf_counter()
                while len(took) < FORECASTS or time.perf_counter() - begun < DURING_SECONDS:
                    started = time.perf_counter()
                    status, body = other.call("POST", "/v1/forecast", request)
                    took.append(time.perf_counter() - started)
                    assert status == 200, body

        started_cpu = server_cpu(served)
        with LatencyProbe(served, leads, seconds=900) as busy:
            thread = threading.Thread(target=forecast)
            thread.start()
            thread.join(timeout=900)
            busy.stop.set()
        ratios = [percentile(busy.latencies, q) / percentile(idle.latencies, q) for q in (50, 99)]
        print(f"\nforecast_processes = {processes}, load average {os.getloadavg()[0]:.1f}: a {cells:,}-cell forecast "
              f"x {len(took)} took {sum(took) / len(took):.1f} s each (CPU of the workers and pool processes "
              f"{server_cpu(served) - started_cpu:.1f} s)\n"
              f"  idle:   {idle.summary()}\n  during: {busy.summary()}\n"
              f"  ratio during / idle: p50 {ratios[0]:.2f}x, p99 {ratios[1]:.2f}x (target <= 1.20)")
        if processes:
            for q in (50, 99):
                # The probes' latencies are in seconds; the table shows milliseconds.
                record_ratio(what=f"scoring p{q} while a maximal forecast runs",
                             value=percentile(busy.latencies, q) * 1000, peer="the same, idle",
                             peer_value=percentile(idle.latencies, q) * 1000, unit="ms",
                             higher_is_better=False, target=">= 0.83x (during <= 1.20x idle)")
