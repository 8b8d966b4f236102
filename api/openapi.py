"""The OpenAPI 3.1 document, built from the same pydantic models that validate requests."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api.blueprints.forecast import FORM_FIELDS
from api.schemas import (
    COMPONENTS,
    RECORD_SCHEMAS,
    AccuracyQuery,
    DealFlowQuery,
    DealFlowResponse,
    ErasureResponse,
    ErrorResponse,
    ForecastRequest,
    ForecastResponse,
    LiveAccuracyResponse,
    MetricsRequest,
    MetricsResponse,
    OpportunitiesRequest,
    OutcomesRequest,
    OutcomesResponse,
    PageQuery,
    ScoreHistoryResponse,
    ScoreRequest,
    ScoreResponse,
    SnapshotsResponse,
    StoredForecastQuery,
    StoredForecastResponse,
    StoredMetricsQuery,
    SyncResponse,
)
from scoring.artifacts import MODEL_NAME

REF = COMPONENTS + "{model}"
JSON = "application/json"


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


# A small pipeline in the opportunity contract that the service accepts (one won, one lost, two open deals): the
# documented example of the forecast and metrics bodies, and what schemathesis sends as positive data.
EXAMPLE_OPPORTUNITIES: list[dict[str, Any]] = [
    {"opportunity_id": "OPP-1", "owner": "Ana", "product": "GTK 500", "amount": 12000, "created_at": "2026-01-05",
     "stage": "won", "closed_at": "2026-02-20", "won_amount": 12000},
    {"opportunity_id": "OPP-2", "owner": "Ana", "product": "GTK 500", "amount": 8000, "created_at": "2026-02-01",
     "stage": "lost", "closed_at": "2026-03-10"},
    {"opportunity_id": "OPP-3", "owner": "Ben", "product": "MG Special", "amount": 55, "created_at": "2026-05-11",
     "stage": "proposal"},
    {"opportunity_id": "OPP-4", "owner": "Ben", "product": "GTX Pro", "amount": 4800, "created_at": "2026-06-02",
     "stage": "qualification"},
]
FORECAST_EXAMPLE = {"opportunities": EXAMPLE_OPPORTUNITIES, "as_of": "2026-07-01", "horizon": "3M",
                    "simulations": 1000, "seed": 0}
METRICS_EXAMPLE = {"opportunities": EXAMPLE_OPPORTUNITIES, "as_of": "2026-07-01", "group_by": "owner"}


def _example(summary: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"examples": {"small_pipeline": {"summary": summary, "value": value}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {400: "Malformed JSON", 401: "No or invalid API key", 403: "The key lacks the scope",
            404: "No such model, saved forecast or route (a lead id that is `score`, `outcomes` or ends in "
                 "`/scores`)", 409: "The store holds no opportunities: PUT /v1/opportunities (or `leadcast sync "
                                    "opportunities FILE`) first", 413: "Body too large", 415: "Body is not JSON",
            422: "Invalid records (index and field named)", 429: "Rate limit exceeded (see Retry-After)",
            503: "No model loaded, the store is unavailable, or (forecasts) every forecast process is busy or the "
                 "forecast ran past its timeout; see Retry-After"}
    return {str(s): {"description": text[s], "content": {JSON: {"schema": _ref(ErrorResponse)}}} for s in statuses}


def _object(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": {"type": "object"}}}}


def _form_schema(defs: dict[str, Any]) -> dict[str, Any]:
    """Return the schema of a forecast upload: a CSV `file` and ForecastRequest's own schema of each form field."""
    properties = defs[ForecastRequest.__name__]["properties"]
    fields = {}
    for name in FORM_FIELDS:
        prop = dict(properties[name])
        # A form field is text or absent, never null: keep the value's branch of `X | None`.
        branches = [b for b in prop.pop("anyOf", []) if b != {"type": "null"}]
        if branches and prop.get("default", 0) is None:
            del prop["default"]
        fields[name] = {**prop, **(branches[0] if branches else {})}
    csv = {"type": "string", "contentMediaType": "text/csv",
           "description": "Opportunities as a CSV export with a header row, each row in the opportunity contract "
                          "(the `Opportunity` schema)."}
    return {"type": "object", "required": ["file", "as_of"], "properties": {"file": csv, **fields}}


def _query(model: type[BaseModel]) -> list[dict[str, Any]]:
    """Return the query parameters of a pydantic model (by alias), with their schemas."""
    schema = model.model_json_schema(ref_template=REF, by_alias=True)
    required = set(schema.get("required", []))
    return [{"name": name, "in": "query", "required": name in required, "schema": prop}
            for name, prop in schema["properties"].items()]


