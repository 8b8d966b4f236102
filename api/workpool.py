"""Forecasts in their own bounded pool of processes, so one long forecast never holds a worker's scoring.

Each gunicorn worker (each process, keyed on its pid) gets at most `forecast_processes` child processes, made on
first use: spawned, not forked (a fork of a gevent worker carries its hub, its sockets and its threads), and niced
to 19 so a forecast yields the cores to scoring. A request sends its one library call to an idle child and waits
on the pipe, which under gevent is a cooperative wait: the worker keeps answering its other connections. When
every child is busy the request is refused at once with 503 and Retry-After; a call that outlives
`forecast_timeout_seconds` has its child killed (the next call starts a fresh one) and is answered 503.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import math
import multiprocessing
import multiprocessing.connection
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

from api.errors import ApiError
from api.settings import Settings

# Seconds between the child's checks that the worker that made it is still alive.
PARENT_CHECK_SECONDS = 0.5
# Seconds a new child may take to start (import numpy, pandas and the forecasting library); not counted in the
# call's own timeout, which bounds the forecast alone.
START_SECONDS = 60.0
# Seconds an idle child is given to leave once its pipe closes, before it is killed.
EXIT_GRACE_SECONDS = 2.0


class RemoteError(Exception):
    """Stands for an exception raised in a pool process that could not be sent back as itself."""


def _watch_parent(parent: int) -> None:
    # A worker killed with SIGKILL cannot stop its children: each child leaves on its own once reparented.
    while True:
        time.sleep(PARENT_CHECK_SECONDS)
        if os.getppid() != parent:
            os._exit(0)


def _lowest_priority() -> None:
    """Run this process at the lowest CPU priority there is: SCHED_IDLE on Linux, else nice 19."""
    # Forecasts take the cores scoring leaves idle. At nice 19 a busy child still held a core slice (weight 15 of
    # a request's 1024) and a woken worker waited for the tick to preempt it; a SCHED_IDLE one is preempted on
    # every wake-up of a normal task. The nice value is set too, for tools that show only it.
    os.nice(19)
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        with contextlib.suppress(OSError):  # a container may refuse the policy: nice 19 stays
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def _child_main(conn: multiprocessing.connection.Connection, parent: int, preload: tuple[str, ...]) -> None:
    """Import `preload`, then serve calls sent on `conn` one at a time until the worker closes its end or dies."""
    _lowest_priority()
    for module in preload:  # before "ready": a call's timeout bounds the call, not the imports it needs
        importlib.import_module(module)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="parent-watch").start()
    # The worker sends nothing before this: a large first call written into the pipe while the child was still
    # importing would block the writer (and with it every connection of a gevent worker).
    conn.send(("ready", os.getpid()))
    while True:
        try:
            fn, kwargs = conn.recv()
        except (EOFError, OSError):  # the worker closed the pipe: it is stopping
            return
        try:
            reply: tuple[str, Any] = ("ok", fn(**kwargs))
        except Exception as exc:  # sent back to be raised in the worker, as an in-process call would
            reply = ("error", (type(exc), exc.args, vars(exc)))
        try:
            conn.send(reply)
        except Exception as exc:  # the result or the exception does not pickle: say so rather than hang
            conn.send(("error", RemoteError(f"{type(exc).__name__}: {exc}")))


def _rebuilt(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> BaseException:
    """Return the exception a child raised, rebuilt from its args and attributes without calling its __init__
    (pickle calls `cls(*args)`, which an exception taking other arguments, as DataValidationError does, fails)."""
    exc = cls.__new__(cls, *args)
    exc.args = args
    exc.__dict__.update(state)
    return exc


@dataclass
class _Slot:
    """One child process and the worker's end of its pipe."""

    process: BaseProcess
    conn: multiprocessing.connection.Connection
    ready: bool = False
    deadline: float = field(default=0.0)


def _wait_readable(conn: multiprocessing.connection.Connection, timeout: float) -> bool:
    """Wait until `conn` has data or `timeout` passes, letting gevent serve other connections meanwhile."""
    if "gevent" in sys.modules:
        from gevent import monkey

        if monkey.is_module_patched("select"):
            # multiprocessing.connection.wait picks its selector class at import, which may predate the patch
            # (the app is preloaded in the master), so wait on the hub directly.
            from gevent.socket import wait_read

            try:
                wait_read(conn.fileno(), timeout=timeout, timeout_exc=TimeoutError)
            except TimeoutError:
                return False
            return True
    return bool(multiprocessing.connection.wait([conn], timeout=timeout))


