"""A throwaway Redis server on loopback for the tests: `redis-server` in a temp folder on a free port.

No persistence (no RDB, no AOF), loopback only. Set LEADCAST_TEST_REDIS_URL to use a server you run yourself.
`.ci/run` installs Debian's redis-server when it is missing.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.api.servers import HOST, free_port

ENV_URL = "LEADCAST_TEST_REDIS_URL"


def find_binary() -> Path | None:
    """Return the redis-server binary (PATH, then Debian's /usr/bin), or None when it is not installed."""
    found = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists()
                                             else None)
    return Path(found) if found else None


def ping(host: str, port: int, *, timeout: float = 1.0) -> bool:
    """Return whether a Redis server answers PING on host:port (the inline protocol, no client needed)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process in a temp folder, on a free loopback port, saving nothing to disk."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary
        self.root = Path(tempfile.mkdtemp(prefix="leadcast-redis-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 20.0) -> None:
        """Start the server and wait until it answers PING; raise with its log when it does not."""
        log = (self.root / "redis.log").open("wb")
        self.proc = subprocess.Popen(
            [str(self.binary), "--port", str(self.port), "--bind", HOST, "--dir", str(self.root),
             "--save", "", "--appendonly", "no", "--protected-mode", "yes", "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {self.output()[-2000:]}")
            if ping(HOST, self.port):
                return
            time.sleep(0.05)
        raise TimeoutError(f"redis-server did not answer within {timeout:.0f} s: {self.output()[-2000:]}")

    def output(self) -> str:
        """Return what the server logged."""
        path = self.root / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def url(self) -> str:
        """Return the URL of database 0 of this server."""
        return f"redis://{HOST}:{self.port}/0"

    def stop(self) -> None:
        """Kill the server (it saves nothing) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)

    def remove(self) -> None:
        """Stop the server and delete its folder."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def start_server() -> RedisServer | None:
    """Return a started throwaway server, or None when redis-server is not installed."""
    binary = find_binary()
    if binary is None:
        return None
    server = RedisServer(binary)
    try:
        server.start()
    except BaseException:
        server.remove()
        raise
    return server
