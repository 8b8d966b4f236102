"""The Flask application factory."""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request

from api.errors import error_response, register_error_handlers
from api.history import ScoreContext
from api.http import Runtime
from api.jsonio import OrjsonProvider
from api.metrics import Metrics
from api.monitoring import install_health_refresh
from api.predictions import drop_counter
from api.ratelimit import RateLimiter, bucket_store
from api.settings import Settings, load_settings
from api.stores import open_keys, open_store
from store import StoreUnavailable
from store.predictions import PredictionLog

log = logging.getLogger("leadcast.api")
# Metric labels take only these methods and the app's routes: anything else is one label, so /metrics cannot
# grow with what callers send.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class LeadcastFlask(Flask):
    """Flask with orjson for request and response bodies."""

    json_provider_class = OrjsonProvider


def create_app(settings: Settings | None = None) -> Flask:
    """Build the leadcast service: settings read once, one blueprint per resource, one error shape."""
    from api.blueprints import docs, forecast, forecasts, health, leads, models, opportunities, outcomes

    settings = settings or load_settings()
    app = LeadcastFlask("leadcast")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    store = open_store(settings)  # no connection yet: each process (gunicorn worker) opens its own on first use
    rt = Runtime(
        settings=settings,
        store=store,
        keys=open_keys(settings, store),
        limiter=RateLimiter(per_minute=settings.rate_limit_per_minute, burst=settings.rate_limit_burst,
                            store=bucket_store(settings.rate_limit_storage)),
        metrics=Metrics(),
    )
    app.extensions["leadcast"] = rt
    if settings.prediction_log:
        rt.prediction_log = PredictionLog(store, capacity=settings.prediction_log_queue_rows,
                                           on_drop=drop_counter(rt.metrics.registry))
        rt.score_history = ScoreContext(store, band_points=settings.trend_band_points,
                                        window_days=settings.percentile_window_days,
                                        refresh_seconds=settings.percentile_refresh_seconds,
                                        latest_seconds=settings.trend_cache_seconds,
                                        latest_leads=settings.trend_cache_leads)
    install_health_refresh(app, settings=settings, store=store, metrics=rt.metrics)
    for module in (health, docs, models, leads, outcomes, forecast, opportunities, forecasts):
        module.init(app, rt) if hasattr(module, "init") else None
        app.register_blueprint(module.bp)
    register_error_handlers(app)

    @app.errorhandler(StoreUnavailable)
    def _store_down(exc: StoreUnavailable) -> Response:
        # A state fault: the caller learns only that it is passing; the operator reads the detail in the log.
        log.error("store unavailable: %s", exc)
        return error_response(503, "unavailable", "the service's data store is unavailable; try again shortly",
                              headers={"Retry-After": "5"})

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        method = request.method if request.method in METHODS else "other"
        rt.metrics.observe_request(endpoint=endpoint, method=method, status=response.status_code, seconds=elapsed)
        # Never the key, the body or a lead's fields: only what identifies the call.
        log.info("%s %s %s %.1fms key=%s", method, endpoint, response.status_code, elapsed * 1000,
                 g.get("api_key_name", "-"))
        response.headers["Cache-Control"] = "no-store"
        return response

    return app
