"""Trend and percentile of each score the API returns, read from the prediction log at request time.

Trend compares a lead's score with its previous logged score by the same model name (any version: two
champions, one per name, score on their own scales). Each worker keeps the latest score per (model name, lead)
of the leads it scored itself (`LatestScores`: bounded, oldest forgotten first, each entry trusted for
`cache_seconds`), filled when the log accepts the rows, so re-scoring a lead asks the store nothing; a lead
this worker has not scored lately (a miss, or an entry older than `cache_seconds`) is read from the store with
one indexed LIMIT 1 query. The staleness this allows, and why it is acceptable, is in docs/store.md: a score
made by another worker or replica less than `cache_seconds` ago is not seen by this worker (its own last score
stands in), which is the lag the asynchronous log has anyway, longer. Percentiles rank a score among the latest
scores of the leads the same model version scored in the last `window_days`; that distribution (101 counts, one
per score) is cached per worker and refreshed in the background, a dictionary look-up on the hot path.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from store import Store, StoreUnavailable
from store.history import AskedScore, Ranks, latest_score, latest_scores, score_counts, trend

if TYPE_CHECKING:
    from api.serving import Served

log = logging.getLogger("leadcast.api")

Key = tuple[str, str]  # model name, version


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


LeadKey = tuple[str, str]  # model name, lead id


class LatestScores:
    """The latest score this worker returned for each (model name, lead), for at most `capacity` such pairs and
    `ttl` seconds each.

    Keyed by model name as well as lead: two champions (one per name) score the same lead on their own scales,
    and a trend compares only with the same name's last score. Entries are kept in the order they were written,
    so the oldest is forgotten first and every entry past its `ttl` is dropped when the next one is written:
    nothing older than `ttl` stays in memory while traffic flows (an erased lead's score lingers in another
    worker for at most that long).
    """

    def __init__(self, *, capacity: int, ttl: float, clock: Callable[[], float]) -> None:
        self.capacity = capacity
        self.ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[LeadKey, tuple[int, float]] = OrderedDict()
        self._names: set[str] = set()  # every model name ever cached, so erasing a lead finds all its entries
        self._lock = threading.Lock()

    def get(self, model_name: str, lead_id: str) -> int | None:
        """Return the lead's cached latest score by `model_name` while it is fresh, else None (ask the store)."""
        found = self._entries.get((model_name, lead_id))
        if found is None or self._clock() - found[1] >= self.ttl:
            return None
        return found[0]

    def put(self, model_name: str, items: Sequence[tuple[str, int]]) -> None:
        """Remember each (lead id, score) as the lead's latest by `model_name`, as of now."""
        if self.ttl <= 0:
            return
        now = self._clock()
        with self._lock:
            self._names.add(model_name)
            entries = self._entries
            for lead_id, score in items:
                key = (model_name, lead_id)
                entries[key] = (score, now)
                entries.move_to_end(key)
            while entries and (len(entries) > self.capacity or now - next(iter(entries.values()))[1] >= self.ttl):
                entries.popitem(last=False)

    def forget(self, lead_id: str) -> None:
        """Drop a lead's entries of every model name (it was erased)."""
        with self._lock:
            for name in self._names:
                self._entries.pop((name, lead_id), None)


