"""The real service: `leadcast --settings FILE serve` under gunicorn on a free loopback port.

It scores, swaps to a newly promoted model while clients are scoring (no request fails, every worker follows),
and stops gracefully on SIGTERM.
"""

from __future__ import annotations

import re
import shlex
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from api.settings import Settings
from api.stores import open_keys
from crmdata.synthetic import generate_leads
from scoring.artifacts import TrainedModel, save_trained
from scoring.spec import load_spec
from scoring.training import train
from tests.api.conftest import FAST, MODEL_NAME, lead_records
from tests.api.servers import JsonClient, free_port, leadcast_server

pytestmark = pytest.mark.slow

WORKERS = 2
GRACEFUL_TIMEOUT = 30  # api/gunicorn_conf.py
ACCESS_FORMAT = "%(p)s %(U)s %(q)s %(s)s"  # worker pid, path, query, status


@pytest.fixture(scope="module")
def second_model() -> TrainedModel:
    """Return a model trained on other leads, to be promoted as version 2 while the service runs."""
    trained = train(generate_leads(n=3000, seed=12).leads, spec=load_spec(), params=FAST).trained
    trained.version = "2"
    return trained


@dataclass
class Call:
    started: float
    status: int | None
    version: str | None
    error: str | None = None


def score_forever(port: int, key: str, leads: list[dict[str, Any]], stop: threading.Event, out: list[Call]) -> None:
    """Score one lead (with reasons) after another until `stop` is set; record every call."""
    with JsonClient(port, headers={"Authorization": f"Bearer {key}"}) as client:
        i = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                status, body = client.call("POST", "/v1/leads/score", {"lead": leads[i % len(leads)]})
                version = body["model"]["version"] if status == 200 else None
                out.append(Call(started, status, version, None if status == 200 else str(body)))
            except Exception as exc:  # a failed request is what this test looks for: record it, keep going
                out.append(Call(started, None, None, repr(exc)))
            i += 1


def quickstart_request(output: str) -> tuple[str, dict[str, str], str]:
    """Return the URL, headers and body of the curl command `serve --quickstart-key` printed."""
    line = next(x for x in output.splitlines() if x.startswith("curl "))
    words = shlex.split(line)
    headers = dict(words[i + 1].split(": ", 1) for i, w in enumerate(words) if w == "-H")
    url = next(w for w in words if w.startswith("http://"))
    return url, headers, words[words.index("-d") + 1]


