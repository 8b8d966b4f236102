"""Prometheus metrics: request counts and latency per endpoint, scores per grade, the model being served."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The service's metrics in one registry (aggregated across gunicorn workers when multiprocess)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("leadcast_requests", "Requests by endpoint, method and status.",
                                ["endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram("leadcast_request_seconds", "Request latency by endpoint.", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.scores = Counter("leadcast_scores", "Leads scored by grade and model version.",
                              ["grade", "model_version", "model_kind"], registry=self.registry)
        self.model = Gauge("leadcast_model_info", "The model being served (1 for the current one).",
                           ["model_name", "model_version", "model_kind"], registry=self.registry,
                           multiprocess_mode="liveall")
        self._served: dict[str, tuple[str, str, str]] = {}  # per model name: one champion each
        # Each request's series, looked up once per label set: `labels()` checks and converts its arguments
        # under a lock on every call. The sets are bounded (routes, not paths; grades; model versions).
        self._request_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._score_series: dict[tuple[str, str, str], Any] = {}
        # Model health (issue 13), as of the last health report the service computed (GET /v1/models/monitoring or
        # the background refresh), one series per model name: two names each have a version 1.
        self.feature_psi = Gauge("leadcast_feature_psi", "PSI of each input field against the training profile.",
                                 ["model_name", "model_version", "feature"], registry=self.registry,
                                 multiprocess_mode="mostrecent")
        self.score_psi = Gauge("leadcast_score_psi", "PSI of the scores against the training profile.",
                               ["model_name", "model_version"], registry=self.registry, multiprocess_mode="mostrecent")
        self.live_ece = Gauge("leadcast_live_ece", "Expected calibration error on matured outcomes.",
                              ["model_name", "model_version"], registry=self.registry, multiprocess_mode="mostrecent")
        self.alerts = Gauge("leadcast_monitoring_alerts", "Model health alerts raised by the last health report.",
                            ["model_name", "model_version"], registry=self.registry, multiprocess_mode="mostrecent")

    def observe_request(self, *, endpoint: str, method: str, status: int, seconds: float) -> None:
        """Count one request by endpoint (its route), method and status, and observe its latency."""
        key = (endpoint, method, status)
        series = self._request_series.get(key)
        if series is None:
            series = self._request_series[key] = (
                self.requests.labels(endpoint=endpoint, method=method, status=str(status)),
                self.latency.labels(endpoint=endpoint))
        series[0].inc()
        series[1].observe(seconds)

    def count_scores(self, grades: Mapping[str, int], *, version: str, kind: str) -> None:
        """Add the leads scored per grade by the model `version` of `kind`."""
        for grade, count in grades.items():
            key = (grade, version, kind)
            series = self._score_series.get(key)
            if series is None:
                series = self._score_series[key] = self.scores.labels(grade=grade, model_version=version,
                                                                      model_kind=kind)
            series.inc(count)

    def set_model(self, *, name: str, version: str, kind: str) -> None:
        """Mark the model now being served for its name (1) and the one it replaced under that name (0)."""
        # Set to 0 rather than cleared: under gunicorn each worker's values live in files clear() cannot reach.
        if name in self._served:
            self.model.labels(*self._served[name]).set(0)
        self._served[name] = (name, version, kind)
        self.model.labels(model_name=name, model_version=version, model_kind=kind).set(1)

    def set_health(self, report: Mapping[str, Any]) -> None:
        """Publish a health report's PSI per field, score PSI, live ECE and alert count under its model name."""
        model = {"model_name": str(report.get("name", "unknown")), "model_version": str(report.get("version",
                                                                                                  "unknown"))}
        for feature in report.get("features", []):
            if feature.get("psi") is not None:
                self.feature_psi.labels(**model, feature=feature["column"]).set(feature["psi"])
        if report.get("score_psi") is not None:
            self.score_psi.labels(**model).set(report["score_psi"])
        outcomes = report.get("outcomes")
        if outcomes is not None:
            self.live_ece.labels(**model).set(outcomes["ece"])
        self.alerts.labels(**model).set(len(report.get("alerts", [])))

    def render(self) -> bytes:
        """Return the exposition text, merged across workers when PROMETHEUS_MULTIPROC_DIR is set."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            merged = CollectorRegistry()
            MultiProcessCollector(merged)
            return generate_latest(merged)
        return generate_latest(self.registry)
