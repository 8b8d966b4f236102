"""The OpenAPI document against the running app: property-based requests from the spec (schemathesis).

Every check runs, `positive_data_acceptance` among them: a request valid by the document is answered 2xx (or a
documented 404 for an id that names nothing). The document states the contract (api/schemas.py generates it from
the pydantic models and crmdata's contracts); what JSON Schema cannot state is written in the schemas'
descriptions, and `conformed` applies exactly those rules to each schema-valid case before it is sent:
- an `opportunity_id` is unique within a request; `closed_at` and `stage_entered_at` are not before `created_at`;
- a forecast's `as_of` is after the close of a won deal (it learns deal sizes and win rates), of the posted
  deals or of the stored ones;
- an upload's CSV rows follow the Opportunity schema; a `dataframe_split` row holds one value per column, each
  by its column's Lead schema;
- `stages`, when given, names every stage the records use, in its kind (open, won, lost), each name once;
- a score history `cursor` is one the service returned.
Simulations are capped so that the run stays short (a cost, not a contract: max_forecast_cells is tested in
tests/reliability).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from jsonschema import Draft202012Validator, FormatChecker
from schemathesis.specs.openapi.checks import negative_data_rejection

from api.openapi import EXAMPLE_OPPORTUNITIES, build_openapi
from api.schemas import COMPONENTS
from crmdata.stages import DEFAULT_STAGES
from crmdata.values import PIPELINE_LAST_DAY
from tests.api.conftest import Service, lead_records

# The document the service builds for itself; the first test proves the app serves exactly this one.
DOCUMENT = build_openapi(max_batch=10_000, version="0.0.0")
schema = schemathesis.openapi.from_dict(DOCUMENT)
LAST_DAY = f"{PIPELINE_LAST_DAY:%Y-%m-%d}"
FIRST_WON_DAY = min(r["closed_at"] for r in EXAMPLE_OPPORTUNITIES if r["stage"] == "won")
EXAMPLE_CSV = pd.DataFrame(EXAMPLE_OPPORTUNITIES).to_csv(index=False)
MAX_SIMULATIONS = 200  # per generated forecast: 100 examples stay a few seconds each at most


def test_the_app_serves_the_document_under_test(service: Service) -> None:
    served = service.client.get("/openapi.json").json
    assert {**served, "info": None} == {**DOCUMENT, "info": None}


def _valid(component: str, value: Any) -> bool:
    root = {"$ref": COMPONENTS + component, "components": DOCUMENT["components"]}
    return Draft202012Validator(root, format_checker=FormatChecker()).is_valid(value)


DEAL = {"opportunity_id": "A", "owner": "Ann", "product": "X", "created_at": "2026-01-01", "stage": "won",
        "closed_at": "2026-01-11"}


@pytest.mark.parametrize(("component", "value"), [
    # Each was valid by the document and refused by the service (schemathesis' positive-data check).
    ("ForecastRequest", {"opportunities": [DEAL], "as_of": "2026-07-01", "target": -1}),  # "ge", not "minimum"
    ("MetricsRequest", {"opportunities": [DEAL], "spend": -1}),
    ("ForecastRequest", {"opportunities": [DEAL], "as_of": "2026-07-01", "simulations": 99}),
    ("ForecastRequest", {"opportunities": [DEAL], "as_of": "2026-07-01", "horizon": "0M"}),
    ("MetricsRequest", {"opportunities": [{}]}),  # an opportunity was any object
    ("MetricsRequest", {"opportunities": [{**DEAL, "stage": "signed"}]}),
    ("MetricsRequest", {"opportunities": [{**DEAL, "closed_at": None}]}),  # won without a close date
    ("MetricsRequest", {"opportunities": [{**DEAL, "stage": "proposal"}]}),  # open with a close date
    ("MetricsRequest", {"opportunities": [{**DEAL, "amount": -5}]}),
    ("MetricsRequest", {"opportunities": [{**DEAL, "amount": 1.7e308}]}),
    ("MetricsRequest", {"opportunities": [{**DEAL, "created_at": "1850-01-01"}]}),
    ("MetricsRequest", {"opportunities": [DEAL], "as_of": "2150-01-01"}),
    ("ScoreRequest", {"lead": None, "leads": None}),  # none of the shapes
    ("ScoreRequest", {"lead": {"lead_id": "a"}, "leads": [{"lead_id": "b"}]}),  # two of them
    ("ScoreRequest", {"lead": {"lead_id": "a", "age": -3}}),
    ("OutcomesRequest", {"outcomes": [{"lead_id": "a", "converted": False, "converted_at": "2026-01-01T00:00:00Z"}]}),
    # an open deal with no day and no as_of: "the pipeline has no dates to measure from" (422)
    ("MetricsRequest", {"opportunities": [{"opportunity_id": "A", "owner": "Ann", "product": "X",
                                           "stage": "closing", "created_at": None}]}),
])
def test_the_document_refuses_what_the_service_refuses(component: str, value: Any) -> None:
    assert not _valid(component, value)


def _query_schema(path: str, name: str) -> dict[str, Any]:
    [parameter] = [p for p in DOCUMENT["paths"][path]["get"]["parameters"] if p["name"] == name]
    return dict(parameter["schema"])


@pytest.mark.parametrize(("path", "value", "valid"), [
    # GET /v1/models/monitoring?model=+\U000edc55 was valid by the document (any string) and a 422 by the service
    ("/v1/models/monitoring", "+\U000edc55", False),
    ("/v1/models/monitoring", "a..b", False),  # check_model_name refuses ".."
    ("/v1/models/monitoring", "web-signups@", False),
    ("/v1/models/monitoring", "web-signups@champion", True),
    ("/v1/models/monitoring", "3", True),
    ("/v1/models/current", "a..b", False),
    ("/v1/models/current", "web-signups@3", False),  # the champion of a name: no version here
    ("/v1/models/current", "web-signups", True),
])
def test_the_model_parameter_is_documented_as_the_service_reads_it(path: str, value: str, valid: bool) -> None:
    assert Draft202012Validator(_query_schema(path, "model")).is_valid(value) is valid


def test_the_documented_examples_are_valid_by_the_document() -> None:
    from api.openapi import FORECAST_EXAMPLE, METRICS_EXAMPLE

    assert _valid("ForecastRequest", FORECAST_EXAMPLE) and _valid("MetricsRequest", METRICS_EXAMPLE)
    assert _valid("ScoreRequest", {"lead": {"lead_id": "a", "age": 30, "created_at": "2026-01-01T00:00:00Z"}})


@dataclass
class Filled:
    """A service with a filled store, and a score history cursor it returned."""

    service: Service
    cursor: str


@pytest.fixture
def filled(make_service: Callable[..., Service], sample_leads: Any) -> Filled:
    """Return a service whose store holds four deals, a saved forecast and logged scores, so GETs answer 200."""
    service = make_service(forecast_processes=0)
    assert service.client.put("/v1/opportunities", json={"opportunities": EXAMPLE_OPPORTUNITIES},
                              headers=service.headers()).status_code == 200
    assert service.get("/v1/forecast?as_of=2026-07-01&simulations=100").status_code == 200
    leads = lead_records(sample_leads, 3)
    rt = service.app.extensions["leadcast"]
    for _ in range(2):  # two scores of each lead: its history has a second page
        assert service.post("/v1/leads/score", {"leads": leads}).status_code == 200
        assert rt.prediction_log is not None
        rt.prediction_log.flush(timeout=10)
    cursor = service.get(f"/v1/leads/{leads[0]['lead_id']}/scores?limit=1").json["next_cursor"]
    assert cursor is not None
    return Filled(service, cursor)


def _unique_ids(records: list[dict[str, Any]]) -> None:
    seen: set[str] = set()
    for i, record in enumerate(records):
        key = str(record["opportunity_id"]).strip()
        if key in seen:
            record["opportunity_id"] = f"{record['opportunity_id']}~{i}"
        seen.add(str(record["opportunity_id"]).strip())


def _dates_in_order(records: list[dict[str, Any]]) -> None:
    for record in records:
        created = record.get("created_at")
        later = [record[k] for k in ("closed_at", "stage_entered_at") if isinstance(record.get(k), str)]
        if isinstance(created, str) and later:
            record["created_at"] = min([created, *later])  # ISO days order as text


def _stages_named(stages: dict[str, list[str]]) -> dict[str, list[str]]:
    """Return `stages` with every default stage in its kind and no name twice (a request's records use them)."""
    defaults = {"open": DEFAULT_STAGES.open, "won": DEFAULT_STAGES.won, "lost": DEFAULT_STAGES.lost}
    taken = {name for names in defaults.values() for name in names}
    out: dict[str, list[str]] = {}
    for kind, names in defaults.items():
        own = [n for n in dict.fromkeys(stages[kind]) if n not in taken]
        taken.update(own)
        out[kind] = [*names, *own]
    return out


def _as_of_after(body: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """Move a forecast's as_of after a won deal's close, when it is not (the forecast learns from won deals)."""
    won = [r for r in records if r.get("stage") in DEFAULT_STAGES.won]
    first = min(won, key=lambda r: r["closed_at"])
    if first["closed_at"] >= LAST_DAY:
        first["created_at"] = first["closed_at"] = min(first["created_at"], "2099-12-30")
    if body["as_of"] <= first["closed_at"]:
        body["as_of"] = LAST_DAY


def conformed(case: Any, cursor: str) -> None:
    """Apply to a schema-valid case the documented rules JSON Schema cannot state (listed in the module doc)."""
    if not case.meta.generation.mode.is_positive:
        return
    if case.media_type == "multipart/form-data" and isinstance(case.body, dict):
        # The CSV's rows follow the Opportunity schema, which a text field cannot state: send the example's.
        case.body["file"] = EXAMPLE_CSV
        _as_of_after(case.body, [dict(r) for r in EXAMPLE_OPPORTUNITIES])
        if isinstance(case.body.get("simulations"), int):
            case.body["simulations"] = min(case.body["simulations"], MAX_SIMULATIONS)
        return
    body = case.body if isinstance(case.body, dict) else None
    split = body.get("dataframe_split") if body is not None else None
    if isinstance(split, dict):
        # Each value follows the Lead schema of its column, and each row has one per column: null fits any
        # column but the id, which MLflow shapes may leave out (the row's position is used).
        width = len(split["columns"])
        split["data"] = [[None] * width for _ in split["data"]]
    if body is not None and isinstance(body.get("opportunities"), list):
        records = body["opportunities"]
        _unique_ids(records)
        _dates_in_order(records)
        if isinstance(body.get("stages"), dict):
            body["stages"] = _stages_named(body["stages"])
        if case.path == "/v1/forecast":
            _as_of_after(body, records)
            if isinstance(body.get("simulations"), int):
                body["simulations"] = min(body["simulations"], MAX_SIMULATIONS)
    if isinstance(case.query, dict):
        if case.path == "/v1/forecast":
            if isinstance(case.query.get("simulations"), int):
                case.query["simulations"] = min(case.query["simulations"], MAX_SIMULATIONS)
            if isinstance(case.query.get("as_of"), str) and case.query["as_of"] <= FIRST_WON_DAY:
                case.query["as_of"] = LAST_DAY
        if "cursor" in case.query:
            case.query["cursor"] = cursor


# The record schemas state what a record must be to be accepted; the value layer also reads more liberally than
# that (a number as text, blank text as missing, a date with a time), as CRM exports need. So a negative case
# whose only fault is inside a record may be accepted: the negative check is not applied to those.
RECORDS = {"opportunities": "Opportunity", "stage_history": "StageChange", "lead": "Lead", "leads": "Lead",
           "dataframe_records": "Lead"}
VALIDATORS = {name: Draft202012Validator({"$ref": COMPONENTS + name, "components": DOCUMENT["components"]},
                                         format_checker=FormatChecker()) for name in set(RECORDS.values())}


def _fault_inside_a_record(case: Any) -> bool:
    """Return whether a negative case's body holds a record its schema refuses."""
    if case.meta.generation.mode.is_positive or not isinstance(case.body, dict):
        return False
    for key, name in RECORDS.items():
        value = case.body.get(key)
        items = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
        if any(not VALIDATORS[name].is_valid(item) for item in items):
            return True
    return False


@pytest.mark.slow
@schema.parametrize()
# Derandomised so CI runs the same examples every time; widen max_examples locally to search further.
@settings(max_examples=100, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_response_matches_the_document_and_none_is_a_500(case: Any, filled: Filled) -> None:
    service = filled.service
    # Bind the document to this test's fresh app: every request, probes included, goes through WSGI.
    case.operation.schema.app = service.app
    conformed(case, filled.cursor)
    lax = [negative_data_rejection] if _fault_inside_a_record(case) else []
    case.call_and_validate(app=service.app, headers=service.headers(), excluded_checks=lax)
