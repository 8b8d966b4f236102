"""GET /v1/models/current and POST /v1/models/reload: the card, the swap, and where the champion comes from."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from scoring.artifacts import load_trained, save_trained, set_alias
from scoring.spec import load_spec
from scoring.tracking import track
from scoring.training import train
from tests.api.conftest import FAST, MODEL_NAME, Service, lead_records


def promote_copy(models: Path, version: str) -> None:
    """Save the champion again as `version` and make it the champion (what `leadcast train` does on promotion)."""
    trained = load_trained("champion", models_dir=models)
    trained.version = version
    save_trained(trained, models_dir=models, name=MODEL_NAME, aliases=["champion"])


def test_the_current_model_card(service: Service) -> None:
    response = service.get("/v1/models/current", who="score")
    assert response.status_code == 200
    body = response.json
    assert body["model"] == {"name": MODEL_NAME, "version": "1", "kind": "trained"}
    assert body["card"]["spec_name"] == "leadcast-default"
    assert 0.5 < body["card"]["metrics"]["selected"]["roc_auc"] <= 1.0


def test_reload_swaps_to_the_new_champion(service: Service, sample_leads: pd.DataFrame) -> None:
    lead = {"lead": lead_records(sample_leads, 1)[0]}
    assert service.post("/v1/leads/score", lead).json["model"]["version"] == "1"
    promote_copy(service.settings.resolved_models_dir, "2")
    # Until someone reloads, the service keeps the model it has.
    assert service.post("/v1/leads/score", lead).json["model"]["version"] == "1"
    reloaded = service.post("/v1/models/reload", None, who="all")
    assert reloaded.status_code == 200
    assert reloaded.json["model"]["version"] == "2"
    assert reloaded.json["previous"]["version"] == "1"
    assert service.post("/v1/leads/score", lead).json["model"]["version"] == "2"
    exposed = service.client.get("/metrics").get_data(as_text=True)
    gauge = 'leadcast_model_info{model_kind="trained",model_name="leadcast-lead-scoring",model_version="%s"} %s'
    assert gauge % ("2", "1.0") in exposed and gauge % ("1", "0.0") in exposed


def test_a_second_app_on_the_same_models_follows_a_reload(make_service: Callable[..., Service]) -> None:
    # Two apps stand for two gunicorn workers: the reload marker tells the one that was not called.
    first, second = make_service(), make_service()
    promote_copy(first.settings.resolved_models_dir, "2")
    assert first.post("/v1/models/reload", None).status_code == 200
    assert second.get("/v1/models/current").json["model"]["version"] == "2"


def test_reload_needs_the_admin_scope_and_keeps_serving_on_failure(service: Service) -> None:
    assert service.post("/v1/models/reload", None, who="score").status_code == 403
    models = service.settings.resolved_models_dir
    set_alias(models, "champion", "9")  # a version that does not exist
    failed = service.post("/v1/models/reload", None)
    assert (failed.status_code, failed.json["error"]["code"]) == (503, "unavailable")
    assert failed.json["error"]["message"].startswith("reload failed, still serving the previous model")
    assert str(models) not in failed.get_data(as_text=True)  # no server paths in answers
    assert service.get("/v1/models/current").json["model"]["version"] == "1"


@pytest.mark.slow
def test_the_champion_comes_from_the_mlflow_alias_when_a_tracking_uri_is_set(
    make_service: Callable[..., Service], tmp_path: Path, sample_leads: pd.DataFrame
) -> None:
    uri = f"sqlite:///{tmp_path / 'tracking.db'}"
    trained_here = tmp_path / "trainer-models"
    result = train(sample_leads, spec=load_spec(), params=FAST)
    tracked = track(result, tracking_uri=uri, artifact_root=(tmp_path / "artifacts").as_uri(),
                    experiment_name="api-test", registered_model_name=MODEL_NAME, models_dir=trained_here)
    assert tracked.decision.promoted
    # The service's own models folder is empty: the model can only come from the tracking server.
    service = make_service(trained=False, mlflow_tracking_uri=uri)
    body = service.get("/v1/models/current").json
    assert body["model"] == {"name": MODEL_NAME, "version": tracked.version, "kind": "trained"}
    assert (service.settings.resolved_models_dir / ".mlflow-cache" / tracked.artifact.name).exists()
    files_only = make_service(trained=False, mlflow_tracking_uri=uri, model_source="files")
    assert files_only.get("/v1/models/current").json["model"]["kind"] == "rules"
