"""The Store: one database URL, an engine per process, schema upgrades, and faults reported as StoreUnavailable."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, overload

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from crmdata.errors import LeadcastError


@overload
def naive_utc(value: datetime) -> datetime: ...
@overload
def naive_utc(value: None) -> None: ...
def naive_utc(value: datetime | None) -> datetime | None:
    """Return a time as the store keeps it, naive UTC (an aware time converted; a naive one taken as UTC)."""
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)

log = logging.getLogger("leadcast.store")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Any 64-bit number: the PostgreSQL advisory lock that serialises concurrent upgrades.
UPGRADE_LOCK = 0x1EADCA57
# Alembic keeps a running migration's environment in module globals (alembic.context, alembic.op): two
# threads of one process migrating at once, even different databases, remove each other's and fail with
# KeyError. Every migration this process runs takes this lock.
_ALEMBIC = threading.Lock()


class StoreError(LeadcastError):
    """Raised for a store operation that cannot be done as asked; the message is safe to show."""


class StoreUnavailable(StoreError):
    """Raised when the database cannot be reached or read (down, corrupt, unreadable, schema behind)."""


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    # WAL lets readers (every worker's key lookups) go on while one process writes; busy_timeout makes a
    # writer wait for another rather than fail at once.
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


# A pooled connection unused for longer than this is pinged before it is handed out (see _ping_when_idle).
PING_IDLE_SECONDS = 1.0


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection before use only when it sat idle for PING_IDLE_SECONDS; replace it if dead.

    pool_pre_ping pings on every checkout: a round trip per request on the hot path (measured in
    docs/store.md). A server restart takes longer than PING_IDLE_SECONDS, and every connection it dropped has
    been idle at least that long (a request meanwhile would have failed and disposed the pool), so pinging only
    idle connections still recovers a restarted database without a 503, while a busy worker, whose connections
    come back within milliseconds, pays no ping.
    """

    @sa.event.listens_for(engine, "connect")
    @sa.event.listens_for(engine, "checkin")
    def _returned(_dbapi: object, record: Any) -> None:
        if record is not None:
            record.info["idle_since"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _checkout(dbapi: Any, record: Any, _proxy: object) -> None:
        if time.monotonic() - record.info.get("idle_since", 0.0) < PING_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi)
        except Exception as exc:  # any failure: the pool discards this connection and opens another
            raise sa_exc.DisconnectionError(f"pooled connection is dead: {exc}") from exc


# Most lookup connections (`Store.send_lookup`) one process holds; with all of them busy a lookup is not sent ahead
# and its caller asks the way it otherwise would (the pooled path, bounded by the pool).
LOOKUP_CONNECTIONS = 5
# How long a psycopg wait sleeps between checks when nothing is ready (the wait wakes as soon as the socket is).
_WAIT_INTERVAL = 0.1


class _LookupConnection:
    """A raw psycopg connection for `Store.send_lookup`, with the statements prepared on it so far."""

    __slots__ = ("conn", "idle_since", "prepared")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.prepared: dict[str, bytes] = {}  # SQL -> the name it is prepared under on this connection
        self.idle_since = time.monotonic()


class Lookup:
    """One statement sent ahead on a lookup connection, its answer not read yet: read it with `value()`, or
    give the connection back unread with `drop()` (one of the two, once)."""

    __slots__ = ("_held", "_idle", "_lookups", "_params", "_sql")

    def __init__(self, lookups: _Lookups, held: _LookupConnection, sql: str, params: list[bytes], idle: float) -> None:
        self._lookups = lookups
        self._held: _LookupConnection | None = held
        self._sql = sql
        self._params = params
        self._idle = idle  # how long the connection sat unused before this statement

    def value(self) -> bytes | None:
        """Wait (cooperatively under gevent) for the answer and return the first column of its first row, in
        PostgreSQL's binary format (None when no row); give the connection back. Driver errors are raised as
        they are (`Store.read_lookup` maps them)."""
        held, self._held = self._held, None
        assert held is not None, "a lookup is read once"
        try:
            found = _first_value(held.conn.pgconn)
        except Exception:
            self._lookups.discard(held)
            if self._idle < PING_IDLE_SECONDS:
                raise
            held = self._lookups.resend(self._sql, self._params)
            try:
                found = _first_value(held.conn.pgconn)
            except BaseException:
                self._lookups.discard(held)
                raise
        except BaseException:  # an interrupt mid-answer (a greenlet kill): closed, or its slot stays taken
            self._lookups.discard(held)
            raise
        self._lookups.give_back(held)
        return found

    def drop(self, *, wait: bool = True) -> None:
        """Give the connection back with its answer unread (read and thrown away with `wait`, else the
        connection is closed). Never raises but an interrupt: a connection that fails here is closed."""
        held, self._held = self._held, None
        if held is None:
            return
        if not wait:
            self._lookups.discard(held)
            return
        try:
            _first_value(held.conn.pgconn)
        except Exception:  # a connection that cannot even be drained is of no further use
            self._lookups.discard(held)
        except BaseException:  # an interrupt mid-drain: closed (its slot freed), and the interrupt goes on
            self._lookups.discard(held)
            raise
        else:
            self._lookups.give_back(held)


