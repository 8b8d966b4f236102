"""Forecasts in their own bounded pool of processes (issue 10 item 6): scoring goes on while a maximal forecast
runs, a full pool answers 503 with Retry-After, a forecast past its timeout has its process replaced, errors
raised in the pool reach the client as they would in process, and no pool process outlives its worker.

The 20% latency target is measured by tests/benchmarks/bench_forecast_pool.py; here the latencies are printed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from api.errors import ApiError
from api.workpool import WorkPool
from crmdata.errors import DataValidationError
from crmdata.stages import DEFAULT_STAGES
from crmdata.synthetic import generate_opportunities
from forecasting.errors import ForecastInputError
from forecasting.periods import parse_horizon
from tests.api.conftest import Service, lead_records
from tests.api.servers import child_env
from tests.reliability.edge_support import (
    LatencyProbe,
    Served,
    all_gone,
    cpu_seconds,
    forecast_process,
    pool_processes,
    serve,
)


def _sleep(*, seconds: float) -> float:
    """Sleep in a pool process (a stand-in for a long forecast) and return the seconds slept."""
    time.sleep(seconds)
    return seconds


# The pool processes import this module (for _sleep) before they report ready.
HERE = (__name__,)


def pipeline(n: int) -> list[dict[str, Any]]:
    frame = generate_opportunities(n=n, seed=3).opportunities
    return json.loads(frame.to_json(orient="records", date_format="iso"))


def cells(records: list[dict[str, Any]], *, simulations: int, periods: int) -> int:
    return sum(r["stage"] in DEFAULT_STAGES.open for r in records) * simulations * periods


# --- the pool itself, in this process ---------------------------------------------------------------------------

def _priority() -> tuple[int, int]:
    """Return this process's scheduling policy and nice value."""
    return os.sched_getscheduler(0), os.nice(0)


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_a_pool_process_runs_at_the_lowest_priority_there_is() -> None:
    # At nice 19 alone the forecast child still took its slice of a core from scoring (p99 1.47x idle on a quiet
    # machine, bench_forecast_pool.py): it now runs SCHED_IDLE, preempted by every wake-up of a request.
    pool = WorkPool(processes=1, timeout_seconds=60, preload=HERE)
    try:
        assert pool.run(_priority) == (os.SCHED_IDLE, 19)
    finally:
        pool.shutdown()


def test_an_error_raised_in_a_pool_process_is_raised_here_with_its_fields() -> None:
    pool = WorkPool(processes=1, timeout_seconds=60, preload=HERE)
    try:
        with pytest.raises(ForecastInputError) as raised:
            pool.run(parse_horizon, text="0M")
        assert raised.value.field == "horizon" and "at least 1" in str(raised.value)
        # DataValidationError takes a list of problems, not its message: pickle alone could not rebuild it.
        from crmdata.contracts import OPPORTUNITY
        from crmdata.loaders import frame_from_records

        with pytest.raises(DataValidationError) as invalid:
            pool.run(frame_from_records, records=[{"opportunity_id": "a"}], contract=OPPORTUNITY,
                     stages=DEFAULT_STAGES, source="opportunities")
        assert invalid.value.source == "opportunities"
        assert {p.field for p in invalid.value.problems} >= {"owner", "product", "stage"}
        assert pool.run(_sleep, seconds=0.0) == 0.0, "the process that raised goes on serving"
    finally:
        pool.shutdown()


def test_a_call_past_the_timeout_is_refused_and_its_process_replaced() -> None:
    pool = WorkPool(processes=1, timeout_seconds=1.0, preload=HERE)
    try:
        assert pool.run(_sleep, seconds=0.0) == 0.0
        (first,) = pool.pids()
        started = time.monotonic()
        with pytest.raises(ApiError) as refused:
            pool.run(_sleep, seconds=30.0)
        assert refused.value.status == 503 and "forecast_timeout_seconds" in refused.value.message
        assert time.monotonic() - started < 10, "refused at the timeout, not when the call ends"
        assert all_gone([first], timeout=5) == [], "the timed-out process is killed"
        assert pool.run(_sleep, seconds=0.0) == 0.0, "a fresh process serves the next call"
        assert pool.pids() != [first]
    finally:
        pool.shutdown()


def test_a_full_pool_refuses_at_once_with_retry_after() -> None:
    pool = WorkPool(processes=1, timeout_seconds=20.0, preload=HERE)
    try:
        pool.run(_sleep, seconds=0.0)  # started: the long call below begins at once
        busy = threading.Thread(target=pool.run, args=(_sleep,), kwargs={"seconds": 3.0})
        busy.start()
        time.sleep(0.5)
        started = time.monotonic()
        with pytest.raises(ApiError) as refused:
            pool.run(_sleep, seconds=0.0)
        assert time.monotonic() - started < 1.0
        # The busy call times out at most 20 s after it started, 0.5 s ago or a little more: 19 or 20 s.
        assert refused.value.status == 503 and refused.value.headers["Retry-After"] in {"19", "20"}
        busy.join(timeout=30)
        assert pool.run(_sleep, seconds=0.0) == 0.0
    finally:
        pool.shutdown()


