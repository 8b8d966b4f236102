"""POST /v1/forecast and POST /v1/pipeline/metrics: JSON records or a CSV upload in, the library's answer out."""

from __future__ import annotations

import json
import re
import subprocess
import sys
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
     ({"as_of": 0}, ["as_of"]),
     # A negative target was refused but the document allowed it: the bound was written "ge", no JSON Schema
     # keyword (the schema test checks the document; this, that the service still refuses it).
     ({"target": -0.5}, ["target"])],
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


SMALL = [{"opportunity_id": "A", "owner": "Ann", "product": "X", "amount": 100, "created_at": "2026-01-01",
          "stage": "won", "closed_at": "2026-01-11", "won_amount": 100},
         {"opportunity_id": "B", "owner": "Bob", "product": "Y", "amount": 500, "created_at": "2026-01-15",
          "stage": "proposal"}]


def test_as_of_text_that_is_not_a_day_is_refused(service: Service) -> None:
    # Lax pydantic read the text "0" as 1970-01-01, as it read the number 0 (schemathesis, negative data).
    response = service.post("/v1/pipeline/metrics", {"opportunities": SMALL, "as_of": "0"})
    assert response.status_code == 422
    assert response.json["error"]["details"][0]["loc"][:1] == ["as_of"]


def test_a_pipeline_spanning_more_than_292_years_is_a_422_not_a_500(service: Service) -> None:
    # A deal of 1850 against an as_of of 2258: 408 years overflow a datetime64[ns] difference (a 500 before);
    # a pipeline holds 1900-2099 and the record's field is named.
    deals = [{**SMALL[0], "created_at": "1850-01-01"}, SMALL[1]]
    response = service.post("/v1/pipeline/metrics", {"opportunities": deals, "as_of": "2026-07-01"})
    assert response.status_code == 422, response.json
    assert response.json["error"]["details"][0]["loc"] == ["opportunities", 0, "created_at"]
    assert "1900-01-01 to 2099-12-31" in response.json["error"]["details"][0]["msg"]
    late = service.post("/v1/pipeline/metrics", {"opportunities": SMALL, "as_of": "2258-07-01"})
    assert late.status_code == 422 and late.json["error"]["details"][0]["loc"][:1] == ["as_of"]


def test_metrics_with_spend_before_any_won_deal_give_a_null_acquisition_cost(service: Service) -> None:
    # Spend over 0 new customers is undefined: null like the other undefined metrics, not a 422 (schemathesis).
    response = service.post("/v1/pipeline/metrics", {"opportunities": SMALL, "as_of": "2026-01-05", "spend": 1})
    assert response.status_code == 200, response.json
    assert response.json["customer_acquisition_cost"] is None
    assert response.json["won_deals"] == 0  # the won deal closed on 2026-01-11, after as_of


def test_a_csv_sent_as_a_plain_form_field_is_read(service: Service) -> None:
    # `curl -F 'file=<deals.csv'` (and schemathesis) send the CSV as a field with no filename: it was a 422.
    csv = pd.DataFrame(SMALL).to_csv(index=False)
    as_file = service.post_form("/v1/forecast", {"as_of": "2026-02-01", "simulations": "100"},
                                {"file": (csv.encode(), "deals.csv")})
    as_field = service.post_form("/v1/forecast", {"as_of": "2026-02-01", "simulations": "100", "file": csv}, {})
    assert as_file.status_code == 200, as_file.json
    assert as_field.status_code == 200, as_field.json
    assert as_field.json == as_file.json


def test_the_horizon_pattern_is_what_parse_horizon_accepts() -> None:
    from api.schemas import HORIZON_PATTERN
    from forecasting.errors import ForecastInputError
    from forecasting.periods import parse_horizon

    def parses(text: str) -> bool:
        try:
            parse_horizon(text)
        except ForecastInputError:
            return False
        return True

    # 1098D, 156W (1,092 days), 35M (1,085) and 11Q (1,012) are the longest within 3 x 366 days.
    texts = [f"{n}{unit}" for unit in "DWMQdwmq" for n in range(0, 1200)]
    assert [t for t in texts if bool(re.match(HORIZON_PATTERN, t)) != parses(t)] == []
    assert [t for t in ("1098D", "156W", "35M", "11Q", "1099D", "157W", "36M", "12Q") if parses(t)] == \
        ["1098D", "156W", "35M", "11Q"]


def test_the_pipeline_day_pattern_is_the_window_the_validator_keeps() -> None:
    from pydantic import TypeAdapter, ValidationError

    from api.schemas import PIPELINE_DAY_PATTERN, PipelineDay

    adapter = TypeAdapter(PipelineDay)
    for day, kept in (("1899-12-31", False), ("1900-01-01", True), ("2099-12-31", True), ("2100-01-01", False)):
        assert bool(re.match(PIPELINE_DAY_PATTERN, day)) is kept
        try:
            adapter.validate_python(day)
            accepted = True
        except ValidationError:
            accepted = False
        assert accepted is kept, day


SPANNING = [  # the deals schemathesis sent, in ASCII: a stay from 1907 still open when forecast in 2099
    {"opportunity_id": "A", "owner": "a", "product": "p", "stage": "retention", "created_at": "1928-02-08",
     "closed_at": "1928-02-08", "stage_entered_at": "2004-01-07"},
    {"opportunity_id": "B", "owner": "b", "product": "p", "stage": "won", "created_at": "1974-10-08",
     "closed_at": "2083-12-27", "amount": 1e-250, "won_amount": 9.5e14},
    {"opportunity_id": "C", "owner": "c", "product": "p", "stage": "lead_generation", "created_at": None},
    {"opportunity_id": "D", "owner": "d", "product": "p", "stage": "lead_generation", "created_at": "1907-12-30",
     "stage_entered_at": "2043-04-07"},
]
FORECAST_IN_A_SUBPROCESS = f"""
import resource, numpy as np
resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))
from api.blueprints.forecast import forecast_records
from crmdata.stages import DEFAULT_STAGES
forecast_records(records={SPANNING!r}, history=None, stages=DEFAULT_STAGES, as_of="2099-12-31", horizon="10Q",
                 n_sims=100, rng=np.random.default_rng(0))
print("ok")
"""


def test_a_pipeline_spanning_two_centuries_forecasts_in_bounded_memory() -> None:
    # The stage model counted deal-days on a dense (start day x age) grid, the square of the span: these 4 deals
    # asked for 12.7 GiB, and the OOM killer took the worker (schemathesis). Under a 3 GiB address-space limit
    # (imports take about 1.5), in a child process so that a failure cannot take this one.
    done = subprocess.run([sys.executable, "-c", FORECAST_IN_A_SUBPROCESS],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_an_amount_beyond_a_pipelines_sums_is_refused_naming_it(service: Service) -> None:
    # 1.8e308 was accepted and overflowed the forecast's variance (RuntimeWarning, a 500 with warnings as errors;
    # inf and null figures otherwise): amounts stop at 1e15 $ (schemathesis).
    deals = [{**SMALL[0], "amount": 1.7976931348623157e308}, SMALL[1]]
    response = service.post("/v1/forecast", {"opportunities": deals, "as_of": "2026-07-01", "simulations": 100})
    assert response.status_code == 422, response.json
    assert response.json["error"]["details"][0]["loc"] == ["opportunities", 0, "amount"]
    fine = [{**SMALL[0], "amount": 1e15, "won_amount": 1e15}, SMALL[1]]
    assert service.post("/v1/pipeline/metrics", {"opportunities": fine, "as_of": "2026-07-01"}).status_code == 200
