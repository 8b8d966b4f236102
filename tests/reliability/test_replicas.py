"""Two replicas of the service on shared state: real PostgreSQL (the store), Redis (the rate limit) and an
`mlflow server` (PostgreSQL backend, proxied artifacts) on loopback, and two `leadcast serve` instances on two
ports with separate homes.

A key created once works on both; a key's budget B holds across both; a retrain and promotion reach both within
10 s with no failed request under steady clients; one instance killed, the other keeps answering; an artifact
changed on the tracking server is refused by its SHA-256.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.settings import Settings
from api.stores import open_keys
from crmdata.synthetic import generate_leads
from scoring.spec import load_spec
from scoring.tracking import champion_pointer, track
from scoring.training import train
from tests.api.servers import HOST, REPO, JsonClient, SteadyClient, child_env, free_port, get_status, leadcast_server
from tests.mlflow_server import mlflow_server, tracking_uri
from tests.postgres import create_database, drop_database

pytestmark = pytest.mark.slow

NAME = "leadcast-lead-scoring"
FAST = {"cv": 3, "max_iter": 30}
BUDGET = 400  # rate_limit_burst: the budget B a key may spend at once
PER_MINUTE = 120  # the pace it refills at: 2 a second
POLL_SECONDS = 2
STEADY_PER_SECOND = 2  # per steady client: the refill pace, so however long training takes its key keeps B


class AliasWatch:
    """Notes when the champion alias on the tracking server stops naming `old` (asked every 50 ms)."""

    def __init__(self, uri: str, old: str) -> None:
        self.uri, self.old = uri, old
        self.moved: float | None = None
        self.version: str | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for _ in range(20 * 600):  # bounded: 10 minutes at most
            if self.stop.is_set():
                return
            now = time.monotonic()
            pointer = champion_pointer(tracking_uri=self.uri, registered_model_name=NAME)
            if pointer is not None and pointer[0] != self.old:
                self.moved, self.version = now, pointer[0]
                return
            self.stop.wait(0.05)

    def __enter__(self) -> AliasWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


@pytest.fixture
def shared(tmp_path: Path, postgres_admin_url: str | None, redis_url: str) -> Iterator[dict[str, Any]]:
    """Yield the shared services: a store database, a Redis URL and a started `mlflow server`."""
    if postgres_admin_url is None:
        pytest.skip("no PostgreSQL server: install PostgreSQL (initdb, pg_ctl) or set LEADCAST_TEST_POSTGRES_URL")
    if not (Path(sys.executable).parent / "mlflow").exists():
        pytest.skip(f"no mlflow script beside {sys.executable}")
    store_url = create_database(postgres_admin_url)
    mlflow_url = create_database(postgres_admin_url)  # MLflow and leadcast each keep an alembic_version table
    server = mlflow_server(tmp_path / "mlflow", backend_url=mlflow_url)
    try:
        with server:
            started = time.monotonic()
            server.wait_ready("/health", timeout=300)
            print(f"\nmlflow server ready in {time.monotonic() - started:.1f} s")
            yield {"database_url": store_url, "redis_url": redis_url, "tracking_uri": tracking_uri(server),
                   "mlflow": server, "artifacts": tmp_path / "mlflow" / "artifacts"}
    finally:
        drop_database(postgres_admin_url, store_url)
        drop_database(postgres_admin_url, mlflow_url)


def settings_file(home: Path, shared: dict[str, Any]) -> Path:
    """Write one instance's settings: its own home, the shared store, Redis and tracking server."""
    home.mkdir(parents=True)
    path = home / "leadcast.toml"
    path.write_text(f'home = "{home}"\ndatabase_url = "{shared["database_url"]}"\n'
                    f'mlflow_tracking_uri = "{shared["tracking_uri"]}"\nmodel_source = "mlflow"\n'
                    f'rate_limit_storage = "{shared["redis_url"]}"\nrate_limit_per_minute = {PER_MINUTE}\n'
                    f"rate_limit_burst = {BUDGET}\nreload_poll_seconds = {POLL_SECONDS}\nworkers = 2\n"
                    "prediction_log = false\n")
    return path


