"""What every view shares: the runtime held by the app, bearer-key checks, rate limits, JSON bodies."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar, cast

from flask import current_app, g, request

from api.errors import ApiError
from api.jsonio import parse
from api.keys import KeyStore
from api.metrics import Metrics
from api.ratelimit import RateLimiter
from api.settings import Settings
from store import Store

if TYPE_CHECKING:  # the services' modules import scoring and the store's log; the request helpers need neither
    from api.history import ScoreContext
    from api.serving import Champions, ModelHolder
    from store.predictions import PredictionLog

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Runtime:
    """The long-lived objects of one app: settings, store, keys, rate limiter, metrics, per-resource services.

    Each service is a typed field declared here once and filled by the one place that builds it: `models` (the
    default name's holder) and `champions` (every name's) by the models blueprint's init, `openapi` by the docs
    blueprint's, `prediction_log` and `score_history` by `create_app` when the prediction log is on (None when it
    is off).
    """

    settings: Settings
    store: Store
    keys: KeyStore
    limiter: RateLimiter
    metrics: Metrics
    models: ModelHolder | None = None
    champions: Champions | None = None
    prediction_log: PredictionLog | None = None
    score_history: ScoreContext | None = None
    openapi: dict[str, Any] = field(default_factory=dict)


def runtime() -> Runtime:
    """Return the runtime of the app handling this request."""
    return cast(Runtime, current_app.extensions["leadcast"])


def requires(scope: str, *others: str) -> Callable[[F], F]:
    """Let a view run only for a bearer key that holds `scope` (or one of `others`), within its rate limit."""
    accepted = (scope, *others)

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            rt = runtime()
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise ApiError(401, "unauthorized", "send an API key as 'Authorization: Bearer <key>'",
                               headers={"WWW-Authenticate": 'Bearer realm="leadcast"'})
            key = rt.keys.authenticate(token.strip())
            if key is None:
                raise ApiError(401, "unauthorized", "the API key is not valid or has been revoked",
                               headers={"WWW-Authenticate": 'Bearer realm="leadcast", error="invalid_token"'})
            if not set(accepted) & set(key.scopes):
                needed = " or ".join(f"'{s}'" for s in accepted)
                raise ApiError(403, "forbidden", f"this API key lacks the {needed} scope")
            allowed, wait = rt.limiter.allow(key.key_id)
            if not allowed:
                raise ApiError(429, "rate_limited", "too many requests for this API key; slow down",
                               headers={"Retry-After": str(max(1, math.ceil(wait)))})
            g.api_key_name = key.name
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorate


def refuse_unknown_query(*allowed: str) -> None:
    """Refuse (422) a query parameter other than `allowed`: a misspelt one (`?reason=false`) is never ignored."""
    unknown = sorted(set(request.args) - set(allowed))
    if unknown:
        raise ApiError(422, "invalid_input", f"unknown query parameter(s); use {' and '.join(allowed)}",
                       [{"loc": ["query", name[:40]], "msg": "unknown query parameter"} for name in unknown[:10]])


def json_body() -> Any:
    """Return the parsed JSON body, or raise 415 (not JSON), 413 (too large) or 400 (malformed)."""
    return parse_body(json_bytes())


def json_bytes() -> bytes:
    """Return the JSON body unparsed, or raise 415 (not JSON) or 413 (too large)."""
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is None and limit is not None:
        # A chunked body: werkzeug would stop reading at the limit and hand over a cut body, so read one byte
        # past it from the server's stream and refuse the whole request if it is there.
        raw: bytes = request.environ["wsgi.input"].read(limit + 1)
        if len(raw) > limit:
            raise ApiError(413, "payload_too_large", f"the request body is larger than {limit:,} bytes")
        return raw
    return request.get_data(cache=True)


def parse_body(raw: bytes) -> Any:
    """Parse a JSON request body, or raise 400 (malformed); needs no request, so a pool process can run it."""
    try:
        return parse(raw)
    except ValueError as exc:  # orjson's errors are ValueErrors; it refuses NaN, Infinity and bad UTF-8
        raise ApiError(400, "malformed_json", f"the request body is not valid JSON: {exc}") from exc
