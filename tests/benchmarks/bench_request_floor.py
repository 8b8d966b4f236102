"""Benchmark: one lead over HTTP against the hello-world floor of the same run (issue 16 item 2), printed only.

Target: single-lead p50 with reasons within 2x a Flask hello-world endpoint under the same gunicorn config.
The edge benchmark (bench_edge.py) measures the same ratio among slower scenarios; this one measures only the
ratio, so it can be run before and after a change in a few minutes. The floor is measured before and after
leadcast and averaged, because the machine's load drifts; the load average is printed with the figures.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.api.conftest import lead_records, sample_leads, trained_dir  # noqa: F401
from tests.benchmarks.bench_edge import REQUESTS, WARMUP, hello_p50, summary, timed
from tests.benchmarks.conftest import record_ratio
from tests.reliability.edge_support import serve

pytestmark = pytest.mark.bench


def test_single_lead_against_the_hello_world_floor(tmp_path_factory: pytest.TempPathFactory,
                                                   trained_dir: Path,  # noqa: F811
                                                   sample_leads: pd.DataFrame) -> None:  # noqa: F811
    print(f"\n{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    before = hello_p50(tmp_path_factory.mktemp("hello"))
    lead = json.dumps({"lead": lead_records(sample_leads, 1)[0]}).encode()
    p50 = {}
    with serve(tmp_path_factory.mktemp("floor"), trained_dir, settings="workers = 2\n") as served, \
            served.client() as client:
        for path in ("/v1/leads/score", "/v1/leads/score?reasons=false"):
            timed(client, "POST", path, lead, WARMUP)
            ms = timed(client, "POST", path, lead, REQUESTS)
            p50[path] = float(np.percentile(ms, 50))
            print(f"POST {path}, one lead (the same lead each time): {summary(ms)}")
    after = hello_p50(tmp_path_factory.mktemp("hello-after"))
    floor = (before + after) / 2
    for path, ms in p50.items():
        print(f"{path}: {ms / floor:.2f}x the hello-world floor ({floor:.2f} ms, the mean of {before:.2f} and "
              f"{after:.2f}) [target <= 2x with reasons]")
        record_ratio(what=f"POST {path}, one lead, 1 client, p50", value=ms,
                     peer="Flask hello-world, same gunicorn config, p50", peer_value=floor, unit="ms",
                     higher_is_better=False, target=">= 0.5x (within 2x)" if "reasons=false" not in path else "")
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
