"""The OpenAPI document's forecast and metrics examples are accepted (issue 10 item 10): each documented example
body, sent as schemathesis builds it from the document, gets a 200 whose body matches the document."""

from __future__ import annotations

import pytest
import schemathesis
from schemathesis.specs.openapi.checks import ignored_auth

from api.openapi import build_openapi
from tests.api.conftest import Service

DOCUMENT = build_openapi(max_batch=10_000, version="0.0.0")
schema = schemathesis.openapi.from_dict(DOCUMENT)
JSON = "application/json"


@pytest.mark.parametrize("path", ["/v1/forecast", "/v1/pipeline/metrics"])
def test_the_documented_example_is_accepted(path: str, service: Service) -> None:
    media = DOCUMENT["paths"][path]["post"]["requestBody"]["content"][JSON]
    (example,) = media["examples"].values()
    operation = schema[path]["POST"]
    operation.schema.app = service.app
    case = operation.Case(body=example["value"], media_type=JSON)
    response = case.call(app=service.app, headers=service.headers())
    assert response.status_code == 200, response.text[:500]
    # Every default check, the response's schema among them, but the probe that the key is needed (this call
    # sends a valid key on purpose; tests/api covers 401 and 403).
    case.validate_response(response, excluded_checks=[ignored_auth])
