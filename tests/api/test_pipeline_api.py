"""PUT /v1/opportunities, GET /v1/forecast and /v1/pipeline/metrics of the stored pipeline, GET /v1/forecasts,
deal flow and live accuracy over HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest

from api.app import create_app
from api.openapi import build_openapi
from crmdata.synthetic import generate_opportunities
from store import Store
from store.pipeline import opportunity_events_of
from tests.api.conftest import Service


def records_of(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Return rows as the JSON a CRM would send (ISO dates, no NaN)."""
    return json.loads(frame.to_json(orient="records", date_format="iso"))


@pytest.fixture(scope="module")
def pipeline() -> pd.DataFrame:
    return generate_opportunities(n=400, seed=3).opportunities


def put(service: Service, body: Any, who: str = "forecast") -> Any:
    return service.client.put("/v1/opportunities", json=body, headers=service.headers(who))


FORECAST = "/v1/forecast?as_of=2026-07-01&horizon=3M&seed=5&simulations=2000&group_by=owner&target=250000"


def test_a_stored_forecast_answers_what_the_posted_one_does_and_is_saved(service: Service,
                                                                        pipeline: pd.DataFrame) -> None:
    records = records_of(pipeline)
    stored = put(service, {"opportunities": records, "observed_at": "2026-07-01T00:00:00Z"})
    assert stored.status_code == 200, stored.json
    assert {k: stored.json[k] for k in ("received", "created", "updated", "unchanged", "events")} == \
        {"received": 400, "created": 400, "updated": 0, "unchanged": 0, "events": 400}
    from_store = service.get(FORECAST, who="forecast")
    assert from_store.status_code == 200, from_store.json
    posted = service.post("/v1/forecast", {"opportunities": records, "as_of": "2026-07-01", "horizon": "3M",
                                           "seed": 5, "simulations": 2000, "group_by": "owner", "target": 250_000},
                          who="forecast")
    body = dict(from_store.json)
    assert body.pop("snapshot_id") == 1
    assert body == posted.json  # same data, same numbers
    listed = service.get("/v1/forecasts", who="forecast").json
    assert listed["total"] == 1 and listed["forecasts"][0]["id"] == 1  # a posted forecast is not saved
    saved = listed["forecasts"][0]
    assert (saved["as_of"], saved["horizon"], saved["group_by"], saved["simulations"], saved["open_deals"]) == \
        ("2026-07-01", "3M", "owner", 2000, posted.json["model"]["open_deals"])
    assert [p["p50"] for p in saved["periods"]] == [p["p50"] for p in posted.json["periods"]]
    assert [g["p90"] for g in saved["groups"]] == [g["p90"] for g in posted.json["groups"]]
    metrics = service.get("/v1/pipeline/metrics?as_of=2026-07-01&group_by=owner", who="forecast")
    posted_metrics = service.post("/v1/pipeline/metrics", {"opportunities": records, "as_of": "2026-07-01",
                                                           "group_by": "owner"}, who="forecast")
    assert metrics.status_code == 200 and metrics.json == posted_metrics.json


def test_an_invalid_record_names_its_index_and_field_and_nothing_is_stored(service: Service,
                                                                          pipeline: pd.DataFrame) -> None:
    records = records_of(pipeline.head(5))
    records[1]["amount"] = "lots"
    records[3]["stage"] = "negotiation"
    response = put(service, {"opportunities": records})
    assert response.status_code == 422
    locs = {tuple(d["loc"]): d["msg"] for d in response.json["error"]["details"]}
    assert locs[("opportunities", 1, "amount")].startswith("is not a number")
    assert locs[("opportunities", 3, "stage")].startswith("unknown stage")
    empty = service.get("/v1/forecast?as_of=2026-07-01", who="forecast")
    assert empty.status_code == 409 and "the store holds no opportunities" in empty.json["error"]["message"]


@pytest.mark.parametrize("query, field", [("as_of=someday", "as_of"), ("horizon=3X", "horizon"),
                                          ("simulations=5", "simulations"), ("group_by=colour", "group_by"),
                                          ("colour=blue", "colour")])
