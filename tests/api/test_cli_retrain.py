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
