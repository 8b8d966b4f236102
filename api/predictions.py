"""What the service records of each score it returns: the prediction log's rows, built off the hot path."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from store import naive_utc
from store.predictions import PredictionLog

if TYPE_CHECKING:  # the serving module loads the scoring stack; the app imports this one at start
    import pandas as pd

    from api.serving import Served
    from scoring.scorer import Reason
    from scoring.spec import ModelSpec


def _as_of(value: Any, default: datetime | None) -> datetime | None:
    if isinstance(value, str):
        try:
            return naive_utc(datetime.fromisoformat(value))
        except ValueError:
            return default
    return default


def log_scores(log: PredictionLog, served: Served, records: list[dict[str, Any]], body: dict[str, Any], *,
               as_of: datetime) -> bool:
    """Queue one prediction-log row per scored lead that carries its own id (MLflow-shaped rows have none);
    return False when the queue was full and the rows were dropped.

    Only the values of the spec's features are kept: never a protected field (a spec cannot make one a
    feature) and never a field the model does not know. The rows are built by the log's writer thread.
    """
    spec = served.scorer.spec
    id_column, columns = spec.id_column, spec.feature_columns
    scored_at = datetime.now(UTC).replace(tzinfo=None)
    request_as_of = naive_utc(as_of)
    model = body["model"]
    scores = body["scores"]

    def build() -> list[dict[str, Any]]:
        rows = []
        for record, item in zip(records, scores, strict=True):
            if record.get(id_column) is None:
                continue
            rows.append({
                "lead_id": str(item["id"]), "scored_at": scored_at,
                "as_of": _as_of(record.get(spec.as_of_column or "as_of"), request_as_of),
                "model_name": model["name"], "model_version": model["version"], "model_kind": model["kind"],
                "probability": float(item["probability"]), "score": int(item["score"]), "grade": item["grade"],
                "reasons": item.get("reasons"),
                "features": {c: record[c] for c in columns if c in record},
            })
        return rows

    return log.record(len(scores), build)


def _json_value(value: Any) -> Any:
    """Return a file's value as JSON holds it (numpy scalars as numbers, times as ISO text); None when missing."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy and pandas scalars
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if type(value).__name__ == "NaTType":
        return None
    return value


def log_batch(log: PredictionLog, *, spec: ModelSpec, model: dict[str, str], raw: pd.DataFrame,
              scored: pd.DataFrame, as_of: str | None) -> None:
    """Queue one prediction-log row per lead of a scored file chunk, as `log_scores` does for the API.

    The features are the chunk's values of the spec's features (a file's empty cell is a field not sent);
    the reasons are the scorer's Reason objects (field, words, points: what the API answers), which `scored`
    carries when it was scored with `structured=True`; None when it was scored without reasons.
    """
    from scoring.scorer import REASONS_COLUMN

    id_column = spec.id_column
    columns = [c for c in spec.feature_columns if c in raw.columns]
    as_of_column = next((c for c in (spec.as_of_column, "as_of") if c and c in raw.columns), None)
    scored_at = datetime.now(UTC).replace(tzinfo=None)
    fallback = _as_of(as_of, None)
    values = raw[columns].reset_index(drop=True)
    times = None if as_of_column is None else raw[as_of_column].reset_index(drop=True)
    out = scored.reset_index(drop=True)

    def build() -> list[dict[str, Any]]:
        rows = []
        records = values.to_dict(orient="records")
        reasons = out[REASONS_COLUMN].tolist() if REASONS_COLUMN in out.columns else [None] * len(out)
        for i, (lead_id, p, score, grade) in enumerate(zip(out[id_column].tolist(), out["probability"].tolist(),
                                                           out["score"].tolist(), out["grade"].tolist(),
                                                           strict=True)):
            given = None if times is None else _json_value(times.iloc[i])
            stamp = fallback if given is None else _as_of(given, fallback)
            features = {c: v for c, v in ((c, _json_value(records[i][c])) for c in columns) if v is not None}
            rows.append({
                "lead_id": str(lead_id), "scored_at": scored_at, "as_of": stamp, "model_name": model["name"],
                "model_version": model["version"], "model_kind": model["kind"], "probability": float(p),
                "score": int(score), "grade": str(grade), "reasons": _reasons_json(reasons[i]),
                "features": features,
            })
        return rows

    log.record(len(out), build)


def _reasons_json(reasons: list[Reason] | None) -> list[dict[str, Any]] | None:
    """Return a lead's reasons as the log stores them: the Reason fields, as `LeadScore.as_json` writes them."""
    # Spelled out: dataclasses.asdict deep-copies, and cost 4 s of CPU per 100,000 leads against 0.3 s.
    return None if reasons is None else [{"feature": r.feature, "text": r.text, "contribution": r.contribution}
                                         for r in reasons]


def drop_counter(metrics_registry: Any) -> Callable[[int], None]:
    """Return a callback that counts dropped prediction-log rows in a Prometheus counter."""
    from prometheus_client import Counter

    counter = Counter("leadcast_prediction_log_dropped", "Prediction-log rows dropped because the queue was full.",
                      registry=metrics_registry)
    return counter.inc
