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