def test_bad_query_parameters_are_422_naming_them(service: Service, pipeline: pd.DataFrame, query: str,
                                                  field: str) -> None:
    put(service, {"opportunities": records_of(pipeline)})
    response = service.get(f"/v1/forecast?{query}", who="forecast")
    assert response.status_code == 422, response.json
    assert field in json.dumps(response.json["error"])


def test_the_pipeline_needs_the_forecast_scope(service: Service, pipeline: pd.DataFrame) -> None:
    assert put(service, {"opportunities": records_of(pipeline.head(3))}, who="score").status_code == 403
    assert service.get("/v1/forecast", who="score").status_code == 403
    assert service.get("/v1/forecasts", who="score").status_code == 403


def test_deal_flow_between_two_forecasts_over_http(service: Service, pipeline: pd.DataFrame) -> None:
    records = records_of(pipeline)
    put(service, {"opportunities": records, "observed_at": "2026-06-30T00:00:00"})
    first = service.get("/v1/forecast?as_of=2026-07-01&horizon=1M&simulations=500", who="forecast").json
    end = pd.Timestamp(first["total"]["end"])  # 2026-08-01
    frame = pipeline.assign(row=range(len(pipeline)))
    inside = frame[(frame["outcome"] == "open") & (frame["expected_close_date"] < end)]
    a, b, c = (int(r) for r in inside["row"].iloc[:3])
    records[a]["amount"] = records[a]["amount"] + 1000  # amount changed
    was = pd.Timestamp(records[b]["expected_close_date"]).isoformat()
    records[b]["expected_close_date"] = "2026-09-15"  # pushed past the end of July
    records[c].update(stage="won", outcome="won", closed_at="2026-07-10", won_amount=records[c]["amount"])  # won
    new = dict(records[c], opportunity_id="NEW-1", stage="proposal", outcome="open", closed_at=None, won_amount=None)
    changed = put(service, {"opportunities": [records[a], records[b], records[c], new],
                            "observed_at": "2026-07-15T00:00:00"}).json
    assert (changed["created"], changed["updated"], changed["absent"]) == (1, 3, 397)
    assert changed["changes"] == {"stage": 1, "amount": 1, "expected_close_date": 1, "owner": 0, "outcome": 1}
    # A date change is kept as ISO text (regression: numpy's datetime64[ns] once listed as integer nanoseconds).
    events = opportunity_events_of(service.app.extensions["leadcast"].store, records[b]["opportunity_id"])
    assert [(e["field"], e["new_value"], e["changed_at"]) for e in events][-1] == \
        ("expected_close_date", "2026-09-15T00:00:00", datetime(2026, 7, 15))
    assert events[-1]["old_value"] == was
    second = service.get("/v1/forecast?as_of=2026-07-15&horizon=1M&simulations=500", who="forecast").json
    response = service.get(f"/v1/forecasts/deal-flow?from={first['snapshot_id']}&to={second['snapshot_id']}&ids=true",
                           who="forecast")
    assert response.status_code == 200, response.json
    flow = response.json
    assert flow["period_end"] == "2026-08-01"
    assert {k: flow[k]["deals"] for k in ("new", "won", "lost", "pushed", "pulled_in", "amount_changed")} == \
        {"new": 1, "won": 1, "lost": 0, "pushed": 1, "pulled_in": 0, "amount_changed": 1}
    assert flow["amount_changed"]["amount"] == 1000
    assert flow["won"]["opportunity_ids"] == [records[c]["opportunity_id"]]
    to_now = service.get(f"/v1/forecasts/deal-flow?from={first['snapshot_id']}", who="forecast").json
    assert "to_id" not in to_now and to_now["won"]["deals"] == 1
    missing = service.get("/v1/forecasts/deal-flow?from=99", who="forecast")
    assert missing.status_code == 404 and "no saved forecast has id 99" in missing.json["error"]["message"]


def test_live_accuracy_scores_saved_forecasts_once_their_periods_end(service: Service,
                                                                    pipeline: pd.DataFrame) -> None:
    put(service, {"opportunities": records_of(pipeline)})
    saved = service.get("/v1/forecast?as_of=2026-05-01&horizon=2M&simulations=500", who="forecast").json
    early = service.get("/v1/forecasts/accuracy?as_of=2026-06-15", who="forecast").json
    assert early["periods"] == 1  # May has ended by June 15; June has not
    late = service.get("/v1/forecasts/accuracy?as_of=2026-07-01", who="forecast").json
    assert late["periods"] == 2
    may = late["rows"][0]
    won = pipeline[(pipeline["outcome"] == "won") & (pipeline["closed_at"] >= "2026-05-01")
                   & (pipeline["closed_at"] < "2026-06-01")]["won_amount"].sum()
    assert may["label"] == "2026-05" and may["actual"] == pytest.approx(float(won))
    assert may["p50"] == saved["periods"][0]["p50"] and may["snapshot_id"] == saved["snapshot_id"]


