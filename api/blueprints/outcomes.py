"""Lead outcomes: what the CRM reports became of each lead, recorded idempotently."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from api.errors import ApiError
from api.http import json_body, requires, runtime
from api.schemas import OutcomesRequest
from store.outcomes import Outcome, upsert_outcomes

bp = Blueprint("outcomes", __name__, url_prefix="/v1/leads")


@bp.post("/outcomes")
@requires("outcomes")
def record() -> Response:
    """Record whether leads converted (and when): new leads inserted, changed ones replaced, the same ones kept."""
    body = OutcomesRequest.model_validate(json_body())
    rt = runtime()
    if len(body.outcomes) > rt.settings.max_batch:
        raise ApiError(422, "invalid_input", f"at most {rt.settings.max_batch:,} outcomes per request",
                       [{"loc": ["outcomes"], "msg": f"{len(body.outcomes):,} outcomes sent"}])
    counts = upsert_outcomes(rt.store, [Outcome(o.lead_id, o.converted, o.converted_at) for o in body.outcomes],
                             source="api")
    return jsonify({"received": len(body.outcomes), "inserted": counts.inserted, "updated": counts.updated,
                    "unchanged": counts.unchanged})
