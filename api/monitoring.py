"""Model health from the store: the logged scores of one model version against the profile it was trained on.

The one place the CLI (`leadcast monitor`), the endpoint (`GET /v1/models/monitoring`) and the Prometheus
gauges get a health report from, so all three say the same.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from api.settings import Settings
from crmdata.errors import LeadcastError
from store import Store, StoreError, StoreUnavailable

if TYPE_CHECKING:
    from flask import Flask

    from api.metrics import Metrics

log = logging.getLogger("leadcast.api.monitoring")


class MonitoringError(LeadcastError):
    """Raised when a health report cannot be built as asked (unknown model, bad date, no profile)."""


def parse_since(text: str | None, *, field: str = "since") -> datetime | None:
    """Return a `since` date as naive UTC, or None; refuse text that is not an ISO 8601 date or time."""
    if text is None or not str(text).strip():
        return None
    try:
        stamp = pd.Timestamp(datetime.fromisoformat(str(text).strip()))  # ISO 8601 only: "1970-" is no date
    except (ValueError, TypeError) as exc:
        raise MonitoringError(f"{field} must be an ISO 8601 date or time such as 2026-11-01, not {text!r}") from exc
    if stamp is pd.NaT or not isinstance(stamp, pd.Timestamp) or not 1970 <= stamp.year <= 9999:
        raise MonitoringError(f"{field} must be an ISO 8601 date or time from 1970, not {text!r}")
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.to_pydatetime()


def split_model_ref(ref: str | None, *, settings: Settings) -> str | None:
    """Return the version or alias of `NAME@VERSION` (or of a bare version or alias); refuse another name."""
    if ref is None or "@" not in ref:
        return ref
    name, _, version = ref.rpartition("@")
    if name != settings.registered_model_name:
        raise MonitoringError(f"no model named {name!r}: this registry holds {settings.registered_model_name!r}")
    if not version:
        raise MonitoringError(f"--model {ref!r} names no version: use NAME@VERSION, e.g. "
                              f"{settings.registered_model_name}@3 or {settings.registered_model_name}@champion")
    return version


def store_health(settings: Settings, store: Store, *, model: str | None = None, since: datetime | None = None,
                 now: datetime | None = None, seed: int = 0, n_boot: int = 200) -> dict[str, Any]:
    """Return the health report of a model version (default the champion) over the leads it scored since `since`."""
    from api.serving import model_source
    from scoring.artifacts import resolve_trained
    from scoring.monitoring import live_health
    from scoring.spec import prepare
    from store.monitoring import logged_scores

    now = now or datetime.now(UTC)
    ref = split_model_ref(model, settings=settings)
    trained = resolve_trained(ref, **model_source(settings))
    if trained is None:
        raise MonitoringError("no model is trained: the cold-start rules have no training profile to compare with")
    profile = trained.card.get("profile")
    if profile is None:
        raise MonitoringError(f"model version {trained.version} was trained before leadcast saved reference "
                              "profiles: retrain it to monitor it")
    spec = trained.spec
    logged = logged_scores(store, model_name=settings.registered_model_name, model_version=trained.version,
                           since=since, now=now, maturity_days=settings.outcome_maturity_days)
    window = {"model": f"{settings.registered_model_name}@{trained.version}", "version": trained.version,
              "since": None if since is None else since.isoformat(), "until": now.isoformat(timespec="seconds"),
              "maturity_days": settings.outcome_maturity_days}
    if logged.scores.empty:
        return {**window, "leads_scored": 0, "rows_logged": 0, "leads_matured": 0, "leads_converted": 0,
                "features": [], "outcomes": None, "score_psi": None, "mean_probability": None,
                "alerts": [], "warnings": [f"no score of version {trained.version} is logged in this window"],
                "base_rate_training": profile["base_rate"], "features_sampled": 0}
    raw = logged.features.rename(columns={"lead_id": spec.id_column})
    if spec.as_of_column and spec.as_of_column != "as_of":
        raw = raw.rename(columns={"as_of": spec.as_of_column})
    features = prepare(raw, spec=spec, table="prediction log").features
    report = live_health(profile=profile, spec=spec, features=features,
                         probability=logged.scores["probability"].to_numpy(),
                         converted=logged.scores["converted"].to_numpy(), rng=np.random.default_rng(seed),
                         n_boot=n_boot, rows_logged=logged.rows)
    return {**window, **report}


class HealthRefresh:
    """Keep the model-health gauges of one worker fresh: `store_health` of the champion every `every` seconds.

    A daemon thread (a greenlet under gevent) started by the worker's first request, after any fork, so each
    gunicorn worker refreshes its own gauges and the master never does; its first refresh is `every` seconds
    after that request (a worker that serves for less never pays for one). Requests never wait for it. A failed
    refresh (store down, no model, no profile) is logged and tried again `every` seconds later; the gauges keep
    their last values meanwhile.
    """

    def __init__(self, settings: Settings, store: Store, metrics: Metrics, *, every: float) -> None:
        self.settings, self.store, self.metrics, self.every = settings, store, metrics, every
        self.runs = self.failures = 0
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def ensure_started(self) -> None:
        """Start this process's refresh thread unless it runs already (or the refresh is off: every = 0)."""
        if self.every <= 0 or self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
        holder = weakref.ref(self)  # a dropped app (tests) ends its thread at its next wake-up
        stopped, first = self._stopped, self.every

        def run() -> None:
            every = first
            while not stopped.wait(every) and (me := holder()) is not None:
                me.refresh_once()
                every = me.every
                del me

        self._thread = threading.Thread(target=run, name="leadcast-health-gauges", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> bool:
        """End the refresh thread: now if it is waiting, else once its refresh is done (up to `timeout` s)."""
        self._stopped.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        return thread is None or not thread.is_alive()

    def refresh_once(self) -> bool:
        """Compute the champion's health report and publish its gauges; return whether that worked."""
        from scoring.artifacts import ModelError

        self.runs += 1
        try:
            report = store_health(self.settings, self.store)
        except (StoreError, StoreUnavailable, MonitoringError, ModelError) as exc:
            self.failures += 1
            log.warning("model-health gauges not refreshed (trying again in %.0fs): %s", self.every, exc)
            return False
        except Exception:  # a bug must not end the refresh: logged with its traceback, retried next time
            self.failures += 1
            log.exception("model-health gauges not refreshed (trying again in %.0fs)", self.every)
            return False
        self.metrics.set_health(report)
        return True


def install_health_refresh(app: Flask, *, settings: Settings, store: Store, metrics: Metrics) -> HealthRefresh:
    """Refresh the model-health gauges in the background of each worker (monitoring_refresh_seconds; 0: off)."""
    refresh = HealthRefresh(settings, store, metrics, every=settings.monitoring_refresh_seconds)
    if refresh.every > 0:
        app.before_request(refresh.ensure_started)
    return refresh
