"""Lead scoring: one lead or a batch, in leadcast's shape or MLflow's."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from flask import Blueprint, Flask, Response, jsonify, request
from werkzeug.routing import PathConverter

from api.blueprints.models import current_model, requested_model
from api.errors import ApiError
from api.history import annotate_scores, ask_previous_score
from api.http import Runtime, json_body, refuse_unknown_query, requires, runtime
from api.jsonio import json_response
from api.predictions import log_scores
from api.schemas import ScoreRequest
from api.scoring_io import score_payload
from crmdata.values import NUL_MESSAGE
from store import StoreError, StoreUnavailable
from store.history import lead_scores
from store.leads import erase_lead

bp = Blueprint("leads", __name__, url_prefix="/v1/leads")


class LeadIdConverter(PathConverter):
    """A lead id in a path (slashes allowed, sent as %2F), never the names of the routes beside it."""

    # Without the look-aheads, DELETE /v1/leads/{lead_id} would also claim /v1/leads/score, /outcomes and
    # /{lead_id}/scores (so an id that is "score", "outcomes" or ends in "/scores" has no such route).
    regex = r"(?!(?:score|outcomes)$)(?!.*/scores$)[^/].*?"


def init(app: Flask, rt: Runtime) -> None:
    """Teach the app's URL map the lead id converter (before this blueprint's routes are added)."""
    app.url_map.converters["lead_id"] = LeadIdConverter


@bp.post("/score")
@requires("score")
def score() -> Response:
    """Score leads with the champion of `?model=` (default the default spec's model) and return probability,
    score, grade, reasons and the model that answered."""
    body = ScoreRequest.model_validate(json_body())
    rt = runtime()
    records = body.records()
    if len(records) > rt.settings.max_batch:
        raise ApiError(422, "invalid_input", f"at most {rt.settings.max_batch:,} leads per request",
                       [{"loc": ["leads"], "msg": f"{len(records):,} leads sent"}])
    refuse_unknown_query("reasons", "model")
    query = request.args.get("reasons", "true")
    if query not in ("true", "false"):
        raise ApiError(422, "invalid_input", "the query parameter reasons must be true or false",
                       [{"loc": ["query", "reasons"], "msg": f"expected true or false, got {query!r}"}])
    reasons = body.reasons and query == "true"
    as_of = body.as_of or datetime.now(UTC)
    # The hot path answers a plain dict in ScoreResponse's shape (checked by the schema tests), not a pydantic
    # round trip per lead.
    served = current_model(requested_model())
    context = rt.score_history
    with ask_previous_score(context, served, records) as asked:  # its round trip overlaps the scoring
        result = score_payload(served, records, reasons=reasons, as_of=as_of, shape=body.shape)
        lead_ids = annotate_scores(context, served, records, result, asked)
    if rt.prediction_log is not None and log_scores(rt.prediction_log, served, records, result,
                                                    as_of=as_of) and context is not None:
        # the next trend of these leads by this model name needs no query
        context.logged(model_name=result["model"]["name"], lead_ids=lead_ids, scores=result["scores"])
    rt.metrics.count_scores(Counter(item["grade"] for item in result["scores"]),
                            version=result["model"]["version"], kind=result["model"]["kind"])
    return json_response(result)


MAX_PAGE = 500


def _refuse_nul(lead_id: str) -> None:
    # No lead holds one (every way in refuses it), and PostgreSQL would fail the query, not answer none.
    if "\x00" in lead_id:
        raise ApiError(422, "invalid_input", f"lead_id {NUL_MESSAGE}", [{"loc": ["path", "lead_id"],
                                                                      "msg": NUL_MESSAGE}])


@bp.get("/<path:lead_id>/scores")
@requires("score")
def history(lead_id: str) -> Response:
    """Return a lead's logged scores, newest first, `limit` at a time (default 50), continued with `cursor`."""
    refuse_unknown_query("limit", "cursor")
    _refuse_nul(lead_id)
    text = request.args.get("limit", "50")
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise ApiError(422, "invalid_input", f"limit must be a whole number from 1 to {MAX_PAGE}",
                       [{"loc": ["query", "limit"], "msg": f"got {text[:40]!r}"}])
    try:
        page, cursor = lead_scores(runtime().store, lead_id=lead_id, limit=int(text),
                                   cursor=request.args.get("cursor"))
    except StoreError as exc:
        if not isinstance(exc, StoreUnavailable):
            raise ApiError(422, "invalid_input", str(exc), [{"loc": ["query", "cursor"], "msg": str(exc)}]) from exc
        raise
    scores = [{"scored_at": s.scored_at.isoformat(), "as_of": None if s.as_of is None else s.as_of.isoformat(),
               "model": {"name": s.model_name, "version": s.model_version, "kind": s.model_kind},
               "probability": s.probability, "score": s.score, "grade": s.grade, "reasons": s.reasons}
              for s in page]
    return jsonify({"lead_id": lead_id, "scores": scores, "next_cursor": cursor})


@bp.delete("/<lead_id:lead_id>")
@requires("admin")
def erase(lead_id: str) -> Response:
    """Erase a lead: its logged predictions (and their features) and its outcome; answer what was removed."""
    _refuse_nul(lead_id)
    rt = runtime()
    if rt.prediction_log is not None:  # this worker's queued rows of the lead are written, then deleted too
        rt.prediction_log.flush(timeout=5)
    if rt.score_history is not None:  # and its remembered latest score goes (other workers': within the bound)
        rt.score_history.latest.forget(lead_id)
    return jsonify({"lead_id": lead_id, "removed": erase_lead(rt.store, lead_id=lead_id)})
