from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from api.settings import Settings
from api.stores import open_keys
from scoring.spec import load_spec
from store import Store
from store.schema import predictions
from tests.api.conftest import Service, lead_records
from tests.api.servers import JsonClient, free_port, leadcast_server


def test_the_api_logs_each_score_with_only_the_spec_features(service: Service, sample_leads: pd.DataFrame) -> None:
    spec = load_spec()
    lead = {**lead_records(sample_leads, 1)[0], "lead_id": "L-log-1", "favourite_colour": "teal", "gender": "f"}
    assert "gender" in spec.protected  # the default spec's protected field, sent on purpose
    response = service.post("/v1/leads/score", {"lead": lead, "as_of": "2026-11-30T00:00:00"}, who="score")
    assert response.status_code == 200, response.get_json()
    scored = response.get_json()["scores"][0]
    rt = service.app.extensions["leadcast"]
    assert rt.prediction_log.flush(timeout=10)
    with rt.store.begin() as conn:
        row = conn.execute(sa.select(predictions)).one()
    assert (row.lead_id, row.probability, row.score, row.grade) == (
        "L-log-1", scored["probability"], scored["score"], scored["grade"])
    assert (row.model_name, row.model_version, row.model_kind) == ("leadcast-lead-scoring", "1", "trained")
    assert row.as_of == datetime(2026, 11, 30) and row.reasons == scored["reasons"]
    assert set(row.features) == set(spec.feature_columns) & set(lead)
    assert "gender" not in row.features and "favourite_colour" not in row.features and "lead_id" not in row.features
    rt.prediction_log.close()


def test_a_refused_request_logs_nothing_and_the_log_can_be_switched_off(
    make_service: Callable[..., Service], sample_leads: pd.DataFrame
) -> None:
    service = make_service(prediction_log=False)
    assert service.app.extensions["leadcast"].prediction_log is None
    lead = lead_records(sample_leads, 1)[0]
    assert service.post("/v1/leads/score", {"lead": lead}, who="score").status_code == 200
    with service.app.extensions["leadcast"].store.begin() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(predictions)).scalar_one() == 0


@pytest.mark.slow
def test_gunicorn_workers_log_every_score_and_flush_at_exit(
    tmp_path: Path, trained_dir: Path, sample_leads: pd.DataFrame
) -> None:
    # preload_app builds the app (and the log) in the master; each forked worker must start its own writer
    # thread and write what it holds when it stops.
    home = tmp_path / "home"
    shutil.copytree(trained_dir, home / "models")
    ring = open_keys(Settings(home=home))
    with ring.store:
        key = ring.create(name="crm", scopes=("score",))
    port = free_port()
    server = leadcast_server(tmp_path, port=port, extra_args=("--workers", "2"), env={
        "LEADCAST_HOME": str(home), "LEADCAST_MODEL_SOURCE": "files",
        "LEADCAST_RATE_LIMIT_PER_MINUTE": "600000", "LEADCAST_RATE_LIMIT_BURST": "10000"})
    records = lead_records(sample_leads, 40)
    with server:
        server.wait_ready("/readyz")
        for i, lead in enumerate(records):  # 40 requests of 1 lead, a new connection each (both workers serve)
            with JsonClient(port, headers={"Authorization": f"Bearer {key}"}) as client:
                status, _ = client.call("POST", "/v1/leads/score", {"lead": {**lead, "lead_id": f"G{i}"}})
                assert status == 200
        assert server.terminate(timeout=60) == 0
    with Store(f"sqlite:///{home / 'leadcast.db'}") as store, store.begin() as conn:
        ids = set(conn.execute(sa.select(predictions.c.lead_id)).scalars())
        workers = conn.execute(sa.select(sa.func.count(sa.distinct(predictions.c.scored_at)))).scalar_one()
    assert ids == {f"G{i}" for i in range(40)} and workers == 40