def train_and_track(trainer: Path, shared: dict[str, Any], *, seed: int) -> str:
    """Train on fresh synthetic leads and register the model on the tracking server as champion."""
    result = train(generate_leads(n=2000, seed=seed).leads, spec=load_spec(), params=FAST)
    tracked = track(result, tracking_uri=shared["tracking_uri"], artifact_root=None, experiment_name=NAME,
                    registered_model_name=NAME, models_dir=trainer / "models", force=True)
    assert "champion" in tracked.aliases
    return tracked.version


def train_with_the_cli(trainer: Path, shared: dict[str, Any], *, seed: int) -> str:
    """Run `leadcast train --force` on fresh leads with the trainer's settings (the tracking server's URI and
    no artifact root: the server's own); return the version it registered."""
    data = trainer / f"leads-{seed}.parquet"
    generate_leads(n=2000, seed=seed).leads.to_parquet(data)
    settings = trainer / "leadcast.toml"
    settings.write_text(f'home = "{trainer}"\nmlflow_tracking_uri = "{shared["tracking_uri"]}"\n')
    out = trainer / f"train-{seed}.json"
    done = subprocess.run([sys.executable, "-m", "api.cli", "--settings", str(settings), "train", "--data", str(data),
                           "--force", "--json", str(out)], env=child_env(), cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(out.read_text())
    assert answer["promoted"] is True
    return str(answer["version"])


def hammer(ports: list[int], key: str, total: int) -> tuple[Counter[int], float]:
    """Send `total` cheap authenticated requests, spread evenly over `ports` by 2 threads each; return the
    statuses counted and the seconds it took."""
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    per_thread = total // (2 * len(ports))

    def run(port: int) -> None:
        with JsonClient(port, headers={"Authorization": f"Bearer {key}"}) as client:
            for _ in range(per_thread):
                status, _ = client.call("GET", "/v1/models/current")
                with lock:
                    statuses[status] += 1

    threads = [threading.Thread(target=run, args=(p,)) for p in ports for _ in range(2)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return statuses, time.monotonic() - started


def version_of(port: int, key: str) -> tuple[int, str]:
    """Return the status and model version one instance answers with."""
    with JsonClient(port, headers={"Authorization": f"Bearer {key}"}) as client:
        status, body = client.call("GET", "/v1/models/current")
    return status, body["model"]["version"] if status == 200 else body["error"]["code"]


def test_two_replicas_share_keys_budget_champion_and_survive_one_loss(tmp_path: Path,
                                                                       shared: dict[str, Any]) -> None:
    from tests.api.conftest import lead_records

    trainer = tmp_path / "trainer"
    v1 = train_and_track(trainer, shared, seed=41)
    ring = open_keys(Settings(home=tmp_path / "keys-cli", database_url=shared["database_url"]))
    with ring.store:  # the schema upgraded once (`leadcast db upgrade`); each key created once, on no instance
        ring.store.upgrade()
        keys = {name: ring.create(name=name, scopes=scopes) for name, scopes in
                [("crm", ("score",)), ("budget", ("score",)), ("steady-a", ("score",)),
                 ("steady-b", ("score",)), ("ops", ("admin", "score"))]}
    leads = lead_records(generate_leads(n=100, seed=42).leads, 20)
    a = leadcast_server(tmp_path / "a", port=free_port(), settings_file=settings_file(tmp_path / "a" / "home", shared),
                        name="leadcast-a")
    b = leadcast_server(tmp_path / "b", port=free_port(), settings_file=settings_file(tmp_path / "b" / "home", shared),
                        name="leadcast-b")
    with a, b:
        ready = [server.wait_ready("/readyz", timeout=180) for server in (a, b)]
        print(f"instances ready in {ready[0]:.1f} s and {ready[1]:.1f} s on ports {a.port}, {b.port}")

        # A key created once works on both.
        assert version_of(a.port, keys["crm"]) == (200, v1)
        assert version_of(b.port, keys["crm"]) == (200, v1)

        # A key's budget holds across both: 2B requests, half to each instance, as fast as 4 clients go.
        statuses, seconds = hammer([a.port, b.port], keys["budget"], 2 * BUDGET)
        refilled = PER_MINUTE / 60 * seconds
        print(f"budget B={BUDGET}: {statuses[200]} of {sum(statuses.values())} allowed across 2 instances in "
              f"{seconds:.2f} s (B + {refilled:.1f} refilled = {BUDGET + refilled:.1f} expected; separate buckets "
              f"would allow {2 * BUDGET}); refused {statuses[429]}")
        assert set(statuses) <= {200, 429}
        # within 5% of B once the tokens refilled while the clients ran are counted (2/s x seconds)
        assert abs(statuses[200] - (BUDGET + refilled)) <= 0.05 * BUDGET, statuses

        with SteadyClient(a.port, keys["steady-a"], leads, STEADY_PER_SECOND) as on_a, \
                SteadyClient(b.port, keys["steady-b"], leads, STEADY_PER_SECOND) as on_b:
            time.sleep(2)
            train_started = time.monotonic()
            with AliasWatch(shared["tracking_uri"], v1) as watch:
                v2 = train_with_the_cli(trainer, shared, seed=43)
                deadline = time.monotonic() + 30
                while watch.moved is None and time.monotonic() < deadline:
                    time.sleep(0.05)
            trained = time.monotonic()
            assert watch.moved is not None and watch.version == v2 != v1
            promoted = watch.moved  # when the champion alias named v2 on the tracking server
            deadline = promoted + 30
            while (on_a.first(v2) is None or on_b.first(v2) is None) and time.monotonic() < deadline:
                time.sleep(0.1)
            seen = {"a": on_a.first(v2), "b": on_b.first(v2)}
            time.sleep(POLL_SECONDS + 1)
            settled = time.monotonic()
            time.sleep(2)
            lags = {k: None if t is None else round(t - promoted, 2) for k, t in seen.items()}
            print(f"retrain + promotion of v{v2} (`leadcast train --force`) took {trained - train_started:.1f} s; "
                  f"first v{v2} answer after the alias moved: {lags} s (poll every {POLL_SECONDS} s)")
            before_kill = {"a": on_a.between(0), "b": on_b.between(0)}
            print(f"steady clients before the kill: {dict(before_kill['a'])} on a, {dict(before_kill['b'])} on b")
            for outcomes in before_kill.values():
                assert set(outcomes) <= {(200, v1), (200, v2)}, outcomes  # not one failed request
            assert all(lag is not None and lag <= 10 for lag in lags.values()), lags
            assert set(on_a.between(settled)) == {(200, v2)} and set(on_b.between(settled)) == {(200, v2)}

            # One instance killed: the other keeps answering.
            a.kill()
            killed = time.monotonic()
            time.sleep(3)
            after = on_b.between(killed)
            print(f"after instance a was killed: {dict(after)} on b; a: {dict(on_a.between(killed))}")
            assert sum(after.values()) >= 3 * STEADY_PER_SECOND // 2 and set(after) == {(200, v2)}
        assert get_status(a.port, "/healthz") is None and get_status(b.port, "/healthz") == 200

        # An artifact changed on the tracking server's artifact root is refused by its SHA-256 on download.
        [artifact] = [p for p in shared["artifacts"].rglob("*.joblib") if f"-v{v2}-" in p.name]
        artifact.write_bytes(artifact.read_bytes()[:-10] + b"0123456789")
        shutil.rmtree(tmp_path / "b" / "home" / "models" / ".mlflow-cache")
        with JsonClient(b.port, headers={"Authorization": f"Bearer {keys['ops']}"}) as ops:
            status, body = ops.call("POST", "/v1/models/reload")
        assert status == 503 and "does not match the SHA-256 recorded at training" in body["error"]["message"]
        assert shared["tracking_uri"].split("//")[1] not in str(body) and HOST not in str(body)
        assert version_of(b.port, keys["crm"]) == (200, v2)  # the last good model stays
