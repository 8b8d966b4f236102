"""`leadcast report`: both files on success; on bad input `error: ...`, exit 2 and nothing written."""

from __future__ import annotations

import io
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
from click.testing import CliRunner

from api.cli import LeadcastGroup
from api.commands.report import register, score_open_leads
from api.settings import load_settings
from crmdata.loaders import write_table
from crmdata.synthetic import write_demo
from scoring.scorer import load_scorer


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("demo")
    write_demo(out=folder, leads=400, opportunities=1000, seed=6, fmt="csv")
    leads = pd.read_csv(folder / "leads.csv", dtype=str)
    # Three leads still open at the as-of date (no outcome yet), one created after it (not known then).
    leads.loc[:2, "converted"] = None
    leads.loc[3, ["converted", "created_at"]] = [None, "2026-08-01T00:00:00"]
    leads.to_csv(folder / "leads-open.csv", index=False)
    return folder


def run(home: Path, args: list[str]) -> tuple[int, str, str]:
    group = LeadcastGroup()
    register(group)
    result = CliRunner().invoke(group, ["report", *args], obj=load_settings(home=home))
    return result.exit_code, result.stdout, result.stderr


def base(demo: Path, out: Path) -> list[str]:
    return ["--opportunities", str(demo / "opportunities.csv"), "--as-of", "2026-07-01", "--horizon", "1Q",
            "--sims", "300", "--backtest-months", "2", "--backtest-sims", "100", "--out", str(out)]


def test_report_writes_the_page_and_the_workbook(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = run(tmp_path, [*base(demo, out), "--leads", str(demo / "leads-open.csv"),
                                          "--target", "300000", "--history", str(demo / "stage_history.csv")])
    assert code == 0, stderr
    assert "no trained model" in stderr and "cold-start rules" in stderr
    assert stdout.startswith("- The P50 forecast of won revenue for 2026-Q3")
    assert "Of 3 open leads" in stdout  # rows 1-3; row 4 was created after the as-of date
    assert f"wrote {out / 'report.html'} and {out / 'report.xlsx'}" in stdout
    wb = openpyxl.load_workbook(io.BytesIO((out / "report.xlsx").read_bytes()))
    assert sum(r[1].value for r in wb["Lead grades"].iter_rows(min_row=2)) == 3


def test_open_leads_are_those_without_an_outcome(demo: Path, tmp_path: Path) -> None:
    scorer = load_scorer(None, models_dir=tmp_path / "models")
    scores = score_open_leads(demo / "leads-open.csv", scorer=scorer, as_of=pd.Timestamp("2026-07-01"))
    expected = pd.read_csv(demo / "leads-open.csv", dtype=str)["lead_id"].iloc[:3].tolist()
    assert scores["lead_id"].tolist() == expected
    assert set(scores["grade"]) <= set("ABCD") and scores["score"].between(0, 100).all()


@pytest.mark.parametrize(("extra", "message"), [
    (["--horizon", "2X"], "horizon '2X' does not parse"),
    (["--as-of", "2019-01-01"], "choose a later as-of date"),
    (["--target", "-10"], "--target must be a non-negative amount"),
    (["--as-of", "someday"], "--as-of 'someday' is not a date"),
])
def test_bad_options_write_nothing(demo: Path, tmp_path: Path, extra: list[str], message: str) -> None:
    out = tmp_path / "out"
    code, _, stderr = run(tmp_path, [*base(demo, out), *extra])
    assert code == 2
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in stderr
    assert not out.exists()


def test_a_bad_lead_file_names_the_row(demo: Path, tmp_path: Path) -> None:
    leads = pd.read_csv(demo / "leads-open.csv", dtype=str)
    leads.loc[5, "web_visits"] = "many"
    write_table(leads, tmp_path / "bad-leads.csv")
    out = tmp_path / "out"
    code, _, stderr = run(tmp_path, [*base(demo, out), "--leads", str(tmp_path / "bad-leads.csv")])
    assert code == 2
    assert "row 6, field 'web_visits'" in stderr and "'many'" in stderr
    assert not out.exists()


def test_a_missing_export_is_reported(tmp_path: Path) -> None:
    code, _, stderr = run(tmp_path, ["--opportunities", str(tmp_path / "nope.csv"), "--as-of", "2026-07-01",
                                     "--out", str(tmp_path / "out")])
    assert code == 2 and "file does not exist" in stderr
    assert not (tmp_path / "out").exists()
