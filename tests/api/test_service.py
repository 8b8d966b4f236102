"""Health, readiness, Prometheus metrics, the OpenAPI document and the error shape of unknown routes."""

from __future__ import annotations

import logging
import re

import pandas as pd
import pytest

from tests.api.conftest import Service, lead_records


def test_health_and_readiness_need_no_key(service: Service) -> None:
    assert service.client.get("/healthz").json == {"status": "ok"}
    ready = service.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json["model"]["version"] == "1"


def test_unknown_routes_and_methods_use_the_error_shape(service: Service) -> None:
    missing = service.client.get("/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.json == {"error": {"code": "not_found", "message": "no such resource", "details": []}}
    wrong = service.client.get("/v1/leads/score")
    assert (wrong.status_code, wrong.json["error"]["code"]) == (405, "method_not_allowed")
    assert "POST" in wrong.headers["Allow"]


def test_metrics_count_requests_latency_and_grades(service: Service, sample_leads: pd.DataFrame) -> None:
    records = lead_records(sample_leads, 5)
    body = service.post("/v1/leads/score", {"leads": records}).json
    service.client.post("/v1/leads/score", json={"lead": {}})  # 401
    text = service.client.get("/metrics").get_data(as_text=True)
    assert 'leadcast_requests_total{endpoint="/v1/leads/score",method="POST",status="200"} 1.0' in text
    assert 'leadcast_requests_total{endpoint="/v1/leads/score",method="POST",status="401"} 1.0' in text
    assert 'leadcast_request_seconds_count{endpoint="/v1/leads/score"} 2.0' in text
    grades = pd.Series([s["grade"] for s in body["scores"]]).value_counts()
    for grade, count in grades.items():
        assert (f'leadcast_scores_total{{grade="{grade}",model_kind="trained",model_version="1"}} '
                f'{float(count)}') in text


def test_metrics_keep_counting_a_label_set_after_its_first_request(service: Service,
                                                                  sample_leads: pd.DataFrame) -> None:
    # Each label set's series is looked up once and kept: the second and third requests must still count.
    records = lead_records(sample_leads, 2)
    grades = [s["grade"] for s in service.post("/v1/leads/score", {"leads": records}).json["scores"]]
    for _ in range(2):
        service.post("/v1/leads/score", {"leads": records})
    text = service.client.get("/metrics").get_data(as_text=True)
    assert 'leadcast_requests_total{endpoint="/v1/leads/score",method="POST",status="200"} 3.0' in text
    assert 'leadcast_request_seconds_count{endpoint="/v1/leads/score"} 3.0' in text
    for grade in set(grades):  # 3 requests x the leads of that grade in each
        assert (f'leadcast_scores_total{{grade="{grade}",model_kind="trained",model_version="1"}} '
                f'{3.0 * grades.count(grade)}') in text


def test_logs_name_the_key_but_never_hold_it_or_lead_fields(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    lead = {"lead_id": "L-secret", "country": "Atlantis", "age": 41}
    with caplog.at_level(logging.INFO, logger="leadcast.api"):
        service.post("/v1/leads/score", {"lead": lead}, who="score")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "POST /v1/leads/score 200" in logged and "key=score" in logged
    for secret in (service.keys["score"], "L-secret", "Atlantis"):
        assert secret not in logged


def test_openapi_describes_every_route_and_its_errors(service: Service) -> None:
    doc = service.client.get("/openapi.json").json
    assert doc["openapi"].startswith("3.1")
    routes = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    # Flask's <path:lead_id> is OpenAPI's {lead_id}
    served = {(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(rule)), m.lower()) for rule in service.app.url_map.iter_rules()
              for m in (rule.methods or set()) - {"HEAD", "OPTIONS"} if rule.endpoint != "static"}
    # The document describes the API; its own two routes (the document and the page) are not part of it.
    assert routes == served - {("/openapi.json", "get"), ("/docs", "get")}
    score = doc["paths"]["/v1/leads/score"]["post"]
    assert {"200", "400", "401", "403", "413", "415", "422", "429", "503"} <= set(score["responses"])
    assert score["security"] == [{"bearer": []}]
    page = service.client.get("/docs")
    assert page.status_code == 200 and "openapi.json" in page.get_data(as_text=True)


def test_the_docs_page_is_rendered_from_its_template(service: Service) -> None:
    doc = service.client.get("/openapi.json").json
    page = service.client.get("/docs")
    text = page.get_data(as_text=True)
    assert page.mimetype == "text/html"
    assert f"<title>leadcast API {doc['info']['version']}</title>" in text and "<h1>leadcast API</h1>" in text
    assert "{{" not in text and "{#" not in text  # every template tag was rendered
    assert "<script src" not in text and "http" not in text  # nothing loaded from anywhere