def _send_prepared(held: _LookupConnection, sql: str, params: list[bytes]) -> None:
    """Send `sql` with text `params` on `held` and flush it, preparing it on the connection at its first use."""
    from psycopg import generators, waiting

    pgconn = held.conn.pgconn
    name = held.prepared.get(sql)
    if name is None:  # one round trip per connection and statement, then only Bind/Execute go out
        name = f"leadcast_lookup_{len(held.prepared)}".encode()
        pgconn.send_prepare(name, sql.encode())
        waiting.wait(generators.send(pgconn), pgconn.socket, interval=_WAIT_INTERVAL)
        _check(waiting.wait(generators.fetch_many(pgconn), pgconn.socket, interval=_WAIT_INTERVAL))
        held.prepared[sql] = name
    pgconn.send_query_prepared(name, params, None, 1)  # text parameters, binary result (no text parsing)
    if pgconn.flush():  # the socket's buffer was full (rare: a few dozen bytes): wait until it is sent
        waiting.wait(generators.send(pgconn), pgconn.socket, interval=_WAIT_INTERVAL)


def _first_value(pgconn: Any) -> bytes | None:
    """Wait for the answer of the statement sent on `pgconn`; return its first row's first column or None."""
    from psycopg import generators, waiting

    result = _check(waiting.wait(generators.fetch_many(pgconn), pgconn.socket, interval=_WAIT_INTERVAL))
    return None if result.ntuples == 0 else result.get_value(0, 0)


def _check(results: list[Any]) -> Any:
    """Return the one result of a statement; raise the driver's error for an error result or none."""
    import psycopg
    from psycopg import pq

    if len(results) == 1 and results[0].status in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
        return results[0]
    message = next((r.error_message for r in results if r.error_message), b"") or b"no answer to a lookup"
    raise psycopg.DatabaseError(message.decode(errors="replace").strip())


