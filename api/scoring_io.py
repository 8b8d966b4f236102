"""Turn scoring results into the API's JSON, and request records into what the scorer expects."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from api.errors import ApiError, problems_to_details
from api.serving import Served
from crmdata.errors import DataValidationError
from crmdata.values import ValueProblem, datetime_ns


def score_payload(served: Served, records: list[dict[str, Any]], *, reasons: bool, as_of: datetime,
                  shape: str) -> dict[str, Any]:
    """Score `records` (sent as `shape`) with `served`; return the response body, scores in request order.

    Invalid records refuse the whole request (422) with each problem's record index and field.
    """
    unknown = sorted({k for r in records for k in r} - served.known_fields)
    try:  # an offset is kept (12:00+02:00 is 10:00 UTC); a year datetime64[ns] cannot hold is refused here
        datetime_ns(as_of)
    except ValueProblem as exc:
        raise ApiError(422, "invalid_input", f"as_of {exc.message}", [{"loc": ["as_of"], "msg": exc.message}]) from exc
    stamp = as_of.isoformat()
    id_column = served.scorer.spec.id_column
    numbered = shape in ("dataframe_records", "dataframe_split")  # MLflow clients send no id: use the position
    rows = []
    for i, r in enumerate(records):
        extra: dict[str, Any] = {}
        if "as_of" not in r:  # recency is measured from the request time unless the caller says otherwise
            extra["as_of"] = stamp
        if numbered and id_column and r.get(id_column) is None:
            extra[id_column] = str(i)
        rows.append({**r, **extra} if extra else r)
    try:
        scored = served.scorer.score_records(rows, reasons=reasons)
    except DataValidationError as exc:
        raise ApiError(422, "invalid_input", f"{len(exc.problems)} problem(s) in the leads; nothing was scored",
                       problems_to_details(exc, root=shape, indexed=shape != "lead")) from exc
    scores = [s.as_json() for s in scored]
    body: dict[str, Any] = {"model": served.describe(), "scores": scores,
                            "warnings": [f"ignored unknown field '{name}'" for name in unknown]}
    if shape in ("dataframe_records", "dataframe_split"):
        body["predictions"] = [[1.0 - s.probability, s.probability] for s in scored]
    return body