def test_a_restart_keeps_the_pipeline_and_its_snapshots(make_service: Callable[..., Service], database_url: str,
                                                       pipeline: pd.DataFrame) -> None:
    with Store(database_url) as store:
        store.upgrade()
    service = make_service(database_url=database_url)
    put(service, {"opportunities": records_of(pipeline)})
    made = service.get("/v1/forecast?as_of=2026-07-01&horizon=1M&simulations=500", who="forecast").json
    restarted = create_app(service.settings)  # a new app on the same database: nothing kept in memory
    client = restarted.test_client()
    listed = client.get("/v1/forecasts", headers=service.headers("forecast")).json
    assert listed["total"] == 1 and listed["forecasts"][0]["total"]["p50"] == made["total"]["p50"]
    again = client.get("/v1/forecast?as_of=2026-07-01&horizon=1M&simulations=500",
                       headers=service.headers("forecast")).json
    assert again["total"] == made["total"] and again["snapshot_id"] == 2
    for app in (service.app, restarted):
        app.extensions["leadcast"].store.dispose()


@pytest.mark.parametrize("query", ["/v1/forecasts?offset=135232665763935355454619648",
                                   "/v1/forecasts/deal-flow?from=135232665763935355454619648",
                                   "/v1/forecast?seed=135232665763935355454619648"])
def test_integers_beyond_what_the_store_holds_are_422_not_500(service: Service, query: str) -> None:
    # Regression: found by the schema test; SQLite refused the integer and the service answered 500.
    response = service.get(query, who="forecast")
    assert response.status_code == 422 and "less than or equal to 9223372036854775807" in json.dumps(response.json)


DEAL = {"opportunity_id": "A", "owner": "Ann", "product": "X", "amount": 100, "created_at": "2026-01-01",
        "stage": "won", "closed_at": "2026-01-11", "won_amount": 100}


@pytest.mark.parametrize("blank", ["\f", "   ", "\t\n"])
def test_a_blank_required_text_is_422_naming_it_not_a_500(service: Service, blank: str) -> None:
    # Blank text is missing once read; the required check looked at the raw value, so a product of "\f" reached
    # the store's NOT NULL and was a 500 (schemathesis).
    response = put(service, {"opportunities": [{**DEAL, "product": blank}]})
    assert response.status_code == 422, response.json
    assert response.json["error"]["details"][0]["loc"] == ["opportunities", 0, "product"]


def test_saved_forecasts_state_their_time_with_an_offset(service: Service) -> None:
    # made_at came out naive ("2026-12-02T14:50:46"), which is no JSON Schema date-time (schemathesis).
    assert put(service, {"opportunities": [DEAL, {**DEAL, "opportunity_id": "B", "stage": "proposal",
                                                  "closed_at": None}]}).status_code == 200
    assert service.get("/v1/forecast?as_of=2026-02-01&simulations=100").status_code == 200
    made_at = service.get("/v1/forecasts").json["forecasts"][0]["made_at"]
    assert datetime.fromisoformat(made_at).utcoffset() is not None, made_at


@pytest.mark.parametrize("observed_at", [0, "0", 1_700_000_000])
def test_observed_at_is_a_time_as_text_not_a_number(service: Service, observed_at: Any) -> None:
    # Lax pydantic read 0 and "0" as 1970-01-01T00:00Z (schemathesis, negative data).
    response = put(service, {"opportunities": [DEAL], "observed_at": observed_at})
    assert response.status_code == 422
    assert response.json["error"]["details"][0]["loc"][:1] == ["observed_at"]


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


def _answer_schema(path: str, status: int) -> dict[str, Any]:
    """Return the document's schema of a GET's answer with `status`, resolvable on its own."""
    document = build_openapi(max_batch=10, version="0")
    schema = document["paths"][path]["get"]["responses"][str(status)]["content"]["application/json"]["schema"]
    return {**schema, "components": document["components"]}