class _Lookups:
    """This process's lookup connections: raw psycopg connections outside SQLAlchemy's pool, each used by one
    caller (thread or greenlet) at a time, at most `capacity` open, for `Store.send_lookup`."""

    def __init__(self, connect: Any, *, capacity: int) -> None:
        self._connect = connect
        self.capacity = capacity
        self.pid = os.getpid()
        self._free: list[_LookupConnection] = []
        self._open = 0
        self._lock = threading.Lock()  # made in the process that uses it (after gevent patched a worker)

    def take(self) -> _LookupConnection | None:
        """Return a free connection, a new one while fewer than `capacity` are open, else None."""
        with self._lock:
            if self._free:
                return self._free.pop()
            if self._open >= self.capacity:
                return None
            self._open += 1
        try:
            return _LookupConnection(self._connect())
        except BaseException:
            with self._lock:
                self._open -= 1
            raise

    def send(self, sql: str, params: list[bytes]) -> tuple[_LookupConnection, float] | None:
        """Send `sql` on a connection taken for it; return the connection and how long it had sat idle (None:
        all `capacity` are busy)."""
        held = self.take()
        if held is None:
            return None
        idle = time.monotonic() - held.idle_since
        try:
            _send_prepared(held, sql, params)
        except Exception:
            self.discard(held)
            if idle < PING_IDLE_SECONDS:
                raise
            return self.resend(sql, params), 0.0
        except BaseException:
            self.discard(held)
            raise
        return held, idle

    def resend(self, sql: str, params: list[bytes]) -> _LookupConnection:
        """Send `sql` again on a new connection, the free ones closed first: a connection that sat idle failed,
        and may have died with a server restart nothing noticed yet (the pool pings such connections first,
        see _ping_when_idle). Counted among the open connections whatever the capacity: one retry's."""
        self.clear()
        with self._lock:
            self._open += 1
        try:
            held = _LookupConnection(self._connect())
            _send_prepared(held, sql, params)
        except BaseException:
            with self._lock:
                self._open -= 1
            raise
        return held

    def give_back(self, held: _LookupConnection) -> None:
        """Return a connection whose answer was read in full."""
        held.idle_since = time.monotonic()
        with self._lock:
            if self._open <= self.capacity:
                self._free.append(held)
                return
            self._open -= 1  # a retry's extra connection
        held.conn.close()

    def discard(self, held: _LookupConnection) -> None:
        """Close a connection that met a fault or was left mid-answer."""
        with self._lock:
            self._open -= 1
        with contextlib.suppress(Exception):
            held.conn.close()

    def clear(self) -> None:
        """Close the free connections (a fault: the server may have restarted under them)."""
        with self._lock:
            free, self._free = self._free, []
            self._open -= len(free)
        for held in free:
            with contextlib.suppress(Exception):
                held.conn.close()


# Lookup connections a fork inherited: never closed or collected in the child (psycopg would end the parent's
# sessions over the shared sockets, or warn), never used; a handful at most.
_INHERITED: list[_LookupConnection] = []


