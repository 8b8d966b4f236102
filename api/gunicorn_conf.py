"""gunicorn settings for `leadcast serve`; values come from the LEADCAST_* variables the command sets."""

import logging
import os
import sys
from typing import TYPE_CHECKING

from prometheus_client import multiprocess

from api.settings import load_settings

if TYPE_CHECKING:
    from api.http import Runtime

# The same settings object the app reads (the serve command passes every setting as LEADCAST_* variables).
_settings = load_settings()
bind = f"{_settings.host}:{_settings.port}"
workers = _settings.workers
threads = _settings.threads
# gevent by default: a connection that trickles its request costs a greenlet, not a worker (gunicorn's FAQ: the
# sync workers are meant to sit behind a buffering proxy; serving clients directly calls for an async worker).
worker_class = _settings.worker_class
worker_connections = _settings.worker_connections
timeout = _settings.timeout_seconds
graceful_timeout = 30
keepalive = 5
# Load the app (and its model) once in the master so workers start fast and share memory pages.
preload_app = True
max_requests = 0
accesslog = None
errorlog = "-"
loglevel = "info"

# The app's own access line (method, route, status, ms, key name) and its warnings go to stderr beside gunicorn's
# log: this file runs in the master before the app is preloaded, so every worker inherits the handler.
_handler = logging.StreamHandler(sys.stderr)
_handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
                                        "%Y-%m-%d %H:%M:%S %z"))
_leadcast_log = logging.getLogger("leadcast")
if not _leadcast_log.handlers:
    _leadcast_log.addHandler(_handler)
    _leadcast_log.setLevel(logging.INFO)
    _leadcast_log.propagate = False


def when_ready(server: object) -> None:
    """Drop the master's gauge files: it loaded the model (preload) but never serves, so its model label
    would stay on /metrics, unchanged by reloads, for as long as the service runs."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(os.getpid())


def post_fork(server: object, worker: object) -> None:
    """Bring each new worker up to the champion the service serves now, then publish its model gauge.

    A worker restarted after a reload must not serve the model the master preloaded before it, and nothing a
    model does may fail the boot: gunicorn's master exits when a worker fails to boot.
    """
    try:
        app = server.app.wsgi()  # type: ignore[attr-defined]  # the app the master preloaded
        runtime: Runtime = app.extensions["leadcast"]
        served = runtime.models.refresh() if runtime.models is not None else None
        if served is not None:
            runtime.metrics.set_model(name=served.name, version=served.version, kind=served.kind)
    except Exception:  # the worker still boots: it answers 503 on scoring and /healthz 200
        server.log.exception("worker %s: could not bring its model up to date", worker.pid)  # type: ignore[attr-defined]


def post_worker_init(worker: object) -> None:
    """Start this worker's poll of the champion alias (serving from MLflow): after gevent has patched the
    worker, so the poll is a greenlet, and off the boot path, so a slow registry never fails the boot."""
    try:
        runtime: Runtime = worker.app.wsgi().extensions["leadcast"]  # type: ignore[attr-defined]
        models = runtime.champions  # every model name's holder
        if models is None:
            return  # an app without the models blueprint has no champion to poll
        models.after_fork()
        models.start_polling(_settings.reload_poll_seconds)
    except Exception:  # without the poll the worker still serves and follows the reload marker
        worker.log.exception("worker %s: could not start the champion poll", worker.pid)  # type: ignore[attr-defined]


def worker_exit(server: object, worker: object) -> None:
    """Stop the worker's forecast processes as it leaves (a worker killed outright: each leaves on its own)."""
    from api import workpool

    workpool.shutdown()


def child_exit(server: object, worker: object) -> None:
    """Drop a dead worker's metric files so /metrics counts live workers only."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]
