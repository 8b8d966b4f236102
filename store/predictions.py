"""The prediction log: rows queued by the caller, written in batches by a background thread, never blocking.

The caller's cost is one append under a lock. When the database is down the writer keeps its batch and
retries with a growing pause; rows that arrive while the queue is full are dropped and counted (the
`on_drop` callback and a log line), never lost silently. Memory is bounded: `capacity` queued rows plus the
one batch (at most `batch_rows` rows plus one request's) that the writer holds while it retries.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from sqlalchemy import exc as sa_exc

from store.core import Store, StoreUnavailable
from store.schema import predictions

log = logging.getLogger("leadcast.store")

# A request's rows are built in the writer thread from what the caller hands over: (count, builder).
Entry = tuple[int, Callable[[], list[dict[str, Any]]]]


class PredictionLog:
    """A bounded queue of prediction rows and the thread that writes them to `store` in batches.

    The thread starts on the first `record` in each process (a gunicorn worker forked from a master that
    built the app gets its own), and the queue is flushed when the process exits. Each write takes everything
    queued, up to `batch_rows` (plus one request's rows): a writer that fell behind catches up with fewer,
    larger writes instead of one request's rows per write (under gevent a write costs the writer a turn per
    round trip, and it gets a turn per request scored: docs/store.md).
    """

    def __init__(self, store: Store, *, capacity: int = 100_000, batch_rows: int = 10_000,
                 interval_seconds: float = 0.2, max_backoff_seconds: float = 5.0,
                 on_drop: Callable[[int], None] | None = None) -> None:
        self.store = store
        self.capacity = capacity
        self.batch_rows = batch_rows
        self.interval = interval_seconds
        self.max_backoff = max_backoff_seconds
        self.on_drop = on_drop
        self.dropped = 0
        self.written = 0
        self._pid = 0
        self._reset()

    def _reset(self) -> None:
        self._entries: deque[Entry] = deque()
        self._queued = 0
        self._in_flight = 0
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._last_drop_log = 0.0
        self._last_retry_log = 0.0

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # first use in this process, or a fork: nothing of the parent's is ours
            self._reset()
            self._pid = os.getpid()
            self._turn = _gevent_turn()  # a gevent worker patches itself after the fork, before this runs
            self._thread = threading.Thread(target=self._run, name="leadcast-prediction-log", daemon=True)
            self._thread.start()
            atexit.register(self.close)

    def record(self, count: int, build: Callable[[], list[dict[str, Any]]]) -> bool:
        """Queue `count` rows that `build()` returns (called in the writer thread); False when they were dropped."""
        if count <= 0:
            return True
        self._ensure_thread()
        with self._cond:
            if self._stop or self._queued + count > self.capacity:
                self._drop(count, full=not self._stop)
                return False
            self._entries.append((count, build))
            self._queued += count
            if self._queued >= self.batch_rows:
                self._cond.notify()
        if self._turn is not None:
            # Give the writer a turn. Its greenlet, waiting on the database, otherwise runs only when a request's
            # greenlet blocks on its socket, which a client sending request after request rarely makes it do:
            # the log fell behind scoring (docs/store.md). gevent.idle polls the sockets without waiting and runs
            # the greenlets they woke (sleep(0) would not poll them). Threads need no such turn.
            self._turn()
        return True

    def _drop(self, count: int, *, full: bool = False) -> None:
        """Count `count` dropped rows; with `full` (the queue had no room), warn (each other cause logs its own)."""
        self.dropped += count
        if self.on_drop is not None:
            self.on_drop(count)
        if not full:
            return
        now = time.monotonic()
        if now - self._last_drop_log >= 10:  # one line per 10 s, with the running total, not one per request
            self._last_drop_log = now
            log.warning("prediction log queue full (%d rows): dropped %d row(s) so far in this process",
                        self.capacity, self.dropped)

    def _take(self) -> list[Entry]:
        taken: list[Entry] = []
        rows = 0
        while self._entries and rows < self.batch_rows:
            entry = self._entries.popleft()
            taken.append(entry)
            rows += entry[0]
        self._queued -= rows
        self._in_flight = rows
        return taken

    def _run(self) -> None:
        pending: list[dict[str, Any]] = []
        backoff = self.interval
        while True:
            with self._cond:
                if not pending:
                    if not self._entries:
                        if self._stop:
                            return
                        self._cond.wait(self.interval)
                    taken = self._take()
                else:
                    taken = []
            try:
                pending.extend(_build(taken))
            except Exception:  # a bug in a builder must not kill the writer
                log.exception("prediction log: rows of %d request(s) could not be built and were dropped",
                              len(taken))
                with self._cond:
                    self._drop(sum(n for n, _ in taken))
                    self._in_flight = 0
            if not pending:
                continue
            try:
                self._write(pending)
            except StoreUnavailable as exc:
                # A row the database will never take (text with a NUL on PostgreSQL) is not an outage: retried as
                # a batch it would stop this process's log for good; written row by row, only it is lost.
                left = self._write_each(pending) if self._refused_data(exc) else pending
                if left:
                    pending = left
                    if self._stop and time.monotonic() > self._deadline:
                        with self._cond:
                            self._drop(len(pending))
                            self._in_flight = 0
                        return
                    now = time.monotonic()
                    if now - self._last_retry_log >= 10:  # the first failure, then one line per 10 s
                        self._last_retry_log = now
                        log.warning("prediction log: %d row(s) not written, retrying every %.1fs at most: %s",
                                    len(pending), self.max_backoff, exc)
                    time.sleep(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
                    continue
                pending = []  # every row written or dropped one at a time, and counted there
            except Exception:  # a bug must not kill the writer: log the batch as lost, keep going
                log.exception("prediction log: %d row(s) could not be written and were dropped", len(pending))
                with self._cond:
                    self._drop(len(pending))
                pending = []  # counted as dropped: not written as well
            self.written += len(pending)
            pending = []
            backoff = self.interval
            self._last_retry_log = 0.0
            with self._cond:
                self._in_flight = 0
                self._cond.notify_all()

    def _refused_data(self, exc: BaseException) -> bool:
        """Return whether a write failed on the rows' values (a DB-API DataError), not on the database."""
        driver = self.store._driver_error("DataError")  # DBAPIError (any error) until an engine exists
        data_errors = (sa_exc.DataError,) if driver is sa_exc.DBAPIError else (sa_exc.DataError, driver)
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, data_errors):
                return True
            cause = cause.__cause__
        return False

    def _write_each(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Write `rows` one at a time, dropping (and counting) those refused for their values; return the rows
        left unwritten when the database itself failed part way, to be retried as a batch."""
        for i, row in enumerate(rows):
            try:
                self._write([row])
            except StoreUnavailable as exc:
                if not self._refused_data(exc):
                    return rows[i:]
                log.error("prediction log: a row of lead %r was refused by the database and dropped: %s",
                          str(row.get("lead_id"))[:100], exc)
                with self._cond:
                    self._drop(1)
                continue
            self.written += 1
        return []

    def _write(self, rows: list[dict[str, Any]]) -> None:
        if self.store.is_sqlite:
            with self.store.begin() as conn:
                conn.execute(predictions.insert(), rows)
            return
        # One COPY in autocommit is atomic by itself: two round trips (COPY, its end) where a transaction took
        # four. Under gevent each round trip is a yield, and the writer's greenlet runs again only when a
        # request's greenlet yields in turn, after scoring a whole batch: see docs/store.md.
        with self.store.autocommit_driver() as driver:
            copy_rows(driver, rows)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued row is written (or `timeout` passes); return whether the queue is empty."""
        if self._thread is None or self._pid != os.getpid():
            return True
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.notify()
            while self._queued or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
                self._cond.notify()
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (for at most `timeout` seconds) and stop the thread; later rows are dropped."""
        if self._thread is None or self._pid != os.getpid():
            return
        self._deadline = time.monotonic() + timeout
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout + 1)
        with self._cond:
            left = self._queued
            if left:
                self._entries.clear()
                self._queued = 0
                self._drop(left)
        if left:
            log.warning("prediction log closed with %d row(s) unwritten (database unavailable)", left)

    _deadline = float("inf")
    _turn: Callable[[], object] | None = None


def _gevent_turn() -> Callable[[], object] | None:
    """Return gevent.idle when gevent has patched this process (threads are greenlets), else None."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("threading"):
        return None
    return sys.modules["gevent"].idle


_COLUMNS = ("lead_id", "scored_at", "as_of", "model_name", "model_version", "model_kind", "probability", "score",
            "grade", "reasons", "features")
_JSON = frozenset(("reasons", "features"))
_dumps = orjson.dumps
_COPY = f"COPY predictions ({', '.join(_COLUMNS)}) FROM STDIN"


def copy_rows(driver: Any, rows: Iterable[dict[str, Any]]) -> None:
    """Write prediction rows with PostgreSQL's COPY (psycopg 3): one statement, no per-row parameters.

    Measured (docs/store.md): a third of the writer's CPU of a multi-row INSERT, which matters because the
    writer shares the GIL with the requests it logs. JSON is stored as SQLAlchemy's JSON type stores it (None as
    JSON null); orjson writes a NaN as null, which PostgreSQL's json accepts (a bare NaN it refuses).
    """
    cursor = driver.cursor()  # a psycopg 3 connection: Store.autocommit_driver, or a Connection's driver_connection
    with cursor, cursor.copy(_COPY) as copy:
        for row in rows:
            copy.write_row([_dumps(row[c], option=orjson.OPT_SERIALIZE_NUMPY).decode() if c in _JSON else row[c]
                            for c in _COLUMNS])


def _build(entries: Iterable[Entry]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for _, build in entries:
        rows.extend(build())
    return rows
