"""Forecasts and pipeline metrics: of a posted pipeline (JSON records or a CSV upload), or of the stored one (GET)."""

from __future__ import annotations

import io
from functools import partial
from typing import Any

import numpy as np
import orjson
from flask import Blueprint, Response, jsonify, request
from pydantic import ValidationError

from api import workpool
from api.errors import ApiError, schema_error
from api.http import json_body, json_bytes, parse_body, requires, runtime
from api.jsonio import OPTIONS
from api.live import EmptyPipeline, forecast_from_store, now_utc, present, stored_pipeline
from api.schemas import (
    ForecastRequest,
    ForecastResponse,
    MetricsRequest,
    MetricsResponse,
    StagesBody,
    StoredForecastQuery,
    StoredForecastResponse,
    StoredMetricsQuery,
)
from crmdata.contracts import OPPORTUNITY, STAGE_HISTORY
from crmdata.loaders import frame_from_records, read_csv
from crmdata.stages import DEFAULT_STAGES, StageConfig
from forecasting.forecast import ForecastResult
from forecasting.forecast import forecast as run_forecast
from forecasting.periods import as_day, parse_horizon, periods
from forecasting.summary import pipeline_metrics

bp = Blueprint("forecast", __name__, url_prefix="/v1")

FORM_FIELDS = ("as_of", "horizon", "target", "group_by", "seed", "simulations")


def stages_of(body: StagesBody | None) -> StageConfig:
    if body is None:
        return DEFAULT_STAGES
    try:
        return StageConfig.from_mapping(body.model_dump())
    except ValueError as exc:
        raise ApiError(422, "invalid_input", str(exc), [{"loc": ["stages"], "msg": str(exc)}]) from exc


def _open_deals(records: Any, stages: StageConfig) -> int:
    """Count the records the simulation would draw for: every one whose stage is not a known closed stage."""
    closed = {*stages.won, *stages.lost}
    if isinstance(records, list):
        return sum(1 for r in records if not (isinstance(s := r.get("stage"), str) and s.strip() in closed))
    column = records.get("stage")  # a CSV upload: a frame of strings
    return len(records) if column is None else int((~column.str.strip().isin(list(closed))).sum())


def _refuse_cells(deals: int, sims: int, *, as_of: object, horizon: str, limit: int) -> None:
    """Refuse, before any work, a forecast of more open deals x simulations x periods than `limit` cells."""
    n_periods = len(periods(as_of=as_day(as_of), horizon=parse_horizon(horizon)))
    cells = deals * sims * n_periods
    if cells > limit:
        message = (f"this forecast needs {deals:,} open deals x {sims:,} simulations x {n_periods} period(s) = "
                   f"{cells:,} cells, above the limit of {limit:,} (max_forecast_cells): send fewer open deals, "
                   "simulations or periods")
        raise ApiError(422, "invalid_input", message, [{"loc": ["simulations"], "msg": message}])


def _posted_forecast() -> dict[str, Any]:
    """Return the posted forecast as read off the wire: the JSON body unparsed, or the CSV and its form fields."""
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is not None:
            try:
                data = upload.read()
            finally:  # a large upload is spooled to a temporary file: close it as soon as it is read
                upload.close()
            name = upload.filename or "upload.csv"
        elif "file" in request.form:  # the CSV as a plain field, as `curl -F 'file=<deals.csv'` sends it
            data, name = request.form["file"].encode(), "file"
        else:
            raise ApiError(422, "invalid_input", "attach the opportunities CSV as the form field 'file'",
                           [{"loc": ["file"], "msg": "missing"}])
        fields = {k: request.form[k] for k in FORM_FIELDS if request.form.get(k) not in (None, "")}
        return {"csv": data, "name": name, "fields": fields}
    return {"raw": json_bytes()}


def forecast_records(*, records: Any, history: list[dict[str, Any]] | None, stages: StageConfig,
                     **arguments: Any) -> ForecastResult:
    """Validate posted opportunities (and stage history) against their contracts, then forecast them."""
    deals = frame_from_records(records, contract=OPPORTUNITY, stages=stages, source="opportunities")
    changes = (frame_from_records(history, contract=STAGE_HISTORY, stages=stages, source="stage_history")
               if history else None)
    return run_forecast(deals, stages=stages, history=changes, **arguments)


