"""The OpenAPI document against the running app: property-based requests from the spec (schemathesis)."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api.openapi import build_openapi
from tests.api.conftest import Service

# The document the service builds for itself; the first test proves the app serves exactly this one.
DOCUMENT = build_openapi(max_batch=10_000, version="0.0.0")
schema = schemathesis.openapi.from_dict(DOCUMENT)


def test_the_app_serves_the_document_under_test(service: Service) -> None:
    served = service.client.get("/openapi.json").json
    assert {**served, "info": None} == {**DOCUMENT, "info": None}


@pytest.mark.slow
@schema.parametrize()
# Derandomised so CI runs the same examples every time; widen max_examples locally to search further (400 per
# operation, twice, found nothing beyond what is fixed).
@settings(max_examples=100, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_response_matches_the_document_and_none_is_a_500(case: Any, service: Service) -> None:
    # Bind the document to this test's fresh app: every request, probes included, goes through WSGI.
    case.operation.schema.app = service.app
    # Every check runs but one: "schema-valid data is accepted" cannot hold, because records are validated
    # against the CRM data contract (types per field, known stages, close after create), which JSON Schema
    # does not express; those refusals are the documented 422 with the record and field named.
    case.call_and_validate(app=service.app, headers=service.headers(), excluded_checks=[positive_data_acceptance])
