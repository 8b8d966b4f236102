"""The model being served: its card, and an admin reload that swaps to the new champion."""

from __future__ import annotations

import contextlib

from flask import Blueprint, Flask, Response, current_app, jsonify

from api.errors import ApiError
from api.http import Runtime, requires, runtime
from api.serving import LOAD_ERRORS, ModelHolder, Served

bp = Blueprint("models", __name__, url_prefix="/v1/models")


def init(app: Flask, rt: Runtime) -> None:
    """Load the champion (or the cold-start rules) when the app is created."""
    settings = rt.settings
    holder = ModelHolder(models_dir=settings.resolved_models_dir, name=settings.registered_model_name,
                         tracking_uri=settings.resolved_tracking_uri if settings.serves_from_mlflow else None,
                         on_load=lambda s: rt.metrics.set_model(name=s.name, version=s.version, kind=s.kind))
    rt.services["models"] = holder
    # A failed load is logged by the holder; the service starts anyway and answers 503 until a reload works.
    with contextlib.suppress(*LOAD_ERRORS):
        holder.load()


def current_model() -> Served:
    """Return the served model, or raise 503 while none is loaded."""
    served = runtime().services["models"].current()
    if served is None:
        raise ApiError(503, "unavailable", "no model is loaded; train one or fix the rules file, then reload")
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
    holder: ModelHolder = runtime().services["models"]
    previous = holder.current()
    try:
        served = holder.reload()
    except LOAD_ERRORS as exc:
        # The cause names files on the server: it goes to the log, not to the caller.
        current_app.logger.error("reload failed: %s", exc)
        raise ApiError(503, "unavailable", "reload failed, still serving the previous model; the service log says "
                       "why") from exc
    return jsonify({"model": served.describe(), "previous": previous.describe() if previous else None})