def answer_forecast(*, max_cells: int, default_simulations: int, raw: bytes | None = None, csv: bytes = b"",
                    name: str = "", fields: dict[str, str] | None = None) -> bytes:
    """Parse, check and run one posted forecast (a JSON body `raw`, or a `csv` and its form `fields`); return the
    JSON answer. It runs in a forecast pool process, so none of this work holds the worker's other requests."""
    try:
        if raw is not None:
            body = ForecastRequest.model_validate(parse_body(raw))
            records: Any = body.opportunities
        else:
            records = read_csv(io.BytesIO(csv), name=name)
            body = ForecastRequest.model_validate({**(fields or {}), "opportunities": [{}]})
    except ValidationError as exc:  # sent back as the 422 it answers: pydantic's error does not pickle
        raise schema_error(exc) from None
    stages = stages_of(body.stages)
    sims = body.simulations or default_simulations
    _refuse_cells(_open_deals(records, stages), sims, as_of=body.as_of, horizon=body.horizon, limit=max_cells)
    result = forecast_records(records=records, history=body.stage_history, stages=stages, as_of=body.as_of,
                              horizon=body.horizon, target=body.target, by=body.group_by, n_sims=sims,
                              rng=np.random.default_rng(body.seed))
    return orjson.dumps(ForecastResponse.model_validate(result.to_dict()).model_dump(mode="json"), option=OPTIONS)


@bp.post("/forecast")
@requires("forecast")
def forecast() -> Response:
    """Forecast won revenue per period with P10/P50/P90, the chance of the target, stuck deals and metrics."""
    settings = runtime().settings
    # The worker only reads the body off the wire (parsing a large one took it ~0.25 s of CPU, every other
    # request of a gevent worker waiting): parsing, checks and the forecast run in the pool.
    answer = workpool.run(settings, answer_forecast, max_cells=settings.max_forecast_cells,
                          default_simulations=settings.forecast_simulations, **_posted_forecast())
    return Response(answer, mimetype="application/json")


@bp.post("/pipeline/metrics")
@requires("forecast")
def metrics() -> Response:
    """Return the brief's pipeline metrics for the posted opportunities, grouped as asked."""
    body = MetricsRequest.model_validate(json_body())
    stages = stages_of(body.stages)
    deals = frame_from_records(body.opportunities, contract=OPPORTUNITY, stages=stages, source="opportunities")
    result = pipeline_metrics(deals, stages=stages, as_of=body.as_of, by=body.group_by, spend=body.spend)
    return jsonify(MetricsResponse.model_validate(result).model_dump(mode="json", exclude_unset=True))


@bp.get("/forecast")
@requires("forecast")
def stored_forecast() -> Response:
    """Forecast the stored pipeline (and its stored stage history); the forecast is saved as a snapshot."""
    query = StoredForecastQuery.model_validate(request.args.to_dict())
    rt = runtime()
    sims = query.simulations or rt.settings.forecast_simulations
    try:
        loaded = stored_pipeline(rt.store)
    except EmptyPipeline as exc:
        # Nothing to forecast is the store's state, not the request's fault: 409 says what to send first.
        raise ApiError(409, "conflict", str(exc)) from exc
    deals = loaded[0]
    as_of = query.as_of if query.as_of is not None else present(deals)
    _refuse_cells(int((deals.opportunities["outcome"] == "open").sum()), sims, as_of=as_of, horizon=query.horizon,
                  limit=rt.settings.max_forecast_cells)
    result, snapshot_id = forecast_from_store(rt.store, as_of=as_of, horizon=query.horizon, n_sims=sims,
                                              seed=query.seed, target=query.target, by=query.group_by,
                                              source="api", pipeline=loaded, runner=partial(workpool.run, rt.settings))
    body = StoredForecastResponse.model_validate({**result.to_dict(), "snapshot_id": snapshot_id})
    return jsonify(body.model_dump(mode="json"))


@bp.get("/pipeline/metrics")
@requires("forecast")
def stored_metrics() -> Response:
    """Return the pipeline metrics of the stored pipeline, grouped as asked."""
    query = StoredMetricsQuery.model_validate(request.args.to_dict())
    deals, _ = stored_pipeline(runtime().store, empty_ok=True)
    as_of = query.as_of
    if as_of is None and deals.opportunities.empty:
        as_of = now_utc().date()  # an empty store mentions no day: as of today, as live accuracy's default is
    result = pipeline_metrics(deals.opportunities, stages=deals.stages, history=deals.history, as_of=as_of,
                              by=query.group_by, spend=query.spend)
    return jsonify(MetricsResponse.model_validate(result).model_dump(mode="json", exclude_unset=True))
