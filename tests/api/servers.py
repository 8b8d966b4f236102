"""Real servers on loopback for the integration tests and benchmarks: free ports, process groups, a JSON client.

A server runs in its own session (process group), so stopping it never touches the test runner, and `kill()`
takes down whatever it forked (gunicorn workers, uvicorn under `mlflow models serve`) even after a failure.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


def free_port() -> int:
    """Return a loopback port that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    """Return an environment for a server process: this one without LEADCAST_/MLFLOW_/GUNICORN_ variables
    (so the runner's own settings cannot leak in), with the repository importable and this venv's tools
    (gunicorn, uvicorn) on PATH, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEADCAST_", "MLFLOW_", "GUNICORN_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["PATH"] = os.pathsep.join(p for p in (str(Path(sys.executable).parent), env.get("PATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class JsonClient:
    """One HTTP/1.1 connection kept alive between requests (http.client reopens it when the server closes it,
    as gunicorn's sync workers do after every response)."""

    def __init__(self, port: int, *, host: str = HOST, timeout: float = 30.0,
                 headers: dict[str, str] | None = None) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)
        self.headers = {"Content-Type": "application/json", **(headers or {})}

    def send(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """Send one request with an already encoded body; return the status and the raw response body."""
        self.conn.request(method, path, body=body, headers={**self.headers, **(headers or {})})
        response = self.conn.getresponse()
        return response.status, response.read()

    def call(self, method: str, path: str, body: Any = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """Send `body` as JSON; return the status and the decoded JSON response (None when empty)."""
        data = None if body is None else json.dumps(body).encode()
        status, raw = self.send(method, path, data, headers)
        return status, json.loads(raw) if raw else None

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> JsonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class SteadyClient:
    """A client scoring one lead after another on one keep-alive connection, recording every outcome.

    `per_second` paces it (None: as fast as answers come); it stops at `max_requests` or when the block ends.
    """

    port: int
    key: str
    leads: list[dict[str, Any]]
    per_second: float | None = None
    max_requests: int = 100_000

    def __post_init__(self) -> None:
        self.outcomes: list[tuple[float, int | None, str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with JsonClient(self.port, headers={"Authorization": f"Bearer {self.key}"}, timeout=10) as client:
            for i in range(self.max_requests):
                if self.stop.is_set():
                    break
                started = time.monotonic()
                try:
                    status, body = client.call("POST", "/v1/leads/score", {"lead": self.leads[i % len(self.leads)]})
                    what = body["model"]["version"] if status == 200 else body["error"]["code"]
                    self.outcomes.append((started, status, what))
                except Exception as exc:  # a refused or reset connection is what this client counts
                    self.outcomes.append((started, None, type(exc).__name__))
                    client.close()  # the next request opens a new connection
                    self.stop.wait(0.01)
                if self.per_second:
                    self.stop.wait(max(0.0, 1 / self.per_second - (time.monotonic() - started)))

    def between(self, start: float, end: float = float("inf")) -> Counter[tuple[int | None, str]]:
        """Return the outcomes of the requests started in [start, end), counted."""
        return Counter((s, w) for t, s, w in list(self.outcomes) if start <= t < end)

    def first(self, version: str) -> float | None:
        """Return when the first request answered by `version` started."""
        return next((t for t, s, w in list(self.outcomes) if s == 200 and w == version), None)

    def __enter__(self) -> SteadyClient:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def get_status(port: int, path: str, *, timeout: float = 2.0) -> int | None:
    """Return the status of GET `path`, or None when nothing answers yet."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


class ServerProcess:
    """A server started in its own process group with its output in a log file; a context manager that
    always kills the whole group on exit."""

    def __init__(self, args: list[str], *, port: int, env: dict[str, str], log: Path, name: str,
                 cwd: Path = REPO) -> None:
        self.args, self.port, self.env, self.log, self.name, self.cwd = args, port, env, log, name, cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None

    def start(self) -> ServerProcess:
        """Start the server (returns at once; see `wait_ready`)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._log_handle = self.log.open("wb")
        self.proc = subprocess.Popen(self.args, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=self._log_handle, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def running(self) -> subprocess.Popen[bytes]:
        """Return the process, which must have been started."""
        assert self.proc is not None, f"{self.name} was not started"
        return self.proc

    def output(self) -> str:
        """Return everything the server printed so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_ready(self, path: str, *, timeout: float = 90.0) -> float:
        """Wait until GET `path` answers 200; return the seconds it took. Raise if the server dies or stalls."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            code = self.running.poll()
            if code is not None:
                raise RuntimeError(f"{self.name} exited with status {code} before it was ready:\n"
                                   f"{self.output()[-4000:]}")
            if get_status(self.port, path) == 200:
                return time.monotonic() - start
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} was not ready within {timeout:.0f} s:\n{self.output()[-4000:]}")

    def terminate(self, *, timeout: float) -> int:
        """Send SIGTERM to the server's main process only (a graceful stop) and return its exit status."""
        self.running.send_signal(signal.SIGTERM)
        return self.running.wait(timeout=timeout)

    def group_alive(self) -> bool:
        """Return whether any process of the server's group is still alive."""
        try:
            os.killpg(self.running.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def kill(self) -> None:
        """Kill the whole process group (whatever is left of it) and reap the main process."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.kill()


def leadcast_server(tmp: Path, *, port: int, extra_args: tuple[str, ...] = (), settings_file: Path | None = None,
                    env: dict[str, str] | None = None, name: str = "leadcast") -> ServerProcess:
    """Return (not started) `leadcast [--settings FILE] serve --port PORT ...` as this interpreter runs it."""
    args = [sys.executable, "-m", "api.cli"]
    if settings_file is not None:
        args += ["--settings", str(settings_file)]
    args += ["serve", "--port", str(port), *extra_args]
    prometheus = tmp / "prometheus"
    prometheus.mkdir(parents=True, exist_ok=True)
    return ServerProcess(args, port=port, env=child_env(PROMETHEUS_MULTIPROC_DIR=str(prometheus), **(env or {})),
                         log=tmp / f"{name}.log", name=name)


def mlflow_server(tmp: Path, *, port: int, model_uri: str, tracking_uri: str, workers: int = 1,
                  env: dict[str, str] | None = None, name: str = "mlflow") -> ServerProcess:
    """Return (not started) `mlflow models serve` on `model_uri` with the local environment."""
    args = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
            "-p", str(port), "-h", HOST, "-w", str(workers)]
    return ServerProcess(args, port=port, env=child_env(MLFLOW_TRACKING_URI=tracking_uri, **(env or {})),
                         log=tmp / f"{name}.log", name=name)
