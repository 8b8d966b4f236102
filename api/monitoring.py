"""Model health from the store: the logged scores of one version of one model name against the profile it was
trained on.

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


class NoTrainedModel(MonitoringError):
    """Raised when a model name has no trained champion (the cold-start rules have no profile to compare with)."""


ALIASES = frozenset({"champion", "challenger"})  # a bare one names a version of the default name, as before names


def split_model_ref(ref: str | None) -> tuple[str | None, str | None]:
    """Return (model name, version or alias) that `NAME@VERSION`, `NAME`, or a bare version or alias asks for.

    None stands for what the text leaves out: the default name, and that name's champion. A bare version (all
    digits) or alias (champion, challenger) is one of the default name's, as it was before models had names; a
    name that looks like one is written `NAME@champion`. The caller checks the name against the registry.
    """
    if ref is None:
        return None, None
    if "@" in ref:
        name, _, version = ref.rpartition("@")
        if not name or not version:
            raise MonitoringError(f"model {ref!r} is not NAME@VERSION: give both, e.g. leadcast-lead-scoring@3 or "
                                  "web-signups@champion (or a name alone for its champion)")
        return name, version
    if ref.isdigit() or ref in ALIASES:
        return None, ref
    return ref, None


def store_health(settings: Settings, store: Store, *, name: str | None = None, version: str | None = None,
                 since: datetime | None = None, now: datetime | None = None, seed: int = 0,
                 n_boot: int = 200) -> dict[str, Any]:
    """Return the health report of version `version` (default the champion) of model `name` (default the default
    spec's) over the leads that model version scored since `since`; `name` must be one the registry holds."""
    from api.serving import model_source
    from scoring.artifacts import resolve_trained
    from scoring.monitoring import live_health
    from scoring.spec import prepare
    from store.monitoring import logged_scores

    now = now or datetime.now(UTC)
    name = name or settings.registered_model_name
    trained = resolve_trained(version, **model_source(settings, name=name))
    if trained is None:
        which = "" if name == settings.registered_model_name else f" named {name!r}"
        raise NoTrainedModel(f"no model{which} is trained: the cold-start rules have no training profile to "
                             "compare with")
    profile = trained.card.get("profile")
    if profile is None:
        raise MonitoringError(f"model version {trained.version} was trained before leadcast saved reference "
                              "profiles: retrain it to monitor it")

    def typed(raw: pd.DataFrame) -> pd.DataFrame:
        raw = raw.rename(columns={"lead_id": spec.id_column})
        if spec.as_of_column and spec.as_of_column != "as_of":
            raw = raw.rename(columns={"as_of": spec.as_of_column})
        return prepare(raw, spec=spec, table="prediction log").features

    spec = trained.spec
    # The log's rows of this name only: two names each have a version 1, and their rows never mix.
    logged = logged_scores(store, model_name=name, model_version=trained.version, since=since, now=now,
                           maturity_days=settings.outcome_maturity_days, feature_rows=settings.monitoring_sample_rows,
                           read_features=typed)
    window = {"model": f"{name}@{trained.version}", "name": name, "version": trained.version,
              "since": None if since is None else since.isoformat(), "until": now.isoformat(timespec="seconds"),
              "maturity_days": settings.outcome_maturity_days}
    if logged.scores.empty:
        return {**window, "leads_scored": 0, "rows_logged": 0, "leads_matured": 0, "leads_converted": 0,
                "features": [], "outcomes": None, "score_psi": None, "mean_probability": None,
                "alerts": [], "warnings": [f"no score of version {trained.version} is logged in this window"],
                "base_rate_training": profile["base_rate"], "features_sampled": 0}
    report = live_health(profile=profile, spec=spec, features=lambda: logged.features,
                         probability=logged.scores["probability"].to_numpy(),
                         converted=logged.scores["converted"].to_numpy(), rng=np.random.default_rng(seed),
                         n_boot=n_boot, rows_logged=logged.rows)
    return {**window, **report}


class HealthRefresh:
    """Keep the model-health gauges of one worker fresh: `store_health` of each name's champion every `every` s.

    A daemon thread (a greenlet under gevent) started by the worker's first request, after any fork, so each
    gunicorn worker refreshes its own gauges and the master never does; its first refresh is `every` seconds
    after that request (a worker that serves for less never pays for one). Requests never wait for it. A failed
    refresh (store down, no profile) is logged with the model name and tried again `every` seconds later; the
    gauges keep their last values meanwhile. Every name the registry holds is refreshed in turn, one failing name
    never keeping the others from theirs.
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
        """Compute the health report of each model name's champion and publish its gauges, labelled by name;
        return whether every name with a trained champion worked (a name on the cold-start rules has nothing to
        gauge and is skipped)."""
        from api.serving import model_names
        from scoring.artifacts import ModelError

        self.runs += 1
        try:
            names = model_names(self.settings)
        except Exception as exc:  # an unreadable registry or an MLflow outage: tried again next time
            self.failures += 1
            log.warning("model-health gauges not refreshed (trying again in %.0fs): cannot list the model names: "
                        "%s", self.every, getattr(exc, "reason", exc))
            return False
        failed = False
        for name in names:
            try:
                report = store_health(self.settings, self.store, name=name)
            except NoTrainedModel:
                log.debug("model %s has no trained champion: no health gauges for it", name)
                continue
            except StoreUnavailable as exc:  # the other names would wait on the same store: all tried next time
                failed = True
                log.warning("model-health gauges not refreshed (trying again in %.0fs): %s", self.every, exc)
                break
            except (StoreError, MonitoringError, ModelError) as exc:
                failed = True
                log.warning("model-health gauges not refreshed (trying again in %.0fs): model %s: %s", self.every,
                            name, exc)
                continue
            except Exception:  # a bug must not end the refresh: logged with its traceback, retried next time
                failed = True
                log.exception("model-health gauges not refreshed (trying again in %.0fs): model %s", self.every, name)
                continue
            self.metrics.set_health(report)
        if failed:
            self.failures += 1
        return not failed


def install_health_refresh(app: Flask, *, settings: Settings, store: Store, metrics: Metrics) -> HealthRefresh:
    """Refresh the model-health gauges in the background of each worker (monitoring_refresh_seconds; 0: off)."""
    refresh = HealthRefresh(settings, store, metrics, every=settings.monitoring_refresh_seconds)
    if refresh.every > 0:
        app.before_request(refresh.ensure_started)
    return refresh
