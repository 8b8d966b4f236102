"""The stored pipeline: batch upserts of opportunity records, each change kept as an event."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from api.blueprints.forecast import stages_of
from api.http import json_body, requires, runtime
from api.live import sync
from api.schemas import OpportunitiesRequest, SyncResponse
from crmdata.contracts import OPPORTUNITY
from crmdata.loaders import frame_from_records
from store import naive_utc

bp = Blueprint("opportunities", __name__, url_prefix="/v1")


@bp.put("/opportunities")
@requires("forecast")
def upsert() -> Response:
    """Upsert opportunity records (validated like an export: a problem names the record and the field)."""
    body = OpportunitiesRequest.model_validate(json_body())
    stages = stages_of(body.stages)
    deals = frame_from_records(body.opportunities, contract=OPPORTUNITY, stages=stages, source="opportunities")
    observed = None if body.observed_at is None else naive_utc(body.observed_at)
    result = sync(runtime().store, deals, stages=stages, source="api", observed_at=observed)
    return jsonify(SyncResponse.model_validate(result.to_dict()).model_dump(mode="json"))
