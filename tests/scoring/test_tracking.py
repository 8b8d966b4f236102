from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click
import pandas as pd
import pytest
from click.testing import CliRunner

from api.cli import LeadcastGroup
from api.commands import scoring as scoring_commands
from api.settings import load_settings
from crmdata.loaders import write_table
from scoring.spec import ModelSpec
from scoring.tracking import decide, quiet_mlflow, track
from scoring.training import TrainingResult, train
from tests.scoring.conftest import FAST

NAME = "test-leads"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("mlflow")
    return {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "artifact_root": (root / "artifacts").as_uri(),
            "experiment_name": "tests", "registered_model_name": NAME, "models_dir": root / "models"}


def client(store: dict[str, Any]) -> Any:
    with quiet_mlflow():
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=store["tracking_uri"], registry_uri=store["tracking_uri"])


def fewer_features(spec: ModelSpec) -> ModelSpec:
    keep = ("country", "age", "social_likes")
    return ModelSpec.from_dict({
        "name": "weak", "id_column": spec.id_column, "created_at_column": spec.created_at_column,
        "target": {"column": "converted", "positive": list(spec.target.positive),
                   "negative": list(spec.target.negative)},
        "protected": list(spec.protected),
        "features": [{"column": f.column, "kind": f.kind, "group": f.group} for f in spec.features
                     if f.column in keep],
    })


@pytest.mark.slow
def test_promotion_only_of_models_that_are_not_worse(
    store: dict[str, Any], trained: TrainingResult, leads: pd.DataFrame, spec: ModelSpec
) -> None:
    first = track(trained, **store)
    assert first.aliases == ("challenger", "champion") and first.decision.promoted
    again = track(train(leads, spec=spec, params=FAST), **store)
    assert not again.decision.promoted
    assert "same data as the champion and not better" in again.decision.reason
    weak = track(train(leads, spec=fewer_features(spec), params=FAST), **store)
    assert not weak.decision.promoted and "AUC more than 0.005 below" in weak.decision.reason
    forced = track(train(leads, spec=fewer_features(spec), params=FAST), **store, force=True)
    assert forced.decision.forced and forced.decision.reason.startswith("promoted by --force")

    mlflow = client(store)
    versions = [first.version, again.version, weak.version, forced.version]
    assert versions == ["1", "2", "3", "4"]
    assert str(mlflow.get_model_version_by_alias(NAME, "champion").version) == "4"
    assert str(mlflow.get_model_version_by_alias(NAME, "challenger").version) == "4"
    tags = mlflow.get_model_version(NAME, "3").tags
    assert tags["promoted"] == "false" and "AUC" in tags["promotion"]
    run = mlflow.get_run(first.run_id)
    assert run.data.metrics["roc_auc"] == pytest.approx(trained.trained.card["metrics"]["selected"]["roc_auc"])
    assert run.data.tags["data_fingerprint"] == trained.trained.card["data_fingerprint"]
    assert run.data.metrics["rows_trained"] == 3000
    artifacts = {a.path for a in mlflow.list_artifacts(first.run_id)}
    assert {"plots", "spec", "evaluation"} <= artifacts
    assert {a.path for a in mlflow.list_artifacts(first.run_id, "plots")} >= {"plots/calibration.png",
                                                                               "plots/gains.png"}
    local = json.loads((store["models_dir"] / "registry.json").read_text())
    assert local["aliases"] == {"challenger": "4", "champion": "4"}
    card = json.loads(first.card.read_text())
    assert card["mlflow_run_id"] == first.run_id and card["version"] == "1"
    # Write-once names: version and content hash, the same stem for the artifact, its card and its report.
    assert first.artifact.name == local["versions"]["1"]["file"]
    assert first.artifact.name.startswith(f"{NAME}-v1-") and first.artifact.suffix == ".joblib"
    assert local["versions"]["1"]["run_id"] == first.run_id and len(local["versions"]["1"]["sha256"]) == 64
    report = first.artifact.with_name(f"{first.artifact.stem}-report")
    assert {p.name for p in report.iterdir()} >= {"report.json", "calibration.png", "gains.png", "scores.png"}