GEVENT_SCRIPT = """
from gevent import monkey
monkey.patch_all()
import time
from api.workpool import WorkPool
from forecasting.periods import parse_horizon

if __name__ == "__main__":
    pool = WorkPool(processes=1, timeout_seconds=120)
    try:
        first = pool.run(parse_horizon, text="3M")
        time.sleep(1.0)  # the pool process is waiting for its next call meanwhile
        print([str(first), str(pool.run(parse_horizon, text="6W"))])
    finally:
        pool.shutdown()
"""


def test_the_pool_serves_a_gevent_patched_process(tmp_path: Path) -> None:
    # gevent's socketpair is non-blocking: a pool process reading its first call before it was written died.
    script = tmp_path / "gevent_pool.py"
    script.write_text(GEVENT_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], env=child_env(), capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str([str(parse_horizon("3M")), str(parse_horizon("6W"))]), done.stderr[-2000:]


# --- the endpoints, through the app -----------------------------------------------------------------------------

def test_the_pooled_forecast_answers_exactly_as_the_in_process_one(make_service: Callable[..., Service]) -> None:
    records = pipeline(300)
    pooled, inline = make_service(forecast_processes=1), make_service(forecast_processes=0)
    request = {"opportunities": records, "as_of": "2026-07-01", "horizon": "3M", "simulations": 500, "seed": 4}
    answers = [s.post("/v1/forecast", request, who="forecast") for s in (pooled, inline)]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json == answers[1].json
    # A record that breaks the contract (raised in the pool process while validating): the same 422.
    bad = {**request, "opportunities": [*records[:5], {**records[5], "amount": -1}]}
    refusals = [s.post("/v1/forecast", bad, who="forecast") for s in (pooled, inline)]
    assert [r.status_code for r in refusals] == [422, 422]
    assert refusals[0].json == refusals[1].json
    assert refusals[0].json["error"]["details"][0]["loc"] == ["opportunities", 5, "amount"]


# --- a real server ----------------------------------------------------------------------------------------------

# 4,000 synthetic deals (their open ones) x 20,000 simulations x 3 monthly periods: the limit is set to exactly
# this forecast's cells, so it is the largest one the server allows.
DEALS, SIMULATIONS, PERIODS = 4000, 20_000, 3


def _forecast_in_thread(served: Served, request: dict[str, Any], out: list[tuple[int, Any]]) -> threading.Thread:
    def run() -> None:
        with served.client(timeout=120) as client:
            out.append(client.call("POST", "/v1/forecast", request))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_scoring_goes_on_while_a_maximal_forecast_runs_and_a_second_one_is_refused(
    tmp_path: Path, trained_dir: Path, sample_leads: pd.DataFrame
) -> None:
    records = pipeline(DEALS)
    limit = cells(records, simulations=SIMULATIONS, periods=PERIODS)
    big = {"opportunities": records, "as_of": "2026-07-01", "horizon": "3M", "simulations": SIMULATIONS}
    small = {"opportunities": records[:50], "as_of": "2026-07-01", "horizon": "1M", "simulations": 100}
    leads = lead_records(sample_leads, 50)
    # One worker: the forecast's request and the scoring client share it, so only the pool keeps scoring going.
    # A generous timeout: at nice 19 on a loaded machine the forecast may take minutes.
    settings = f"workers = 1\nmax_forecast_cells = {limit}\nforecast_timeout_seconds = 300\n"
    with serve(tmp_path, trained_dir, settings=settings) as served:
        with served.client() as client:  # the pool's process starts here, outside the measurement
            warm = client.call("POST", "/v1/forecast", small)
            assert warm[0] == 200, warm
        with LatencyProbe(served, leads, seconds=5.0) as idle:
            pass  # it scores for its 5 s
        forecast: list[tuple[int, Any]] = []
        refused: list[tuple[int, str | None, Any]] = []
        child = forecast_process(next(iter(pool_processes(served).values())))
        idle_cpu = cpu_seconds(child)
        with LatencyProbe(served, leads, seconds=300.0) as busy:
            thread = _forecast_in_thread(served, big, forecast)
            # Once the pool's one process is computing the big forecast (its CPU time grows; bounded: 1,200
            # checks a tenth of a second apart), a second forecast must be refused at once.
            for _ in range(1200):
                if forecast or cpu_seconds(child) > idle_cpu + 0.3:
                    break
                time.sleep(0.1)
            with served.client() as second:
                second.conn.request("POST", "/v1/forecast", body=json.dumps(small), headers=second.headers)
                response = second.conn.getresponse()
                refused.append((response.status, response.getheader("Retry-After"), json.loads(response.read())))
            thread.join(timeout=300)
            busy.stop.set()
        workers = pool_processes(served)
        print(f"\nidle:   {idle.summary()}\nduring: {busy.summary()} (a {limit:,}-cell forecast)")
        assert forecast and forecast[0][0] == 200, forecast[:1]
        assert forecast[0][1]["model"]["simulations"] == SIMULATIONS
        assert idle.failures == [] and busy.failures == [], (idle.failures[:3], busy.failures[:3])
        assert len(busy.latencies) > 0
        status, retry_after, body = refused[0]
        assert status == 503 and retry_after is not None and int(retry_after) >= 1
        assert body["error"]["code"] == "unavailable" and "busy" in body["error"]["message"]
        # No orphans: a graceful stop takes the pool's processes with it.
        (pids,) = workers.values()
        assert pids, "the worker has its pool process"
        assert served.server.terminate(timeout=60) == 0
        assert all_gone(pids, timeout=10) == []


