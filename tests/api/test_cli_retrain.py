"""`leadcast retrain` and `leadcast models rollback`: the loop promotes a better challenger, does nothing before it
is due, keeps the champion when the challenger is worse, and rolls back to the previous champion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from api.cli import cli
from crmdata.loaders import write_table
from scoring.artifacts import read_registry
from scoring.spec import DEFAULT_SPEC
from tests.drift import period


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("LEADCAST_HOME", str(tmp_path))
    return CliRunner()


def _fast_spec(tmp_path: Path) -> Path:
    # few folds and trees keep the test quick; the loop, not the model's quality, is under test
    spec = tmp_path / "fast.toml"
    spec.write_text(DEFAULT_SPEC.read_text() + "\n[model]\ncv = 3\nmax_iter = 30\n")
    return spec


def _ok(result: object) -> str:
    assert getattr(result, "exit_code", 1) == 0, getattr(result, "output", "")
    return str(getattr(result, "output", ""))


@pytest.mark.slow
def test_the_loop_promotes_only_a_better_challenger_and_waits_until_due(runner: CliRunner, tmp_path: Path) -> None:
    first = period(1, n=2500)
    base = float(first["converted"].astype(bool).mean())
    write_table(first, tmp_path / "p1.csv")
    drifted = period(2, n=5000, base_rate=base)
    write_table(drifted, tmp_path / "p2.csv")
    _ok(runner.invoke(cli, ["train", "--data", str(tmp_path / "p1.csv"), "--spec", str(_fast_spec(tmp_path))]))
    models = tmp_path / "models"
    assert read_registry(models)["aliases"]["champion"] == "1"

    out = _ok(runner.invoke(cli, ["retrain", "--if-due", "--every", "15d", "--mode", "retrain", "--data",
                                  str(tmp_path / "p2.csv"), "--json", str(tmp_path / "r1.json")]))
    decision = json.loads((tmp_path / "r1.json").read_text())
    assert decision["promoted"] and decision["version"] == "2", out
    assert decision["gate"]["interval"][1] < 0  # better beyond noise on the newest 20% of the drifted leads
    registry = read_registry(models)
    assert registry["aliases"]["champion"] == "2" and registry["champion_history"] == ["1", "2"]
    assert registry["versions"]["2"]["promotion"].startswith("promoted: the retrained model is better than")
    card = json.loads((models / registry["versions"]["2"]["card"]).read_text())
    assert card["promoted"] is True and card["gate"]["mode"] == "retrain"

    again = _ok(runner.invoke(cli, ["retrain", "--if-due", "--every", "15d", "--data", str(tmp_path / "p2.csv")]))
    assert again.startswith("not due: the loop last ran at") and "nothing done" in again
    assert sorted(read_registry(models)["versions"]) == ["1", "2"]  # nothing trained

    # a worse challenger: its older 80% (what it trains on) has its outcomes shuffled
    worse = drifted.sort_values("created_at").reset_index(drop=True)
    older = np.arange(len(worse)) < int(0.8 * len(worse))
    worse.loc[older, "converted"] = np.random.default_rng(0).permutation(worse.loc[older, "converted"].to_numpy())
    write_table(worse, tmp_path / "worse.csv")
    out = _ok(runner.invoke(cli, ["retrain", "--mode", "retrain", "--data", str(tmp_path / "worse.csv")]))
    registry = read_registry(models)
    assert registry["aliases"]["champion"] == "2" and registry["aliases"]["challenger"] == "3"
    assert registry["versions"]["3"]["promotion"].startswith("stays challenger: the retrained model is worse"), out

    out = _ok(runner.invoke(cli, ["models", "rollback"]))
    assert "champion is version 1 again (was 2)" in out
    registry = read_registry(models)
    assert registry["aliases"]["champion"] == "1" and registry["champion_history"] == ["1"]
    refused = runner.invoke(cli, ["models", "rollback"])
    assert refused.exit_code == 2 and "the only champion" in refused.output
    # the MLflow alias moved too: leadcast score resolves the same champion through either registry
    from mlflow import MlflowClient

    uri = f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert str(client.get_model_version_by_alias("leadcast-lead-scoring", "champion").version) == "1"


def test_every_must_be_a_period(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["retrain", "--if-due", "--every", "fortnight"])
    assert result.exit_code == 2 and "--every must be a number and a unit h, d or w" in result.output


@pytest.mark.slow
def test_the_loop_from_the_store_through_the_cli(runner: CliRunner, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """score --log, outcomes import, then retrain --if-due from the store's logged leads: counts checked by hand."""
    import time

    monkeypatch.setenv("LEADCAST_OUTCOME_MATURITY_DAYS", str(1 / 86_400))  # one second: matured within the test
    first = period(1, n=2500)
    write_table(first, tmp_path / "p1.csv")
    drifted = period(2, n=4000, base_rate=float(first["converted"].astype(bool).mean()))
    write_table(drifted.drop(columns=["converted", "converted_at"]), tmp_path / "open.csv")
    write_table(drifted, tmp_path / "outcomes.csv")
    converted, n = int(drifted["converted"].astype(bool).sum()), len(drifted)  # period() thins to the base rate
    _ok(runner.invoke(cli, ["train", "--data", str(tmp_path / "p1.csv"), "--spec", str(_fast_spec(tmp_path))]))

    out = _ok(runner.invoke(cli, ["score", "--data", str(tmp_path / "open.csv"), "--out", str(tmp_path / "s.csv"),
                                  "--log", "--no-reasons"]))
    imported = _ok(runner.invoke(cli, ["outcomes", "import", str(tmp_path / "outcomes.csv")]))
    assert f"scored {n:,} leads with" in out and f"logged {n:,} scores in the prediction log" in out, out
    # every lead of the export has an outcome: converted + not = n, all of them new in the store
    assert f"read {n:,} outcomes from outcomes.csv ({converted:,} converted, {n - converted:,} not; 0 undecided" \
        in imported, imported
    assert f"{n:,} new, 0 changed, 0 unchanged" in imported
    time.sleep(1.2)  # past the one-second maturity: the unconverted leads count as not converted

    result = runner.invoke(cli, ["retrain", "--if-due", "--every", "15d", "--json", str(tmp_path / "r.json")])
    out = _ok(result)
    decision = json.loads((tmp_path / "r.json").read_text())
    assert f"{n:,} matured leads from the store" in out, out  # one row per logged lead, each matured
    assert decision["source"] == "the store" and decision["mode"] == "retrain"  # web visits shifted: a retrain
    assert "Website visits" in decision["why"] or "web_visits" in decision["why"], decision["why"]
    # the gate: the newest 20% of the n leads
    assert decision["gate"]["leads"] == n - int(0.8 * n), (n, decision["gate"])
    assert decision["promoted"] and decision["version"] == "2", out
    assert decision["decision"] in out and decision["decision"].startswith("promoted: the retrained model is better")
    assert read_registry(tmp_path / "models")["aliases"]["champion"] == "2"

    again = _ok(runner.invoke(cli, ["retrain", "--if-due", "--every", "15d"]))
    assert again.startswith("not due: the loop last ran at") and "nothing done" in again
