"""Model health from the store: scores logged by the service, outcomes posted, then `GET /v1/models/monitoring`,
the Prometheus gauges, `leadcast monitor` (text, JSON, HTML) and the store's training set for the retrain loop."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from api.cli import cli
from scoring.artifacts import load_trained
from scoring.retraining import recalibrate
from store import Store
from store.monitoring import logged_scores, training_frame
from store.outcomes import Outcome, upsert_outcomes
from tests.api.conftest import Service, lead_records
from tests.drift import period

MATURITY_DAYS = 1 / 86_400  # one second: the leads scored in the test mature while it runs
MODEL = 'model_name="leadcast-lead-scoring",model_version="1"'  # the gauges' labels of the champion


@pytest.fixture
def drifted_service(make_service, database_url: str, sample_leads: pd.DataFrame) -> tuple[Service, pd.DataFrame]:  # type: ignore[no-untyped-def]
    with Store(database_url) as store:
        store.upgrade()
    service = make_service(database_url=database_url, outcome_maturity_days=MATURITY_DAYS)
    base = float(sample_leads["converted"].astype(bool).mean())
    leads = period(2, n=4000, base_rate=base)
    for start in range(0, len(leads), 1000):
        response = service.post("/v1/leads/score", {"leads": lead_records(leads, 1000, start=start)},
                                who="score")
        assert response.status_code == 200, response.get_json()
    rt = service.app.extensions["leadcast"]
    assert rt.prediction_log.flush(30)
    converted = leads.loc[leads["converted"].astype(bool), "lead_id"].astype(str)
    upsert_outcomes(rt.store, [Outcome(i, True) for i in converted], source="api")
    time.sleep(1.2)  # the unconverted leads pass the one-second maturity window: they count as not converted
    yield service, leads
    rt.prediction_log.close()
    rt.store.dispose()


def test_the_endpoint_reports_drift_calibration_and_sets_the_gauges(
        drifted_service: tuple[Service, pd.DataFrame]) -> None:
    service, leads = drifted_service
    assert service.get("/v1/models/monitoring", who="score").status_code == 403
    response = service.get("/v1/models/monitoring")
    assert response.status_code == 200, response.get_json()
    report = response.get_json()
    assert report["model"] == "leadcast-lead-scoring@1"
    assert report["leads_scored"] == len(leads) and report["leads_matured"] == len(leads)
    assert report["leads_converted"] == int(leads["converted"].astype(bool).sum())
    alerts = " | ".join(report["alerts"])
    assert "Website visits has shifted (PSI" in alerts and "calibration: these leads converted at" in alerts
    outcomes = report["outcomes"]
    assert [d["decile"] for d in outcomes["by_decile"]] == list(range(1, 11))
    assert outcomes["roc_auc_interval"][0] <= outcomes["roc_auc"] <= outcomes["roc_auc_interval"][1]
    assert sum(g["leads"] for g in outcomes["by_grade"]) == len(leads)
    metrics = service.client.get("/metrics").get_data(as_text=True)
    assert f'leadcast_feature_psi{{feature="web_visits",{MODEL}}}' in metrics
    assert f'leadcast_monitoring_alerts{{{MODEL}}} {float(len(report["alerts"]))}' in metrics
    assert f'leadcast_live_ece{{{MODEL}}} {outcomes["ece"]}' in metrics


def test_the_endpoint_refuses_bad_queries(drifted_service: tuple[Service, pd.DataFrame]) -> None:
    service, _ = drifted_service
    bad_since = service.get("/v1/models/monitoring?since=yesterday")
    assert bad_since.status_code == 422 and "since must be an ISO 8601 date" in bad_since.get_json()["error"]["message"]
    unknown = service.get("/v1/models/monitoring?model=leadcast-lead-scoring@9")
    assert unknown.status_code == 404 and "/" not in unknown.get_json()["error"]["message"]  # no server path
    assert service.get("/v1/models/monitoring?extra=1").status_code == 422
    # every lead was scored before now: a window starting tomorrow holds none
    empty = service.get("/v1/models/monitoring?since=2099-01-01").get_json()
    assert empty["leads_scored"] == 0 and empty["warnings"] == ["no score of version 1 is logged in this window"]


def test_leadcast_monitor_from_the_store_writes_json_and_html(
        drifted_service: tuple[Service, pd.DataFrame], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    service, leads = drifted_service
    settings = service.settings
    monkeypatch.setenv("LEADCAST_HOME", str(settings.home))
    monkeypatch.setenv("LEADCAST_MODELS_DIR", str(settings.models_dir))
    monkeypatch.setenv("LEADCAST_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("LEADCAST_OUTCOME_MATURITY_DAYS", str(MATURITY_DAYS))
    result = CliRunner().invoke(cli, ["monitor", "--model", "leadcast-lead-scoring@1", "--since", "2000-01-01",
                                      "--json", str(tmp_path / "h.json"), "--html", str(tmp_path / "h.html")])
    assert result.exit_code == 0, result.output
    assert f"model leadcast-lead-scoring@1: {len(leads):,} leads scored" in result.output
    assert "ALERT: Website visits has shifted (PSI" in result.output
    report = json.loads((tmp_path / "h.json").read_text())
    assert report["features"][0]["column"] == "web_visits"
    page = (tmp_path / "h.html").read_text(encoding="utf-8")
    assert page.count('<figure class="chart"') == 2 and "Website visits has shifted" in page
    wrong = CliRunner().invoke(cli, ["monitor", "--model", "other-model@1"])
    assert wrong.exit_code == 2 and "no model named 'other-model'" in wrong.output


def test_the_store_gives_the_loop_its_matured_leads(drifted_service: tuple[Service, pd.DataFrame]) -> None:
    service, leads = drifted_service
    rt = service.app.extensions["leadcast"]
    champion = load_trained(None, models_dir=service.settings.models_dir)
    now = datetime.now(UTC)
    frame = training_frame(rt.store, spec=champion.spec, since=None, now=now, maturity_days=MATURITY_DAYS)
    assert len(frame) == len(leads)
    assert (frame["converted"] == "true").sum() == int(leads["converted"].astype(bool).sum())
    # the logged web visits are the drifted ones the service was sent
    logged = frame.set_index("lead_id")["web_visits"].astype(float)
    sent = leads.set_index("lead_id")["web_visits"].astype(float)
    assert np.allclose(logged.loc[sent.index].to_numpy(), sent.to_numpy())
    # a maturity window of a year: no lead has matured unless it converted
    young = logged_scores(rt.store, model_name=None, model_version="1", since=None, now=now, maturity_days=365)
    assert int(np.isnan(young.scores["converted"]).sum()) == int((~leads["converted"].astype(bool)).sum())
    candidate = recalibrate(frame, champion=champion, rng=np.random.default_rng(0))
    assert candidate.decision.promoted and candidate.gate is not None and candidate.gate.interval[1] < 0


def _wait_for(predicate, *, seconds: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:  # bounded in time; each round one cheap check
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_the_gauges_refresh_in_the_background_and_survive_a_store_that_is_down(
        make_service, database_url: str, sample_leads: pd.DataFrame, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    from api.monitoring import HealthRefresh

    with Store(database_url) as store:
        store.upgrade()
    service = make_service(database_url=database_url, outcome_maturity_days=MATURITY_DAYS,
                           monitoring_refresh_seconds=0.5)
    rt = service.app.extensions["leadcast"]
    leads = period(2, n=600, base_rate=float(sample_leads["converted"].astype(bool).mean()))
    try:
        assert service.post("/v1/leads/score", {"leads": lead_records(leads, 600)}, who="score").status_code == 200
        assert rt.prediction_log.flush(30)
        # the score request started the refresh; /v1/models/monitoring is never called in this test
        assert _wait_for(lambda: f'leadcast_feature_psi{{feature="web_visits",{MODEL}}}'
                         in service.client.get("/metrics").get_data(as_text=True), seconds=30)
        metrics = service.client.get("/metrics").get_data(as_text=True)
        assert f'leadcast_score_psi{{{MODEL}}}' in metrics
        assert f'leadcast_monitoring_alerts{{{MODEL}}}' in metrics

        # a store that is down: nothing listens on port 1; each failure is logged and the next one is tried
        down = Store("postgresql+psycopg://leadcast@127.0.0.1:1/leadcast")
        refresh = HealthRefresh(service.settings, down, rt.metrics, every=0.2)
        with caplog.at_level("WARNING", logger="leadcast.api.monitoring"):
            refresh.ensure_started()
            assert _wait_for(lambda: refresh.failures >= 2, seconds=30)
            assert "model-health gauges not refreshed (trying again in 0s)" in caplog.text
            refresh.store = rt.store  # the store is back: the next refresh succeeds
            assert _wait_for(lambda: refresh.runs > refresh.failures, seconds=30)
        assert refresh.stop()
        down.dispose()
    finally:
        for hook in service.app.before_request_funcs[None]:  # the service's own refresh, before its store goes
            if isinstance(getattr(hook, "__self__", None), HealthRefresh):
                assert hook.__self__.stop()
        rt.prediction_log.close()
        rt.store.dispose()


def test_no_refresh_thread_when_the_setting_is_0(tmp_path: Path) -> None:
    from flask import Flask

    from api.metrics import Metrics
    from api.monitoring import install_health_refresh
    from api.settings import Settings

    settings = Settings(home=tmp_path, monitoring_refresh_seconds=0)
    app = Flask("off")
    refresh = install_health_refresh(app, settings=settings, store=Store(settings.resolved_database_url),
                                     metrics=Metrics())
    refresh.ensure_started()
    assert refresh._pid is None and app.before_request_funcs == {}  # no thread, no hook
