"""Forecasts and pipeline metrics for a posted pipeline (JSON records or a CSV upload)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from flask import Blueprint, Response, jsonify, request

from api.errors import ApiError
from api.http import json_body, requires, runtime
from api.schemas import ForecastRequest, ForecastResponse, MetricsRequest, MetricsResponse, StagesBody
from crmdata.contracts import OPPORTUNITY, STAGE_HISTORY
from crmdata.loaders import frame_from_records, read_csv
from crmdata.stages import DEFAULT_STAGES, StageConfig
from forecasting.forecast import forecast as run_forecast
from forecasting.summary import pipeline_metrics

bp = Blueprint("forecast", __name__, url_prefix="/v1")

FORM_FIELDS = ("as_of", "horizon", "target", "group_by", "seed", "simulations")


def _stages(body: StagesBody | None) -> StageConfig:
    if body is None:
        return DEFAULT_STAGES
    try:
        return StageConfig.from_mapping(body.model_dump())
    except ValueError as exc:
        raise ApiError(422, "invalid_input", str(exc), [{"loc": ["stages"], "msg": str(exc)}]) from exc


def _forecast_request() -> tuple[ForecastRequest, Any]:
    """Read a forecast request from JSON, or from a multipart form with a CSV `file`."""
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise ApiError(422, "invalid_input", "attach the opportunities CSV as the form field 'file'",
                           [{"loc": ["file"], "msg": "missing"}])
        raw = read_csv(io.BytesIO(upload.read()), name=upload.filename or "upload.csv")
        fields: dict[str, Any] = {k: request.form[k] for k in FORM_FIELDS if request.form.get(k) not in (None, "")}
        return ForecastRequest.model_validate({**fields, "opportunities": [{}]}), raw
    body = ForecastRequest.model_validate(json_body())
    return body, body.opportunities


@bp.post("/forecast")
@requires("forecast")
def forecast() -> Response:
    """Forecast won revenue per period with P10/P50/P90, the chance of the target, stuck deals and metrics."""
    body, records = _forecast_request()
    stages = _stages(body.stages)
    deals = frame_from_records(records, contract=OPPORTUNITY, stages=stages, source="opportunities")
    history = (frame_from_records(body.stage_history, contract=STAGE_HISTORY, stages=stages, source="stage_history")
               if body.stage_history else None)
    sims = body.simulations or runtime().settings.forecast_simulations
    result = run_forecast(deals, stages=stages, as_of=body.as_of, horizon=body.horizon, history=history,
                          target=body.target, by=body.group_by, n_sims=sims, rng=np.random.default_rng(body.seed))
    return jsonify(ForecastResponse.model_validate(result.to_dict()).model_dump(mode="json"))


@bp.post("/pipeline/metrics")
@requires("forecast")
def metrics() -> Response:
    """Return the brief's pipeline metrics for the posted opportunities, grouped as asked."""
    body = MetricsRequest.model_validate(json_body())
    stages = _stages(body.stages)
    deals = frame_from_records(body.opportunities, contract=OPPORTUNITY, stages=stages, source="opportunities")
    result = pipeline_metrics(deals, stages=stages, as_of=body.as_of, by=body.group_by, spend=body.spend)
    return jsonify(MetricsResponse.model_validate(result).model_dump(mode="json", exclude_unset=True))
