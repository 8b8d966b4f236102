"""Lead scoring: one lead or a batch, in leadcast's shape or MLflow's."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from flask import Blueprint, Response, jsonify, request

from api.blueprints.models import current_model
from api.errors import ApiError
from api.history import annotate_scores
from api.http import json_body, requires, runtime
from api.predictions import log_scores
from api.schemas import ScoreRequest
from api.scoring_io import score_payload

bp = Blueprint("leads", __name__, url_prefix="/v1/leads")


@bp.post("/score")
@requires("score")
def score() -> Response:
    """Score leads and return probability, score, grade, reasons and the model that answered."""
    body = ScoreRequest.model_validate(json_body())
    rt = runtime()
    records = body.records()
    if len(records) > rt.settings.max_batch:
        raise ApiError(422, "invalid_input", f"at most {rt.settings.max_batch:,} leads per request",
                       [{"loc": ["leads"], "msg": f"{len(records):,} leads sent"}])
    query = request.args.get("reasons", "true")
    if query not in ("true", "false"):
        raise ApiError(422, "invalid_input", "the query parameter reasons must be true or false",
                       [{"loc": ["query", "reasons"], "msg": f"expected true or false, got {query!r}"}])
    reasons = body.reasons and query == "true"
    as_of = body.as_of or datetime.now(UTC)
    # The hot path answers a plain dict in ScoreResponse's shape (checked by the schema tests), not a pydantic
    # round trip per lead.
    served = current_model()
    result = score_payload(served, records, reasons=reasons, as_of=as_of, shape=body.shape)
    annotate_scores(rt.services.get("score_history"), served, records, result)
    if "prediction_log" in rt.services:
        log_scores(rt.services["prediction_log"], served, records, result, as_of=as_of)
    for grade, count in Counter(item["grade"] for item in result["scores"]).items():
        rt.metrics.scores.labels(grade=grade, model_version=result["model"]["version"],
                                 model_kind=result["model"]["kind"]).inc(count)
    return jsonify(result)