class ScoreContext:
    """What each score is compared with: the lead's previous logged score and its model version's recent scores.

    While the store is unavailable, scores go out with trend and percentile null (never an error), and the
    store is not asked again for `outage_pause_seconds`, so an outage does not slow scoring down.
    """

    def __init__(self, store: Store, *, band_points: int = 3, window_days: int = 30, refresh_seconds: float = 300.0,
                 outage_pause_seconds: float = 5.0, latest_seconds: float = 0.0, latest_leads: int = 100_000,
                 clock: Callable[[], float] = time.monotonic, now: Callable[[], datetime] = _utcnow) -> None:
        self.store = store
        self.latest = LatestScores(capacity=latest_leads, ttl=latest_seconds, clock=clock)
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

    def ask(self, *, model_name: str, lead_id: str) -> AskedScore | None:
        """Ask the store now for the lead's previous score by `model_name`, to be read by `annotate` once the
        lead is scored; None when no question is needed (a fresh cached score, or an outage pause)."""
        if self._clock() < self._paused_until or self.latest.get(model_name, lead_id) is not None:
            return None
        try:
            return AskedScore(self.store, model_name=model_name, lead_id=lead_id)
        except StoreUnavailable as exc:
            self._unavailable(exc)
            return None

    def annotate(self, *, model: dict[str, str], lead_ids: list[str | None], scores: list[dict[str, Any]],
                 asked: AskedScore | None = None) -> None:
        """Set `trend` and `percentile` on each score (null for a lead without its own id, or when the store
        is unavailable); a lead's previous score comes from `asked` when that asked for it."""
        previous: dict[str, int] = {}
        ranks: Ranks | None = None
        if self._clock() >= self._paused_until:
            try:
                ranks = self.ranks((model["name"], model["version"]))
                name = model["name"]
                for lead_id in lead_ids:
                    if lead_id is not None and (cached := self.latest.get(name, lead_id)) is not None:
                        previous[lead_id] = cached
                missed = list(dict.fromkeys(i for i in lead_ids if i is not None and i not in previous))
                if len(missed) == 1:  # one lead: asked already while it was scored, or the driver's own lookup
                    if asked is not None and (asked.model_name, asked.lead_id) == (name, missed[0]):
                        found = asked.result()
                    else:
                        found = latest_score(self.store, model_name=name, lead_id=missed[0])
                    if found is not None:
                        previous[missed[0]] = found
                elif missed:
                    with self.store.reading() as conn:
                        previous.update(latest_scores(conn, model_name=name, lead_ids=missed))
            except StoreUnavailable as exc:
                self._unavailable(exc)
                ranks, previous = None, {}
        stored = ranks is not None
        for item, lead_id in zip(scores, lead_ids, strict=True):
            item["trend"] = (trend(previous.get(lead_id), item["score"], band=self.band)
                             if stored and lead_id is not None else None)
            item["percentile"] = ranks.percentile(item["score"]) if ranks is not None else None

    def logged(self, *, model_name: str, lead_ids: list[str | None], scores: list[dict[str, Any]]) -> None:
        """Remember the scores the log accepted as their leads' latest by `model_name` (a dropped row never
        becomes one)."""
        self.latest.put(model_name, [(lead_id, int(item["score"]))
                                     for lead_id, item in zip(lead_ids, scores, strict=True) if lead_id is not None])


_NOTHING_ASKED: AbstractContextManager[None] = contextlib.nullcontext()


def ask_previous_score(context: ScoreContext | None, served: Served, records: list[dict[str, Any]]
                       ) -> AbstractContextManager[AskedScore | None]:
    """Ask the store for the previous score of a single lead before it is scored (the round trip then overlaps
    the scoring), as a context that gives back what was not read; nothing asked for a batch, with the log off,
    or for a lead without a text id (the plain lookup answers those, see `ScoreContext.annotate`)."""
    if context is None or len(records) != 1:
        return _NOTHING_ASKED
    lead_id = records[0].get(served.scorer.spec.id_column or "")
    # The id as sent; the scorer's own reading of it is compared in annotate, and a difference asks again.
    if not isinstance(lead_id, str):
        return _NOTHING_ASKED
    asked = context.ask(model_name=served.name, lead_id=lead_id)
    return _NOTHING_ASKED if asked is None else asked


def annotate_scores(context: ScoreContext | None, served: Served, records: list[dict[str, Any]],
                    body: dict[str, Any], asked: AskedScore | None = None) -> list[str | None]:
    """Add trend and percentile to every score of a response body (both null when the log is off); return
    each score's lead id (None for a row without its own id). `asked`: see `ask_previous_score`."""
    scores = body["scores"]
    if context is None:
        for item in scores:
            item["trend"] = item["percentile"] = None
        return []
    id_column = served.scorer.spec.id_column
    # Only a lead that carries its own id has a history; MLflow-shaped rows are numbered by position.
    lead_ids = [None if r.get(id_column) is None else str(item["id"]) for r, item in zip(records, scores,
                                                                                         strict=True)]
    context.annotate(model=body["model"], lead_ids=lead_ids, scores=scores, asked=asked)
    return lead_ids
