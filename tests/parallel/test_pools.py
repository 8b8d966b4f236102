"""How worker processes start: forked only when no other thread could hold a lock, else from a fork server."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from parallel import _context, default_workers, process_pool, worker_state


def _pid_of_parent(_: int) -> int:
    return os.getppid()


@pytest.mark.skipif(sys.platform != "linux", reason="fork and the fork server are Linux's start methods")
def test_beside_another_thread_workers_come_from_a_fork_server() -> None:
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    try:
        assert _context(["parallel"]).get_start_method() == "forkserver"
        with process_pool(workers=2) as pool:
            parents = set(pool.map(_pid_of_parent, range(4)))
    finally:
        stop.set()
        other.join()
    # Both workers are children of the fork server, not of this process.
    assert parents and os.getpid() not in parents


FORKED = """
import os
from parallel import _context, process_pool
assert _context([]).get_start_method() == "fork"
with process_pool(workers=2) as pool:
    parents = {pool.submit(os.getppid).result() for _ in range(4)}
print(parents == {os.getpid()})
"""


@pytest.mark.skipif(sys.platform != "linux" or sys.version_info >= (3, 12), reason="fork is used on 3.11 Linux")
def test_with_this_thread_alone_workers_are_forked_from_it() -> None:
    # In a fresh interpreter, whose only thread is its main one (the test runner's other tests leave threads).
    done = subprocess.run([sys.executable, "-c", FORKED], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"


def test_a_pool_needs_a_worker() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        process_pool(workers=0)
    assert default_workers() >= 1


def _state_twice(_: int) -> int:
    return int(worker_state()) * 2


def test_each_worker_holds_the_state_its_pool_was_started_with() -> None:
    with process_pool(workers=2, state=21) as pool:
        assert list(pool.map(_state_twice, range(3))) == [42, 42, 42]
    with pytest.raises(RuntimeError, match="not in a worker process"):
        worker_state()
