"""The model-health gauges refresh in the background of each real gunicorn worker, never in the master.

`leadcast serve` with 2 workers and `monitoring_refresh_seconds = 1` against a store holding logged scores of
the champion: each worker starts its refresh at its first request, and publishes its gauges. A worker killed
with SIGKILL is replaced, and the replacement refreshes too from its own first request. Which process published
a gauge is read from the Prometheus multiprocess folder, where each process writes its own file
(`gauge_mostrecent_<pid>.db`, the mode of the health gauges).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from api.settings import Settings
from api.stores import open_keys
from scoring.spec import load_spec
from store import Store
from store.schema import outcomes, predictions
from tests.api.conftest import MODEL_NAME, lead_records
from tests.api.servers import JsonClient, free_port, leadcast_server

pytestmark = pytest.mark.slow

LOGGED = 400
DEADLINE = 60.0  # seconds any one wait may take, on a loaded 2-core machine
ACCESS_FORMAT = "%(p)s %(U)s %(s)s"  # worker pid (as <pid>), path, status


def children(pid: int) -> set[int]:
    """Return the pids of the live children of `pid` (Linux /proc)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return set()
    return {int(p) for p in text.split()}


def health_gauges(folder: Path, pid: int) -> set[str]:
    """Return the names of the health gauges process `pid` has published (from its own multiprocess file)."""
    path = folder / f"gauge_mostrecent_{pid}.db"
    if not path.exists():
        return set()
    return {m.name for m in MultiProcessCollector.merge([str(path)], accumulate=False) if m.samples}


def served_by(access_log: Path) -> set[int]:
    """Return the pids of the workers that answered a score request, from the access log."""
    if not access_log.exists():
        return set()
    return {int(line.split()[0].strip("<>")) for line in access_log.read_text().splitlines()
            if " /v1/leads/score 200" in line}


def score_until_served_by(port: int, key: str, record: dict[str, object], access_log: Path, wanted: set[int]) -> None:
    """Score one lead per new connection until every worker in `wanted` has answered one (bounded)."""
    started = time.monotonic()
    for _ in range(400):
        if wanted <= served_by(access_log):
            return
        assert time.monotonic() - started < DEADLINE, f"workers {wanted - served_by(access_log)} never answered"
        with JsonClient(port, headers={"Authorization": f"Bearer {key}"}) as client:
            status, body = client.call("POST", "/v1/leads/score?reasons=false", {"lead": record})
            assert status == 200, body
        time.sleep(0.05)  # the access line is written after the answer
    raise AssertionError(f"workers {wanted - served_by(access_log)} never answered in 400 requests")


def wait_for(what: str, check: object, *, poll: float = 0.25) -> None:
    """Wait until `check()` is true (at most DEADLINE seconds)."""
    started = time.monotonic()
    while time.monotonic() - started < DEADLINE:
        if check():  # type: ignore[operator]
            return
        time.sleep(poll)
    raise AssertionError(f"not within {DEADLINE:.0f} s: {what}")


def log_scores(store_url: str, leads: pd.DataFrame) -> None:
    """Write LOGGED first scores of version 1, 100 days old (matured), a quarter of them converted."""
    spec = load_spec()
    columns = set(spec.feature_columns)
    when = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=100)
    records = lead_records(leads, LOGGED)
    with Store(store_url) as store:
        store.upgrade()
        with store.begin() as conn:
            conn.execute(predictions.insert(), [
                {"lead_id": r["lead_id"], "scored_at": when, "as_of": when, "model_name": MODEL_NAME,
                 "model_version": "1", "model_kind": "trained", "probability": (i % 10 + 0.5) / 10,
                 "score": i % 10 * 10 + 5, "grade": "B", "reasons": None,
                 "features": {k: v for k, v in r.items() if k in columns}} for i, r in enumerate(records)])
            conn.execute(outcomes.insert(), [
                {"lead_id": r["lead_id"], "converted": True, "converted_at": when, "source": "api",
                 "recorded_at": when, "updated_at": when} for r in records[::4]])


def test_each_worker_refreshes_its_gauges_and_a_replacement_worker_does_too(
        tmp_path: Path, trained_dir: Path, sample_leads: pd.DataFrame) -> None:
    models = tmp_path / "models"
    shutil.copytree(trained_dir, models)
    store_url = f"sqlite:///{tmp_path / 'leadcast.db'}"
    log_scores(store_url, sample_leads)
    crm = open_keys(Settings(home=tmp_path, database_url=store_url)).create(name="crm", scopes=("score",))
    settings_file = tmp_path / "leadcast.toml"
    settings_file.write_text(
        f'home = "{tmp_path}"\nmodels_dir = "{models}"\ndatabase_url = "{store_url}"\nworkers = 2\n'
        "monitoring_refresh_seconds = 1\nrate_limit_per_minute = 6000000\nrate_limit_burst = 100000\n")
    port = free_port()
    access_log = tmp_path / "access.log"
    server = leadcast_server(
        tmp_path, port=port, settings_file=settings_file,
        env={"GUNICORN_CMD_ARGS": f"--access-logfile {access_log} --access-logformat {shlex.quote(ACCESS_FORMAT)}"})
    folder = tmp_path / "prometheus"  # leadcast_server's PROMETHEUS_MULTIPROC_DIR
    record = lead_records(sample_leads, 1, start=LOGGED)[0]
    with server:
        server.wait_ready("/readyz")
        [master] = children(server.running.pid)  # leadcast serve -> the gunicorn master -> its workers
        wait_for("two workers", lambda: len(children(master)) == 2)
        workers = children(master)

        score_until_served_by(port, crm, record, access_log, workers)
        # /metrics shows the gauges once a refresh has run (one second after a worker's first request).
        def on_metrics() -> bool:
            with JsonClient(port) as client:
                status, raw = client.send("GET", "/metrics")
            labels = f'{{model_name="{MODEL_NAME}",model_version="1"}}'.encode()
            return status == 200 and b"leadcast_score_psi" + labels in raw and b"leadcast_live_ece" + labels in raw
        wait_for("leadcast_score_psi on /metrics", on_metrics)
        # and each worker published them itself
        wanted = {"leadcast_score_psi", "leadcast_live_ece", "leadcast_feature_psi", "leadcast_monitoring_alerts"}
        for pid in workers:
            wait_for(f"worker {pid}'s health gauges", lambda pid=pid: wanted <= health_gauges(folder, pid))

        # SIGKILL one worker: the master replaces it, and the replacement refreshes from its first request.
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        wait_for("a replacement worker", lambda: len(children(master) - workers) == 1 and len(children(master)) == 2)
        [replacement] = children(master) - workers
        assert health_gauges(folder, replacement) == set()  # nothing before its first request
        score_until_served_by(port, crm, record, access_log, {replacement})
        wait_for(f"the replacement {replacement}'s health gauges",
                 lambda: wanted <= health_gauges(folder, replacement))

        # The master never refreshes (it preloads the app but serves no request): no gauge file of its own.
        assert not (folder / f"gauge_mostrecent_{master}.db").exists()
        assert not (folder / f"gauge_mostrecent_{server.running.pid}.db").exists()
        assert "model-health gauges not refreshed" not in server.output()
        # a graceful stop (SIGTERM), so `leadcast serve` removes its instance folder
        assert server.terminate(timeout=60) == 0