def test_first_model_is_champion_without_comparison(trained: TrainingResult) -> None:
    assert decide(trained, None).promoted


def cli_group(home: Path, store: dict[str, Any]) -> click.Group:
    @click.group(cls=LeadcastGroup)
    @click.pass_context
    def group(ctx: click.Context) -> None:
        ctx.obj = load_settings(None, home=home, mlflow_tracking_uri=store["tracking_uri"],
                                registered_model_name="cli-model", experiment_name="cli")

    scoring_commands.register(group)
    return group


@pytest.mark.slow
def test_cli_train_then_score(tmp_path: Path, store: dict[str, Any], leads: pd.DataFrame) -> None:
    group = cli_group(tmp_path, store)
    runner = CliRunner()
    data = tmp_path / "leads.csv"
    write_table(leads.head(1500), data)
    scored = runner.invoke(group, ["score", "--data", str(data), "--out", str(tmp_path / "cold.csv")])
    assert scored.exit_code == 0, scored.output
    assert "cold-start rules" in scored.output
    result = runner.invoke(group, ["train", "--data", str(data), "--json", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    assert "no champion yet" in result.output
    # one progress line per step, with the seconds since the start
    assert re.search(r"^\[ *\d+\.\ds\] refit the \w+ model on all 1,500 leads$", result.output, re.M)
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["promoted"] and metrics["version"] == "1"
    assert set(metrics["report"]["candidates"]) == {"linear", "trees", "blend"}
    out = tmp_path / "scores.parquet"
    odd = leads.head(1500).copy()
    odd.loc[[3, 9], "source"] = "Carrier pigeon"
    write_table(odd, data)
    scored = runner.invoke(group, ["score", "--data", str(data), "--out", str(out)])
    assert scored.exit_code == 0, scored.output
    assert "warning: 2 categories not seen in training were scored as 'other': Source 'Carrier pigeon' (2)" in \
        scored.output
    frame = pd.read_parquet(out)
    assert len(frame) == 1500 and (frame["model_kind"] == "model").all() and (frame["model_version"] == "1").all()
    few = tmp_path / "few.csv"
    write_table(leads.head(60), few)
    refused = runner.invoke(group, ["train", "--data", str(few)])
    assert refused.exit_code == 2 and "not enough outcomes" in refused.output
    assert "cold-start points model" in refused.output


def test_new_data_is_compared_on_leads_neither_model_saw(trained: TrainingResult, spec: ModelSpec) -> None:
    from crmdata.synthetic import generate_leads

    fresh = generate_leads(n=3000, seed=12).leads
    fresh["lead_id"] = "N" + fresh["lead_id"].astype(str)
    challenger = train(fresh, spec=spec, params=FAST)
    decision = decide(challenger, trained.trained)
    assert "600 held-out leads neither model was trained on" in decision.reason
    assert decision.champion is not None and decision.challenger is not None
    auc_ok = decision.challenger["roc_auc"] >= decision.champion["roc_auc"] - 0.005
    brier_ok = decision.challenger["brier"] <= decision.champion["brier"] * 1.02
    assert decision.promoted == (auc_ok and brier_ok)


def test_overlapping_ids_cannot_be_compared_fairly(trained: TrainingResult, leads: pd.DataFrame,
                                                   spec: ModelSpec) -> None:
    # Same leads, different evaluation (fewer rows): the champion trained on every held-out lead.
    challenger = train(leads.head(2500), spec=spec, params=FAST)
    decision = decide(challenger, trained.trained)
    assert not decision.promoted and decision.reason.startswith("cannot compare fairly")
    assert decide(challenger, trained.trained, force=True).forced
