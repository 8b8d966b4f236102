"""Benchmarks print measured figures; they never assert on time (the machines are noisy).

Each benchmark may also `record_ratio` a target beside its floor or peer measured in the same run; at the end
of the session every recorded row is printed in one table (`pytest_terminal_summary`), as ratios.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def run_measured(args: list[str], *, cwd: Path | None = None) -> tuple[float, float, str]:
    """Run a command in a child process; return wall seconds, the child's peak RSS in MiB, and its output."""
    start = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return seconds, peak_mib, done.stdout


PYTHON = sys.executable


@dataclass(frozen=True)
class RatioRow:
    """One target beside its floor or peer, both measured in this run."""

    what: str
    value: float
    peer: str
    peer_value: float
    unit: str
    higher_is_better: bool
    target: str = ""

    @property
    def ratio(self) -> float:
        """Return how many times better (> 1) or worse (< 1) the target is than its peer."""
        if self.higher_is_better:
            return self.value / self.peer_value if self.peer_value else float("inf")
        return self.peer_value / self.value if self.value else float("inf")


ROWS: list[RatioRow] = []


def record_ratio(*, what: str, value: float, peer: str, peer_value: float, unit: str,
                 higher_is_better: bool, target: str = "") -> None:
    """Add a row to the session's ratio table (printed once, at the end of the bench session)."""
    ROWS.append(RatioRow(what, value, peer, peer_value, unit, higher_is_better, target))


def ratio_table(rows: list[RatioRow], *, load: tuple[float, float, float]) -> list[str]:
    """Return the table's lines: each target, its peer, both values and target / peer as 'x better'."""
    def fmt(v: float, unit: str) -> str:
        return f"{v:,.0f} {unit}" if abs(v) >= 100 else f"{v:,.3g} {unit}"

    header = ("target", "value", "floor or peer (same run)", "peer value", "ratio", "goal")
    body = [(r.what, fmt(r.value, r.unit), r.peer, fmt(r.peer_value, r.unit), f"{r.ratio:.2f}x", r.target)
            for r in rows]
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
    lines = [f"ratio table: each target beside its floor or peer measured in this run; ratio > 1 means the target "
             f"is better (load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})"]
    for line in [header, tuple("-" * w for w in widths), *body]:
        lines.append("  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    return lines


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the ratio table collected from every benchmark of the session."""
    if ROWS:
        terminalreporter.section("benchmark ratios")
        for line in ratio_table(ROWS, load=os.getloadavg()):
            terminalreporter.write_line(line)
