"""A client written for `mlflow models serve` gets the same probabilities from leadcast, on the same model.

The model is tracked into a temporary SQLite MLflow store and registered with the alias `champion`; MLflow serves
`models:/leadcast-lead-scoring@champion` (FastAPI on uvicorn, the local environment) and leadcast resolves the same
alias from the same store (the Flask test client: the HTTP server is the gunicorn test's business).

Recency and the reference time. The pipeline's featuriser (scoring/features.py, `LeadFeatures.encode`) turns each
timestamp into days before a reference time, and that reference is, per row, the `as_of` column when the frame has
one, else the latest timestamp seen in fit (`recency_.reference_time_`, i.e. the end of the training data).
- `scoring.tracking.track` logs a signature with every spec field optional and an optional `as_of` datetime, so
  `mlflow models serve` passes `as_of` to the pipeline like leadcast does; without it MLflow measures from the end
  of the training data while leadcast measures from the request time.
The main body carries `as_of` equal to the model's fitted reference time, so that both sides agree whichever
reference they fall back to; the last test moves `as_of` and drops optional fields, which both must honour alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from api.app import create_app
from api.settings import Settings
from api.stores import open_keys
from crmdata.synthetic import generate_leads
from scoring.spec import load_spec
from scoring.tracking import TrackedModel, track
from scoring.training import train
from tests.api.conftest import FAST, MODEL_NAME
from tests.api.servers import JsonClient, ServerProcess, free_port, mlflow_server

pytestmark = pytest.mark.slow

TOLERANCE = 1e-9


@dataclass
class Store:
    """A tracking store holding one registered champion, and that model's reference time."""

    home: Path
    uri: str
    tracked: TrackedModel
    as_of: str


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, sample_leads: pd.DataFrame) -> Store:
    home = tmp_path_factory.mktemp("parity")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    result = train(sample_leads, spec=load_spec(), params=FAST)
    tracked = track(result, tracking_uri=uri, artifact_root=(home / "mlartifacts").as_uri(),
                    experiment_name="parity", registered_model_name=MODEL_NAME, models_dir=home / "trainer-models")
    assert "champion" in tracked.aliases
    reference = result.trained.pipeline.named_steps["features"].recency_.reference_time_
    as_of = (pd.Timestamp(0) + pd.to_timedelta(reference, unit="D")).round("us").isoformat()
    return Store(home=home, uri=uri, tracked=tracked, as_of=as_of)


@pytest.fixture(scope="module")
def mlflow_port(store: Store) -> Iterator[int]:
    port = free_port()
    server: ServerProcess = mlflow_server(store.home, port=port, model_uri=f"models:/{MODEL_NAME}@champion",
                                          tracking_uri=store.uri)
    with server:
        try:
            server.wait_ready("/ping", timeout=120)
        except (RuntimeError, TimeoutError) as exc:
            pytest.skip(f"`mlflow models serve` could not start here: {str(exc)[-1500:]}")
        yield port


@pytest.fixture(scope="module")
def leadcast(store: Store, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, str]]:
    """Return a test client of leadcast serving the MLflow champion of the same store, and its auth header."""
    home = tmp_path_factory.mktemp("parity-leadcast")
    settings = Settings(home=home, models_dir=home / "models", mlflow_tracking_uri=store.uri)
    key = open_keys(settings).create(name="mlflow-client", scopes=("score",))
    return create_app(settings).test_client(), {"Authorization": f"Bearer {key}"}


def _cell(value: Any, kind: str) -> Any:
    """Write one value as JSON the way a pandas user's `df.to_json(orient="split")` client would."""
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if kind == "boolean":
        return float(bool(value))  # the signature logged by track types booleans as doubles
    return value


def split_body(store: Store, *, n: int = 200, with_id: bool = True) -> dict[str, Any]:
    """Return a `dataframe_split` body of `n` leads MLflow's signature accepts, plus `lead_id` and `as_of`."""
    spec = load_spec()
    leads = generate_leads(n=n, seed=99).leads
    leads.loc[leads.index[:3], "country"] = "Atlantis"  # unseen categories are scored as "other" by both
    features = [(f.column, f.kind) for f in spec.features]
    rows = [[_cell(r[c], kind) for c, kind in features] for r in leads.to_dict(orient="records")]
    columns = [c for c, _ in features]
    if with_id:
        columns, rows = [spec.id_column, *columns], [[lead, *row] for lead, row in zip(leads[spec.id_column], rows,
                                                                                         strict=True)]
    return {"dataframe_split": {"columns": [*columns, "as_of"], "data": [[*row, store.as_of] for row in rows]}}


