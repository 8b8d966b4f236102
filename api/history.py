"""Trend and percentile of each score the API returns, read from the prediction log at request time.

Trend compares a lead's score with its newest score already stored: the log is written asynchronously, so a
score made a moment ago (still queued, normally for under a second) is not yet "previous". Percentiles rank a
score among the latest scores of the leads the same model version scored in the last `window_days`; that
distribution (101 counts, one per score) is cached per worker and refreshed in the background, so the hot path
pays one indexed LIMIT 1 query per request for one lead and a dictionary look-up for the percentile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from store import Store, StoreUnavailable
from store.history import Ranks, latest_scores, score_counts, trend

if TYPE_CHECKING:
    from api.serving import Served

log = logging.getLogger("leadcast.api")

Key = tuple[str, str]  # model name, version


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class ScoreContext:
    """What each score is compared with: the lead's previous logged score and its model version's recent scores.

    While the store is unavailable, scores go out with trend and percentile null (never an error), and the
    store is not asked again for `outage_pause_seconds`, so an outage does not slow scoring down.
    """

    def __init__(self, store: Store, *, band_points: int = 3, window_days: int = 30, refresh_seconds: float = 300.0,
                 outage_pause_seconds: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = _utcnow) -> None:
        self.store = store
        self.band = band_points
        self.window = timedelta(days=window_days)
        self.refresh_seconds = refresh_seconds
        self.outage_pause = outage_pause_seconds
        self._clock = clock
        self._now = now
        self._ranks: dict[Key, tuple[float, Ranks]] = {}
        self._refreshing: set[Key] = set()
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._last_log = 0.0

    def _load(self, key: Key) -> Ranks:
        with self.store.begin() as conn:
            counts = score_counts(conn, model_name=key[0], model_version=key[1], since=self._now() - self.window)
        ranks = Ranks.of(counts)
        with self._lock:
            self._ranks[key] = (self._clock(), ranks)
        return ranks

    def _refresh(self, key: Key) -> None:
        try:
            self._load(key)
        except StoreUnavailable as exc:
            self._unavailable(exc)
        finally:
            with self._lock:
                self._refreshing.discard(key)

    def ranks(self, key: Key) -> Ranks:
        """Return the cached distribution of `key` (loaded now when absent; refreshed in the background when
        older than refresh_seconds, the old one served meanwhile; recomputed every time when that is 0)."""
        found = self._ranks.get(key)
        if found is None or self.refresh_seconds == 0:
            return self._load(key)
        loaded, ranks = found
        if self._clock() - loaded >= self.refresh_seconds:
            with self._lock:
                start = key not in self._refreshing
                self._refreshing.add(key)
            if start:
                threading.Thread(target=self._refresh, args=(key,), name="leadcast-percentiles", daemon=True).start()
        return ranks

    def _unavailable(self, exc: StoreUnavailable) -> None:
        self._paused_until = self._clock() + self.outage_pause
        if self._clock() - self._last_log >= 10:  # one line per 10 s, not one per request
            self._last_log = self._clock()
            log.warning("score trends and percentiles off for %.0fs: %s", self.outage_pause, exc)

    def annotate(self, *, model: dict[str, str], lead_ids: list[str | None], scores: list[dict[str, Any]]) -> None:
        """Set `trend` and `percentile` on each score (null for a lead without its own id, or when the store
        is unavailable)."""
        previous: dict[str, int] = {}
        ranks: Ranks | None = None
        if self._clock() >= self._paused_until:
            try:
                ranks = self.ranks((model["name"], model["version"]))
                known = [i for i in lead_ids if i is not None]
                if known:
                    with self.store.begin() as conn:
                        previous = latest_scores(conn, lead_ids=known)
            except StoreUnavailable as exc:
                self._unavailable(exc)
                ranks, previous = None, {}
        stored = ranks is not None
        for item, lead_id in zip(scores, lead_ids, strict=True):
            item["trend"] = (trend(previous.get(lead_id), item["score"], band=self.band)
                             if stored and lead_id is not None else None)
            item["percentile"] = ranks.percentile(item["score"]) if ranks is not None else None


def annotate_scores(context: ScoreContext | None, served: Served, records: list[dict[str, Any]],
                    body: dict[str, Any]) -> None:
    """Add trend and percentile to every score of a response body (both null when the log is off)."""
    scores = body["scores"]
    if context is None:
        for item in scores:
            item["trend"] = item["percentile"] = None
        return
    id_column = served.scorer.spec.id_column
    # Only a lead that carries its own id has a history; MLflow-shaped rows are numbered by position.
    lead_ids = [None if r.get(id_column) is None else str(item["id"]) for r, item in zip(records, scores,
                                                                                         strict=True)]
    context.annotate(model=body["model"], lead_ids=lead_ids, scores=scores)