def test_a_forecast_of_an_empty_store_is_409_saying_what_to_put_and_saves_nothing(store_service: Service) -> None:
    # A GET has no input to be invalid (422 was the answer): the store's state is what is missing.
    from jsonschema import Draft202012Validator

    service = store_service
    for query in ("", "?as_of=2026-07-01&horizon=3M&simulations=100&group_by=owner"):
        empty = service.get(f"/v1/forecast{query}", who="forecast")
        assert empty.status_code == 409, empty.json
        assert empty.json["error"]["code"] == "conflict" and "PUT /v1/opportunities" in empty.json["error"]["message"]
        Draft202012Validator(_answer_schema("/v1/forecast", 409)).validate(empty.json)
    assert service.get("/v1/forecast?as_of=someday", who="forecast").status_code == 422  # the query is read first
    assert service.get("/v1/forecasts", who="forecast").json["total"] == 0  # nothing was saved
    assert put(service, {"opportunities": [DEAL, {**DEAL, "opportunity_id": "B", "stage": "proposal",
                                                  "closed_at": None, "won_amount": None}]}).status_code == 200
    made = service.get("/v1/forecast?as_of=2026-02-01&simulations=100", who="forecast")
    assert made.status_code == 200 and made.json["snapshot_id"] == 1


def test_the_metrics_of_an_empty_store_are_zeros_as_of_the_day_asked_or_today(store_service: Service) -> None:
    from jsonschema import Draft202012Validator

    service = store_service
    before = _today()
    plain = service.get("/v1/pipeline/metrics", who="forecast")
    after = _today()
    assert plain.status_code == 200, plain.json
    assert plain.json["as_of"] in {before, after}  # no day stored: today (UTC)
    grouped = service.get("/v1/pipeline/metrics?as_of=2026-07-01&group_by=owner&spend=5000", who="forecast")
    assert grouped.status_code == 200, grouped.json
    body = grouped.json
    # No deals: every count and amount is 0, every rate is undefined (null), no group, no month, no product.
    assert body["as_of"] == "2026-07-01" and body["by"] == "owner"
    assert (body["open_deals"], body["open_pipeline"], body["won_deals"], body["won_revenue"]) == (0, 0.0, 0, 0.0)
    assert (body["win_rate"], body["average_deal_size"], body["required_coverage"],
            body["customer_acquisition_cost"]) == (None, None, None, None)
    assert (body["groups"], body["monthly_revenue"], body["product_mix"]) == ([], [], [])
    assert [(s["stage"], s["reached"]) for s in body["stages"]] == [
        ("lead_generation", 0), ("qualification", 0), ("contact", 0), ("proposal", 0), ("closing", 0)]
    for answer in (plain, grouped):
        Draft202012Validator(_answer_schema("/v1/pipeline/metrics", 200)).validate(answer.json)
    # The query is still read: a bad one is 422 naming the parameter.
    bad = service.get("/v1/pipeline/metrics?group_by=colour", who="forecast")
    assert bad.status_code == 422 and bad.json["error"]["details"][0]["loc"] == ["group_by"]


def test_the_accuracy_and_saved_forecasts_of_an_empty_store_are_empty_lists(store_service: Service) -> None:
    service = store_service
    before = _today()
    accuracy = service.get("/v1/forecasts/accuracy", who="forecast")
    after = _today()
    assert accuracy.status_code == 200, accuracy.json
    assert accuracy.json["as_of"] in {before, after}
    assert {k: v for k, v in accuracy.json.items() if k != "as_of"} == \
        {"periods": 0, "mape": None, "bias": None, "coverage": None, "rows": []}
    dated = service.get("/v1/forecasts/accuracy?as_of=2026-07-01", who="forecast").json
    assert dated["as_of"] == "2026-07-01" and dated["rows"] == []
    assert service.get("/v1/forecasts", who="forecast").json == {"forecasts": [], "total": 0, "limit": 50,
                                                                 "offset": 0}
    missing = service.get("/v1/forecasts/deal-flow?from=1", who="forecast")
    assert missing.status_code == 404 and "no saved forecast has id 1" in missing.json["error"]["message"]
