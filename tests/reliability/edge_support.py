"""Shared pieces of the edge reliability tests: a real `leadcast serve` on loopback with a trained champion."""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from api.settings import Settings
from api.stores import open_keys
from tests.api.servers import HOST, JsonClient, ServerProcess, free_port, leadcast_server


@dataclass
class Served:
    """A running `leadcast serve`, its port and a key with every scope."""

    server: ServerProcess
    port: int
    key: str

    def client(self, timeout: float = 30.0) -> JsonClient:
        """Return a keep-alive client that sends the key."""
        return JsonClient(self.port, timeout=timeout, headers={"Authorization": f"Bearer {self.key}"})


@contextmanager
def serve(tmp: Path, trained_dir: Path, *, settings: str = "", env: dict[str, str] | None = None,
          extra_args: tuple[str, ...] = ()) -> Iterator[Served]:
    """Run `leadcast --settings FILE serve` on a free port with a copy of `trained_dir` as its models."""
    models = tmp / "models"
    if not models.exists():
        shutil.copytree(trained_dir, models)
    keys_file = tmp / "keys.json"
    key = open_keys(Settings(home=tmp / "home")).create(name="edge-test", scopes=("score", "forecast", "admin"))
    settings_file = tmp / "leadcast.toml"
    settings_file.write_text(f'home = "{tmp / "home"}"\nmodels_dir = "{models}"\napi_keys_file = "{keys_file}"\n'
                             f"rate_limit_per_minute = 6000000\nrate_limit_burst = 100000\n{settings}")
    port = free_port()
    with leadcast_server(tmp, port=port, settings_file=settings_file, env=env, extra_args=extra_args) as server:
        server.wait_ready("/readyz")
        yield Served(server=server, port=port, key=key)


HEADER_START = b"POST /v1/leads/score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Slow: "
BODY_START = (b"POST /v1/leads/score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              b"Content-Length: 4096\r\n\r\n")


class Tricklers:
    """`n` connections that each send a request one byte a second: half trickle headers, half a body.

    One thread feeds every socket, for at most `seconds`; the sockets are closed when it stops.
    """

    def __init__(self, port: int, *, n: int, seconds: float) -> None:
        self.port, self.n, self.seconds = port, n, seconds
        self.sockets: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.bytes_sent = 0

    def _run(self) -> None:
        # The body tricklers send their whole header at once, then one byte of body a second.
        for s, i in zip(self.sockets, range(self.n), strict=True):
            if i % 2:
                s.sendall(BODY_START)
        deadline = time.monotonic() + self.seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            for s in self.sockets:
                try:
                    s.send(b"a")
                    self.bytes_sent += 1
                except OSError:
                    pass  # the server may close a connection it gave up on; that is its right
            self._stop.wait(1.0)

    def __enter__(self) -> Tricklers:
        for i in range(self.n):
            s = socket.create_connection((HOST, self.port), timeout=5)
            if i % 2 == 0:
                s.sendall(HEADER_START[:20])  # a partial request line, so the server has started reading it
            self.sockets.append(s)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for s in self.sockets:
            s.close()


def percentile(values: list[float], q: float) -> float:
    """Return the q-th percentile (0-100) of `values`, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def median_ms(values: list[float]) -> float:
    """Return the median of seconds, in milliseconds."""
    return statistics.median(values) * 1000


class LatencyProbe:
    """Score one lead after another on one keep-alive connection for at most `seconds` (and `max_requests`),
    on a thread, recording each request's status and latency."""

    def __init__(self, served: Served, leads: list[dict[str, object]], *, seconds: float,
                 max_requests: int = 20_000) -> None:
        self.served, self.leads, self.seconds, self.max_requests = served, leads, seconds, max_requests
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        with self.served.client(timeout=10.0) as client:
            for i in range(self.max_requests):
                if self.stop.is_set() or time.monotonic() > deadline:
                    break
                started = time.perf_counter()
                try:
                    status, body = client.call("POST", "/v1/leads/score", {"lead": self.leads[i % len(self.leads)]})
                except Exception as exc:  # a reset or a timeout is a failure this probe counts
                    self.failures.append(repr(exc))
                    client.close()
                    continue
                if status == 200:
                    self.latencies.append(time.perf_counter() - started)
                else:
                    self.failures.append(f"{status} {body}")

    def __enter__(self) -> LatencyProbe:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # The probe runs its `seconds` unless told to stop (set `stop`) or the block failed.
        if exc[0] is not None:
            self.stop.set()
        self.thread.join(timeout=self.seconds + 30)

    def summary(self) -> str:
        """Return the count, p50 and p99 in milliseconds."""
        if not self.latencies:
            return f"0 answered, {len(self.failures)} failed"
        p50, p99 = (percentile(self.latencies, q) * 1000 for q in (50, 99))
        return f"{len(self.latencies)} answered, {len(self.failures)} failed, p50 {p50:.1f} ms, p99 {p99:.1f} ms"


def _stat(pid: int) -> tuple[str, int] | None:
    """Return a process's state letter and parent pid from /proc (Linux), or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = text[text.rindex(")") + 2:].split()[:2]  # after "pid (comm) ": state, ppid, ...
    return state, int(ppid)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None and stat[1] == pid:
            found.append(int(entry.name))
    return found


def _below(pid: int) -> list[int]:
    out = []
    for child in _children(pid):
        out += [child, *_below(child)]
    return out


def pool_processes(served: Served) -> dict[int, list[int]]:
    """Return each gunicorn worker's pid with the pids of every process below it (forecast processes and the
    resource tracker multiprocessing starts with them)."""
    return {worker: _below(worker) for master in _children(served.server.running.pid)
            for worker in _children(master)}


def forecast_process(pids: list[int]) -> int:
    """Return the one forecast process among a worker's descendants (not multiprocessing's resource tracker)."""
    (pid,) = [p for p in pids if b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()]
    return pid


def cpu_seconds(pid: int) -> float:
    """Return the CPU time (user + system) a process has used, from /proc (Linux)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()  # fields 3.. of proc(5): utime and stime are 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def all_gone(pids: list[int], *, timeout: float) -> list[int]:
    """Wait up to `timeout` seconds for every pid to be gone (or a zombie); return those still alive."""

    def alive(pid: int) -> bool:
        stat = _stat(pid)
        return stat is not None and stat[0] != "Z"

    deadline = time.monotonic() + timeout
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = [p for p in left if alive(p)]
    return left
