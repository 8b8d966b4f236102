"""The bench session's ratio table (issue 16 item 6): rows as ratios, better above 1."""

from __future__ import annotations

import pytest

from tests.benchmarks.conftest import PYTHON, RatioRow, peak_rss_mib, ratio_table, run_measured


def test_ratios_read_better_above_one_for_rates_and_for_times() -> None:
    rate = RatioRow("batch", 150_000.0, "pipeline", 75_000.0, "leads/s", higher_is_better=True, target=">= 200,000")
    time = RatioRow("one lead", 1.0, "pipeline", 4.5, "ms", higher_is_better=False)
    # 150,000 / 75,000 = 2.00x the rate; 4.5 ms / 1.0 ms = 4.50x as fast.
    assert rate.ratio == pytest.approx(2.0)
    assert time.ratio == pytest.approx(4.5)
    lines = ratio_table([rate, time], load=(1.5, 1.0, 0.5))
    assert "load average 1.50 1.00 0.50" in lines[0]
    assert lines[1].split() == ["target", "value", "floor", "or", "peer", "(same", "run)", "peer", "value", "ratio",
                                "goal"]
    assert lines[3].split() == ["batch", "150,000", "leads/s", "pipeline", "75,000", "leads/s", "2.00x", ">=",
                                "200,000"]
    assert lines[4].split() == ["one", "lead", "1", "ms", "pipeline", "4.5", "ms", "4.50x"]


def test_a_child_reports_its_own_peak_not_the_sessions() -> None:
    # This process holds 200 MiB more than it needs; a child that holds about 20 MiB must not report the sum.
    held = bytearray(200 * 2**20)
    held[::4096] = b"\x01" * len(held[::4096])
    _, peak_mib, out = run_measured([PYTHON, "-c", "print('ok')"])
    assert out.strip() == "ok"
    assert peak_mib < 100 < len(held) / 2**20
    assert peak_rss_mib() > 200
