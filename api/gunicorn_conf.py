"""gunicorn settings for `leadcast serve`; values come from the LEADCAST_* variables the command sets."""

import os

from prometheus_client import multiprocess

bind = f"{os.environ.get('LEADCAST_HOST', '127.0.0.1')}:{os.environ.get('LEADCAST_PORT', '8000')}"
workers = int(os.environ.get("LEADCAST_WORKERS", "2"))
threads = int(os.environ.get("LEADCAST_THREADS", "1"))
worker_class = "gthread" if threads > 1 else "sync"
timeout = int(os.environ.get("LEADCAST_TIMEOUT_SECONDS", "60"))
graceful_timeout = 30
keepalive = 5
# Load the app (and its model) once in the master so workers start fast and share memory pages.
preload_app = True
max_requests = 0
accesslog = None
errorlog = "-"
loglevel = "info"


def child_exit(server: object, worker: object) -> None:
    """Drop a dead worker's metric files so /metrics counts live workers only."""
    multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]
