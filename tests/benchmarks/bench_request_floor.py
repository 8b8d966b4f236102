"""Benchmark: one lead over HTTP against the hello-world floor of the same run (issue 16 item 2), printed only.

Target: single-lead p50 with reasons within 2x a Flask hello-world endpoint under the same gunicorn config.
The edge benchmark (bench_edge.py) measures the same ratio among slower scenarios; this one measures only the
ratio, so it can be run before and after a change in a few minutes. This machine's speed drifts 2-3x from
minute to minute, so the hello-world server and leadcast run side by side and take turns, SLICE requests at a
time: each p50 is over the same minutes, and the ratio does not depend on when either was measured.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.api.conftest import lead_records, sample_leads, trained_dir  # noqa: F401
from tests.benchmarks.bench_edge import WARMUP, hello_client, summary, timed
from tests.benchmarks.conftest import record_ratio
from tests.reliability.edge_support import serve

pytestmark = pytest.mark.bench
HELLO_PATH = "GET /hello (Flask hello-world)"


SLICE, ROUNDS = 100, 10


def test_single_lead_against_the_hello_world_floor(tmp_path_factory: pytest.TempPathFactory,
                                                   trained_dir: Path,  # noqa: F811
                                                   sample_leads: pd.DataFrame) -> None:  # noqa: F811
    print(f"\n{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    lead = json.dumps({"lead": lead_records(sample_leads, 1)[0]}).encode()
    paths = ("/v1/leads/score", "/v1/leads/score?reasons=false")
    with hello_client(tmp_path_factory.mktemp("hello")) as hello, \
            serve(tmp_path_factory.mktemp("floor"), trained_dir, settings="workers = 2\n") as served, \
            served.client() as client:
        turns = [(HELLO_PATH, lambda n: timed(hello, "GET", "/hello", None, n))]
        turns += [(path, lambda n, path=path: timed(client, "POST", path, lead, n)) for path in paths]
        for _, send in turns:
            send(WARMUP)
        ms: dict[str, list[np.ndarray]] = {what: [] for what, _ in turns}
        for _ in range(ROUNDS):  # REQUESTS = SLICE x ROUNDS each, in turns
            for what, send in turns:
                ms[what].append(send(SLICE))
    p50 = {what: float(np.percentile(np.concatenate(parts), 50)) for what, parts in ms.items()}
    for what, parts in ms.items():
        print(f"{what}: {summary(np.concatenate(parts))}; p50 per round "
              f"{' '.join(f'{np.percentile(part, 50):.2f}' for part in parts)} ms")
    floor = p50.pop(HELLO_PATH)
    for path, value in p50.items():
        print(f"{path}: {value / floor:.2f}x the hello-world floor ({floor:.2f} ms, measured in turns with it) "
              f"[target <= 2x with reasons]")
        record_ratio(what=f"POST {path}, one lead, 1 client, p50", value=value,
                     peer="Flask hello-world, same gunicorn config, p50 (in turns)", peer_value=floor, unit="ms",
                     higher_is_better=False, target=">= 0.5x (within 2x)" if "reasons=false" not in path else "")
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
