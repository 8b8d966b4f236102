"""Benchmarks print measured figures; they never assert on time (the machines are noisy).

Each benchmark may also `record_ratio` a target beside its floor or peer measured in the same run; at the end
of the session every recorded row is printed in one table (`pytest_terminal_summary`), as ratios.
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def peak_rss_mib() -> float:
    """Return this process's peak RSS in MiB since it started (its program, not its parent's).

    Linux carries a parent's RSS across fork and exec into `ru_maxrss`: a child of a 1.3 GiB benchmark session
    reported 1,269 MiB whatever it used. VmHWM is the high-water mark of this program's own memory.
    """
    with contextlib.suppress(OSError), open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# Runs the command in a grandchild of a small Python process, so the grandchild's peak starts from that small
# process, not from this session: its ru_maxrss is then its own.
_MEASURE = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(child.pid, 0)
sys.stderr.write(f"\\nleadcast-bench-peak-kib {usage.ru_maxrss}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(args: list[str], *, cwd: Path | None = None) -> tuple[float, float, str]:
    """Run a command in a child process; return wall seconds, the child's peak RSS in MiB, and its output."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _MEASURE, *args], cwd=cwd, capture_output=True, text=True,
                          check=True)
    seconds = time.perf_counter() - start
    peak_kib = int(done.stderr.rsplit("leadcast-bench-peak-kib ", 1)[1].split()[0])
    return seconds, peak_kib / 1024, done.stdout


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
