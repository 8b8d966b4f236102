"""The model a running service scores with, swapped atomically when a new champion is promoted.

Loading never takes the service down: whatever a load raises is a failed load, logged, and the worker keeps
the last good model it has (or answers 503 on scoring when it has none, with /healthz still 200).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.settings import Settings
from scoring.artifacts import ModelError, ModelSource
from scoring.scorer import Scorer, load_scorer

log = logging.getLogger("leadcast.api")

RELOAD_MARKER = ".reload"
# A worker with no usable model retries on its own after these many seconds, doubling up to the cap; a marker
# change (a reload elsewhere, or `touch models/.reload`) makes it retry at once.
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 60.0
UNKNOWN_REASON = "the champion could not be loaded (the service log says why)"


def model_source(settings: Settings) -> dict[str, Any]:
    """Return the `load_scorer` arguments that say where the champion comes from under `settings`."""
    source: ModelSource = "mlflow" if settings.serves_from_mlflow else "files"
    return {"models_dir": settings.resolved_models_dir, "source": source,
            "registered_model_name": settings.registered_model_name,
            "tracking_uri": settings.resolved_tracking_uri if source == "mlflow" else None}


# Card entries never shown to callers: where the model was tracked is the server's business (URIs carry
# credentials), whatever artifact an older leadcast wrote.
PRIVATE_CARD_KEYS = frozenset({"tracking_uri", "artifact_uri", "artifact_root", "models_dir", "path"})


def public_card(card: dict[str, Any]) -> dict[str, Any]:
    """Return the model card without the entries that name server locations."""
    return {k: v for k, v in card.items() if k not in PRIVATE_CARD_KEYS}


@dataclass(frozen=True)
class Served:
    """One loaded scorer with what a caller is told about it."""

    scorer: Scorer
    name: str
    version: str
    kind: str
    card: dict[str, Any]
    known_fields: frozenset[str]
    sha256: str | None = None

    def describe(self) -> dict[str, str]:
        """Return the model's name, version and kind (trained or rules)."""
        return {"name": self.name, "version": self.version, "kind": self.kind}

    @property
    def stamp(self) -> str:
        """Return what the reload marker records of this model: its version and artifact hash."""
        return f"{self.version} {self.sha256 or '-'}"


def _served(scorer: Scorer, *, name: str) -> Served:
    spec = scorer.spec
    kind = "rules" if scorer.kind == "rules" else "trained"
    trained = getattr(scorer, "trained", None)
    card = public_card(dict(trained.card)) if trained is not None else {
        "kind": "rules", "version": scorer.version, "spec": spec.name,
        "note": "No trained model yet: scores come from the cold-start points rules (see docs/scoring.md).",
    }
    known = {spec.id_column, spec.target.column, *spec.feature_columns, *spec.exclude, *spec.protected, "as_of",
             spec.created_at_column, spec.as_of_column}
    return Served(scorer=scorer, name=name, version=scorer.version, kind=kind, card=card,
                  known_fields=frozenset(k for k in known if k is not None),
                  sha256=getattr(trained, "sha256", None))


class ModelLoadFailed(Exception):
    """A champion could not be loaded; `reason` is safe to show callers (no paths, URIs or credentials)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ModelHolder:
    """Hold the current model; `reload` loads the champion and swaps the reference in one step.

    Requests read `current()` once and keep that object, so a request in flight finishes on the model it started
    with. Every worker watches a marker file that `reload` writes (the version and hash it loaded), so all
    gunicorn workers follow a reload by their next request. A worker whose model is not the one the marker
    announces and that cannot load the champion serves nothing (503) rather than a stale model; a failed load
    is retried when the marker changes or after a back-off, never on every request.
    """

    def __init__(self, *, name: str, source: dict[str, Any],
                 on_load: Callable[[Served], None] | None = None) -> None:
        self.name = name
        self.source = source
        self.models_dir: Path = source["models_dir"]
        self.on_load = on_load
        self._current: Served | None = None
        self._lock = threading.Lock()
        self._marker_seen: int | None = None
        self._retry_at = 0.0
        self._retry_delay = RETRY_FIRST_SECONDS
        self.last_error: str | None = None  # why the last load failed (safe to show), None after a success

    def _marker_stamp(self) -> int:
        try:
            return (self.models_dir / RELOAD_MARKER).stat().st_mtime_ns
        except OSError:
            return 0

    def _announced(self) -> str | None:
        try:
            text = (self.models_dir / RELOAD_MARKER).read_text().strip()
        except OSError:
            return None
        return text or None

    def _champion(self) -> Scorer:
        """Return the champion's scorer, from the MLflow alias or models/; the rules only when none exists."""
        return load_scorer(None, **self.source)

    def load(self) -> Served:
        """Load the champion (or the cold-start rules when none is trained) and make it current.

        Any exception is a failed load: logged with its cause, the current model kept, `ModelLoadFailed` raised.
        """
        with self._lock:
            stamp = self._marker_stamp()
            try:
                served = _served(self._champion(), name=self.name)
            except ModelError as exc:
                self._failed(stamp, exc.reason)
                log.error("model load failed, %s: %s", self._keeping(), exc)
                raise ModelLoadFailed(exc.reason) from exc
            except Exception as exc:  # a broken artifact can raise anything; it must not stop the service
                self._failed(stamp, UNKNOWN_REASON)
                log.exception("model load failed, %s", self._keeping())
                raise ModelLoadFailed(UNKNOWN_REASON) from exc
            self._current = served
            self._marker_seen = stamp
            self.last_error = None
            self._retry_delay = RETRY_FIRST_SECONDS
            if self.on_load is not None:
                self.on_load(served)
            log.info("serving model %s version %s (%s)", served.name, served.version, served.kind)
            return served

    def _keeping(self) -> str:
        current = self._current
        if current is None:
            return "no model to serve: scoring answers 503 until the champion is fixed and reloaded"
        return f"still serving version {current.version}"

    def _failed(self, stamp: int, reason: str) -> None:
        self.last_error = reason
        self._marker_seen = stamp
        announced = self._announced()
        if self._current is not None and announced is not None and announced != self._current.stamp:
            # Another worker serves what the marker announces; serving ours would answer with another version.
            log.error("dropping version %s: the service moved on to %s", self._current.version, announced)
            self._current = None
        self._retry_at = time.monotonic() + self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, RETRY_MAX_SECONDS)

    def refresh(self) -> Served | None:
        """Follow a reload another worker announced (or retry after a back-off when no model is loaded)."""
        changed = self._marker_seen is not None and self._marker_stamp() != self._marker_seen
        if changed or (self._current is None and time.monotonic() >= self._retry_at):
            # logged by load; the reload call and /readyz report it
            with contextlib.suppress(ModelLoadFailed):
                self.load()
        return self._current

    def current(self) -> Served | None:
        """Return the model to score with, first following a reload another worker announced."""
        return self.refresh()

    def unavailable_reason(self) -> str:
        """Return why no model is served, in words safe to show any caller."""
        return self.last_error or "no model is loaded yet"

    def reload(self) -> Served:
        """Load the champion now and tell the other workers to follow; raise `ModelLoadFailed` on failure."""
        served = self.load()
        self.models_dir.mkdir(parents=True, exist_ok=True)
        marker = self.models_dir / RELOAD_MARKER
        marker.write_text(served.stamp)
        with self._lock:
            self._marker_seen = self._marker_stamp()
        return served
