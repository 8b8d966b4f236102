"""Shared pieces of the edge reliability tests: a real `leadcast serve` on loopback with a trained champion."""

from __future__ import annotations

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
