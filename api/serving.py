"""The model a running service scores with, swapped atomically when a new champion is promoted."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crmdata.errors import LeadcastError
from scoring.artifacts import load_trained, read_registry
from scoring.rules import RulesModel
from scoring.scorer import ModelScorer, RulesScorer, Scorer
from scoring.spec import load_spec
from scoring.tracking import fetch_champion

log = logging.getLogger("leadcast.api")
# What loading a model can raise that is the data's or the deployment's fault, not a bug.
LOAD_ERRORS = (LeadcastError, OSError, ValueError)

RELOAD_MARKER = ".reload"


@dataclass(frozen=True)
class Served:
    """One loaded scorer with what a caller is told about it."""

    scorer: Scorer
    name: str
    version: str
    kind: str
    card: dict[str, Any]
    known_fields: frozenset[str]

    def describe(self) -> dict[str, str]:
        """Return the model's name, version and kind (trained or rules)."""
        return {"name": self.name, "version": self.version, "kind": self.kind}


def _served(scorer: Scorer, *, name: str) -> Served:
    spec = scorer.spec
    kind = "rules" if scorer.kind == "rules" else "trained"
    trained = getattr(scorer, "trained", None)
    card = dict(trained.card) if trained is not None else {
        "kind": "rules", "version": scorer.version, "spec": spec.name,
        "note": "No trained model yet: scores come from the cold-start points rules (see docs/scoring.md).",
    }
    known = {spec.id_column, spec.target.column, *spec.feature_columns, *spec.exclude, *spec.protected, "as_of",
             spec.created_at_column, spec.as_of_column}
    return Served(scorer=scorer, name=name, version=scorer.version, kind=kind, card=card,
                  known_fields=frozenset(k for k in known if k is not None))


class ModelHolder:
    """Hold the current model; `reload` loads the champion and swaps the reference in one step.

    Requests read `current()` once and keep that object, so a request in flight finishes on the model it started
    with. Every worker watches a marker file that `reload` touches, so all gunicorn workers follow a reload.
    """

    def __init__(self, *, models_dir: Path, name: str, tracking_uri: str | None = None,
                 on_load: Callable[[Served], None] | None = None) -> None:
        self.models_dir = models_dir
        self.name = name
        self.tracking_uri = tracking_uri
        self.on_load = on_load
        self._current: Served | None = None
        self._lock = threading.Lock()
        self._marker_seen: int | None = None
        self.last_error: str | None = None

    def _marker_stamp(self) -> int:
        try:
            return (self.models_dir / RELOAD_MARKER).stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    def _champion(self) -> Scorer:
        """Return the champion's scorer, from the MLflow alias or models/; the rules only when none exists.

        A champion that is registered but cannot be loaded is an error, never a silent fall back to the rules.
        """
        if self.tracking_uri is not None:
            trained = fetch_champion(tracking_uri=self.tracking_uri, registered_model_name=self.name,
                                     cache_dir=self.models_dir / ".mlflow-cache")
        elif "champion" in read_registry(self.models_dir)["aliases"]:
            trained = load_trained("champion", models_dir=self.models_dir)
        else:
            trained = None
        if trained is not None:
            return ModelScorer(trained)
        return RulesScorer(RulesModel.from_file(None), load_spec(None))

    def load(self) -> Served:
        """Load the champion (or the cold-start rules when none is trained) and make it current."""
        with self._lock:
            stamp = self._marker_stamp()
            try:
                served = _served(self._champion(), name=self.name)
            except LOAD_ERRORS as exc:
                self.last_error = str(exc)
                log.error("model load failed: %s", exc)
                raise
            self._current = served
            self._marker_seen = stamp
            self.last_error = None
            if self.on_load is not None:
                self.on_load(served)
            log.info("serving model %s version %s (%s)", served.name, served.version, served.kind)
            return served

    def current(self) -> Served | None:
        """Return the model to score with, first following a reload another worker announced."""
        if self._marker_seen is not None and self._marker_stamp() != self._marker_seen:
            # keep serving the model we have on failure; readyz and the reload call report the error
            with contextlib.suppress(*LOAD_ERRORS):
                self.load()
        return self._current

    def reload(self) -> Served:
        """Load the champion now and tell the other workers to follow."""
        served = self.load()
        self.models_dir.mkdir(parents=True, exist_ok=True)
        marker = self.models_dir / RELOAD_MARKER
        marker.write_text(served.version)
        with self._lock:
            self._marker_seen = self._marker_stamp()
        return served
