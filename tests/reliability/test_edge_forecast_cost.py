"""Bounded forecast cost and bounded error bodies (issue 10 item 6)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest

from api.blueprints import forecast as forecast_view
from crmdata.contracts import OPPORTUNITY
from crmdata.stages import DEFAULT_STAGES
from crmdata.synthetic import generate_opportunities
from tests.api.conftest import Service


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    frame = generate_opportunities(n=400, seed=3).opportunities
    return json.loads(frame.to_json(orient="records", date_format="iso"))


def open_deals(records: list[dict[str, Any]]) -> int:
    return sum(r["stage"] in DEFAULT_STAGES.open for r in records)


def test_a_forecast_over_max_forecast_cells_is_refused_before_any_work(
    make_service: Callable[..., Service], records: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    n_open = open_deals(records)
    assert n_open > 0
    # "3M" from 2026-07-01: July, August, September = 3 periods; 1,000 simulations.
    cells = n_open * 1000 * 3
    # forecast_processes = 0: the forecast runs in this process, where the spy below can see it.
    service = make_service(max_forecast_cells=cells - 1, forecast_processes=0)
    ran: list[bool] = []
    real = forecast_view.run_forecast
    monkeypatch.setattr(forecast_view, "run_forecast", lambda *a, **k: ran.append(True) or real(*a, **k))
    request = {"opportunities": records, "as_of": "2026-07-01", "horizon": "3M", "simulations": 1000}
    refused = service.post("/v1/forecast", request, who="forecast")
    assert refused.status_code == 422, refused.json
    message = refused.json["error"]["message"]
    assert "max_forecast_cells" in message and f"{cells - 1:,}" in message and f"{cells:,} cells" in message
    assert f"{n_open:,} open deals x 1,000 simulations x 3 period(s)" in message
    assert refused.json["error"]["details"][0]["loc"] == ["simulations"]
    assert ran == [], "the forecast must be refused before it runs"

    # The same request at exactly the limit is served.
    at_limit = make_service(max_forecast_cells=cells, forecast_processes=0)
    assert at_limit.post("/v1/forecast", request, who="forecast").status_code == 200
    assert ran == [True]


def test_a_csv_upload_over_the_limit_is_refused_too(make_service: Callable[..., Service],
                                                    records: list[dict[str, Any]]) -> None:
    n_open = open_deals(records)
    service = make_service(max_forecast_cells=n_open * 500 * 6 - 1)  # "6W": 6 weekly periods, 500 simulations
    refused = service.post_form("/v1/forecast", {"as_of": "2026-07-01", "horizon": "6W", "simulations": "500"},
                                {"file": (pd.DataFrame(records).to_csv(index=False).encode(), "pipeline.csv")})
    assert refused.status_code == 422 and "max_forecast_cells" in refused.json["error"]["message"]


@pytest.mark.slow
def test_a_csv_of_a_million_empty_rows_gets_a_small_422(make_service: Callable[..., Service]) -> None:
    service = make_service(max_forecast_cells=10**15)  # past the cost check, to the per-row problems
    header = ",".join(c.name for c in OPPORTUNITY.columns)
    # One line of commas per row: (columns - 1) commas and a newline.
    csv = (header + "\n" + ("," * (len(OPPORTUNITY.columns) - 1) + "\n") * 1_000_000).encode()
    assert len(csv) > 4 * 2**20
    response = service.post_form("/v1/forecast", {"as_of": "2026-07-01"}, {"file": (csv, "empty.csv")})
    assert response.status_code == 422
    error = response.json["error"]
    assert len(error["details"]) == 100
    assert "the first 100 are listed" in error["message"]
    assert len(response.data) < 64 * 1024, f"{len(response.data):,} bytes"


def test_a_schema_error_body_lists_at_most_100_problems(service: Service) -> None:
    # 1,000 opportunities that are not objects: 1,000 pydantic errors, 100 listed.
    response = service.post("/v1/forecast", {"opportunities": list(range(1000)), "as_of": "2026-07-01"})
    assert response.status_code == 422
    error = response.json["error"]
    assert len(error["details"]) == 100 and error["details"][0]["loc"] == ["opportunities", 0]
    assert "1000 problem(s) in the request; the first 100 are listed" in error["message"]
