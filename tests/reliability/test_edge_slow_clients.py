"""Slow clients cannot stop the service: 16 connections trickling headers or a body at one byte a second while
a normal client scores (issue 10 item 2). The precise latency is printed by tests/benchmarks/bench_edge.py."""

from __future__ import annotations

import time
from http.client import HTTPException
from pathlib import Path

import pandas as pd
import pytest

from tests.api.conftest import lead_records
from tests.reliability.edge_support import Tricklers, median_ms, serve

pytestmark = pytest.mark.slow

TRICKLERS = 16
REQUESTS = 20


def test_a_normal_client_is_answered_while_16_connections_trickle(
    tmp_path: Path, trained_dir: Path, sample_leads: pd.DataFrame
) -> None:
    records = lead_records(sample_leads, REQUESTS)
    with serve(tmp_path, trained_dir) as served, Tricklers(served.port, n=TRICKLERS, seconds=8) as slow:
        time.sleep(1.5)  # every trickler has sent part of its request: a sync worker would be held by now
        latencies: list[float] = []
        failures: list[str] = []
        with served.client(timeout=3.0) as client:
            for record in records:
                started = time.perf_counter()
                try:
                    status, body = client.call("POST", "/v1/leads/score", {"lead": record})
                except (OSError, HTTPException) as exc:  # not answered within 3 s: start a new connection
                    failures.append(repr(exc))
                    client.close()
                    continue
                latencies.append(time.perf_counter() - started)
                if status != 200:
                    failures.append(f"{status} {body}")
        assert slow.bytes_sent >= TRICKLERS, "the tricklers must have been trickling during the calls"
        print(f"\n{len(latencies)} of {REQUESTS} answered with {TRICKLERS} tricklers; "
              f"p50 {median_ms(latencies) if latencies else float('nan'):.1f} ms")
    assert not failures, f"{len(failures)} of {REQUESTS} failed: {failures[:3]}"
    # A generous functional bound (the 20 ms target is measured in the benchmark, not asserted here).
    assert median_ms(latencies) < 200
