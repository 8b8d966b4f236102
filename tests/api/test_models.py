"""GET /v1/models/current and POST /v1/models/reload: the card, the swap, and where the champion comes from."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
import pytest

from api.serving import ModelHolder
from scoring.artifacts import load_trained, read_registry, save_trained, set_alias
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


# --- Failed loads (issue 10 items 1, 8, 9 and 10) ---------------------------------------------------------------


def champion_file(models: Path) -> Path:
    """Return the champion's artifact file."""
    registry = read_registry(models)
    return models / registry["versions"][registry["aliases"]["champion"]]["file"]


class Boom:
    """A pickle whose loading raises what a damaged or foreign artifact raises."""

    def __init__(self, exc: type[Exception]) -> None:
        self.exc = exc

    def __reduce__(self) -> tuple[Any, ...]:
        return (raise_, (self.exc,))


def raise_(exc: type[Exception]) -> None:
    raise exc("raised while unpickling")


def plant(models: Path, payload: bytes) -> None:
    """Replace the champion's bytes AND its recorded hash (someone who can write models/ can do both)."""
    path = champion_file(models)
    path.write_bytes(payload)
    registry = read_registry(models)
    registry["versions"][registry["aliases"]["champion"]]["sha256"] = hashlib.sha256(payload).hexdigest()
    (models / "registry.json").write_text(json.dumps(registry))


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "empty", "zlib garbage", "EOFError",
                                    "KeyError", "UnpicklingError", "wrong object", "no hash recorded"])
def test_any_damaged_champion_is_a_503_reload_and_the_previous_model_keeps_serving(
    service: Service, sample_leads: pd.DataFrame, damage: str
) -> None:
    models = service.settings.resolved_models_dir
    promote_copy(models, "2")
    path = champion_file(models)
    if damage == "flipped byte":
        flip_byte(path)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "zlib garbage":
        plant(models, b"x\x9c" + bytes(range(256)) * 4)
    elif damage == "wrong object":
        buffer = io.BytesIO()
        joblib.dump({"not": "a model"}, buffer)
        plant(models, buffer.getvalue())
    elif damage == "no hash recorded":
        registry = read_registry(models)
        del registry["versions"]["2"]["sha256"]
        (models / "registry.json").write_text(json.dumps(registry))
    else:
        exc = {"EOFError": EOFError, "KeyError": KeyError, "UnpicklingError": pickle.UnpicklingError}[damage]
        plant(models, pickle.dumps(Boom(exc)))
    failed = service.post("/v1/models/reload", None)
    assert (failed.status_code, set(failed.json), failed.json["error"]["code"]) == (503, {"error"}, "unavailable")
    assert failed.json["error"]["message"].startswith("reload failed, still serving the previous model: ")
    assert str(service.settings.home) not in failed.get_data(as_text=True)
    lead = {"lead": lead_records(sample_leads, 1)[0]}
    assert service.post("/v1/leads/score", lead).json["model"]["version"] == "1"
    assert service.client.get("/readyz").json["model"]["version"] == "1"


def test_a_flipped_byte_is_refused_by_its_hash_before_unpickling(service: Service) -> None:
    models = service.settings.resolved_models_dir
    promote_copy(models, "2")
    flip_byte(champion_file(models))
    message = service.post("/v1/models/reload", None).json["error"]["message"]
    assert "the champion's artifact does not match the SHA-256 recorded at training" in message


