"""Score history from the prediction log: one lead's scores page by page, each lead's latest score by a model
name, and the distribution of a model version's recent scores (for percentiles).

The log is written asynchronously (store/predictions.py), so these read what is already stored: a score
still queued in some process is not seen until its batch is written (normally within a fraction of a second).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from store.core import Store, StoreError
from store.outcomes import chunks
from store.schema import predictions

MAX_SCORE = 100


@dataclass(frozen=True, slots=True)
class LoggedScore:
    """One logged score of a lead (times naive UTC)."""

    id: int
    scored_at: datetime
    as_of: datetime | None
    model_name: str
    model_version: str
    model_kind: str
    probability: float
    score: int
    grade: str
    reasons: list[dict[str, Any]] | None  # each {feature, text, contribution}: the API's Reason (see `stored_reasons`)


def encode_cursor(scored_at: datetime, row_id: int) -> str:
    """Return the opaque cursor that continues a history after the score (scored_at, row_id)."""
    return base64.urlsafe_b64encode(f"{scored_at.isoformat()}|{row_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """Return the (scored_at, id) a cursor stands for; raise StoreError when it is not one of ours."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, _, row_id = text.partition("|")
        return datetime.fromisoformat(stamp), int(row_id)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise StoreError("cursor is not one this service returned") from exc


def lead_scores(store: Store, *, lead_id: str, limit: int, cursor: str | None = None
                ) -> tuple[list[LoggedScore], str | None]:
    """Return up to `limit` logged scores of a lead, newest first, after `cursor`; and the next page's cursor.

    Keyset pagination on (scored_at, id): a page stays right while new scores arrive, and each page is one
    walk of the (lead_id, scored_at) index.
    """
    query = sa.select(predictions.c.id, predictions.c.scored_at, predictions.c.as_of, predictions.c.model_name,
                      predictions.c.model_version, predictions.c.model_kind, predictions.c.probability,
                      predictions.c.score, predictions.c.grade, predictions.c.reasons
                      ).where(predictions.c.lead_id == lead_id)
    if cursor is not None:
        scored_at, row_id = decode_cursor(cursor)
        query = query.where(sa.or_(predictions.c.scored_at < scored_at,
                                   sa.and_(predictions.c.scored_at == scored_at, predictions.c.id < row_id)))
    query = query.order_by(predictions.c.scored_at.desc(), predictions.c.id.desc()).limit(limit + 1)
    with store.reading() as conn:
        rows = conn.execute(query).all()
    page = [LoggedScore(id=int(r.id), scored_at=r.scored_at, as_of=r.as_of, model_name=r.model_name,
                        model_version=r.model_version, model_kind=r.model_kind, probability=float(r.probability),
                        score=int(r.score), grade=r.grade, reasons=stored_reasons(r.reasons)) for r in rows[:limit]]
    following = encode_cursor(page[-1].scored_at, page[-1].id) if len(rows) > limit and page else None
    return page, following


