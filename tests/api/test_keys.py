from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from api.app import create_app
from api.cli import cli
from api.keys import KeyStore, KeyStoreError, _digest
from api.ratelimit import RateLimiter
from api.settings import Settings
from api.stores import open_keys, open_store
from store import Store, StoreUnavailable
from tests.api.conftest import Service

UNKNOWN_KEY = "lc_000000000000_" + "x" * 43  # well formed: only the store can say it is unknown
SCORE_BODY = {"lead": {"lead_id": "L1", "source": "organic_search", "web_visits": 3}}


@pytest.fixture
def keys(database_url: str) -> Iterator[KeyStore]:
    """Return the keys of a fresh store (SQLite file, then a new PostgreSQL database)."""
    store = Store(database_url)
    store.upgrade()
    yield KeyStore(store)
    store.dispose()


def test_a_created_key_authenticates_and_only_its_hash_is_stored(keys: KeyStore) -> None:
    key = keys.create(name="crm", scopes=("score",))
    with keys.store.begin() as conn:
        stored = [str(v) for row in conn.execute(sa.text("SELECT * FROM api_keys")) for v in row]
    # The secret part never reaches the database. It is token_urlsafe, so it may hold "_" itself: split("_")[2]
    # took a fragment of it (once "9", found in a hex digest: a failed CI run), not the whole secret.
    assert key.split("_", 2)[2] not in " ".join(stored)
    found = keys.authenticate(key)
    assert found is not None and found.name == "crm" and found.scopes == ("score",)
    assert keys.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert keys.authenticate("not-a-key") is None
    assert keys.authenticate("lc_000000000000_" + "x" * 43) is None  # well formed, unknown id


def test_revocation_takes_effect_in_another_process_without_a_restart(keys: KeyStore) -> None:
    key = keys.create(name="crm", scopes=("score", "forecast"))
    other = KeyStore(Store(keys.store.url.render_as_string(hide_password=False)))  # a second worker's view
    assert other.authenticate(key) is not None
    assert keys.revoke(name="crm") == 1
    assert other.authenticate(key) is None
    with pytest.raises(KeyStoreError, match="no active key named 'crm'"):
        keys.revoke(name="crm")
    # A revoked name may be used again, and the list keeps both, oldest first.
    keys.create(name="crm", scopes=("score",))
    assert [(k.name, k.revoked_at is None) for k in keys.list()] == [("crm", False), ("crm", True)]
    other.store.dispose()


@pytest.mark.parametrize(
    ("name", "scopes", "message"),
    [("bad name!", ("score",), "must be 1-64 letters"), ("ok", ("score", "root"), "scopes must be some of"),
     ("ok", (), "scopes must be some of")],
)
def test_bad_key_requests_are_refused(tmp_path: Path, name: str, scopes: tuple[str, ...], message: str) -> None:
    ring = KeyStore(Store(f"sqlite:///{tmp_path / 'k.db'}", auto_upgrade=True))
    with pytest.raises(KeyStoreError, match=message):
        ring.create(name=name, scopes=scopes)


def test_a_second_active_key_with_the_same_name_is_refused(keys: KeyStore) -> None:
    keys.create(name="crm", scopes=("score",))
    with pytest.raises(KeyStoreError, match="exists"):
        keys.create(name="crm", scopes=("score",))


def test_keys_cli_prints_the_key_alone_on_the_last_line(database_url: str) -> None:
    runner = CliRunner()
    env = {"LEADCAST_DATABASE_URL": database_url}
    assert runner.invoke(cli, ["db", "upgrade"], env=env).exit_code == 0
    result = runner.invoke(cli, ["keys", "create", "--name", "crm", "--scopes", "score,forecast"], env=env)
    assert result.exit_code == 0, result.output
    key = result.output.strip().splitlines()[-1]
    with Store(database_url) as store:
        assert KeyStore(store).authenticate(key) is not None
    listed = runner.invoke(cli, ["keys", "list"], env=env)
    assert "crm" in listed.output and "score,forecast" in listed.output and key not in listed.output
    revoked = runner.invoke(cli, ["keys", "revoke", "crm"], env=env)
    assert revoked.exit_code == 0 and "revoked 1 key(s)" in revoked.output
    bad = runner.invoke(cli, ["keys", "create", "--name", "x", "--scopes", "root"], env=env)
    assert bad.exit_code == 2 and "scopes must be some of" in bad.output
    with Store(database_url) as store:
        assert [(k.name, k.revoked_at is not None) for k in KeyStore(store).list()] == [("crm", True)]