@pytest.mark.slow
def test_a_forecast_past_its_timeout_is_answered_503_and_a_killed_worker_leaves_no_pool_process(
    tmp_path: Path, trained_dir: Path
) -> None:
    records = pipeline(DEALS)
    # 390 open deals x 200,000 simulations x 3 months = 234M cells: several seconds even on a quiet machine.
    big = {"opportunities": records, "as_of": "2026-07-01", "horizon": "3M", "simulations": 200_000}
    small = {"opportunities": records[:50], "as_of": "2026-07-01", "horizon": "1M", "simulations": 100}
    with serve(tmp_path, trained_dir, settings="workers = 1\nforecast_timeout_seconds = 1.0\n") as served:
        with served.client(timeout=120) as client:
            assert client.call("POST", "/v1/forecast", small)[0] == 200
            (before,) = pool_processes(served).values()
            status, body = client.call("POST", "/v1/forecast", big)
            assert status == 503 and "forecast_timeout_seconds" in body["error"]["message"], body
            assert client.call("POST", "/v1/forecast", small)[0] == 200, "a fresh process serves the next one"
        ((worker, after),) = pool_processes(served).items()
        assert set(before) - set(after), "the timed-out process was replaced"
        # A worker killed outright runs no exit hook: its pool process must notice and leave on its own.
        os.kill(worker, signal.SIGKILL)
        assert all_gone(after, timeout=10) == []
        served.server.wait_ready("/readyz")  # gunicorn started a new worker


@pytest.mark.slow
def test_a_gevent_worker_answers_while_the_pool_reads_a_large_forecast_body(tmp_path: Path, trained_dir: Path) -> None:
    # 36,000 deals make a body of about 14 MiB (under the 16 MiB limit) that the cost check refuses: reading it is
    # all the work there is. Parsed in the worker (as before), the one gevent worker answered nothing for the
    # ~0.2-0.5 s of parsing and validation; read in the pool process, the worker keeps answering /healthz.
    records = pipeline(36_000)
    body = json.dumps({"opportunities": records, "as_of": "2026-07-01", "horizon": "1M",
                       "simulations": 1000}).encode()
    assert 12 * 2**20 < len(body) < 16 * 2**20
    with serve(tmp_path, trained_dir, settings="workers = 1\nmax_forecast_cells = 1000\n") as served:
        with served.client() as client:  # the pool's process starts here (a refused forecast is enough)
            assert client.call("POST", "/v1/forecast", {"opportunities": records[:50], "as_of": "2026-07-01",
                                                        "horizon": "1M", "simulations": 1000})[0] == 422
        answers: list[tuple[int, bytes]] = []

        def post() -> None:
            with served.client(timeout=120) as poster:
                answers.append(poster.send("POST", "/v1/forecast", body))

        thread = threading.Thread(target=post)
        with served.client() as health:
            thread.start()
            time.sleep(0.05)  # the body is on the loopback by now: what follows overlaps its parsing
            answered = 0
            for _ in range(2000):  # bounded: 2,000 checks, each answered within milliseconds when the worker is free
                if answers:
                    break
                assert health.send("GET", "/healthz")[0] == 200
                answered += 1
                time.sleep(0.01)
            thread.join(timeout=120)
    status, raw = answers[0]
    assert status == 422 and b"max_forecast_cells" in raw, raw[:300]
    print(f"\n/healthz answered {answered} times while the pool read a {len(body) / 2**20:.1f} MiB forecast body")
    # At 10 ms apart, 10 answers need the worker free for at least 100 ms of the pool's ~0.3 s (quiet machine) of
    # parsing and validation. Parsed in the worker it answered 3 at load 5 (those that slipped in while the body
    # was still being read); read in the pool, 334 at the same load.
    assert answered >= 10