def as_records(body: dict[str, Any]) -> dict[str, Any]:
    split = body["dataframe_split"]
    return {"dataframe_records": [dict(zip(split["columns"], row, strict=True)) for row in split["data"]]}


def mlflow_predict(port: int, body: dict[str, Any]) -> list[list[float]]:
    with JsonClient(port) as client:
        status, answer = client.call("POST", "/invocations", body)
    assert status == 200, answer
    predictions: list[list[float]] = answer["predictions"]
    return predictions


@pytest.mark.parametrize("shape", ["dataframe_split", "dataframe_records"])
def test_leadcast_gives_mlflow_serves_probabilities(
    store: Store, mlflow_port: int, leadcast: tuple[Any, dict[str, str]], shape: str
) -> None:
    body = split_body(store)
    if shape == "dataframe_records":
        body = as_records(body)
    expected = mlflow_predict(mlflow_port, body)
    client, headers = leadcast
    answer = client.post("/v1/leads/score", json=body, headers=headers)
    assert answer.status_code == 200, answer.json
    got = answer.json
    assert got["model"] == {"name": MODEL_NAME, "version": store.tracked.version, "kind": "trained"}
    assert len(got["predictions"]) == len(expected) == 200
    assert [s["id"] for s in got["scores"]] == [row[0] for row in split_body(store)["dataframe_split"]["data"]]
    worst = max(abs(mine[1] - theirs[1]) for mine, theirs in zip(got["predictions"], expected, strict=True))
    assert worst <= TOLERANCE, f"class-1 probabilities differ by up to {worst:.3g}"
    assert max(abs(s["probability"] - p[1]) for s, p in zip(got["scores"], expected, strict=True)) <= TOLERANCE
    assert all(abs(p0 + p1 - 1.0) <= 1e-12 for p0, p1 in got["predictions"])
    spread = {round(p[1], 2) for p in expected}
    assert len(spread) > 10, "the leads should span a range of probabilities, not one value"


def test_a_body_without_lead_ids_is_scored_like_mlflow_does(
    store: Store, mlflow_port: int, leadcast: tuple[Any, dict[str, str]]
) -> None:
    body = split_body(store, n=20, with_id=False)
    expected = mlflow_predict(mlflow_port, body)
    client, headers = leadcast
    answer = client.post("/v1/leads/score", json=body, headers=headers)
    assert answer.status_code == 200, answer.json
    assert [s["id"] for s in answer.json["scores"]] == [str(i) for i in range(20)]  # numbered by position
    worst = max(abs(mine[1] - theirs[1]) for mine, theirs in zip(answer.json["predictions"], expected, strict=True))
    assert worst <= TOLERANCE


def test_a_later_as_of_and_absent_optional_fields_agree_too(
    store: Store, mlflow_port: int, leadcast: tuple[Any, dict[str, str]]
) -> None:
    split = split_body(store, n=50)["dataframe_split"]
    dropped = {"age", "industry", "budget_amount"}
    keep = [i for i, c in enumerate(split["columns"]) if c not in dropped]
    later = (pd.Timestamp(store.as_of) + pd.Timedelta(days=30)).isoformat()
    body = {"dataframe_split": {"columns": [split["columns"][i] for i in keep],
                                "data": [[*[row[i] for i in keep][:-1], later] for row in split["data"]]}}
    expected = mlflow_predict(mlflow_port, body)
    client, headers = leadcast
    answer = client.post("/v1/leads/score", json=body, headers=headers)
    assert answer.status_code == 200, answer.json
    worst = max(abs(mine[1] - theirs[1]) for mine, theirs in zip(answer.json["predictions"], expected, strict=True))
    assert worst <= TOLERANCE
    # The later reference changes the answer: 30 more days since every touch lowers interest.
    before = mlflow_predict(mlflow_port, split_body(store, n=50))
    assert sum(p[1] for p in expected) < sum(p[1] for p in before)
