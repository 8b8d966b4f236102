"""Benchmarks for the edge (issue 10 items 2 and 6, issue 16 item 2), printed, never asserted: `make bench`.

Under `leadcast serve`'s gunicorn config (2 gevent workers), one keep-alive client in this process:
- single-lead p50 with reasons beside a Flask hello-world endpoint under the same config, and their ratio;
- the same single-lead p50 while 16 connections trickle headers or a body at 1 byte/s;
- scoring p50/p99 idle and while a forecast near max_forecast_cells runs.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from crmdata.synthetic import generate_opportunities
from tests.api.conftest import lead_records, sample_leads, trained_dir  # noqa: F401
from tests.api.servers import REPO, JsonClient, ServerProcess, child_env, free_port
from tests.reliability.edge_support import Tricklers, serve

pytestmark = pytest.mark.bench

WARMUP, REQUESTS = 100, 1000

HELLO = '''
from flask import Flask
app = Flask("hello")

@app.get("/hello")
def hello():
    return {"hello": "world"}
'''


def timed(client: JsonClient, method: str, path: str, body: bytes | None, n: int) -> np.ndarray:
    """Send `n` requests; return their latencies in ms."""
    out = np.empty(n)
    for i in range(n):
        started = time.perf_counter()
        status, _ = client.send(method, path, body)
        out[i] = (time.perf_counter() - started) * 1000
        assert status == 200
    return out


def summary(ms: np.ndarray) -> str:
    return f"p50 {np.percentile(ms, 50):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms"


@contextmanager
def hello_client(tmp: Path) -> Iterator[JsonClient]:
    """Serve GET /hello under leadcast's gunicorn config (its hooks replaced by no-ops); yield a client of it."""
    (tmp / "hello_app.py").write_text(HELLO)
    conf = tmp / "hello_conf.py"
    conf.write_text(f"exec(open({str(REPO / 'api' / 'gunicorn_conf.py')!r}).read())\n"
                    "def post_fork(server, worker):\n    pass\n")
    port = free_port()
    env = child_env(LEADCAST_PORT=str(port), LEADCAST_HOME=str(tmp), PYTHONPATH=f"{tmp}:{REPO}")
    args = [sys.executable, "-m", "gunicorn", "--config", str(conf), "--no-control-socket", "hello_app:app"]
    with ServerProcess(args, port=port, env=env, log=tmp / "hello.log", name="hello", cwd=tmp) as server:
        server.wait_ready("/hello")
        with JsonClient(port) as client:
            yield client


def hello_p50(tmp: Path) -> float:
    """Return the p50 of GET /hello under leadcast's gunicorn config."""
    with hello_client(tmp) as client:
        timed(client, "GET", "/hello", None, WARMUP)
        ms = timed(client, "GET", "/hello", None, REQUESTS)
    print(f"\nFlask hello-world, same gunicorn config: {summary(ms)}")
    return float(np.percentile(ms, 50))


def test_edge_latencies(tmp_path_factory: pytest.TempPathFactory, trained_dir: Path,  # noqa: F811
                        sample_leads: pd.DataFrame) -> None:  # noqa: F811
    floor = hello_p50(tmp_path_factory.mktemp("hello"))
    tmp = tmp_path_factory.mktemp("edge")
    lead = json.dumps({"lead": lead_records(sample_leads, 1)[0]}).encode()
    deals = generate_opportunities(n=100_000, seed=3).opportunities
    records: list[dict[str, Any]] = json.loads(deals.to_json(orient="records", date_format="iso"))
    n_open = sum(r["stage"] not in ("won", "retention", "lost") for r in records)
    sims = 500_000_000 // (n_open * 12)  # just under the default max_forecast_cells with 12 months
    forecast = json.dumps({"opportunities": records, "as_of": "2026-07-01", "horizon": "12M",
                           "simulations": min(sims, 200_000)}).encode()
    settings = f"workers = 2\nmax_body_bytes = {64 * 2**20}\n"
    with serve(tmp, trained_dir, settings=settings) as served, served.client() as client:
        timed(client, "POST", "/v1/leads/score", lead, WARMUP)
        idle = timed(client, "POST", "/v1/leads/score", lead, REQUESTS)
        p50 = float(np.percentile(idle, 50))
        print(f"single lead with reasons, idle: {summary(idle)}; {p50 / floor:.2f}x the hello-world floor")

        with Tricklers(served.port, n=16, seconds=8):
            time.sleep(1.5)
            slow = timed(client, "POST", "/v1/leads/score", lead, REQUESTS)
        print(f"single lead with 16 connections trickling at 1 byte/s: {summary(slow)}")

        took: list[float] = []

        def run_forecast() -> None:
            with served.client(timeout=120) as other:
                started = time.perf_counter()
                status, raw = other.send("POST", "/v1/forecast", forecast)
                took.append(time.perf_counter() - started)
                assert status == 200, raw[:300]

        worker = threading.Thread(target=run_forecast)
        worker.start()
        time.sleep(2.0)  # past the body upload and parsing, into the simulation
        during = []
        while worker.is_alive() and len(during) < 20 * REQUESTS:
            during.extend(timed(client, "POST", "/v1/leads/score", lead, 50).tolist())
        worker.join(timeout=120)
        busy = np.asarray(during)
        print(f"forecast of {n_open:,} open deals x {min(sims, 200_000):,} simulations x 12 months took "
              f"{took[0] if took else float('nan'):.1f} s; scoring meanwhile ({busy.size} requests): {summary(busy)}")
        if busy.size:
            print(f"  = p50 {np.percentile(busy, 50) / p50:.2f}x, p99 "
                  f"{np.percentile(busy, 99) / np.percentile(idle, 99):.2f}x idle")