class Store:
    """A database reached by URL (SQLite file or PostgreSQL via psycopg 3), shared by every part of the service.

    The engine is created on first use in each process: gunicorn forks workers from a master that built the
    app, and a connection pool must never cross a fork. `auto_upgrade` brings the schema to the newest
    migration on first use (the embedded SQLite default); otherwise a schema behind the code is a fault that
    names `leadcast db upgrade`.
    """

    def __init__(self, url: str, *, auto_upgrade: bool = False) -> None:
        self.url = sa.make_url(url)
        self.auto_upgrade = auto_upgrade
        self._engine: Engine | None = None
        self._pid = 0
        self._ready = False
        self._lock = threading.Lock()
        self._lookups: _Lookups | None = None

    @property
    def shown_url(self) -> str:
        """Return the URL with any password masked, for messages and logs."""
        return self.url.render_as_string(hide_password=True)

    @property
    def is_sqlite(self) -> bool:
        """Return whether the database is an SQLite file."""
        return self.url.get_backend_name() == "sqlite"

    @property
    def engine(self) -> Engine:
        """Return this process's engine, creating it on first use (and again after a fork)."""
        if self._engine is None or self._pid != os.getpid():
            with self._lock:
                if self._engine is None or self._pid != os.getpid():
                    if self._engine is not None:
                        # Inherited across a fork: drop the parent's pool without closing its connections.
                        self._engine.dispose(close=False)
                        self._ready = False
                    self._engine = self._create_engine()
                    self._pid = os.getpid()
        return self._engine

    def _create_engine(self) -> Engine:
        if self.is_sqlite:
            database = self.url.database
            if database and database != ":memory:":
                path = Path(database)
                path.parent.mkdir(parents=True, exist_ok=True)
                # It holds key hashes and lead data: private to the service user (SQLite gives its -wal and
                # -shm files the same mode).
                os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
            engine = sa.create_engine(self.url, connect_args={"timeout": 5})
            sa.event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        engine = sa.create_engine(self.url, pool_size=5, max_overflow=5, pool_timeout=5,
                                  connect_args={"connect_timeout": 5})
        _ping_when_idle(engine)
        return engine

    @contextlib.contextmanager
    def faults(self) -> Iterator[None]:
        """Turn a database fault inside the block into StoreUnavailable (the detail kept for the log): an error of
        SQLAlchemy's, or of the driver itself (sqlite3.Error, psycopg.Error) met on a `autocommit_driver` connection."""
        try:
            yield
        # (an except clause's classes are looked up when an exception arrives: by then the engine exists)
        except (sa_exc.IntegrityError, self._driver_error("IntegrityError")):
            raise
        except (sa_exc.OperationalError, sa_exc.DatabaseError, sa_exc.InterfaceError, OSError,
                self._driver_error("Error")) as exc:
            self._ready = False
            if self._engine is not None and self._pid == os.getpid():
                # Connections that met the fault may hold stale state (an SQLite file replaced under them, a
                # server that restarted): open fresh ones next time, so the store recovers by itself.
                self._engine.dispose()
            if self._lookups is not None and self._lookups.pid == os.getpid():
                self._lookups.clear()
            raise StoreUnavailable(f"the database {self.shown_url} is unavailable: "
                                   f"{str(exc.args[0] if exc.args else exc).strip()}") from exc

    @contextlib.contextmanager
    def begin(self) -> Iterator[Connection]:
        """Yield a connection in a transaction that commits when the block ends, on an up-to-date schema."""
        with self.faults():
            self.ensure_schema()
            with self.engine.begin() as conn:
                yield conn

    @contextlib.contextmanager
    def reading(self) -> Iterator[Connection]:
        """Yield a connection for reads that need no transaction (faults raised as StoreUnavailable).

        On PostgreSQL it is in autocommit: each query is one round trip, with no BEGIN before it and no COMMIT
        after it (two round trips of the three a transaction costs, measured in docs/store.md).
        """
        with self.faults():
            self.ensure_schema()
            with self.engine.connect() as conn:
                if not self.is_sqlite:
                    conn.execution_options(isolation_level="AUTOCOMMIT")
                yield conn

    @contextlib.contextmanager
    def autocommit_driver(self) -> Iterator[Any]:
        """Yield a pooled driver connection (sqlite3, or psycopg in autocommit: each statement its own
        transaction) for one statement run by the driver itself.

        For the hot path's one-row lookup and the log writer's COPY: the driver's own execute skips
        SQLAlchemy's execution layer (a quarter of the client CPU of `reading` per lookup, measured in
        docs/store.md), psycopg prepares a repeated statement on the server after its fifth use on a
        connection, and autocommit saves the BEGIN and COMMIT round trips. The pool still hands it out (idle
        ping included), the driver's errors become StoreUnavailable, and a connection that met one is
        discarded. The caller writes the SQL in the driver's parameter style (`Store.placeholder`).
        """
        with self.faults():
            self.ensure_schema()
            pooled = self.engine.raw_connection()
            driver = pooled.driver_connection
            try:
                if not self.is_sqlite:
                    driver.autocommit = True  # type: ignore[union-attr]  # one round trip, no BEGIN/ROLLBACK
                yield driver
                if not self.is_sqlite:
                    driver.autocommit = False  # type: ignore[union-attr]  # as the pool's other users expect
            except BaseException:
                pooled.invalidate()  # never hand a connection in an unknown state to the next user
                raise
            finally:
                pooled.close()

    def send_lookup(self, sql: str, params: Sequence[str]) -> Lookup | None:
        """Send a one-row query (PostgreSQL, placeholders $1, $2...) with text `params` and return at once, its
        answer to be read by `Lookup.value()` after the caller's other work: the round trip overlaps that work.

        For the hot path's lookup of a lead's previous score while the lead is scored: a raw psycopg connection
        of this process outside SQLAlchemy's pool (no pool, cursor or adaptation on the path), the statement
        prepared on it once, the answer binary. Each connection serves one caller (thread or greenlet) from the
        send to the read, and a forked process opens its own. Returns None on SQLite (no round trip to hide) or
        when `LOOKUP_CONNECTIONS` are busy or a parameter holds a NUL; the caller then asks the plain way. Faults:
        StoreUnavailable.
        """
        if self.is_sqlite:
            return None
        if any("\x00" in p for p in params):
            # libpq sends a text parameter up to its first NUL ("A\x00B" would ask for lead "A"): the plain way
            # refuses it, as PostgreSQL's text does.
            return None
        with self.faults():
            self.ensure_schema()
            lookups = self._lookup_connections()
            encoded = [p.encode() for p in params]
            sent = lookups.send(sql, encoded)
            return None if sent is None else Lookup(lookups, sent[0], sql, encoded, sent[1])

    def read_lookup(self, lookup: Lookup) -> bytes | None:
        """Return a sent lookup's answer (`Lookup.value`), faults raised as StoreUnavailable."""
        with self.faults():
            return lookup.value()

    def _lookup_connections(self) -> _Lookups:
        lookups = self._lookups
        if lookups is None or lookups.pid != os.getpid():
            # The engine first, outside the lock: after a fork it takes the same lock to replace the parent's.
            engine = self.engine
            with self._lock:
                lookups = self._lookups
                if lookups is None or lookups.pid != os.getpid():
                    if lookups is not None:  # inherited across a fork: the parent's sessions, not ours
                        _INHERITED.extend(lookups._free)
                    _, params = engine.dialect.create_connect_args(self.url)
                    params = {k: v for k, v in params.items() if k != "context"}
                    driver = engine.dialect.loaded_dbapi

                    def connect() -> Any:
                        return driver.connect(**params, connect_timeout=5, autocommit=True)

                    lookups = self._lookups = _Lookups(connect, capacity=LOOKUP_CONNECTIONS)
        return lookups

    @property
    def placeholder(self) -> str:
        """Return the driver's positional parameter marker: `?` for sqlite3, `%s` for psycopg."""
        return "?" if self.is_sqlite else "%s"

    def _driver_error(self, name: str) -> type[Exception]:
        # The driver's error class of that DB-API name, once this process has an engine (before, none is raised).
        if self._engine is None:
            return sa_exc.DBAPIError
        return getattr(self._engine.dialect.loaded_dbapi, name)

    def ensure_schema(self) -> None:
        """Upgrade (auto_upgrade) or check the schema once per process; raise StoreUnavailable when behind."""
        if self._ready:
            return
        if self.auto_upgrade:
            self.upgrade()
        else:
            current, head = self.current_revision(), self.head_revision()
            if current != head:
                raise StoreUnavailable(f"the database {self.shown_url} is at schema revision {current or 'none'}, "
                                       f"the code needs {head}: run `leadcast db upgrade`")
        self._ready = True

    def _alembic_config(self, connection: Connection) -> Config:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        return config

    def head_revision(self) -> str:
        """Return the newest migration shipped with the code."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        head = ScriptDirectory.from_config(config).get_current_head()
        assert head is not None
        return head

    def current_revision(self) -> str | None:
        """Return the migration the database is at (None for an empty database)."""
        with self.faults(), self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def upgrade(self, target: str = "head") -> tuple[str | None, str]:
        """Bring the schema to the newest migration (or `target`); return the revisions before and after.

        Concurrent upgrades (several workers starting at once) are serialised: a lock file beside an SQLite
        database, an advisory lock on PostgreSQL.
        """
        head = self.head_revision()
        with self.faults(), self._upgrade_lock(), self.engine.begin() as conn:
            if self.url.get_backend_name() == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": UPGRADE_LOCK})
            before = MigrationContext.configure(conn).get_current_revision()
            # At head already (the usual case: a check again after a fault) alembic is not entered at all.
            if before != (head if target == "head" else target):
                with _ALEMBIC:
                    command.upgrade(self._alembic_config(conn), target)
            after = MigrationContext.configure(conn).get_current_revision()
        assert after is not None
        if before != after:
            log.info("upgraded the database %s from %s to %s", self.shown_url, before or "empty", after)
        self._ready = after == head
        return before, after

    @contextlib.contextmanager
    def _upgrade_lock(self) -> Iterator[None]:
        database = self.url.database
        if not self.is_sqlite or not database or database == ":memory:":
            yield
            return
        lock_path = Path(database + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.dispose()

    def dispose(self) -> None:
        """Close this process's connections (they are opened again on next use)."""
        if self._engine is not None and self._pid == os.getpid():
            self._engine.dispose()
        if self._lookups is not None:
            if self._lookups.pid == os.getpid():
                self._lookups.clear()
            else:  # a fork's: see _INHERITED
                _INHERITED.extend(self._lookups._free)
        self._lookups = None
        self._engine = None
        self._ready = False
