"""The Model health page: self-contained, escaped, and as a reader's headless Chromium opens it (offline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scoring.health_page import render_health_page
from scoring.monitoring import live_health
from scoring.scorer import ModelScorer
from scoring.spec import prepare
from scoring.training import TrainingResult
from tests.conftest import REPO
from tests.drift import period
from tests.forecasting.report.chromium import skip_reason, visit

REASON = skip_reason()


@pytest.fixture(scope="module")
def report(trained: TrainingResult) -> dict:
    champion = trained.trained
    leads = period(2, n=3000, base_rate=float(champion.card["profile"]["base_rate"]))
    prepared = prepare(leads, spec=champion.spec, with_target=True)
    assert prepared.target is not None
    p = ModelScorer(champion).score_frame(prepared.features, prepared.ids, reasons=False)["probability"].to_numpy()
    found = live_health(profile=champion.card["profile"], spec=champion.spec, features=prepared.features,
                        probability=p, converted=prepared.target.astype(float), rng=np.random.default_rng(0),
                        n_boot=50)
    return {"model": "leadcast-lead-scoring@1", "version": "1", "since": None, "until": "2026-12-02T00:00:00",
            "maturity_days": 90.0, **found}


def test_the_page_escapes_what_comes_from_the_data(report: dict) -> None:
    hostile = {**report, "model": "<script>alert(1)</script>", "alerts": ["<img src=x onerror=alert(1)>"]}
    page = render_health_page(hostile)
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert 'content="default-src &#39;none&#39;;' in page  # the CSP forbids every request (quotes escaped)


def test_the_page_holds_its_figures(report: dict) -> None:
    page = render_health_page(report)
    assert page.count('<figure class="chart"') == 2 and page.count("<svg") == 2
    assert 'id="calibration-' in page and 'id="psi-' in page  # ids prefixed per chart
    # ten deciles in the table, one row each
    assert page.split('id="by-decile"')[1].split("</table>")[0].count("<tr><td>") == 10
    assert "Website visits has shifted" in page and "calibration: these leads converted at" in page


@pytest.mark.slow
@pytest.mark.skipif(REASON is not None, reason=REASON or "")
def test_the_page_opens_offline_in_chromium(report: dict, tmp_path: Path) -> None:
    page = tmp_path / "model-health.html"
    page.write_text(render_health_page(report), encoding="utf-8")
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    seen = visit(page, screenshot=artifacts / "model-health.png")
    assert seen.console_errors == []
    assert seen.requests == [seen.url] and seen.outside_requests == []
    assert seen.title == "Model health: leadcast-lead-scoring@1"
    assert [c["id"] for c in seen.charts] == ["chart-calibration", "chart-psi"]
    for chart in seen.charts:
        assert chart["width"] > 300 and chart["height"] > 100, chart
        assert chart["shapes"] >= 10 and chart["texts"] >= 3, chart


def test_the_page_and_its_report_section_show_unseen_categories(report: dict) -> None:
    from scoring.health_page import render_health_section

    features = [{**f, "unseen_share": 0.25, "unseen_level": "alert"} if f["column"] == "source" else f
                for f in report["features"]]
    shown = {**report, "features": features, "model": "<b>m</b>"}
    page = render_health_page(shown)
    table = page.split('<table id="unseen">')[1].split("</table>")[0]
    assert '<tr class="alert"><td>source</td>\n<td class="num">25.0%</td>' in table
    section = render_health_section(shown)
    assert '<table id="health-unseen">' in section and "<html" not in section and "&lt;b&gt;m&lt;/b&gt;" in section
    assert 'id="summary"' not in section and 'id="chart-health-psi"' in section
