"""`leadcast monitor`: drift and calibration of a file of scored leads against the champion's profile."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from api.cli import cli
from crmdata.loaders import write_table
from crmdata.synthetic import generate_leads


@pytest.fixture
def runner(tmp_path: Path, trained_dir: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("LEADCAST_HOME", str(tmp_path))
    monkeypatch.setenv("LEADCAST_MODELS_DIR", str(trained_dir))
    return CliRunner()


def test_monitor_names_the_shifted_field_and_the_calibration(runner: CliRunner, tmp_path: Path) -> None:
    leads = generate_leads(n=2000, seed=5).leads
    leads["web_visits"] = leads["web_visits"] * 3
    leads.loc[np.random.default_rng(0).random(len(leads)) < 0.4, "converted"] = True
    leads.loc[leads.index % 4 == 0, "source"] = "tiktok-campaign"  # 500 of 2,000 leads: 25.0%
    data = tmp_path / "since.csv"
    write_table(leads, data)
    result = runner.invoke(cli, ["monitor", "--data", str(data), "--json", str(tmp_path / "health.json")])
    assert result.exit_code == 0, result.output
    assert "ALERT: Website visits has shifted (PSI" in result.output
    assert "ALERT: calibration: these leads converted at" in result.output
    report = json.loads((tmp_path / "health.json").read_text())
    assert report["features"][0]["column"] == "web_visits" and report["outcomes"]["leads"] == 2000
    assert ("unseen categories (share of leads with a value training never saw or saw too rarely): source 25.0%"
            in result.output)
    assert "ALERT: 25% of leads have a Source value training never saw" in result.output
    assert report["unseen_categories"]["source"] == 0.25


def test_monitor_refuses_the_cold_start_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADCAST_HOME", str(tmp_path))
    data = tmp_path / "leads.csv"
    write_table(generate_leads(n=50, seed=1).leads, data)
    result = CliRunner().invoke(cli, ["monitor", "--data", str(data)])
    assert result.exit_code == 2 and "the cold-start rules have no training profile" in result.output
