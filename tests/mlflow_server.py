"""A real `mlflow server` on loopback for the tests: a PostgreSQL backend store and a proxied artifact root.

Started from this venv's `mlflow` script, in its own process group (tests/api/servers.py), with one uvicorn
worker. Artifacts are served through the server (`mlflow-artifacts:/`), so a client on another host needs only
the tracking URI.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.api.servers import HOST, ServerProcess, child_env, free_port


def mlflow_server(root: Path, *, backend_url: str, port: int | None = None) -> ServerProcess:
    """Return `mlflow server` (not started) on `backend_url` with its artifacts under root/artifacts, its
    database schema created first (`mlflow db upgrade`): on an empty PostgreSQL database the server's tracking
    and registry stores race to create alembic_version and it exits with a UniqueViolation."""
    port = port or free_port()
    artifacts = root / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    mlflow = Path(sys.executable).parent / "mlflow"
    subprocess.run([str(mlflow), "db", "upgrade", backend_url], check=True, capture_output=True, env=child_env(),
                   timeout=300)
    args = [str(mlflow), "server", "--backend-store-uri", backend_url, "--artifacts-destination", str(artifacts),
            "--host", HOST, "--port", str(port), "--workers", "1"]
    # No job runner: it forks a dozen huey consumers this test has no use for (AI judges, periodic jobs).
    env = child_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    return ServerProcess(args, port=port, env=env, log=root / "mlflow-server.log", name="mlflow server", cwd=root)


def tracking_uri(server: ServerProcess) -> str:
    """Return the tracking URI of a started server."""
    return f"http://{HOST}:{server.port}"
