"""Issue 11 item 3: one score result type, the library's, which the API answers and documents."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

import api.schemas
from api.openapi import build_openapi
from scoring.scorer import LeadScore, Reason
from tests.api.conftest import Service


def test_the_api_documents_the_librarys_result_type_and_no_copy_of_it() -> None:
    assert not hasattr(api.schemas, "Reason") and api.schemas.LeadScore is LeadScore
    schemas = build_openapi(max_batch=10, version="0")["components"]["schemas"]
    # The response's field names are the contract: the same names as before the types were merged.
    assert list(schemas["LeadScore"]["properties"]) == ["id", "probability", "score", "grade", "reasons",
                                                        "warnings", "trend", "percentile"]
    assert schemas["LeadScore"]["required"] == ["id", "probability", "score", "grade"]
    assert list(schemas["Reason"]["properties"]) == ["feature", "text", "contribution"]


def test_a_served_score_is_the_result_type_as_json(service: Service) -> None:
    lead = {"lead_id": "c1", "web_visits": 4, "demo_requested": True, "created_at": "2026-06-01"}
    body: dict[str, Any] = service.post("/v1/leads/score", {"lead": lead}).json
    item = body["scores"][0]
    score = TypeAdapter(LeadScore).validate_python(item)
    assert score.as_json() == item  # the response item is exactly the type's JSON (trend and percentile too)
    assert score.reasons and all(isinstance(r, Reason) for r in score.reasons)
    assert [r.contribution > 0 for r in score.reasons] == sorted((r.contribution > 0 for r in score.reasons),
                                                                 reverse=True)
