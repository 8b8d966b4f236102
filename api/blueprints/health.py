"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from api.errors import ApiError
from api.http import runtime

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """Say the process is alive."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """Say whether the default spec's model is loaded and scoring can be served; list every name's champion."""
    models = runtime().models
    current = models.current() if models is not None else None
    if current is None:
        reason = models.unavailable_reason() if models is not None else "no model is loaded yet"
        raise ApiError(503, "unavailable", f"no model is loaded: {reason}")
    champions = runtime().champions
    listed = champions.describe() if champions is not None else [{**current.describe(), "status": "ready"}]
    return jsonify({"status": "ready", "model": current.describe(), "models": listed})


@bp.get("/metrics")
def metrics() -> Response:
    """Expose request, latency, score and model metrics in the Prometheus text format."""
    return Response(runtime().metrics.render(), mimetype="text/plain; version=0.0.4")