def stored_reasons(stored: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Return a row's logged reasons as {feature, text, contribution}, reading the older shape too.

    `leadcast score --log` used to log reasons parsed back from its file's "words: +n; words: -m" columns:
    {text, contribution} with no feature, and a piece of words holding "; " as its own piece with contribution
    null. Such a row reads with feature "" (the field was never recorded) and each null piece joined back to
    the words after it. This is the one place that shape is read; rows logged since carry the feature.
    """
    if stored is None or all("feature" in r for r in stored):
        return stored
    out: list[dict[str, Any]] = []
    pending: list[str] = []  # words of null pieces, waiting for the piece that carries their points
    for r in stored:
        if "feature" in r:
            out.append(r)
        elif r.get("contribution") is None:
            pending.append(str(r.get("text", "")))
        else:
            out.append({"feature": "", "text": "; ".join([*pending, str(r.get("text", ""))]),
                        "contribution": r["contribution"]})
            pending = []
    if pending and out:  # words with no points after them join the last reason (the old writer left none)
        out[-1] = {**out[-1], "text": "; ".join([out[-1]["text"], *pending])}
    return out


# The newest score of one lead by one model name: a backward walk of the lead's (lead_id, scored_at) index
# entries, skipping the scores of other names (a lead is scored by a handful of names at most).
_LATEST_ONE_SQL = ("SELECT score FROM predictions WHERE lead_id = {lead} AND model_name = {name} "
                   "ORDER BY scored_at DESC, id DESC LIMIT 1")
_LATEST_ONE_SENT = _LATEST_ONE_SQL.format(lead="$1", name="$2")  # libpq's own placeholders (Store.send_lookup)


def latest_score(store: Store, *, model_name: str, lead_id: str) -> int | None:
    """Return the newest stored score by `model_name` of one lead (None when it has none): the hot path's
    lookup, `_LATEST_ONE_SQL` run by the driver itself (`Store.autocommit_driver`), faults raised as
    StoreUnavailable."""
    with store.autocommit_driver() as driver:
        p = store.placeholder
        cursor = driver.execute(_LATEST_ONE_SQL.format(lead=p, name=p), (lead_id, model_name))
        found = cursor.fetchone()
        cursor.close()
    return None if found is None else int(found[0])


class AskedScore:
    """`latest_score` of one lead, asked before the request's other work and answered after it.

    On PostgreSQL the query goes out at once (`Store.send_lookup`) and `result()` reads its answer, so the
    round trip overlaps whatever the caller does meanwhile (the scoring of that lead). On SQLite, or with every
    lookup connection busy, `result()` asks `latest_score` then: the same answer either way. Use it as a context
    manager, or call `close()`: an answer never read is drained (the connection goes back clean).
    """

    __slots__ = ("_read", "_sent", "lead_id", "model_name", "store")

    def __init__(self, store: Store, *, model_name: str, lead_id: str) -> None:
        self.store = store
        self.model_name = model_name
        self.lead_id = lead_id
        self._read = False
        self._sent = store.send_lookup(_LATEST_ONE_SENT, (lead_id, model_name))  # StoreUnavailable when down

    def result(self) -> int | None:
        """Return the newest stored score by the model name of the lead (None when it has none), once;
        faults raised as StoreUnavailable."""
        assert not self._read, "an asked score is read once"
        self._read = True
        if self._sent is None:
            return latest_score(self.store, model_name=self.model_name, lead_id=self.lead_id)
        found = self.store.read_lookup(self._sent)
        return None if found is None else int.from_bytes(found, "big", signed=True)  # int4, binary

    def close(self, *, wait: bool = True) -> None:
        """Give back the connection of an answer never read (drained, or with `wait` False closed)."""
        if self._sent is not None and not self._read:
            self._read = True
            self._sent.drop(wait=wait)

    def __enter__(self) -> AskedScore:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        # Leaving on an error: drain the answer (it is there by now); on a greenlet kill or an interrupt,
        # wait for nothing more and close the connection.
        self.close(wait=kind is None or issubclass(kind, Exception))


def latest_scores(conn: Connection, *, model_name: str, lead_ids: Sequence[str]) -> dict[str, int]:
    """Return the newest stored score by `model_name` (any version) of each of `lead_ids` that has one.

    Scores of another model name never count: two champions (one per name) score on different scales.
    """
    ids = list(dict.fromkeys(lead_ids))  # one lead alone is `latest_score`'s, on the hot path
    out: dict[str, int] = {}
    for part in chunks(ids):
        rank = sa.func.row_number().over(partition_by=predictions.c.lead_id,
                                         order_by=(predictions.c.scored_at.desc(), predictions.c.id.desc()))
        ranked = (sa.select(predictions.c.lead_id, predictions.c.score, rank.label("rank"))
                  .where(predictions.c.lead_id.in_(part), predictions.c.model_name == model_name).subquery())
        for lead_id, score in conn.execute(sa.select(ranked.c.lead_id, ranked.c.score).where(ranked.c.rank == 1)):
            out[lead_id] = int(score)
    return out


def score_counts(conn: Connection, *, model_name: str, model_version: str, since: datetime) -> list[int]:
    """Return how many leads hold each score 0-100 as their latest score by this model version since `since`.

    Each lead counts once, with the newest score this version gave it in the window.
    """
    rank = sa.func.row_number().over(partition_by=predictions.c.lead_id,
                                     order_by=(predictions.c.scored_at.desc(), predictions.c.id.desc()))
    ranked = (sa.select(predictions.c.score, rank.label("rank"))
              .where(predictions.c.model_name == model_name, predictions.c.model_version == model_version,
                     predictions.c.scored_at >= since).subquery())
    counts = [0] * (MAX_SCORE + 1)
    query = sa.select(ranked.c.score, sa.func.count()).where(ranked.c.rank == 1).group_by(ranked.c.score)
    for score, count in conn.execute(query):
        counts[min(max(int(score), 0), MAX_SCORE)] += int(count)
    return counts


def trend(previous: int | None, current: int, *, band: int) -> str:
    """Return new (no previous score), improving or declining (more than `band` points up or down) or steady."""
    if previous is None:
        return "new"
    if current - previous > band:
        return "improving"
    if previous - current > band:
        return "declining"
    return "steady"


@dataclass(frozen=True)
class Ranks:
    """A score distribution ready for percentiles: `below[s]` leads scored under s, `counts[s]` scored s."""

    counts: tuple[int, ...]
    below: tuple[int, ...]
    total: int

    @classmethod
    def of(cls, counts: Sequence[int]) -> Ranks:
        """Build the cumulative counts of a 0-100 score histogram."""
        below, running = [], 0
        for c in counts:
            below.append(running)
            running += c
        return cls(counts=tuple(counts), below=tuple(below), total=running)

    def percentile(self, score: int) -> float | None:
        """Return the share of leads scoring lower plus half of those scoring the same, in percent (one
        decimal); None when the distribution is empty."""
        if self.total == 0:
            return None
        s = min(max(score, 0), MAX_SCORE)
        return round(100.0 * (self.below[s] + 0.5 * self.counts[s]) / self.total, 1)