class WorkPool:
    """At most `processes` spawned, niced children of this process, each running one call at a time."""

    def __init__(self, *, processes: int, timeout_seconds: float, preload: tuple[str, ...] = ()) -> None:
        self.processes = processes
        self.timeout_seconds = timeout_seconds
        self.preload = preload
        self._context = multiprocessing.get_context("spawn")
        self._idle: list[_Slot] = []
        self._busy: list[_Slot] = []
        self._starting = 0  # children being started: they count against `processes` too
        self._lock = threading.Lock()

    def _start(self) -> _Slot:
        mine, theirs = self._context.Pipe(duplex=True)
        # Under gevent the pair comes from the patched socketpair, non-blocking: Connection's reads and writes
        # expect a blocking descriptor (a non-blocking read with nothing to read yet ends the child).
        for end in (mine, theirs):
            os.set_blocking(end.fileno(), True)
        process = self._context.Process(target=_child_main, args=(theirs, os.getpid(), self.preload), daemon=True,
                                        name="leadcast-forecast")
        process.start()
        theirs.close()
        return _Slot(process=process, conn=mine)

    def _acquire(self) -> _Slot | None:
        with self._lock:
            while self._idle:
                slot = self._idle.pop()
                if slot.process.is_alive():
                    self._busy.append(slot)
                    return slot
                slot.conn.close()
            if len(self._busy) + self._starting >= self.processes:
                return None
            self._starting += 1
        try:
            slot = self._start()
        finally:
            with self._lock:
                self._starting -= 1
        with self._lock:
            self._busy.append(slot)
        return slot

    def _release(self, slot: _Slot, *, healthy: bool) -> None:
        with self._lock:
            self._busy.remove(slot)
            if healthy:
                self._idle.append(slot)
                return
        _stop(slot, grace=0.0)

    def retry_after(self) -> int:
        """Return the seconds until a busy child is sure to be free (its call answered or timed out)."""
        now = time.monotonic()
        deadlines = [s.deadline for s in self._busy if s.deadline]
        return max(1, math.ceil(min(deadlines) - now)) if deadlines else 1

    def run(self, fn: Callable[..., Any], /, **kwargs: Any) -> Any:
        """Run `fn(**kwargs)` in an idle child and return its result, or raise what it raised.

        Raise ApiError 503 (with Retry-After) when every child is busy or the call outlives the timeout.
        """
        slot = self._acquire()
        if slot is None:
            wait = self.retry_after()
            raise ApiError(503, "unavailable", f"every forecast process is busy ({self.processes}); try again in "
                                               f"{wait} s", headers={"Retry-After": str(wait)})
        healthy = False
        try:
            try:
                if not slot.ready:  # a new child: wait for it before writing, so the write cannot block
                    slot.deadline = time.monotonic() + START_SECONDS + self.timeout_seconds
                    if not _wait_readable(slot.conn, START_SECONDS):
                        raise ApiError(503, "unavailable", "the forecast process did not start in time; try again",
                                       headers={"Retry-After": "5"})
                    slot.conn.recv()
                    slot.ready = True
                slot.deadline = time.monotonic() + self.timeout_seconds
                slot.conn.send((fn, kwargs))
                if not _wait_readable(slot.conn, max(0.0, slot.deadline - time.monotonic())):
                    raise ApiError(503, "unavailable",
                                   f"the forecast did not finish within {self.timeout_seconds:g} s "
                                   "(forecast_timeout_seconds): ask for fewer open deals, simulations or periods",
                                   headers={"Retry-After": "1"})
                status, value = slot.conn.recv()
            except (EOFError, OSError) as exc:  # the child died mid-call (killed, out of memory)
                raise ApiError(503, "unavailable", "the forecast process stopped before it answered; try again",
                               headers={"Retry-After": "1"}) from exc
            healthy = True
        finally:
            slot.deadline = 0.0
            self._release(slot, healthy=healthy)
        if status == "error":
            raise _rebuilt(*value) if isinstance(value, tuple) else value
        return value

    def pids(self) -> list[int]:
        """Return the process ids of the children alive now."""
        with self._lock:
            slots = [*self._idle, *self._busy]
        return [s.process.pid for s in slots if s.process.pid is not None]

    def shutdown(self) -> None:
        """Stop every child: an idle one leaves when its pipe closes, a busy one is killed (its call is lost)."""
        with self._lock:
            idle, busy, self._idle, self._busy = self._idle, self._busy, [], []
        for slot in busy:
            _stop(slot, grace=0.0)
        for slot in idle:
            _stop(slot, grace=EXIT_GRACE_SECONDS)


def _stop(slot: _Slot, *, grace: float) -> None:
    """Close a child's pipe and make sure the child is gone (killed if it does not leave within `grace`)."""
    slot.conn.close()
    slot.process.join(grace)
    if slot.process.is_alive():
        slot.process.kill()
        slot.process.join(5)


# What the forecast endpoints send a pool process: their module (which imports the forecasting library).
PRELOAD = ("api.blueprints.forecast",)

_pools: dict[tuple[int, int, float], WorkPool] = {}


def pool_for(settings: Settings) -> WorkPool:
    """Return this process's forecast pool for `settings`, made on first use (a forked worker gets its own)."""
    key = (os.getpid(), settings.forecast_processes, settings.forecast_timeout_seconds)
    pool = _pools.get(key)
    if pool is None:
        pool = _pools[key] = WorkPool(processes=settings.forecast_processes,
                                      timeout_seconds=settings.forecast_timeout_seconds, preload=PRELOAD)
    return pool


def run(settings: Settings, fn: Callable[..., Any], /, **kwargs: Any) -> Any:
    """Run one forecast library call: in this process's pool, or right here when `forecast_processes` is 0."""
    if settings.forecast_processes == 0:
        return fn(**kwargs)
    return pool_for(settings).run(fn, **kwargs)


def shutdown() -> None:
    """Stop the children of every pool this process made (a worker's exit hook; also run at interpreter exit)."""
    pid = os.getpid()
    for key in [k for k in _pools if k[0] == pid]:
        _pools.pop(key).shutdown()


atexit.register(shutdown)
