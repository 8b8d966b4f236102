"""What the service records of each score it returns: the prediction log's rows, built off the hot path."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from store.predictions import PredictionLog

if TYPE_CHECKING:  # the serving module loads the scoring stack; the app imports this one at start
    from api.serving import Served


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def _as_of(value: Any, default: datetime) -> datetime:
    if isinstance(value, str):
        try:
            return _naive_utc(datetime.fromisoformat(value))
        except ValueError:
            return default
    return default


def log_scores(log: PredictionLog, served: Served, records: list[dict[str, Any]], body: dict[str, Any], *,
               as_of: datetime) -> None:
    """Queue one prediction-log row per scored lead that carries its own id (MLflow-shaped rows have none).

    Only the values of the spec's features are kept: never a protected field (a spec cannot make one a
    feature) and never a field the model does not know. The rows are built by the log's writer thread.
    """
    spec = served.scorer.spec
    id_column, columns = spec.id_column, spec.feature_columns
    scored_at = datetime.now(UTC).replace(tzinfo=None)
    request_as_of = _naive_utc(as_of)
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

    log.record(len(scores), build)


def drop_counter(metrics_registry: Any) -> Callable[[int], None]:
    """Return a callback that counts dropped prediction-log rows in a Prometheus counter."""
    from prometheus_client import Counter

    counter = Counter("leadcast_prediction_log_dropped", "Prediction-log rows dropped because the queue was full.",
                      registry=metrics_registry)
    return counter.inc
