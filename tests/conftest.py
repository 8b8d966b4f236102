"""Fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from threadpoolctl import threadpool_limits

if TYPE_CHECKING:
    from tests.redis import RedisServer

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def one_math_thread() -> Iterator[None]:
    """Run the suite's numeric code on one OpenMP/BLAS thread.

    On a busy 2-core runner, OpenMP pools spinning against other work made single model fits 10-100x slower
    (seen: a 1 s fit taking 158 s); the service pins its workers the same way.
    """
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """Return the repository root."""
    return REPO


@pytest.fixture(scope="session")
def maven_dir() -> Path:
    """Return the real Maven CRM folder, or skip when it is not beside the project."""
    folder = SHARED_DATA / "maven-crm"
    if not (folder / "sales_pipeline.csv").exists():
        pytest.skip(f"real Maven CRM data not found at {folder}")
    return folder


@pytest.fixture(scope="session")
def x_education_csv() -> Path:
    """Return the real X Education Leads.csv, or skip when it is not beside the project."""
    path = SHARED_DATA / "x-education-leads" / "Leads.csv"
    if not path.exists():
        pytest.skip(f"real X Education data not found at {path}")
    return path


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str | None]:
    """Return the URL of a PostgreSQL server for the store tests (LEADCAST_TEST_POSTGRES_URL, else a throwaway
    server started here from the installed binaries), or None when neither is there."""
    import os

    from tests.postgres import ENV_URL, reachable, start_server

    if os.environ.get(ENV_URL):
        yield os.environ[ENV_URL] if reachable(os.environ[ENV_URL], attempts=3) else None
        return
    server = start_server()
    try:
        yield None if server is None else server.url
    finally:
        if server is not None:
            server.remove()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Return the URL of a fresh, empty store database: an SQLite file, then a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'leadcast.db'}"
        return
    admin = request.getfixturevalue("postgres_admin_url")
    if admin is None:
        pytest.skip("no PostgreSQL server: install PostgreSQL (initdb, pg_ctl) or set LEADCAST_TEST_POSTGRES_URL")
    from tests.postgres import create_database, drop_database

    url = create_database(admin)
    try:
        yield url
    finally:
        drop_database(admin, url)



@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """Return a fresh throwaway redis-server on a free loopback port (one per test), or skip saying why."""
    from tests.redis import start_server

    try:
        server = start_server()
    except (OSError, RuntimeError, TimeoutError) as exc:
        pytest.skip(f"redis-server is installed but did not start: {exc}")
    if server is None:
        pytest.skip("no Redis server: install redis-server (.ci/run does, as root) or set LEADCAST_TEST_REDIS_URL")
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    """Return the URL of a Redis server for a test: LEADCAST_TEST_REDIS_URL, else a fresh throwaway one."""
    import os

    from tests.redis import ENV_URL

    if os.environ.get(ENV_URL):
        return os.environ[ENV_URL]
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url
