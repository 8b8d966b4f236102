"""A throwaway PostgreSQL server on loopback for the store tests: initdb + pg_ctl into a temp folder.

Run as root (CI), the server runs as the `postgres` user, as PostgreSQL refuses to run as root. Set
LEADCAST_TEST_POSTGRES_URL to use a server you run yourself instead.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from tests.api.servers import HOST, free_port

ENV_URL = "LEADCAST_TEST_POSTGRES_URL"


def find_bin_dir() -> Path | None:
    """Return the folder holding initdb and pg_ctl (PATH first, then Debian's /usr/lib/postgresql/N/bin)."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    return None


def _traversable_by_others(folder: Path) -> bool:
    """Return whether every folder from `folder` up to / lets other users pass through (o+x)."""
    return all(part.stat().st_mode & stat.S_IXOTH for part in (folder, *folder.parents))


def _root_parent(*, as_other_user: bool) -> str | None:
    """Return where to create the cluster folder: TMPDIR, or /tmp when the `postgres` user could not reach TMPDIR."""
    base = Path(tempfile.gettempdir()).resolve()
    # A private TMPDIR (mktemp -d makes it 0700) would make initdb, run as `postgres`, fail with "Permission denied".
    if as_other_user and not _traversable_by_others(base):
        return "/tmp"
    return None


class PostgresServer:
    """One PostgreSQL cluster in a temp folder, started on a free loopback port, trusting local connections."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="leadcast-pg-", dir=_root_parent(as_other_user=os.geteuid() == 0)))
        self.data = self.root / "data"
        self.port = free_port()
        self.user: str | None = None
        if os.geteuid() == 0:  # PostgreSQL will not run as root
            self.user = "postgres"
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self.root.chmod(0o700)

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(command, capture_output=True, timeout=timeout, cwd=self.root)
        if done.returncode != 0:
            # Say what PostgreSQL said: a bare CalledProcessError hides the cause (a folder it cannot reach, say).
            raise RuntimeError(f"{args[0]} exited with {done.returncode}: "
                               f"{done.stderr.decode(errors='replace').strip()[-2000:]}")

    def initdb(self) -> None:
        """Create the cluster (superuser `postgres`, trust on loopback only)."""
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (f"-p {self.port} -c listen_addresses={HOST} -k {self.root} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"),
                  "-w", "-t", "60", "start", timeout=90)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (fast: disconnect clients and shut down cleanly; immediate: as if it crashed)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", timeout=90)

    @property
    def url(self) -> str:
        """Return the URL of the `postgres` database of this server."""
        return f"postgresql+psycopg://postgres@{HOST}:{self.port}/postgres"

    def remove(self) -> None:
        """Stop the server when it runs and delete its folder."""
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def start_server() -> PostgresServer | None:
    """Return a started throwaway server, or None when no PostgreSQL binaries are installed."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        return None
    server = PostgresServer(bin_dir)
    try:
        server.initdb()
        server.start()
    except BaseException:
        server.remove()
        raise
    return server


def create_database(admin_url: str) -> str:
    """Create a fresh, uniquely named database on the server of `admin_url`; return its URL."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, url: str) -> None:
    """Drop the database of `url`, disconnecting whoever is still connected."""
    name = sa.make_url(url).database
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


def reachable(url: str, *, attempts: int = 1) -> bool:
    """Return whether a server answers at `url`."""
    engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        for i in range(attempts):
            try:
                with engine.connect():
                    return True
            except sa.exc.OperationalError:
                if i + 1 < attempts:
                    time.sleep(0.5)
        return False
    finally:
        engine.dispose()
