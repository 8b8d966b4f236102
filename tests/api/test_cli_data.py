from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from api.cli import cli


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("LEADCAST_HOME", str(tmp_path))
    return CliRunner()


def test_help_lists_the_commands(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in ("demo-data", "validate"):
        assert command in result.output


def test_demo_data_writes_valid_tables(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = runner.invoke(cli, ["demo-data", "--leads", "300", "--opportunities", "120", "--seed", "1",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "opportunities.parquet" in result.output and "120 rows" in result.output
    for table, file in (("leads", "leads.parquet"), ("opportunities", "opportunities.parquet"),
                        ("stage-history", "stage_history.parquet")):
        check = runner.invoke(cli, ["validate", table, str(out / file)])
        assert check.exit_code == 0, check.output
        assert check.output.strip().endswith("rows)")


def test_demo_data_defaults_to_the_home_setting(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["demo-data", "--leads", "50", "--opportunities", "20", "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "demo-data" / "leads.csv").exists()


def test_validate_reports_each_problem_and_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "opps.csv"
    bad.write_text("opportunity_id,owner,product,amount,created_at,stage\n"
                   "A,Ann,P,abc,2026-01-01,proposal\nA,Bob,P,5,2026-01-01,open-ish\n")
    result = runner.invoke(cli, ["validate", "opportunities", str(bad)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "error: opps.csv: 3 problem(s) found"
    assert lines[1:] == [
        "opps.csv: row 1, field 'amount': is not a number (value 'abc')",
        "opps.csv: row 2, field 'opportunity_id': duplicate id (first in row 1) (value 'A')",
        "opps.csv: row 2, field 'stage': unknown stage; expected one of lead_generation, qualification, contact, "
        "proposal, closing, won, retention, lost (value 'open-ish')",
    ]
    assert "Traceback" not in result.output


def test_maven_validates_through_the_shipped_mapping(runner: CliRunner, maven_dir: Path, repo_root: Path) -> None:
    result = runner.invoke(cli, ["validate", "opportunities", str(maven_dir / "sales_pipeline.csv"),
                                 "--mapping", str(repo_root / "docs/examples/maven-crm-mapping.toml")])
    assert result.exit_code == 0, result.output
    assert "outcomes: open 2089, won 4238, lost 2473" in result.output


def test_bad_settings_are_reported_without_a_traceback(runner: CliRunner, tmp_path: Path) -> None:
    settings = tmp_path / "s.toml"
    settings.write_text("unknown_setting = 1\n")
    result = runner.invoke(cli, ["--settings", str(settings), "demo-data", "--leads", "5"])
    assert result.exit_code != 0
    assert "unknown_setting" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_score_refuses_an_export_the_cold_start_rules_cannot_read(runner: CliRunner, tmp_path: Path) -> None:
    spec = tmp_path / "foreign.toml"
    spec.write_text('name = "foreign"\nid_column = "id"\n[target]\ncolumn = "won"\npositive = ["yes"]\n'
                    'negative = ["no"]\n[[features]]\ncolumn = "clicks"\nkind = "numeric"\ngroup = "engagement"\n')
    data = tmp_path / "foreign.csv"
    data.write_text("id,clicks\na,3\n")
    out = tmp_path / "scores.csv"
    result = runner.invoke(cli, ["score", "--data", str(data), "--out", str(out), "--spec", str(spec)])
    assert result.exit_code == 2, result.output
    assert "none is shared: write rules for these fields (--rules FILE" in result.output
    assert "the data has clicks" in result.output
    assert not out.exists()
