from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from api.cli import cli
from store import Store, StoreUnavailable
from store.core import MIGRATIONS
from tests.api.servers import free_port

TABLES = {"api_keys", "imports", "predictions", "outcomes", "opportunities", "opportunity_events", "pipeline_config",
          "forecast_snapshots", "alembic_version"}


def test_upgrade_creates_every_table_once_and_is_then_a_no_op(database_url: str) -> None:
    store = Store(database_url)
    assert store.current_revision() is None
    before, after = store.upgrade()
    assert (before, after) == (None, store.head_revision())
    assert set(sa.inspect(store.engine).get_table_names()) >= TABLES
    assert store.upgrade() == (after, after)
    store.dispose()


def test_an_upgrade_from_the_first_release_keeps_its_rows(database_url: str) -> None:
    store = Store(database_url)
    assert store.upgrade("0001") == (None, "0001")
    with store.engine.begin() as conn:  # a key written by the release that had only revision 0001
        conn.execute(sa.text("INSERT INTO api_keys VALUES ('0123456789ab', 'crm', 's', 'd', '[\"score\"]', "
                             "'2026-11-01 10:00:00', NULL)"))
    assert store.upgrade() == ("0001", store.head_revision())
    with store.begin() as conn:
        assert conn.execute(sa.text("SELECT name FROM api_keys")).scalar() == "crm"
        assert conn.execute(sa.text("SELECT count(*) FROM predictions")).scalar() == 0
    store.dispose()


def test_a_store_behind_the_code_answers_unavailable_naming_the_command(database_url: str) -> None:
    store = Store(database_url)  # no auto_upgrade: a server database waits for `leadcast db upgrade`
    with pytest.raises(StoreUnavailable, match=r"revision none, the code needs .*run `leadcast db upgrade`"), \
            store.begin():
        pass
    store.upgrade()
    with store.begin() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    store.dispose()


def test_the_embedded_store_upgrades_itself_on_first_use(database_url: str) -> None:
    store = Store(database_url, auto_upgrade=True)
    with store.begin() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM api_keys")).scalar() == 0
    assert store.current_revision() == store.head_revision()
    store.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'deep' / 'leadcast.db'}", auto_upgrade=True)
    with store.begin() as conn:
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
    db = tmp_path / "deep" / "leadcast.db"  # the folder is created on first use, the file private
    assert oct(db.stat().st_mode)[-3:] == "600" and oct(db.with_name("leadcast.db-wal").stat().st_mode)[-3:] == "600"
    store.dispose()


def test_an_unreachable_server_is_unavailable_and_its_password_never_shown() -> None:
    store = Store(f"postgresql+psycopg://leadcast:s3cret@127.0.0.1:{free_port()}/leadcast")
    with pytest.raises(StoreUnavailable) as caught, store.begin():
        pass
    assert "is unavailable" in str(caught.value) and "s3cret" not in str(caught.value)


def test_migrations_ship_inside_the_package() -> None:
    # `pip install` carries the package's files only: Alembic's scripts must live under store/.
    assert MIGRATIONS.parent == Path(__file__).resolve().parents[2] / "store"
    assert (MIGRATIONS / "env.py").exists() and (MIGRATIONS / "versions" / "0001_api_keys.py").exists()


def test_db_commands_upgrade_and_report_the_revision(database_url: str) -> None:
    runner = CliRunner()
    env = {"LEADCAST_DATABASE_URL": database_url}
    current = runner.invoke(cli, ["db", "current"], env=env)
    assert current.exit_code == 0, current.output
    assert "revision none (empty)" in current.output and "behind: run `leadcast db upgrade`" in current.output
    head = Store(database_url).head_revision()
    upgraded = runner.invoke(cli, ["db", "upgrade"], env=env)
    assert upgraded.exit_code == 0 and f"from revision none (empty) to {head}" in upgraded.output
    again = runner.invoke(cli, ["db", "upgrade"], env=env)
    assert again.exit_code == 0 and f"is up to date at revision {head}" in again.output
    assert "(up to date)" in runner.invoke(cli, ["db", "current"], env=env).output


def test_db_upgrade_on_a_dead_server_is_a_clear_error_not_a_traceback() -> None:
    url = f"postgresql+psycopg://leadcast:s3cret@127.0.0.1:{free_port()}/leadcast"
    result = CliRunner().invoke(cli, ["db", "upgrade"], env={"LEADCAST_DATABASE_URL": url})
    assert result.exit_code == 2 and "error: the database postgresql+psycopg://leadcast:***@" in result.output
    assert "Traceback" not in result.output and "s3cret" not in result.output


def test_a_store_found_at_head_again_does_not_run_alembic(database_url: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # After a fault the store checks its schema again. That check called alembic's command.upgrade even at
    # head, and alembic keeps its environment in module globals: a background thread (gauges, log writer) doing
    # so while MLflow created its own tables in another thread failed one of them with KeyError: 'config' (CI,
    # tests/scoring/test_artifacts.py). At head, the check is now a plain revision query.
    store = Store(database_url, auto_upgrade=True)
    store.upgrade()
    store._ready = False  # as a fault leaves it

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("command.upgrade ran on a database already at head")

    monkeypatch.setattr("store.core.command.upgrade", refuse)
    with store.begin() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    store.dispose()


def test_upgrades_in_several_threads_of_one_process_do_not_collide(tmp_path: Path) -> None:
    # Alembic's module-global environment is not thread-safe: two threads upgrading at once (each its own
    # database) failed with KeyError: 'config'. Upgrades in one process now take turns: 4 threads x 3 rounds.
    import threading

    failures: list[BaseException] = []

    def upgrade(index: int) -> None:
        for round_ in range(3):
            store = Store(f"sqlite:///{tmp_path / f'thread{index}-{round_}.db'}")
            try:
                store.upgrade()
            except BaseException as exc:  # collected, the test fails below with it
                failures.append(exc)
            finally:
                store.dispose()

    threads = [threading.Thread(target=upgrade, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    last = Store(f"sqlite:///{tmp_path / 'thread3-2.db'}")
    assert last.current_revision() == last.head_revision()
    last.dispose()
