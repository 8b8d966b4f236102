"""Benchmarks print measured figures; they never assert on time (the machines are noisy)."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path


def run_measured(args: list[str], *, cwd: Path | None = None) -> tuple[float, float, str]:
    """Run a command in a child process; return wall seconds, the child's peak RSS in MiB, and its output."""
    start = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return seconds, peak_mib, done.stdout


PYTHON = sys.executable
