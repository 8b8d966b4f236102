"""The report as a reader opens it: headless Chromium, offline, for the Maven export and the synthetic demo.

Full-page screenshots go to test-artifacts/ at the repo root (git-ignored).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from api.cli import LeadcastGroup
from api.commands.report import register
from api.settings import load_settings
from crmdata.loaders import write_table
from crmdata.synthetic import write_demo
from tests.conftest import REPO
from tests.forecasting.report.chromium import skip_reason, visit

REASON = skip_reason()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(REASON is not None, reason=REASON or "")]
ARTIFACTS = REPO / "test-artifacts"


def run_report(home: Path, args: list[str]) -> Path:
    group = LeadcastGroup()
    register(group)
    result = CliRunner().invoke(group, ["report", *args, "--out", str(home / "report")],
                                obj=load_settings(home=home))
    assert result.exit_code == 0, result.output
    return home / "report" / "report.html"


def check_page(page: Path, *, charts: int, screenshot: Path) -> None:
    seen = visit(page, screenshot=screenshot)
    assert seen.console_errors == []
    assert seen.outside_requests == [], "the page asked for something outside itself"
    assert seen.requests == [seen.url]
    assert len(seen.charts) == charts == page.read_text(encoding="utf-8").count('<figure class="chart"')
    for chart in seen.charts:
        assert chart["width"] > 300 and chart["height"] > 100, chart
        assert chart["shapes"] >= 10 and chart["texts"] >= 3, chart
    assert seen.title.startswith("Revenue forecast")
    assert screenshot.stat().st_size > 50_000


def test_the_detector_sees_requests_and_errors(tmp_path: Path) -> None:
    page = tmp_path / "leaky.html"
    page.write_text('<html><body><img src="http://example.invalid/x.png"><script>console.error("boom")</script>'
                    "</body></html>")
    seen = visit(page)
    assert seen.outside_requests == ["http://example.invalid/x.png"]
    assert "boom" in seen.console_errors


def test_the_demo_report_opens_offline_with_every_chart(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    write_demo(out=demo, leads=1500, opportunities=1500, seed=4)
    # The demo's leads as they stood on its as-of date: every outcome in the file happens after it.
    leads = pd.read_parquet(demo / "leads.parquet").drop(columns=["converted", "converted_at"])
    write_table(leads, demo / "open-leads.parquet")
    page = run_report(tmp_path, [
        "--opportunities", str(demo / "opportunities.parquet"), "--history", str(demo / "stage_history.parquet"),
        "--leads", str(demo / "open-leads.parquet"), "--as-of", "2026-07-01", "--horizon", "1Q", "--target",
        "600000", "--sims", "2000", "--backtest-months", "3", "--backtest-sims", "200"])
    check_page(page, charts=10, screenshot=ARTIFACTS / "report-demo.png")


def test_the_maven_report_opens_offline_with_every_chart(maven_dir: Path, repo_root: Path, tmp_path: Path) -> None:
    page = run_report(tmp_path, [
        "--opportunities", str(maven_dir / "sales_pipeline.csv"), "--mapping",
        str(repo_root / "docs" / "examples" / "maven-crm-mapping.toml"), "--as-of", "2017-10-01", "--horizon", "1Q",
        "--target", "2500000", "--sims", "4000", "--backtest-sims", "500"])
    check_page(page, charts=9, screenshot=ARTIFACTS / "report-maven.png")
    html = page.read_text(encoding="utf-8")
    assert "Replayed as of the first of 6 earlier months" in html
