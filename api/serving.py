"""The model a running service scores with, swapped atomically when a new champion is promoted.

Loading never takes the service down: whatever a load raises is a failed load, logged, and the worker keeps
the last good model it has (or answers 503 on scoring when it has none, with /healthz still 200).

Two ways a worker learns of a new champion: the reload marker file (the workers of one host, after
`POST /v1/models/reload`), and, serving from MLflow, a poll of the champion alias every `reload_poll_seconds`
(any number of replicas on any hosts, with no marker and no reload call).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.settings import Settings
from scoring.artifacts import ModelError, ModelSource, UnknownModelError, check_model_name, model_dir, registered_names
from scoring.scorer import Scorer, load_scorer

log = logging.getLogger("leadcast.api")

RELOAD_MARKER = ".reload"
# A worker with no usable model retries on its own after these many seconds, doubling up to the cap; a marker
# change (a reload elsewhere, or `touch models/.reload`) makes it retry at once.
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 60.0
UNKNOWN_REASON = "the champion could not be loaded (the service log says why)"
# What a champion is known by where it is polled: its registry version and the run that trained it.
Pointer = tuple[str, str | None]


def model_source(settings: Settings, *, name: str | None = None) -> dict[str, Any]:
    """Return the `load_scorer` arguments that say where the champion of model `name` (default the home's
    registered model name, the default spec's) comes from under `settings`."""
    source: ModelSource = "mlflow" if settings.serves_from_mlflow else "files"
    chosen = name or settings.registered_model_name
    return {"models_dir": model_dir(settings.resolved_models_dir, name=chosen,
                                    default_name=settings.registered_model_name),
            "source": source, "registered_model_name": chosen,
            "tracking_uri": settings.resolved_tracking_uri if source == "mlflow" else None}


def champion_poll(settings: Settings, *, name: str | None = None) -> Callable[[], Pointer | None] | None:
    """Return what asks the source which champion model `name` (default the default spec's) has now (MLflow
    only: models/ is one host's, and its workers follow the reload marker), or None when there is nothing to poll."""
    if not settings.serves_from_mlflow:
        return None
    from scoring.tracking import champion_pointer

    uri, chosen = settings.resolved_tracking_uri, name or settings.registered_model_name
    return lambda: champion_pointer(tracking_uri=uri, registered_model_name=chosen)


def model_names(settings: Settings) -> list[str]:
    """Return every model name there is a champion of under `settings`: the default name first (served by the
    cold-start rules until one is trained), then the names the local registry holds and, serving from MLflow,
    those with a champion alias there."""
    default = settings.registered_model_name
    names = registered_names(settings.resolved_models_dir, default_name=default)
    if settings.serves_from_mlflow:
        from scoring.tracking import champion_names

        names += champion_names(tracking_uri=settings.resolved_tracking_uri)
    return [default, *sorted(set(names) - {default})]


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

    @property
    def pointer(self) -> Pointer | None:
        """Return (version, MLflow run id) as the champion alias names this model; None for the rules."""
        if self.kind == "rules":
            return None
        run_id = self.card.get("mlflow_run_id")
        return self.version, None if run_id is None else str(run_id)


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

    With `poll` (what the source names champion now), `start_polling` runs `poll_once` every few seconds in the
    background: a new champion is loaded off the request path and announced through the marker, so the
    workers of this host agree; a champion that cannot be loaded, or a source that cannot be read, keeps the
    last good model, retried with the same back-off.
    """

    def __init__(self, *, name: str, source: dict[str, Any],
                 on_load: Callable[[Served], None] | None = None,
                 poll: Callable[[], Pointer | None] | None = None) -> None:
        self.name = name
        self.source = source
        self.models_dir: Path = source["models_dir"]
        self.on_load = on_load
        self.poll = poll
        self._polled: Pointer | None = None  # the last champion a poll tried to load
        self._poll_failing = False
        self._poller_pid: int | None = None
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

    def describe(self) -> dict[str, Any]:
        """Return this name's champion as /v1/models lists it: name, version, kind, or why none is served."""
        served = self._current
        if served is None:
            return {"name": self.name, "status": "unavailable", "reason": self.unavailable_reason()}
        return {**served.describe(), "status": "ready"}

    def _champion(self) -> Scorer:
        """Return the champion's scorer, from the MLflow alias or models/; the rules only when none exists."""
        return load_scorer(None, **self.source)

    def load(self) -> Served:
        """Load the champion (or the cold-start rules when none is trained) and make it current.

        Any exception is a failed load: logged with its cause, the current model kept, `ModelLoadFailed` raised.
        """
        with self._lock:
            return self._load_locked()

    def _load_locked(self) -> Served:
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

    def after_fork(self) -> None:
        """Give this process its own lock; call it in each worker once gevent (if used) has patched it.

        The holder is built in the gunicorn master before gevent patches the worker, so its lock would be an OS
        lock: a request waiting on it while the poll greenlet holds it across network I/O blocks the whole
        worker, and the greenlet holding it can never run again (seen: a worker hung for good mid-load).
        """
        self._lock = threading.Lock()

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
        due = changed or (self._current is None and time.monotonic() >= self._retry_at)
        # A load under way in this process (the poll, a reload) is not waited for: this request is served with
        # the current model, and that load announces what it loaded through the marker.
        if due and self._lock.acquire(blocking=False):
            try:
                # logged by load; the reload call and /readyz report it
                with contextlib.suppress(ModelLoadFailed):
                    self._load_locked()
            finally:
                self._lock.release()
        return self._current

    def current(self) -> Served | None:
        """Return the model to score with, first following a reload another worker announced."""
        return self.refresh()

    def serving(self) -> Served | None:
        """Return the model served right now, without following or retrying anything."""
        return self._current

    def unavailable_reason(self) -> str:
        """Return why no model is served, in words safe to show any caller."""
        return self.last_error or "no model is loaded yet"

    def reload(self) -> Served:
        """Load the champion now and tell the other workers to follow; raise `ModelLoadFailed` on failure."""
        served = self.load()
        self._announce(served)
        return served

    def _announce(self, served: Served) -> None:
        """Write the marker so this host's other workers follow to `served`."""
        self.models_dir.mkdir(parents=True, exist_ok=True)
        marker = self.models_dir / RELOAD_MARKER
        marker.write_text(served.stamp)
        with self._lock:
            self._marker_seen = self._marker_stamp()

    def poll_once(self) -> bool:
        """Ask the source which champion it names and load it when it is not the one served; return whether
        a new model was loaded. Nothing raises: a failure keeps the current model and is logged."""
        if self.poll is None:
            return False
        try:
            wanted = self.poll()
        except Exception as exc:  # the registry is down or slow: keep serving, say so once
            if not self._poll_failing:
                log.error("cannot ask which model is champion (%s), still serving %s",
                          getattr(exc, "reason", type(exc).__name__), self._serving())
            self._poll_failing = True
            return False
        if self._poll_failing:
            log.info("the model registry answers again")
        self._poll_failing = False
        current = self._current
        if current is not None and current.pointer == wanted:
            return False
        if wanted == self._polled and time.monotonic() < self._retry_at:
            return False  # this champion failed to load a moment ago: wait out the back-off
        self._polled = wanted
        log.info("the champion is now %s, serving %s: loading it",
                 "none" if wanted is None else f"version {wanted[0]}", self._serving())
        try:
            served = self.load()
        except ModelLoadFailed:  # logged by load; the last good model stays
            return False
        if self._announced() != served.stamp:
            self._announce(served)
        return True

    def _serving(self) -> str:
        current = self._current
        return "no model" if current is None else f"version {current.version}"

    def start_polling(self, every: float) -> None:
        """Run `poll_once` now and then every `every` seconds in a daemon thread of this process (a greenlet
        under gevent); call it in each worker, after the fork. Nothing to do without `poll` or with 0."""
        if self.poll is None or every <= 0 or self._poller_pid == os.getpid():
            return
        self._poller_pid = os.getpid()
        holder = weakref.ref(self)  # a dropped app (tests) ends its thread

        def run() -> None:
            while (me := holder()) is not None:
                try:
                    me.poll_once()
                except Exception:  # poll_once raises nothing by design; a bug must not end the polling
                    log.exception("the champion poll failed")
                del me
                time.sleep(every)

        threading.Thread(target=run, name="leadcast-champion-poll", daemon=True).start()


# How long a list of the MLflow registry's model names is trusted before a request for an unknown name asks
# again: a caller sending made-up names must not cost one registry call each.
NAMES_FRESH_SECONDS = 5.0


class Champions:
    """Every model name's holder, one champion per name: the default name's is built with the app, each other
    name's the first time it is listed (at start, on a reload, or when a request names a model not yet known).

    A name is one of the registry's names or it is refused: `holder(name)` raises `UnknownModelError` listing
    the known names, so no caller ever scores with another name's model.
    """

    def __init__(self, *, default: ModelHolder, make: Callable[[str], ModelHolder],
                 names: Callable[[], list[str]]) -> None:
        self.default = default
        self._make = make
        self._names = names
        self._holders: dict[str, ModelHolder] = {default.name: default}
        self._listed_at = -NAMES_FRESH_SECONDS
        self._lock = threading.Lock()
        self._poll_every: float | None = None

    @property
    def names(self) -> list[str]:
        """Return the names held, the default first."""
        return list(self._holders)

    def discover(self, *, load: bool = True) -> list[str]:
        """List the registry's names again and add a holder for each new one (loading it with `load`); return
        the new names. A registry that cannot be listed adds nothing (logged)."""
        try:
            listed = self._names()
        except Exception as exc:  # an unreadable registry or an MLflow outage: the names held keep serving
            log.error("cannot list the model names (%s)", getattr(exc, "reason", type(exc).__name__))
            return []
        finally:
            self._listed_at = time.monotonic()
        added = []
        with self._lock:
            for name in listed:
                if name not in self._holders:
                    self._holders[name] = self._make(name)
                    added.append(name)
        for name in added:
            holder = self._holders[name]
            if load:
                with contextlib.suppress(ModelLoadFailed):  # logged by load; /v1/models shows the reason
                    holder.load()
            if self._poll_every is not None:
                holder.start_polling(self._poll_every)
        return added

    def holder(self, name: str | None = None) -> ModelHolder:
        """Return the holder of model `name` (default the default spec's); raise `UnknownModelError` when the
        registry holds no such name, or `ModelError` when it cannot be a model name."""
        if name is None:
            return self.default
        found = self._holders.get(name)
        if found is not None:
            return found
        check_model_name(name)
        if time.monotonic() - self._listed_at >= NAMES_FRESH_SECONDS or not _listed_remotely(self.default):
            self.discover()
        found = self._holders.get(name)
        if found is None:
            known = self.names
            raise UnknownModelError(f"no model named {name!r}: the known models are {', '.join(known)}",
                                    name=name, known=known)
        return found

    def holders(self) -> list[ModelHolder]:
        """Return every holder, the default first."""
        return list(self._holders.values())

    def describe(self) -> list[dict[str, Any]]:
        """Return each name's champion (or why it has none), the default first."""
        return [holder.describe() for holder in self.holders()]

    def after_fork(self) -> None:
        """Give each holder (and this registry) its own lock in a new worker; see `ModelHolder.after_fork`."""
        self._lock = threading.Lock()
        for holder in self.holders():
            holder.after_fork()

    def start_polling(self, every: float) -> None:
        """Start each holder's champion poll (and the poll of every name added later)."""
        self._poll_every = every
        for holder in self.holders():
            holder.start_polling(every)


def _listed_remotely(holder: ModelHolder) -> bool:
    """Return whether names are listed from MLflow (a network call, so throttled) rather than from models/."""
    return holder.source.get("source") == "mlflow"
