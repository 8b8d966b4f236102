from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from api.cli import cli
from api.keys import KeyRing, KeyStoreError, create_key, read_keys, revoke_key
from api.ratelimit import RateLimiter


def test_a_created_key_authenticates_and_only_its_hash_is_stored(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key = create_key(path, name="crm", scopes=("score",))
    stored = path.read_text()
    assert key.split("_")[2] not in stored  # the secret part never reaches the file
    ring = KeyRing(path)
    found = ring.authenticate(key)
    assert found is not None and found.name == "crm" and found.scopes == ("score",)
    assert ring.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert ring.authenticate("not-a-key") is None
    assert oct(path.stat().st_mode)[-3:] == "600"


def test_revocation_takes_effect_without_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key = create_key(path, name="crm", scopes=("score", "forecast"))
    ring = KeyRing(path)
    assert ring.authenticate(key) is not None
    assert revoke_key(path, name="crm") == 1
    assert ring.authenticate(key) is None
    with pytest.raises(KeyStoreError, match="no active key named 'crm'"):
        revoke_key(path, name="crm")


@pytest.mark.parametrize(
    ("name", "scopes", "message"),
    [("bad name!", ("score",), "must be 1-64 letters"), ("ok", ("score", "root"), "scopes must be some of"),
     ("ok", (), "scopes must be some of")],
)
def test_bad_key_requests_are_refused(tmp_path: Path, name: str, scopes: tuple[str, ...], message: str) -> None:
    with pytest.raises(KeyStoreError, match=message):
        create_key(tmp_path / "k.json", name=name, scopes=scopes)


def test_a_second_active_key_with_the_same_name_is_refused(tmp_path: Path) -> None:
    create_key(tmp_path / "k.json", name="crm", scopes=("score",))
    with pytest.raises(KeyStoreError, match="exists"):
        create_key(tmp_path / "k.json", name="crm", scopes=("score",))


def test_keys_cli_prints_the_key_alone_on_the_last_line(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    runner = CliRunner()
    result = runner.invoke(cli, ["keys", "create", "--name", "crm", "--scopes", "score,forecast", "--file", str(path)])
    assert result.exit_code == 0, result.output
    key = result.output.strip().splitlines()[-1]
    assert KeyRing(path).authenticate(key) is not None
    listed = runner.invoke(cli, ["keys", "list", "--file", str(path)])
    assert "crm" in listed.output and "score,forecast" in listed.output and key not in listed.output
    revoked = runner.invoke(cli, ["keys", "revoke", "crm", "--file", str(path)])
    assert revoked.exit_code == 0 and "revoked 1 key(s)" in revoked.output
    bad = runner.invoke(cli, ["keys", "create", "--name", "x", "--scopes", "root", "--file", str(path)])
    assert bad.exit_code == 2 and "scopes must be some of" in bad.output
    assert [k.name for k in read_keys(path)] == ["crm"]
    assert json.loads(path.read_text())["keys"][0]["revoked_at"] is not None


def test_rate_limiter_allows_the_burst_then_the_pace() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=60, burst=3, clock=lambda: now[0])
    # A burst of 3, then nothing until a token refills at 60/min = 1 per second.
    assert [limiter.allow("k")[0] for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("k")[1] == pytest.approx(1.0)
    now[0] = 1.0
    assert limiter.allow("k")[0] is True
    assert limiter.allow("other")[0] is True  # keys have their own buckets
