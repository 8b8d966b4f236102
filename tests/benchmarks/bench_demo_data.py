"""Benchmark: 1,000,000 leads and 200,000 opportunities (target: under 60 s and 3 GB peak on 2 cores)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks.conftest import PYTHON, run_measured


@pytest.mark.bench
def test_bench_demo_data(tmp_path: Path) -> None:
    seconds, peak_mib, _ = run_measured([
        PYTHON, "-m", "api.cli", "demo-data", "--leads", "1000000", "--opportunities", "200000", "--seed", "1",
        "--out", str(tmp_path),
    ])
    size_mib = sum(f.stat().st_size for f in tmp_path.iterdir()) / 2**20
    print(f"\ndemo-data 1,000,000 leads + 200,000 opportunities: {seconds:.1f} s (target < 60 s, "
          f"{seconds / 60:.2f} of budget), peak RSS {peak_mib:,.0f} MiB (target < 3,072 MiB, "
          f"{peak_mib / 3072:.2f} of budget), {size_mib:.0f} MiB of parquet")
