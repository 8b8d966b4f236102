"""The forecasting commands: readable output, JSON only after success, `error: ...` and exit 2 on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from api.cli import LeadcastGroup
from api.commands.forecasting import register
from crmdata.loaders import write_table
from crmdata.synthetic import generate_opportunities


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("crm")
    data = generate_opportunities(n=1200, seed=5)
    write_table(data.opportunities, folder / "opportunities.csv")
    write_table(data.history, folder / "history.csv")
    return folder / "opportunities.csv", folder / "history.csv"


def _run(args: list[str]) -> tuple[int, str, str]:
    group = LeadcastGroup()
    register(group)
    result = CliRunner().invoke(group, args)
    return result.exit_code, result.stdout, result.stderr


def test_forecast_prints_a_table_and_writes_json(files: tuple[Path, Path], tmp_path: Path) -> None:
    opps, hist = files
    out = tmp_path / "forecast.json"
    code, stdout, _ = _run(["forecast", "--opportunities", str(opps), "--history", str(hist), "--as-of",
                            "2026-07-01", "--horizon", "3M", "--target", "1000000", "--by", "owner", "--seed", "3",
                            "--sims", "1000", "--json", str(out)])
    assert code == 0, stdout
    assert "P10" in stdout and "2026-07" in stdout and "probability of reaching $1,000,000" in stdout
    data = json.loads(out.read_text())
    assert len(data["periods"]) == 3 and data["by"] == "owner" and data["model"]["simulations"] == 1000


@pytest.mark.parametrize(("args", "message"), [
    (["--horizon", "3X"], "horizon '3X' does not parse"),
    (["--as-of", "2000-01-01"], "choose a later as-of date"),
    (["--target", "-5"], "--target must not be negative"),
])
def test_forecast_refuses_bad_input_without_a_traceback(files: tuple[Path, Path], tmp_path: Path, args: list[str],
                                                        message: str) -> None:
    opps, _ = files
    out = tmp_path / "never.json"
    code, _, stderr = _run(["forecast", "--opportunities", str(opps), "--sims", "200", "--json", str(out), *args])
    assert code == 2
    assert stderr.startswith("error: ") and message in stderr and "Traceback" not in stderr
    assert not out.exists()


def test_an_empty_export_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("opportunity_id,owner,product,created_at,stage\n")
    code, _, stderr = _run(["forecast", "--opportunities", str(empty)])
    assert code == 2 and "pipeline is empty" in stderr


def test_stuck_metrics_and_backtest_commands(files: tuple[Path, Path], tmp_path: Path) -> None:
    opps, hist = files
    code, stdout, _ = _run(["stuck", "--opportunities", str(opps), "--history", str(hist), "--threshold",
                            "proposal=30", "--json", str(tmp_path / "stuck.json")])
    assert code == 0 and "proposal" in stdout and "30 days" in stdout
    assert json.loads((tmp_path / "stuck.json").read_text())["thresholds"]["proposal"] == 30.0
    code, _, stderr = _run(["stuck", "--opportunities", str(opps), "--threshold", "proposal"])
    assert code == 2 and "STAGE=DAYS" in stderr
    code, stdout, _ = _run(["metrics", "--opportunities", str(opps), "--by", "team", "--daily-target", "5000",
                            "--start", "2026-06-01", "--end", "2026-07-01", "--json", str(tmp_path / "m.json")])
    assert code == 0 and "win rate" in stdout and "lead generation to date" in stdout
    assert json.loads((tmp_path / "m.json").read_text())["by"] == "team"
    md = tmp_path / "accuracy.md"
    code, stdout, _ = _run(["backtest", "--opportunities", str(opps), "--history", str(hist), "--start",
                            "2026-04-01", "--end", "2026-06-01", "--sims", "300", "--markdown", str(md)])
    assert code == 0 and "Monte Carlo P50" in stdout
    assert "| period |" in md.read_text()


def test_forecast_can_carry_its_backtest(files: tuple[Path, Path], tmp_path: Path) -> None:
    opps, hist = files
    out = tmp_path / "forecast.json"
    code, stdout, _ = _run(["forecast", "--opportunities", str(opps), "--history", str(hist), "--as-of",
                            "2026-07-01", "--horizon", "1M", "--sims", "500", "--backtest-periods", "2", "--json",
                            str(out)])
    assert code == 0, stdout
    assert "backtest on your history" in stdout
    backtest = json.loads(out.read_text())["backtest"]
    assert [r["as_of"] for r in backtest["rows"]] == ["2026-05-01", "2026-06-01"]
    assert {a["method"] for a in backtest["accuracy"]} >= {"monte_carlo_p50", "last_period"}
