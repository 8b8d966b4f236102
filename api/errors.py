"""One JSON error shape for every error the service returns, and the handlers that produce it."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from crmdata.errors import DataValidationError, LeadcastError

log = logging.getLogger("leadcast.api")

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


# Library argument names that the request calls otherwise.
REQUEST_FIELDS = {"by": "group_by"}

# An error body lists at most this many problems (the message gives the total): a million bad rows must not
# become a 32 MB answer.
MAX_DETAILS = 100


def problems_message(count: int, what: str) -> str:
    """Return "<count> problem(s) in <what>", saying when only the first MAX_DETAILS are listed."""
    listed = f"; the first {MAX_DETAILS} are listed" if count > MAX_DETAILS else ""
    return f"{count} problem(s) in {what}{listed}"


class ApiError(Exception):
    """An error with its HTTP status, a stable machine code, a message and per-field details."""

    def __init__(self, status: int, code: str, message: str, details: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, details: list[dict[str, Any]] | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    """Return `{"error": {"code", "message", "details": [{"loc", "msg"}]}}` with the status."""
    response = jsonify({"error": {"code": code, "message": message, "details": details or []}})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def problems_to_details(exc: DataValidationError, *, root: str, indexed: bool = True) -> list[dict[str, Any]]:
    """Turn data problems into details whose `loc` names the record index (0-based) and the field."""
    details = []
    for p in exc.problems[:MAX_DETAILS]:
        loc: list[str | int] = [root] if p.row is None or not indexed else [root, p.row - 1]
        value = "" if p.value is None else f" (value {p.value!r})"
        details.append({"loc": [*loc, p.field], "msg": p.message + value})
    return details


def pydantic_details(exc: ValidationError) -> list[dict[str, Any]]:
    """Turn a pydantic validation error into error details."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    return [{"loc": list(e["loc"]), "msg": e["msg"]} for e in errors[:MAX_DETAILS]]


def schema_error(exc: ValidationError) -> ApiError:
    """Return the 422 a request that does not match its schema gets (a pool process sends this, not `exc`)."""
    count = exc.error_count()
    message = ("the request does not match its schema" if count <= MAX_DETAILS
               else f"the request does not match its schema: {problems_message(count, 'the request')}")
    return ApiError(422, "invalid_input", message, pydantic_details(exc))


def register_error_handlers(app: Flask) -> None:
    """Install handlers so that every error, expected or not, leaves as the one JSON shape."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.errorhandler(ValidationError)
    def _pydantic(exc: ValidationError) -> Response:
        return _api_error(schema_error(exc))

    @app.errorhandler(DataValidationError)
    def _data(exc: DataValidationError) -> Response:
        return error_response(422, "invalid_input", problems_message(len(exc.problems), "the records"),
                              problems_to_details(exc, root=exc.source))

    @app.errorhandler(LeadcastError)
    def _domain(exc: LeadcastError) -> Response:
        field = getattr(exc, "field", None)
        details = [] if field is None else [{"loc": [REQUEST_FIELDS.get(field, field)], "msg": str(exc)}]
        return error_response(422, "invalid_input", str(exc), details)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = HTTP_CODES.get(status, "http_error")
        message = {
            400: "the request body is not valid JSON",
            404: "no such resource",
            405: "method not allowed on this resource",
            413: "the request body is too large",
            415: "send the body as application/json",
        }.get(status, exc.description or code)
        headers = {"Allow": exc.get_response().headers["Allow"]} if status == 405 else None
        return error_response(status, code, message, headers=headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "an internal error occurred; it has been logged")
