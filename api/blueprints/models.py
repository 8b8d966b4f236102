"""The model being served: its card, and an admin reload that swaps to the new champion."""

from __future__ import annotations

import contextlib

from flask import Blueprint, Flask, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field

from api.errors import ApiError
from api.http import Runtime, requires, runtime
from api.serving import ModelHolder, ModelLoadFailed, Served, champion_poll, model_source

bp = Blueprint("models", __name__, url_prefix="/v1/models")


class MonitoringQuery(BaseModel):
    """The query of GET /v1/models/monitoring: which model (NAME@VERSION, version or alias) and since when."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(default=None, min_length=1, max_length=200)
    since: str | None = Field(default=None, min_length=1, max_length=64)


def init(app: Flask, rt: Runtime) -> None:
    """Load the champion (or the cold-start rules) when the app is created; a failed load never stops it."""
    settings = rt.settings
    holder = ModelHolder(name=settings.registered_model_name, source=model_source(settings),
                         on_load=lambda s: rt.metrics.set_model(name=s.name, version=s.version, kind=s.kind),
                         poll=champion_poll(settings))
    rt.models = holder
    # The holder logs why; the service starts anyway and answers 503 on scoring until a reload works.
    with contextlib.suppress(ModelLoadFailed):
        holder.load()


def holder() -> ModelHolder:
    """Return this app's model holder."""
    found = runtime().models
    if found is None:
        raise RuntimeError("the models blueprint's init has not run on this app")
    return found


def current_model() -> Served:
    """Return the served model, or raise 503 (with the reason, never a path) while none is loaded."""
    models = holder()
    served = models.current()
    if served is None:
        raise ApiError(503, "unavailable", f"no model is loaded: {models.unavailable_reason()}; fix the champion, "
                       "then reload")
    return served


@bp.get("/current")
@requires("score")
def current() -> Response:
    """Return the model card of the model being served."""
    served = current_model()
    return jsonify({"model": served.describe(), "card": served.card})


@bp.post("/reload")
@requires("admin")
def reload() -> Response:
    """Re-resolve the champion and swap to it; requests in flight finish on the old model."""
    models = holder()
    previous = models.current()
    try:
        served = models.reload()
    except ModelLoadFailed as exc:
        # The cause names files on the server: it went to the log; the caller gets the reason in plain words.
        keeping = "still serving the previous model" if previous is not None else "no model is served"
        raise ApiError(503, "unavailable", f"reload failed, {keeping}: {exc.reason}; the service log says more") \
            from exc
    return jsonify({"model": served.describe(), "previous": previous.describe() if previous else None})


@bp.get("/monitoring")
@requires("admin", "monitor")
def monitoring() -> Response:
    """Return the health of a model version (default the champion) on its logged scores and matured outcomes."""
    from api.monitoring import parse_since, store_health
    from scoring.artifacts import ModelError

    query = MonitoringQuery.model_validate(request.args.to_dict())
    rt = runtime()
    try:
        report = store_health(rt.settings, rt.store, model=query.model, since=parse_since(query.since))
    except ModelError as exc:  # the message names server paths: the caller gets the reason only
        raise ApiError(404, "not_found", f"cannot monitor that model: {exc.reason}") from exc
    rt.metrics.set_health(report)
    return jsonify(report)
