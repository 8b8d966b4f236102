"""`leadcast report` adds the lead model's "Model health" section when the store holds the champion's logged scores:
the same figures as `leadcast monitor`, checked by hand, and the page still opens offline in headless Chromium."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from api.cli import cli
from api.settings import Settings
from api.stores import open_store
from crmdata.loaders import write_table
from crmdata.synthetic import generate_opportunities
from scoring.spec import load_spec
from store.outcomes import Outcome, upsert_outcomes
from store.schema import predictions
from tests.api.conftest import lead_records
from tests.forecasting.report.chromium import skip_reason, visit

LEADS, CONVERTED, PROBABILITY = 10, 4, 0.25
REPORT = ["--as-of", "2026-07-01", "--horizon", "1Q", "--sims", "200", "--backtest-months", "0"]


@pytest.fixture
def home(tmp_path: Path, trained_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A leadcast home with the trained champion (version 1) and a small pipeline export, no store yet."""
    shutil.copytree(trained_dir, tmp_path / "models")
    monkeypatch.setenv("LEADCAST_HOME", str(tmp_path))
    monkeypatch.setenv("LEADCAST_MODELS_DIR", str(tmp_path / "models"))
    data = generate_opportunities(n=600, seed=3)
    write_table(data.opportunities, tmp_path / "opportunities.parquet")
    write_table(data.history, tmp_path / "history.parquet")
    return tmp_path


def _log_scores(home: Path, sample_leads: pd.DataFrame, *, name: str = "leadcast-lead-scoring", first: int = 0,
                leads: int = LEADS, converted: int = CONVERTED, probability: float = PROBABILITY) -> None:
    """Log `leads` scores (sample rows from `first`) of `name` version 1 made 200 days ago (past the 90-day
    maturity), all `probability`; the first `converted` of the leads converted."""
    columns = set(load_spec().feature_columns)
    when = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=200)
    records = lead_records(sample_leads, first + leads)[first:]
    with open_store(Settings(home=home)) as store:
        store.upgrade()
        with store.begin() as conn:
            conn.execute(predictions.insert(), [
                {"lead_id": str(r["lead_id"]), "scored_at": when, "as_of": when, "model_name": name,
                 "model_version": "1", "model_kind": "model", "probability": probability,
                 "score": round(100 * probability), "grade": "C", "reasons": None,
                 "features": {k: v for k, v in r.items() if k in columns}} for r in records])
        upsert_outcomes(store, [Outcome(str(r["lead_id"]), True) for r in records[:converted]], source="api")


def _report(home: Path, *extra: str) -> tuple[int, str, Path]:
    result = CliRunner().invoke(cli, ["report", "--opportunities", str(home / "opportunities.parquet"), "--history",
                                      str(home / "history.parquet"), *REPORT, *extra, "--out", str(home / "report")])
    return result.exit_code, result.output, home / "report" / "report.html"


def test_the_report_carries_the_model_health_of_the_logged_scores(home: Path, sample_leads: pd.DataFrame) -> None:
    _log_scores(home, sample_leads)
    code, output, page = _report(home)
    assert code == 0, output
    html = page.read_text(encoding="utf-8")
    section = html.split('<section id="model-health"><h2>Model health</h2>')[1].split('<section id="notes">')[0]
    assert '<a href="#model-health">Model health</a>' in html
    assert "Model <strong>leadcast-lead-scoring@1</strong>" in section
    assert 'data-key="leads_scored">10<' in section and 'data-key="leads_matured">10<' in section
    # 4 of 10 converted: 40.0%; every prediction 0.25 sits in the bin [0.2, 0.3): ECE = |0.40 - 0.25| = 0.150
    assert 'data-key="base_rate">40.0%<' in section and 'data-key="ece">0.150<' in section
    assert "calibration: these leads converted at 40.0% where the model predicted 25.0% on average" in section
    assert section.count('<figure class="chart"') == 2 and 'id="chart-health-calibration"' in section
    assert 'id="health-summary"' in section and 'id="summary"' not in section  # no id taken from the report

    code, output, page = _report(home, "--no-health")
    assert code == 0, output
    assert 'id="model-health"' not in page.read_text(encoding="utf-8")


def test_each_model_name_with_logged_scores_has_its_own_section(home: Path, sample_leads: pd.DataFrame) -> None:
    # Before, the report showed the default name's champion only: a second name's logged scores were left out.
    from scoring.artifacts import load_trained, save_trained

    second = home / "models" / "web-signups"
    save_trained(load_trained(None, models_dir=home / "models"), models_dir=second, name="web-signups",
                 aliases=["champion"])
    _log_scores(home, sample_leads)
    # other lead ids (outcomes are per lead id): 6 scores of 0.50, 3 converted, ECE = |0.50 - 0.50| = 0.000
    _log_scores(home, sample_leads, name="web-signups", first=LEADS, leads=6, converted=3, probability=0.5)
    code, output, page = _report(home)
    assert code == 0, output
    assert "adding the Model health of 2 lead models" in output
    html = page.read_text(encoding="utf-8")
    default = html.split('<section id="model-health"><h2>Model health</h2>')[1].split(
        '<section id="model-health-2">')[0]
    other = html.split('<section id="model-health-2"><h2>Model health: web-signups</h2>')[1].split(
        '<section id="notes">')[0]
    assert "Model <strong>leadcast-lead-scoring@1</strong>" in default and 'data-key="ece">0.150<' in default
    assert "Model <strong>web-signups@1</strong>" in other
    assert 'data-key="leads_scored">6<' in other and 'data-key="base_rate">50.0%<' in other
    assert 'data-key="ece">0.000<' in other
    assert 'id="chart-health-2-calibration"' in other and 'id="health-2-summary"' in other
    ids = [part.split('"')[0] for part in html.split(' id="')[1:]]
    assert len(ids) == len(set(ids)), "two sections share an element id"


def test_no_logged_scores_no_section_and_health_asked_for_says_why(home: Path) -> None:
    code, output, page = _report(home)
    assert code == 0, output
    assert 'id="model-health"' not in page.read_text(encoding="utf-8")
    assert not (home / "leadcast.db").exists()  # a report does not create a store to look for scores
    code, output, _ = _report(home, "--health")
    assert code == 2 and "--health: no score of the champion (leadcast-lead-scoring@1) is logged" in output, output


@pytest.mark.slow
@pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")
def test_the_report_with_model_health_opens_offline_with_every_chart(home: Path, sample_leads: pd.DataFrame,
                                                                     repo_root: Path) -> None:
    _log_scores(home, sample_leads)
    code, output, page = _report(home, "--health", "--target", "600000")
    assert code == 0, output
    seen = visit(page, screenshot=repo_root / "test-artifacts" / "report-health.png")
    assert seen.console_errors == [] and seen.outside_requests == [] and seen.requests == [seen.url]
    ids = [c["id"] for c in seen.charts]
    assert ids[-2:] == ["chart-health-calibration", "chart-health-psi"], ids
    assert len(ids) == page.read_text(encoding="utf-8").count('<figure class="chart"')
    for chart in seen.charts:
        assert chart["width"] > 300 and chart["height"] > 100, chart
        assert chart["shapes"] >= 10 and chart["texts"] >= 3, chart