def _legacy_file(path: Path, *, name: str, key_id: str, secret: str, revoked: bool = False) -> str:
    """Write an api-keys.json the way releases before the store did; return the key."""
    salt = "ab" * 16
    entry = {"name": name, "key_id": key_id, "salt": salt, "digest": _digest(salt, secret), "scopes": ["score"],
             "created_at": "2026-11-01T10:00:00+00:00",
             "revoked_at": "2026-11-02T10:00:00+00:00" if revoked else None}
    data = json.loads(path.read_text()) if path.exists() else {"keys": []}
    data["keys"].append(entry)
    path.write_text(json.dumps(data))
    return f"lc_{key_id}_{secret}"


def test_an_existing_keys_file_is_imported_once(database_url: str, tmp_path: Path) -> None:
    legacy = tmp_path / "api-keys.json"
    old = _legacy_file(legacy, name="crm", key_id="0123456789ab", secret="s" * 43)
    gone = _legacy_file(legacy, name="old", key_id="ba9876543210", secret="t" * 43, revoked=True)
    store = Store(database_url, auto_upgrade=True)
    ring = KeyStore(store, legacy_file=legacy)
    found = ring.authenticate(old)
    assert found is not None and found.name == "crm" and found.created_at == "2026-11-01T10:00:00+00:00"
    assert ring.authenticate(gone) is None  # revoked stays revoked
    ring.revoke(name="crm")
    # Once imported, the file is never read again: a key added to it later, or the revoked one, stays out.
    late = _legacy_file(legacy, name="late", key_id="aaaaaaaaaaaa", secret="u" * 43)
    again = KeyStore(Store(database_url, auto_upgrade=True), legacy_file=legacy)
    assert again.authenticate(old) is None and again.authenticate(late) is None
    assert sorted(k.name for k in again.list()) == ["crm", "old"]
    store.dispose()
    again.store.dispose()


