"""Artifacts: write-once files named by content hash, a locked registry, SHA-256 checked before every load, private
files, the MLflow side of the same checks, and the one champion resolver used by `leadcast score`."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from api.cli import cli
from crmdata.loaders import write_table
from scoring.artifacts import (
    ArtifactIntegrityError,
    RegistryConflictError,
    TrainedModel,
    load_trained,
    read_registry,
    resolve_trained,
    save_trained,
)
from scoring.tracking import fetch_model, track
from scoring.training import TrainingResult

NAME = "artifact-tests"
REPO = Path(__file__).resolve().parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def saved(trained: TrainingResult, models: Path, version: str = "1") -> Path:
    model = trained.trained
    model.version = version
    return save_trained(model, models_dir=models, name=NAME, aliases=["champion"])


def test_a_version_is_written_once_named_by_its_hash_and_never_overwritten(
    tmp_path: Path, trained: TrainingResult
) -> None:
    models = tmp_path / "models"
    path = saved(trained, models)
    entry = read_registry(models)["versions"]["1"]
    assert path.name == entry["file"] == f"{NAME}-v1-{entry['sha256'][:12]}.joblib"
    original = path.read_bytes()
    assert saved(trained, models) == path  # the same bytes again: nothing to do
    other: TrainedModel = load_trained("1", models_dir=models)
    other.card = {**other.card, "note": "retrained after the MLflow store was lost"}
    other.version = "1"
    with pytest.raises(RegistryConflictError, match=r"already recorded .* refusing to overwrite"):
        save_trained(other, models_dir=models, name=NAME, aliases=["champion"])
    assert path.read_bytes() == original
    assert sorted(p.name for p in models.glob("*.joblib")) == [path.name]
    assert read_registry(models)["versions"]["1"] == entry


def test_models_and_their_files_are_private_to_the_service_user(tmp_path: Path, trained: TrainingResult) -> None:
    models = tmp_path / "models"
    path = saved(trained, models)
    assert mode(models) == 0o700
    for file in (path, path.with_suffix(".json"), models / "registry.json"):
        assert mode(file) == 0o600, file


def test_every_load_checks_the_recorded_sha256(tmp_path: Path, trained: TrainingResult) -> None:
    models = tmp_path / "models"
    path = saved(trained, models)
    assert load_trained(path, models_dir=models).sha256 == read_registry(models)["versions"]["1"]["sha256"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match=r"not the .* recorded at training"):
        load_trained("champion", models_dir=models)
    # A file nobody recorded (copied in by hand) is never unpickled.
    stray = tmp_path / "elsewhere" / "stray.joblib"
    stray.parent.mkdir()
    shutil.copyfile(path, stray)
    with pytest.raises(ArtifactIntegrityError, match="not listed in"):
        load_trained(stray, models_dir=models)


def test_two_processes_times_200_registry_updates_keep_all_400(tmp_path: Path) -> None:
    models = tmp_path / "models"
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from scoring.artifacts import set_alias
        for i in range(200):
            set_alias(Path({str(models)!r}), f"p{{sys.argv[1]}}-{{i}}", str(i))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(n)], cwd=REPO) for n in (1, 2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    aliases = read_registry(models)["aliases"]
    # 2 processes x 200 distinct aliases = 400; an unlocked read-modify-write loses some.
    assert len(aliases) == 400
    assert aliases["p1-199"] == aliases["p2-199"] == "199"


def store(root: Path) -> dict[str, Any]:
    return {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "artifact_root": (root / "mlartifacts").as_uri(),
            "experiment_name": "artifacts", "registered_model_name": NAME, "models_dir": root / "models"}


@pytest.mark.slow
def test_a_lost_mlflow_store_never_overwrites_a_version_and_the_service_side_says_so(
    tmp_path: Path, trained: TrainingResult
) -> None:
    where = store(tmp_path)
    first = track(trained, **where)
    assert mode(tmp_path / "mlflow.db") == 0o600 and mode(tmp_path / "mlartifacts") == 0o700
    original, registry = first.artifact.read_bytes(), read_registry(where["models_dir"])
    # The store is lost: an empty one takes its place (a new URI, as MLflow caches its engine per URI and a
    # deleted SQLite file stays readable by the process that has it open).
    (tmp_path / "mlflow.db").unlink()
    where["tracking_uri"] = f"sqlite:///{tmp_path / 'mlflow-new.db'}"
    with pytest.raises(RegistryConflictError, match=r"records version 1 .* has no such version: the MLflow store "
                                                     r"was reset or replaced"):
        track(trained, **where)
    assert first.artifact.read_bytes() == original and read_registry(where["models_dir"]) == registry
    # Serving from MLflow with that registry beside it is an error with its reason, never the rules.
    with pytest.raises(RegistryConflictError) as caught:
        resolve_trained(None, source="mlflow", models_dir=where["models_dir"], registered_model_name=NAME,
                        tracking_uri=where["tracking_uri"])
    assert caught.value.reason == "the local registry names version 1 champion but MLflow has none"


@pytest.mark.slow
def test_an_artifact_fetched_from_mlflow_is_checked_against_its_run_tag(tmp_path: Path,
                                                                        trained: TrainingResult) -> None:
    where = store(tmp_path / "trainer")
    first = track(trained, **where)
    fetched = fetch_model(None, tracking_uri=where["tracking_uri"], registered_model_name=NAME,
                          models_dir=tmp_path / "service")
    assert fetched is not None and fetched.version == first.version
    cached = tmp_path / "service" / ".mlflow-cache" / first.artifact.name
    assert mode(cached) == 0o600 and mode(cached.parent) == 0o700
    cached.write_bytes(b"damaged cache copy")  # fetched again and checked again
    again = fetch_model(None, tracking_uri=where["tracking_uri"], registered_model_name=NAME,
                        models_dir=tmp_path / "service")
    assert again is not None and again.sha256 == fetched.sha256
    [stored] = (tmp_path / "trainer" / "mlartifacts").rglob(f"leadcast/{first.artifact.name}")
    data = bytearray(stored.read_bytes())
    data[100] ^= 0x01
    stored.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match=r"not the .* recorded at training"):
        fetch_model(None, tracking_uri=where["tracking_uri"], registered_model_name=NAME,
                    models_dir=tmp_path / "fresh-service")


@pytest.mark.slow
def test_leadcast_score_in_a_fresh_home_serves_the_mlflow_champion(
    tmp_path: Path, trained: TrainingResult, leads: pd.DataFrame
) -> None:
    trainer = tmp_path / "trainer"
    where = {**store(trainer), "registered_model_name": "leadcast-lead-scoring"}
    first = track(trained, **where)
    home = tmp_path / "analyst"
    home.mkdir()
    (home / "leadcast.toml").write_text(f'home = "{home}"\nmodel_source = "mlflow"\n'
                                        f'mlflow_tracking_uri = "{where["tracking_uri"]}"\n')
    write_table(leads.drop(columns=["converted"]).head(50), home / "leads.csv")
    result = CliRunner().invoke(cli, ["--settings", str(home / "leadcast.toml"), "score", "--data",
                                      str(home / "leads.csv"), "--out", str(home / "scores.csv")])
    assert result.exit_code == 0, result.output
    assert f"with model version {first.version} into" in result.output
    scores = pd.read_csv(home / "scores.csv")
    assert len(scores) == 50 and set(scores["model_version"].astype(str)) == {first.version}
    assert not list((home / "models").glob("*.joblib"))  # only the verified cache copy
    assert json.loads((trainer / "models" / "registry.json").read_text())["aliases"]["champion"] == first.version


def test_a_registry_with_a_nan_metric_is_still_json(tmp_path: Path) -> None:
    # The registry was written with json.dumps(default=str), whose NaN is not JSON: strict readers (jq,
    # JavaScript, PostgreSQL's json) refused the file. It now goes through the one JSON writer: NaN is null.
    from scoring.artifacts import REGISTRY_FILE, update_registry

    update_registry(tmp_path, lambda registry: registry.update(metrics={"auc": float("nan"), "brier": 0.125}))

    def refuse(token: str) -> object:
        raise ValueError(f"{token} is not JSON")

    written = json.loads((tmp_path / REGISTRY_FILE).read_text(), parse_constant=refuse)
    assert written["metrics"] == {"auc": None, "brier": 0.125}