def test_serve_scores_reloads_under_load_and_stops_gracefully(
    tmp_path: Path, trained_dir: Path, sample_leads: pd.DataFrame, second_model: TrainedModel
) -> None:
    # Everything comes from a settings file, in folders the defaults would not find (home/models,
    # home/api-keys.json): the workers can only serve version 1 if `serve` handed them the file's settings.
    models = tmp_path / "champions"
    shutil.copytree(trained_dir, models)
    store_url = f"sqlite:///{tmp_path / 'secrets' / 'leadcast.db'}"
    ring = open_keys(Settings(home=tmp_path / "home", database_url=store_url))
    admin = ring.create(name="ops", scopes=("admin",))
    crm = ring.create(name="crm", scopes=("score",))
    settings_file = tmp_path / "leadcast.toml"
    settings_file.write_text(
        f'home = "{tmp_path / "home"}"\nmodels_dir = "{models}"\ndatabase_url = "{store_url}"\n'
        f"workers = {WORKERS}\nrate_limit_per_minute = 6000000\nrate_limit_burst = 100000\n")
    port = free_port()
    access_log = tmp_path / "access.log"
    server = leadcast_server(
        tmp_path, port=port, settings_file=settings_file, extra_args=("--quickstart-key",),
        env={"GUNICORN_CMD_ARGS": f"--access-logfile {access_log} --access-logformat {shlex.quote(ACCESS_FORMAT)}"})
    records = lead_records(sample_leads, 60)
    with server:
        server.wait_ready("/readyz")
        with JsonClient(port, headers={"Authorization": f"Bearer {crm}"}) as client:
            status, ready = client.call("GET", "/readyz")
            assert (status, ready["model"]) == (200, {"name": MODEL_NAME, "version": "1", "kind": "trained"})

            # The curl `serve --quickstart-key` printed works as printed, with a key of its own.
            url, headers, body = quickstart_request(server.output())
            assert url == f"http://127.0.0.1:{port}/v1/leads/score"
            assert headers["Authorization"].startswith("Bearer lc_") and headers["Authorization"] != f"Bearer {crm}"
            status, raw = client.send("POST", "/v1/leads/score", body.encode(), headers)
            assert status == 200, raw
            assert b'"id":"L-quickstart-1"' in raw.replace(b" ", b"") and b'"reasons"' in raw

            status, one = client.call("POST", "/v1/leads/score", {"lead": records[0]})
            assert status == 200 and one["scores"][0]["id"] == records[0]["lead_id"]
            assert one["scores"][0]["reasons"], "reasons are on by default"
            status, many = client.call("POST", "/v1/leads/score?reasons=false", {"leads": records})
            assert status == 200 and [s["id"] for s in many["scores"]] == [r["lead_id"] for r in records]
            columns = sorted({k for r in records[:5] for k in r})
            split = {"columns": columns, "data": [[r.get(c) for c in columns] for r in records[:5]]}
            status, mlflow_shaped = client.call("POST", "/v1/leads/score", {"dataframe_split": split})
            assert status == 200 and len(mlflow_shaped["predictions"]) == 5

        # Clients score continuously while version 2 is promoted and the service told to reload.
        stop = threading.Event()
        calls: list[list[Call]] = [[], []]
        threads = [threading.Thread(target=score_forever, args=(port, crm, records, stop, out), daemon=True)
                   for out in calls]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)
            save_trained(second_model, models_dir=models, name=MODEL_NAME, aliases=["champion"])
            with JsonClient(port, headers={"Authorization": f"Bearer {admin}"}) as ops:
                status, reloaded = ops.call("POST", "/v1/models/reload")
            reloaded_at = time.monotonic()
            assert status == 200, reloaded
            assert (reloaded["model"]["version"], reloaded["previous"]["version"]) == ("2", "1")
            time.sleep(1.0)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
        done = [c for out in calls for c in out]
        failed = [c for c in done if c.status != 200]
        assert not failed, f"{len(failed)} of {len(done)} requests failed during the reload: {failed[:3]}"
        before = [c for c in done if c.started < reloaded_at]
        after = [c for c in done if c.started >= reloaded_at]
        assert len(before) >= 20 and len(after) >= 20, (len(before), len(after))
        assert {c.version for c in before} <= {"1", "2"}
        assert {c.version for c in after} == {"2"}

        # Every worker serves version 2: probe until the access log shows each worker answering a probe.
        probes: list[tuple[int, str]] = []
        lock = threading.Lock()

        def probe(n: int) -> None:
            with JsonClient(port, headers={"Authorization": f"Bearer {crm}"}) as client:
                for i in range(n):
                    status, body = client.call("POST", "/v1/leads/score?reasons=true", {"lead": records[i % 60]})
                    with lock:
                        probes.append((status, body["model"]["version"] if status == 200 else str(body)))

        pids: set[str] = set()
        for _ in range(10):
            workers = [threading.Thread(target=probe, args=(10,)) for _ in range(4)]
            for t in workers:
                t.start()
            for t in workers:
                t.join(timeout=60)
            pids = set(re.findall(r"^(<\d+>) /v1/leads/score reasons=true 200$", access_log.read_text(), re.M))
            if len(pids) >= WORKERS:
                break
        assert probes and set(probes) == {(200, "2")}
        assert len(pids) == WORKERS, f"probes reached workers {pids}"

        # SIGTERM: gunicorn stops accepting, lets the workers finish and exits 0 within the graceful timeout.
        started = time.monotonic()
        assert server.terminate(timeout=GRACEFUL_TIMEOUT + 15) == 0, server.output()[-3000:]
        assert time.monotonic() - started < GRACEFUL_TIMEOUT
        deadline = time.monotonic() + 5
        while server.group_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not server.group_alive(), "a worker outlived the master"
        log = server.output()
        assert "Traceback" not in log and "Shutting down: Master" in log