def test_a_restart_keeps_the_keys(database_url: str, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url=database_url, model_source="files")
    with open_store(settings) as store:
        store.upgrade()
    ring = open_keys(settings)
    with ring.store:
        key = ring.create(name="crm", scopes=("score",))
    for _ in range(2):  # two lives of the service on the same store
        app = create_app(settings)
        response = app.test_client().get("/v1/models/current", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code != 401, response.get_json()
        app.extensions["leadcast"].store.dispose()


def _generic_503(response: object) -> None:
    body = response.get_json()  # type: ignore[attr-defined]
    assert response.status_code == 503, body  # type: ignore[attr-defined]
    assert body["error"] == {"code": "unavailable", "details": [],
                             "message": "the service's data store is unavailable; try again shortly"}
    assert response.headers["Retry-After"] == "5"  # type: ignore[attr-defined]


def test_a_broken_keys_file_answers_503_with_no_detail_and_recovers(
    make_service: Callable[..., Service], caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 10 item 7: invalid JSON in the keys file gave every caller a 422 naming the file and the parse error.
    service = make_service()
    legacy = service.settings.resolved_api_keys_file
    legacy.write_text('{"keys": [')
    fresh = create_app(service.settings)  # a new process meets the broken file before its first import
    client = fresh.test_client()
    with caplog.at_level(logging.ERROR, logger="leadcast.api"):
        for who in ("score", "nobody"):
            _generic_503(client.post("/v1/leads/score", json=SCORE_BODY,
                                     headers={"Authorization": f"Bearer {service.keys.get(who, UNKNOWN_KEY)}"}))
    assert str(legacy) in caplog.text and "is not valid" in caplog.text  # the operator gets the detail
    legacy.write_text('{"keys": []}')  # fixed: the next request goes through, no restart
    assert client.post("/v1/leads/score", json=SCORE_BODY, headers=service.headers("score")).status_code == 200


def test_a_corrupt_database_answers_503_and_recovers_when_restored(
    make_service: Callable[..., Service], caplog: pytest.LogCaptureFixture
) -> None:
    service = make_service()
    assert service.post("/v1/leads/score", SCORE_BODY, who="score").status_code == 200
    db = Path(service.settings.resolved_database_url.removeprefix("sqlite:///"))
    service.app.extensions["leadcast"].store.dispose()  # checkpoint the WAL into the file before copying it
    good = db.read_bytes()
    for extra in (db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        extra.unlink(missing_ok=True)
    db.write_bytes(b"this is not an SQLite database" * 200)
    with caplog.at_level(logging.ERROR, logger="leadcast.api"):
        # The key the store confirmed a moment ago goes on scoring; one it never confirmed cannot be checked.
        assert service.post("/v1/leads/score", SCORE_BODY, who="score").status_code == 200
        _generic_503(service.post("/v1/leads/score", SCORE_BODY, who="all"))
    assert "file is not a database" in caplog.text
    db.write_bytes(good)
    assert service.post("/v1/leads/score", SCORE_BODY, who="all").status_code == 200


@pytest.mark.slow
def test_a_postgresql_server_that_stops_answers_503_and_recovers_when_it_returns(tmp_path: Path) -> None:
    from tests.postgres import start_server

    server = start_server()
    if server is None:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) to start a server to stop")
    try:
        settings = Settings(home=tmp_path, database_url=server.url, model_source="files")
        with open_store(settings) as store:
            store.upgrade()
        ring = open_keys(settings)
        with ring.store:
            key = ring.create(name="crm", scopes=("score",))
            other = ring.create(name="ops", scopes=("score",))
        app = create_app(settings)
        client = app.test_client()
        headers = {"Authorization": f"Bearer {key}"}
        assert client.post("/v1/leads/score", json=SCORE_BODY, headers=headers).status_code == 200
        server.stop()
        # Scoring goes on for the key confirmed before the outage; an unconfirmed one gets the generic 503.
        assert client.post("/v1/leads/score", json=SCORE_BODY, headers=headers).status_code == 200
        _generic_503(client.post("/v1/leads/score", json=SCORE_BODY, headers={"Authorization": f"Bearer {other}"}))
        server.start()
        assert client.post("/v1/leads/score", json=SCORE_BODY,
                           headers={"Authorization": f"Bearer {other}"}).status_code == 200
        rt = app.extensions["leadcast"]
        assert rt.prediction_log.flush(timeout=30)  # the rows scored during the outage were retried
        with rt.store.begin() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM predictions WHERE lead_id = 'L1'")).scalar() == 3
        rt.prediction_log.close()
        rt.store.dispose()
    finally:
        server.remove()


@pytest.mark.slow
def test_a_postgresql_restart_between_requests_costs_no_503(tmp_path: Path) -> None:
    from store import core
    from tests.postgres import start_server

    server = start_server()
    if server is None:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) to start a server to restart")
    try:
        # No key cache: every request asks the store, so a dead pooled connection would show as a 503.
        settings = Settings(home=tmp_path, database_url=server.url, model_source="files", key_cache_seconds=0,
                            trend_cache_seconds=0)
        with open_store(settings) as store:
            store.upgrade()
        ring = open_keys(settings)
        with ring.store:
            key = ring.create(name="crm", scopes=("score",))
            other = ring.create(name="ops", scopes=("score",))  # first used after the restart: no outage grace
        app = create_app(settings)
        client = app.test_client()
        first = client.post("/v1/leads/score", json=SCORE_BODY, headers={"Authorization": f"Bearer {key}"})
        assert first.status_code == 200 and first.get_json()["scores"][0]["trend"] == "new"
        rt = app.extensions["leadcast"]
        assert rt.prediction_log.flush(timeout=30)
        server.stop()  # the pool's connections die with the server, unnoticed: no request meets the outage
        server.start()
        time.sleep(core.PING_IDLE_SECONDS + 0.1)  # idle past the bound: pinged, found dead, replaced
        again = client.post("/v1/leads/score", json=SCORE_BODY, headers={"Authorization": f"Bearer {other}"})
        assert again.status_code == 200, again.get_json()
        assert again.get_json()["scores"][0]["trend"] == "steady"  # the trend was read, not nulled by a fault
        rt.prediction_log.close()
        rt.store.dispose()
    finally:
        server.remove()


def test_a_confirmed_key_outlives_an_outage_only_for_the_grace_period(tmp_path: Path) -> None:
    now = [0.0]
    store = Store(f"sqlite:///{tmp_path / 'k.db'}", auto_upgrade=True)
    ring = KeyStore(store, outage_grace_seconds=300, clock=lambda: now[0])
    key, never = ring.create(name="crm", scopes=("score",)), ring.create(name="ops", scopes=("admin",))
    assert ring.authenticate(key) is not None  # confirmed at t = 0
    store.dispose()
    db = tmp_path / "k.db"
    db.write_bytes(b"garbage" * 1000)
    now[0] = 300.0  # 300 s after the confirmation: still within the grace
    found = ring.authenticate(key)
    assert found is not None and found.name == "crm"
    assert ring.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None  # the secret is still checked
    with pytest.raises(StoreUnavailable):
        ring.authenticate(never)
    now[0] = 300.5
    with pytest.raises(StoreUnavailable):
        ring.authenticate(key)
    store.dispose()


def test_rate_limiter_allows_the_burst_then_the_pace() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=60, burst=3, clock=lambda: now[0])
    # A burst of 3, then nothing until a token refills at 60/min = 1 per second.
    assert [limiter.allow("k")[0] for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("k")[1] == pytest.approx(1.0)
    now[0] = 1.0
    assert limiter.allow("k")[0] is True
    assert limiter.allow("other")[0] is True  # keys have their own buckets


def test_a_cached_key_is_refused_once_the_cache_bound_passes_after_revocation(keys: KeyStore) -> None:
    now = [0.0]
    key = keys.create(name="crm", scopes=("score",))
    other = KeyStore(Store(keys.store.url.render_as_string(hide_password=False)), cache_seconds=2.0,
                     clock=lambda: now[0])  # a second worker that caches confirmed keys for 2 s
    assert other.authenticate(key) is not None  # confirmed by the store at t = 0
    keys.revoke(name="crm")
    now[0] = 1.9  # within the bound: accepted from the cache, but the secret is still checked
    assert other.authenticate(key) is not None
    assert other.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    now[0] = 2.0  # the bound has passed: the store is asked and says revoked
    assert other.authenticate(key) is None
    now[0] = 2.1  # a refusal is never cached: still refused
    assert other.authenticate(key) is None
    other.store.dispose()


def test_a_revoked_key_is_refused_over_http_within_the_cache_bound(database_url: str, tmp_path: Path) -> None:
    bound = 0.3
    settings = Settings(home=tmp_path, database_url=database_url, model_source="files", key_cache_seconds=bound)
    with open_store(settings) as store:
        store.upgrade()
    ring = open_keys(settings)
    key = ring.create(name="crm", scopes=("score",))
    app = create_app(settings)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/models/current", headers=headers).status_code != 401  # confirmed and cached now
    ring.revoke(name="crm")
    deadline = time.monotonic() + bound + 0.05
    for _ in range(200):  # bounded: at most 200 polls of 10 ms, far past the bound
        status = client.get("/v1/models/current", headers=headers).status_code
        if status == 401 or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    # Made after a refusal or after bound + epsilon: refused (a refusal is never cached, a confirmation expires).
    assert client.get("/v1/models/current", headers=headers).status_code == 401
    rt = app.extensions["leadcast"]
    rt.prediction_log.close()
    rt.store.dispose()
    ring.store.dispose()
