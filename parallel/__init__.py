"""Worker processes for the libraries' long loops (chunks of a file to score, months of a backtest to replay).

One place decides how a pool of processes starts: forked while the caller's process has one Python thread
(instant, and the loaded model or data is shared, not sent), else from a fork server, since forking beside
other threads can copy a lock one of them holds. Python 3.12 and later warn on any fork with threads of any
kind (numpy's BLAS pool counts), so there the fork server always serves.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.context import BaseContext
from typing import Any


def default_workers() -> int:
    """Return the number of cores this process may run on: the default number of worker processes."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _context(preload: Sequence[str]) -> BaseContext:
    methods = mp.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1 and sys.version_info < (3, 12):
        return mp.get_context("fork")
    if "forkserver" not in methods:
        return mp.get_context("spawn")
    context = mp.get_context("forkserver")
    # Its workers then start with these modules imported (once, in the server), not on each worker's first call.
    context.set_forkserver_preload(list(preload))
    return context


_STATE: Any = None
_HAS_STATE = False


def _install(state: Any, setup: Callable[[], object] | None) -> None:
    global _STATE, _HAS_STATE
    if setup is not None:
        setup()
    _STATE, _HAS_STATE = state, True


def worker_state() -> Any:
    """Return, in a worker of `process_pool`, the `state` its pool was started with."""
    if not _HAS_STATE:
        raise RuntimeError("not in a worker process of parallel.process_pool, or started without its state")
    return _STATE


def process_pool(*, workers: int, state: Any = None, setup: Callable[[], object] | None = None,
                 preload: Sequence[str] = ()) -> ProcessPoolExecutor:
    """Start `workers` processes, each running `setup()` and then holding `state` (`worker_state()`).

    Forked workers share `state` as it is in memory; a fork server's get it pickled once each. Every worker
    is started before this returns: with fork, before the caller starts any reader or writer thread of its
    own. `preload`: modules a fork server imports once for all its workers.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=_context(preload), initializer=_install,
                               initargs=(state, setup))
    try:
        # With fork, the first submission forks every worker at once: now.
        for ready in [pool.submit(os.getpid) for _ in range(workers)]:
            ready.result()
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    return pool