def test_a_worker_that_cannot_follow_a_reload_serves_503_not_its_older_model_and_does_not_retry_per_request(
    make_service: Callable[..., Service], sample_leads: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = make_service(), make_service()  # two gunicorn workers on one models folder
    models = first.settings.resolved_models_dir
    promote_copy(models, "2")
    assert first.post("/v1/models/reload", None).json["model"]["version"] == "2"
    flip_byte(champion_file(models))  # the file breaks before the second worker followed
    holder: ModelHolder = second.app.extensions["leadcast"].models
    holder._retry_delay = 600.0  # no back-off retry within this test: only a marker change may retry
    calls = []
    resolve = holder._champion
    monkeypatch.setattr(holder, "_champion", lambda: calls.append(1) or resolve())
    lead = {"lead": lead_records(sample_leads, 1)[0]}
    for _ in range(20):
        response = second.post("/v1/leads/score", lead)
        assert (response.status_code, response.json["error"]["code"]) == (503, "unavailable")
    assert response.json["error"]["message"] == (
        "no model is loaded: the champion's artifact does not match the SHA-256 recorded at training; fix the "
        "champion, then reload")
    assert second.client.get("/healthz").status_code == 200
    assert len(calls) == 1, "a failed load is retried on a marker change or after a back-off, not per request"
    assert first.post("/v1/leads/score", lead).json["model"]["version"] == "2"  # the first keeps what it has
    promote_copy_of(first, "3")
    assert first.post("/v1/models/reload", None).status_code == 200
    assert second.post("/v1/leads/score", lead).json["model"]["version"] == "3"


def test_a_reload_with_no_model_served_reports_no_previous_model_after_the_back_off(
    make_service: Callable[..., Service], sample_leads: pd.DataFrame
) -> None:
    # The second worker serves nothing (it could not follow to a broken v2); the champion is then fixed as v3
    # and its back-off has run out when the reload arrives: v3 is loaded by the reload, not found as "previous".
    first, second = make_service(), make_service()
    models = first.settings.resolved_models_dir
    promote_copy(models, "2")
    assert first.post("/v1/models/reload", None).json["model"]["version"] == "2"
    flip_byte(champion_file(models))
    lead = {"lead": lead_records(sample_leads, 1)[0]}
    assert second.post("/v1/leads/score", lead).status_code == 503
    promote_copy_of(first, "3")
    holder: ModelHolder = second.app.extensions["leadcast"].models
    holder._retry_at = 0.0  # the back-off is over
    reloaded = second.post("/v1/models/reload", None)
    assert (reloaded.status_code, reloaded.json["model"]["version"], reloaded.json["previous"]) == (200, "3", None)


def promote_copy_of(service: Service, version: str) -> None:
    """Promote a new copy of the model a service serves (its champion file may be broken)."""
    holder: ModelHolder = service.app.extensions["leadcast"].models
    served = holder.current()
    assert served is not None
    trained = served.scorer.trained  # type: ignore[attr-defined]
    trained.version = version
    save_trained(trained, models_dir=service.settings.resolved_models_dir, name=MODEL_NAME, aliases=["champion"])


def test_a_touched_marker_re_resolves_only_a_verified_champion(service: Service, sample_leads: pd.DataFrame) -> None:
    models = service.settings.resolved_models_dir
    # A planted pickle named champion without its hash in the registry is never loaded: no code runs.
    marker_file = models / "pwned"
    evil = pickle.dumps(Planted(str(marker_file)))
    promote_copy(models, "2")
    champion_file(models).write_bytes(evil)
    (models / ".reload").touch()
    lead = {"lead": lead_records(sample_leads, 1)[0]}
    assert service.post("/v1/leads/score", lead).json["model"]["version"] == "1"
    assert not marker_file.exists()


class Planted:
    """A pickle that runs code when loaded (it creates a file)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def test_the_card_and_every_answer_hide_paths_and_the_tracking_uri(make_service: Callable[..., Service],
                                                                   sample_leads: pd.DataFrame) -> None:
    service = make_service(mlflow_tracking_uri="https://ci:s3cret@mlflow.example.com", model_source="files")
    models = service.settings.resolved_models_dir
    # An artifact written by an older leadcast kept the tracking URI (with credentials) in its card.
    holder: ModelHolder = service.app.extensions["leadcast"].models
    served = holder.current()
    assert served is not None
    trained = served.scorer.trained  # type: ignore[attr-defined]
    trained.card["tracking_uri"] = "https://ci:s3cret@mlflow.example.com"
    trained.version = "2"
    save_trained(trained, models_dir=models, name=MODEL_NAME, aliases=["champion"])
    lead = {"lead": lead_records(sample_leads, 1)[0]}
    answers = [service.post("/v1/models/reload", None), service.get("/v1/models/current"),
               service.client.get("/readyz"), service.post("/v1/leads/score", lead)]
    set_alias(models, "champion", "9")
    answers += [service.post("/v1/models/reload", None)]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 503]
    assert answers[1].json["model"]["version"] == "2" and "tracking_uri" not in answers[1].json["card"]
    for answer in answers:
        text = answer.get_data(as_text=True)
        for secret in ("s3cret", "mlflow.example.com", str(service.settings.home), "sqlite", ".joblib"):
            assert secret not in text, (secret, text[:300])


@pytest.mark.slow
def test_a_registry_that_disagrees_with_the_mlflow_alias_is_a_503_with_the_reason_never_the_rules(
    make_service: Callable[..., Service], tmp_path: Path, sample_leads: pd.DataFrame
) -> None:
    models = tmp_path / "models"
    result = train(sample_leads, spec=load_spec(), params=FAST)
    track(result, tracking_uri=f"sqlite:///{tmp_path / 'tracking.db'}", artifact_root=(tmp_path / "a").as_uri(),
          experiment_name="api-test", registered_model_name=MODEL_NAME, models_dir=models)
    # The tracking store is lost and an empty one configured: models/registry.json still names champion 1.
    service = make_service(trained=False, model_source="mlflow",
                           mlflow_tracking_uri=f"sqlite:///{tmp_path / 'replaced.db'}")
    ready = service.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json["error"]["message"] == ("no model is loaded: the local registry names version 1 champion "
                                              "but MLflow has none")
    scored = service.post("/v1/leads/score", {"lead": lead_records(sample_leads, 1)[0]})
    assert (scored.status_code, scored.json["error"]["code"]) == (503, "unavailable")
    assert "replaced.db" not in scored.get_data(as_text=True)