def build_openapi(*, max_batch: int, version: str) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of the service."""
    _, defs = models_json_schema(
        [(m, "validation") for m in (ScoreRequest, ScoreResponse, ForecastRequest, ForecastResponse, MetricsRequest,
                                          MetricsResponse, ErrorResponse, OpportunitiesRequest, SyncResponse,
                                          StoredForecastResponse, SnapshotsResponse, DealFlowResponse,
                                          LiveAccuracyResponse, OutcomesRequest, OutcomesResponse,
                                          ScoreHistoryResponse, ErasureResponse)],
        ref_template=REF,
    )
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
    body_errors = (400, 401, 403, 413, 415, 422, 429)
    # One champion per model name (the spec's); without `model`, the default spec's model answers.
    # The names check_model_name accepts: MODEL_NAME's characters, no "..".
    name_pattern = rf"(?!.*\.\.){MODEL_NAME.pattern}"
    model = {"name": "model", "in": "query", "required": False,
             "schema": {"type": "string", "minLength": 1, "maxLength": 100, "pattern": f"^{name_pattern}$"},
             "description": "Model name (its spec's `name`; GET /v1/models lists them); default the default spec's "
                            "model. An unknown name is a 404 listing the known names."}
    paths: dict[str, Any] = {
        "/v1/leads/score": {"post": {
            "summary": f"Score one lead or a batch of up to {max_batch:,}",
            "description": "Accepts `lead`, `leads`, or MLflow's `dataframe_records` / `dataframe_split`. "
                           "Unknown fields are ignored and listed in `warnings`; missing optional fields are scored "
                           "as missing. Either every lead is scored or none is.",
            "security": secured,
            "parameters": [{"name": "reasons", "in": "query", "required": False,
                            "schema": {"type": "boolean", "default": True}}, model],
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref(ScoreRequest)}}},
            "responses": {"200": {"description": "Scores in request order",
                                  "content": {JSON: {"schema": _ref(ScoreResponse)}}},
                          **_errors(*body_errors, 404, 503)},
        }},
        "/v1/leads/outcomes": {"post": {
            "summary": f"Record whether up to {max_batch:,} leads converted, and when (outcomes scope)",
            "description": "An idempotent upsert: a lead new to the store is inserted, a different outcome "
                           "replaces the stored one, the same outcome changes nothing. `converted_at` only for "
                           "converted leads. Either every outcome is recorded or none is.",
            "security": secured,
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref(OutcomesRequest)}}},
            "responses": {"200": {"description": "What the upsert did",
                                  "content": {JSON: {"schema": _ref(OutcomesResponse)}}},
                          **_errors(*body_errors, 503)},
        }},
        "/v1/leads/{lead_id}/scores": {"get": {
            "summary": "A lead's logged scores, newest first, a page at a time (score scope)",
            "description": "Reads what the prediction log has stored: a score made within the last fraction of a "
                           "second may still be queued. An unknown lead has an empty history.",
            "security": secured,
            "parameters": [
                {"name": "lead_id", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}},
                {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"},
                 "description": "The `next_cursor` of the previous page."}],
            "responses": {"200": {"description": "One page of the history",
                                  "content": {JSON: {"schema": _ref(ScoreHistoryResponse)}}},
                          **_errors(401, 403, 404, 422, 429, 503)},
        }},
        "/v1/leads/{lead_id}": {"delete": {
            "summary": "Erase a lead: its predictions, their features and its outcome (admin scope)",
            "description": "GDPR article 17. Every table keyed by the lead is cleared in one transaction; the "
                           "answer counts the rows removed. Safe to repeat (then every count is 0).",
            "security": secured,
            "parameters": [{"name": "lead_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "What was removed",
                                  "content": {JSON: {"schema": _ref(ErasureResponse)}}},
                          **_errors(401, 403, 404, 429, 503)},
        }},
        "/v1/opportunities": {"put": {
            "summary": "Upsert opportunity records into the stored pipeline (each change kept as an event)",
            "description": "Records in the opportunity data contract, validated like an export (a problem names "
                           "the record's index and the field). A change of stage, amount, expected close date, "
                           "owner or outcome is stored as an event, which builds the stage history. Stored deals "
                           "absent from the batch are kept. Either every record is stored or none is.",
            "security": secured,
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref(OpportunitiesRequest)}}},
            "responses": {"200": {"description": "What changed", "content": {JSON: {"schema": _ref(SyncResponse)}}},
                          **_errors(*body_errors, 503)},
        }},
        "/v1/forecasts": {"get": {
            "summary": "The forecasts made from the stored pipeline, newest first",
            "security": secured,
            "parameters": _query(PageQuery),
            "responses": {"200": {"description": "A page of saved forecasts",
                                  "content": {JSON: {"schema": _ref(SnapshotsResponse)}}},
                          **_errors(401, 403, 422, 429, 503)},
        }},
        "/v1/forecasts/deal-flow": {"get": {
            "summary": "Deal flow between two saved forecasts: new, won, lost, pushed, pulled in, amount changed",
            "security": secured,
            "parameters": _query(DealFlowQuery),
            "responses": {"200": {"description": "The deal flow",
                                  "content": {JSON: {"schema": _ref(DealFlowResponse)}}},
                          **_errors(401, 403, 404, 422, 429, 503)},
        }},
        "/v1/forecasts/accuracy": {"get": {
            "summary": "Live accuracy: saved forecasts against the revenue booked once their periods ended",
            "description": "With no saved forecast (an empty store among them) no period is scored: 200 with "
                           "`periods` 0 and no rows.",
            "security": secured,
            "parameters": _query(AccuracyQuery),
            "responses": {"200": {"description": "Scored periods and their MAPE, bias and coverage",
                                  "content": {JSON: {"schema": _ref(LiveAccuracyResponse)}}},
                          **_errors(401, 403, 422, 429, 503)},
        }},
        "/v1/forecast": {"get": {
            "summary": "Forecast the stored pipeline and its stored stage history (saved as a snapshot)",
            "description": "A store that holds no opportunities has nothing to forecast: 409, and nothing is saved, "
                           "until deals are sent with PUT /v1/opportunities. The query is checked first (422).",
            "security": secured,
            "parameters": _query(StoredForecastQuery),
            "responses": {"200": {"description": "The forecast and the id it was saved under",
                                  "content": {JSON: {"schema": _ref(StoredForecastResponse)}}},
                          **_errors(401, 403, 409, 422, 429, 503)},
        }, "post": {
            "summary": "Forecast revenue with P10/P50/P90 ranges, stuck deals and metrics",
            "security": secured,
            "requestBody": {"required": True, "content": {
                JSON: {"schema": _ref(ForecastRequest),
                       **_example("Four deals, forecast for three months", FORECAST_EXAMPLE)},
                "multipart/form-data": {"schema": _form_schema(defs["$defs"])},
            }},
            "responses": {"200": {"description": "The forecast", "content": {JSON: {"schema": _ref(ForecastResponse)}}},
                          **_errors(*body_errors, 503)},
        }},
        "/v1/pipeline/metrics": {"get": {
            "summary": "The brief's pipeline metrics of the stored pipeline, optionally grouped",
            "description": "`as_of` defaults to the day after the last date the stored pipeline mentions. An empty "
                           "store is an empty pipeline: 200 with zero counts and amounts, null rates and no groups, "
                           "as of `as_of` or else today (UTC).",
            "security": secured,
            "parameters": _query(StoredMetricsQuery),
            "responses": {"200": {"description": "The metrics", "content": {JSON: {"schema": _ref(MetricsResponse)}}},
                          **_errors(401, 403, 422, 429, 503)},
        }, "post": {
            "summary": "The brief's pipeline metrics, optionally grouped",
            "security": secured,
            "requestBody": {"required": True, "content": {JSON: {
                "schema": _ref(MetricsRequest), **_example("Four deals, grouped by owner", METRICS_EXAMPLE)}}},
            "responses": {"200": {"description": "The metrics", "content": {JSON: {"schema": _ref(MetricsResponse)}}},
                          **_errors(*body_errors)},
        }},
        "/v1/models": {"get": {
            "summary": "Every model name's champion (version and kind, or why none is served), the default first",
            "security": secured,
            "responses": {"200": _object("`default` (the default spec's model name) and `models`"),
                          **_errors(401, 403, 429)},
        }},
        "/v1/models/current": {"get": {
            "summary": "The model card of the champion being served for a model name",
            "security": secured,
            "parameters": [model],
            "responses": {"200": _object("The model card"), **_errors(401, 403, 404, 422, 429, 503)},
        }},
        "/v1/models/reload": {"post": {
            "summary": "Re-resolve the champion of a model name (default: of every name) and swap to it atomically "
                       "(admin)",
            "security": secured,
            "parameters": [model],
            "responses": {"200": _object("The model now served, and `models`: each name reloaded"),
                          **_errors(401, 403, 404, 422, 429, 503)},
        }},
        "/v1/models/monitoring": {"get": {
            "summary": "Model health on logged scores and matured outcomes: drift, calibration, alerts (admin or "
                       "monitor)",
            "security": secured,
            "parameters": [
                {"name": "model", "in": "query", "required": False,
                 "schema": {"type": "string", "minLength": 1, "maxLength": 200,
                            "pattern": f"^{name_pattern}(@[A-Za-z0-9._-]{{1,99}})?$"},
                 "description": "A model name (its champion; GET /v1/models lists them), NAME@VERSION, or a "
                                "version or alias (champion, challenger) of the default spec's model; default the "
                                "default spec's champion. An unknown name is a 404 listing the known names."},
                {"name": "since", "in": "query", "required": False,
                 "schema": {"anyOf": [{"type": "string", "format": f, "pattern": r"^(19[7-9][0-9]|20[0-9]{2})-"}
                                      for f in ("date", "date-time")]},
                 "description": "Only leads scored from this day (ISO 8601; a time is read too), from 1970"},
            ],
            "responses": {"200": _object("The health report"), **_errors(401, 403, 404, 422, 429, 503)},
        }},
        "/healthz": {"get": {"summary": "Process alive", "responses": {"200": _object("ok")}}},
        "/readyz": {"get": {"summary": "Model loaded", "responses": {"200": _object("ready"), **_errors(503)}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {
            "description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "leadcast", "version": version,
                 "description": "Lead scoring and revenue forecasting. Every error is "
                                "`{\"error\": {\"code\", \"message\", \"details\": [{\"loc\", \"msg\"}]}}`."},
        "paths": paths,
        "components": {"schemas": {**defs["$defs"], **RECORD_SCHEMAS},
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
