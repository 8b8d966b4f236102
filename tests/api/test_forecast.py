"""POST /v1/forecast and POST /v1/pipeline/metrics: JSON records or a CSV upload in, the library's answer out."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from crmdata.contracts import OPPORTUNITY
from crmdata.loaders import frame_from_records
from crmdata.stages import DEFAULT_STAGES
from crmdata.synthetic import generate_opportunities
from forecasting.forecast import forecast
from tests.api.conftest import Service


def records_of(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Return rows as the JSON a CRM would post (ISO dates, no NaN)."""
    return json.loads(frame.to_json(orient="records", date_format="iso"))


@pytest.fixture(scope="module")
def pipeline() -> pd.DataFrame:
    return generate_opportunities(n=400, seed=3).opportunities


def test_forecast_answers_what_the_library_answers(service: Service, pipeline: pd.DataFrame) -> None:
    records = records_of(pipeline)
    request = {"opportunities": records, "as_of": "2026-07-01", "horizon": "3M", "seed": 5, "simulations": 2000,
               "group_by": "owner", "target": 250_000}
    response = service.post("/v1/forecast", request, who="forecast")
    assert response.status_code == 200, response.json
    deals = frame_from_records(records, contract=OPPORTUNITY)
    expected = forecast(deals, stages=DEFAULT_STAGES, as_of="2026-07-01", horizon="3M", by="owner",
                        target=250_000, n_sims=2000, rng=np.random.default_rng(5)).to_dict()
    assert response.json == json.loads(json.dumps(expected))
    body = response.json
    assert [p["label"] for p in body["periods"]] == ["2026-07", "2026-08", "2026-09"]
    assert all(p["p10"] <= p["p50"] <= p["p90"] for p in body["periods"])
    assert 0 <= body["probability_of_target"] <= 1
    assert {g["group"] for g in body["groups"]} <= set(pipeline["owner"])


def test_a_csv_upload_gives_the_same_forecast_as_json(service: Service, pipeline: pd.DataFrame) -> None:
    as_json = service.post("/v1/forecast", {"opportunities": records_of(pipeline), "as_of": "2026-07-01",
                                            "horizon": "6W", "seed": 1, "simulations": 500}).json
    as_csv = service.post_form("/v1/forecast", {"as_of": "2026-07-01", "horizon": "6W", "seed": "1",
                                                "simulations": "500"},
                               {"file": (pipeline.to_csv(index=False).encode(), "pipeline.csv")})
    assert as_csv.status_code == 200, as_csv.json
    assert as_csv.json == as_json


def test_invalid_opportunities_are_refused_naming_index_and_field(service: Service, pipeline: pd.DataFrame) -> None:
    records = records_of(pipeline.head(5))
    records[3]["amount"] = -10
    records[4]["stage"] = "negotiation"
    response = service.post("/v1/forecast", {"opportunities": records, "as_of": "2026-07-01"})
    assert response.status_code == 422
    locs = [d["loc"] for d in response.json["error"]["details"]]
    assert ["opportunities", 3, "amount"] in locs and ["opportunities", 4, "stage"] in locs
    bad_csv = service.post_form("/v1/forecast", {"as_of": "2026-07-01"},
                                {"file": (b"opportunity_id,owner\nO1,Ann\n", "pipeline.csv")})
    assert bad_csv.status_code == 422
    assert ["opportunities", "product"] in [d["loc"][:1] + d["loc"][-1:] for d in bad_csv.json["error"]["details"]]


@pytest.mark.parametrize(
    ("change", "loc"),
    [({"horizon": "soon"}, ["horizon"]), ({"horizon": "0M"}, ["horizon"]), ({"as_of": "yesterday"}, ["as_of"]),
     ({"group_by": "mood"}, ["group_by"]), ({"target": -1}, ["target"]), ({"simulations": 5}, ["simulations"]),
     ({"opportunities": []}, ["opportunities"]),
     # A JSON boolean is not a number: lax pydantic read false as seed 0 and true as a $1 target (schemathesis).
     ({"seed": False}, ["seed"]), ({"target": True}, ["target"]),
     # A number is not a day: lax pydantic read as_of = 0 as 1970-01-01 (schemathesis).
     ({"as_of": 0}, ["as_of"])],
)
def test_bad_forecast_parameters_name_the_field(service: Service, pipeline: pd.DataFrame, change: dict[str, Any],
                                                loc: list[str]) -> None:
    request = {"opportunities": records_of(pipeline.head(50)), "as_of": "2026-07-01", **change}
    response = service.post("/v1/forecast", request)
    assert response.status_code == 422
    assert response.json["error"]["details"][0]["loc"][:1] == loc


def test_forecasts_need_the_forecast_scope(service: Service, pipeline: pd.DataFrame) -> None:
    response = service.post("/v1/forecast", {"opportunities": records_of(pipeline.head(5)), "as_of": "2026-07-01"},
                            who="score")
    assert response.status_code == 403


def test_pipeline_metrics_by_hand(service: Service) -> None:
    deals = [
        {"opportunity_id": "A", "owner": "Ann", "product": "X", "amount": 100, "created_at": "2026-01-01",
         "stage": "won", "closed_at": "2026-01-11", "won_amount": 100},
        {"opportunity_id": "B", "owner": "Ann", "product": "X", "amount": 300, "created_at": "2026-01-01",
         "stage": "won", "closed_at": "2026-01-31", "won_amount": 300},
        {"opportunity_id": "C", "owner": "Bob", "product": "Y", "amount": 200, "created_at": "2026-01-01",
         "stage": "lost", "closed_at": "2026-01-21"},
        {"opportunity_id": "D", "owner": "Bob", "product": "Y", "amount": 500, "created_at": "2026-01-15",
         "stage": "proposal"},
    ]
    response = service.post("/v1/pipeline/metrics", {"opportunities": deals, "as_of": "2026-02-01",
                                                     "group_by": "owner", "spend": 1000})
    assert response.status_code == 200, response.json
    m = response.json
    assert m["win_rate"] == pytest.approx(2 / 3)  # won 2 of 3 closed
    assert m["average_deal_size"] == 200  # (100 + 300) / 2 won deals
    assert m["average_cycle_days"] == 20  # won deals took 10 and 30 days
    assert m["open_pipeline"] == 500
    # velocity: 1 open deal x $200 x 2/3 / 20 days = $6.67 a day
    assert m["sales_velocity_per_day"] == pytest.approx(1 * 200 * (2 / 3) / 20)
    assert m["customer_acquisition_cost"] == 500  # $1,000 spend / 2 new customers
    groups = {g["owner"]: g for g in m["groups"]}
    assert groups["Ann"]["win_rate"] == 1.0 and groups["Bob"]["win_rate"] == 0.0
    assert groups["Bob"]["open_pipeline"] == 500


def test_pipeline_metrics_before_every_deal_are_empty_not_a_500(service: Service) -> None:
    # schemathesis sent as_of = 0 (1970-01-01): no month had closed, and the monthly table's zip raised (a 500).
    deals = [{"opportunity_id": "A", "owner": "Ann", "product": "X", "amount": 100, "created_at": "2026-01-01",
              "stage": "won", "closed_at": "2026-01-11", "won_amount": 100}]
    response = service.post("/v1/pipeline/metrics", {"opportunities": deals, "as_of": "1990-01-01"})
    assert response.status_code == 200, response.json
    assert response.json["monthly_revenue"] == []  # nothing was won by 1990
    assert response.json["open_deals"] == 0  # the one deal did not exist yet
