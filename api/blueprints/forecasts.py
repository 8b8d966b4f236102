"""Saved forecasts: every forecast made from the store, deal flow between two of them, and their live accuracy."""

from __future__ import annotations

from datetime import date

import pandas as pd
from flask import Blueprint, Response, jsonify, request

from api.errors import ApiError
from api.http import requires, runtime
from api.live import SnapshotNotFound, flow, live_records, live_rows, now_utc
from api.schemas import (
    AccuracyQuery,
    DealFlowQuery,
    DealFlowResponse,
    LiveAccuracyResponse,
    PageQuery,
    SnapshotOut,
    SnapshotsResponse,
)
from forecasting.live import live_summary
from store.pipeline import list_snapshots

bp = Blueprint("forecasts", __name__, url_prefix="/v1/forecasts")


@bp.get("")
@requires("forecast")
def saved() -> Response:
    """List the forecasts made from the store, newest first."""
    page = PageQuery.model_validate(request.args.to_dict())
    rows, total = list_snapshots(runtime().store, limit=page.limit, offset=page.offset)
    body = SnapshotsResponse(forecasts=[SnapshotOut.model_validate(r) for r in rows], total=total,
                             limit=page.limit, offset=page.offset)
    return jsonify(body.model_dump(mode="json"))


@bp.get("/deal-flow")
@requires("forecast")
def deal_flow() -> Response:
    """Return the deal flow from one saved forecast to another (or to the pipeline as stored now)."""
    query = DealFlowQuery.model_validate(request.args.to_dict())
    try:
        moved, first, second = flow(runtime().store, from_id=query.from_id, to_id=query.to_id)
    except SnapshotNotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from exc
    body = DealFlowResponse.model_validate({"from_id": first["id"], "to_id": None if second is None else second["id"],
                                            **moved.to_dict(with_ids=query.ids)})
    return jsonify(body.model_dump(mode="json", exclude_none=True))


@bp.get("/accuracy")
@requires("forecast")
def accuracy() -> Response:
    """Score the saved forecasts whose periods have ended against the revenue the store shows won in them."""
    query = AccuracyQuery.model_validate(request.args.to_dict())
    when: date = query.as_of or now_utc().date()
    rows = live_rows(runtime().store, now=pd.Timestamp(when))
    body = LiveAccuracyResponse.model_validate({"as_of": when, **live_summary(rows),
                                                "rows": live_records(rows)})
    return jsonify(body.model_dump(mode="json"))
