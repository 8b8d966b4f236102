"""Fixtures for the service: a trained model saved once, and a fresh app with its own home and keys per test."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from api.app import create_app
from api.settings import Settings
from api.stores import open_keys
from crmdata.synthetic import generate_leads
from scoring.artifacts import save_trained
from scoring.spec import load_spec
from scoring.training import train

MODEL_NAME = "leadcast-lead-scoring"
# Few folds and trees keep the fixture quick; model quality is the scoring tests' business.
FAST = {"cv": 3, "max_iter": 30}


@pytest.fixture(scope="session")
def sample_leads() -> pd.DataFrame:
    """Return synthetic leads (with outcomes) to train on and to score."""
    return generate_leads(n=3000, seed=11).leads


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory: pytest.TempPathFactory, sample_leads: pd.DataFrame) -> Path:
    """Return a models folder holding version 1 of a trained model as champion (copy it before changing it)."""
    folder = tmp_path_factory.mktemp("trained-models")
    trained = train(sample_leads, spec=load_spec(), params=FAST).trained
    trained.version = "1"
    save_trained(trained, models_dir=folder, name=MODEL_NAME, aliases=["champion"])
    return folder


@dataclass
class Service:
    """A fresh app, its test client, its settings and one key per scope set."""

    app: Flask
    client: FlaskClient
    settings: Settings
    keys: dict[str, str]

    def headers(self, who: str = "all") -> dict[str, str]:
        """Return the Authorization header of the key named `who`."""
        return {"Authorization": f"Bearer {self.keys[who]}"}

    def post(self, path: str, body: Any, who: str = "all", **kwargs: Any) -> Any:
        """POST JSON with a key."""
        return self.client.post(path, json=body, headers=self.headers(who), **kwargs)

    def post_form(self, path: str, fields: dict[str, str], files: dict[str, tuple[bytes, str]],
                  who: str = "all") -> Any:
        """POST a multipart form with a key, its body encoded in memory."""
        # The test client spools a multipart body over 500 KB to a temporary file that it never closes (it
        # becomes wsgi.input); encoding the body here keeps every upload in memory and closed.
        values: dict[str, Any] = dict(fields)
        values.update({name: FileStorage(io.BytesIO(data), filename=filename, content_type="text/csv")
                       for name, (data, filename) in files.items()})
        boundary, body = encode_multipart(values)
        return self.client.post(path, data=body, content_type=f"multipart/form-data; boundary={boundary}",
                                headers=self.headers(who))

    def get(self, path: str, who: str = "all") -> Any:
        """GET with a key."""
        return self.client.get(path, headers=self.headers(who))


KEYS = {"all": ("score", "forecast", "outcomes", "admin"), "score": ("score",), "forecast": ("forecast",),
        "outcomes": ("outcomes",)}


@pytest.fixture
def make_service(tmp_path: Path, trained_dir: Path) -> Callable[..., Service]:
    """Return a builder of a fresh service; `trained=False` starts with no model (the cold-start rules)."""

    keys: dict[str, str] = {}

    def build(*, trained: bool = True, **overrides: Any) -> Service:
        models = tmp_path / "models"
        if trained and not models.exists():
            shutil.copytree(trained_dir, models)
        settings = Settings(home=tmp_path, models_dir=models, **overrides)
        if not keys:
            ring = open_keys(settings)
            with ring.store:
                keys.update({name: ring.create(name=name, scopes=scopes) for name, scopes in KEYS.items()})
        app = create_app(settings)
        return Service(app=app, client=app.test_client(), settings=settings, keys=keys)

    return build


@pytest.fixture
def service(make_service: Callable[..., Service]) -> Service:
    """Return a fresh service serving the trained model (version 1)."""
    return make_service()


def lead_records(leads: pd.DataFrame, n: int, *, start: int = 0) -> list[dict[str, Any]]:
    """Return `n` leads as JSON records the way a CRM would send them (no outcome, ISO dates, no NaN)."""
    part = leads.drop(columns=["converted", "converted_at"]).iloc[start:start + n]
    records = []
    for row in part.to_dict(orient="records"):
        clean = {}
        for k, v in row.items():
            if v is None or (isinstance(v, float) and v != v) or v is pd.NaT:
                continue
            clean[k] = v.isoformat() if isinstance(v, pd.Timestamp) else (bool(v) if isinstance(v, bool) else v)
        records.append(clean)
    return records


@pytest.fixture
def store_service(make_service: Callable[..., Service], database_url: str) -> Iterator[Service]:
    """Return a fresh service whose store is `database_url` (an SQLite file, then a new PostgreSQL database)."""
    from store import Store

    with Store(database_url) as store:  # a server database waits for `leadcast db upgrade`: run it first
        store.upgrade()
    service = make_service(database_url=database_url)
    yield service
    rt = service.app.extensions["leadcast"]
    if rt.prediction_log is not None:
        rt.prediction_log.close()
    rt.store.dispose()  # before the database is dropped: no connection left open
