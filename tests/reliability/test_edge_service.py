"""The edge of a real `leadcast serve` (issue 10 item 10): one key's rate across workers, the access line in the
output, bounded /metrics labels, chunked bodies over the limit, and one private instance folder per serve."""

from __future__ import annotations

import http.client
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from api.settings import Settings
from api.stores import open_keys
from tests.api.conftest import lead_records
from tests.api.servers import HOST, JsonClient, ServerProcess, child_env, free_port
from tests.reliability.edge_support import serve

pytestmark = pytest.mark.slow

PER_MINUTE, BURST = 600, 10  # 10 requests a second per key, 10 at once
LIMIT = 4096  # max_body_bytes


def raw_request(port: int, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send raw bytes on a new connection and return everything the server answers until it closes."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and b'"error"' in b"".join(chunks):
                break
        return b"".join(chunks)


def test_the_edge_of_a_real_service(tmp_path: Path, trained_dir: Path, sample_leads: pd.DataFrame) -> None:
    settings = f"workers = 2\nmax_body_bytes = {LIMIT}\n"
    with serve(tmp_path, trained_dir, settings=settings) as served:
        port, lead = served.port, lead_records(sample_leads, 1)[0]

        # Unknown methods and paths: one label each on /metrics, however many are sent.
        for i in range(30):
            conn = http.client.HTTPConnection(HOST, port, timeout=10)
            conn.request(f"M{i:03d}", "/v1/leads/score" if i % 2 else f"/nowhere/{i}")
            conn.getresponse().read()
            conn.close()
        with served.client() as client:
            status, raw = client.send("GET", "/metrics")
        text = raw.decode()
        assert status == 200
        assert not re.search(r'method="M\d{3}"', text) and "/nowhere/" not in text
        assert re.search(r'leadcast_requests_total\{endpoint="unmatched",method="other",status="404"\} 15\.0', text)

        # A chunked body over max_body_bytes is refused whole with 413, not cut and parsed.
        body = b'{"lead": {"lead_id": "' + b"x" * (2 * LIMIT) + b'"}}'
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 1000]), body[i:i + 1000])
                           for i in range(0, len(body), 1000)) + b"0\r\n\r\n"
        answer = raw_request(port, b"POST /v1/leads/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                   b"Authorization: Bearer " + served.key.encode() + b"\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n" + chunked)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
        # Under the limit, chunked works.
        small = b'{"lead": {"lead_id": "L1"}}'
        answer = raw_request(port, b"POST /v1/leads/score?reasons=false HTTP/1.1\r\nHost: x\r\n"
                                   b"Content-Type: application/json\r\nConnection: close\r\n"
                                   b"Authorization: Bearer " + served.key.encode() + b"\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(small), small))
        assert answer.startswith(b"HTTP/1.1 200"), answer[:300]

        # The access line: method, route, status, ms, key name; never the key or the lead's values.
        output = served.server.output()
        line = re.search(r"leadcast\.api: POST /v1/leads/score 200 [\d.]+ms key=edge-test", output)
        assert line, output[-2000:]
        assert served.key not in output and lead["lead_id"] not in output


def test_a_keys_rate_is_the_documented_one_whatever_the_worker_count(
    tmp_path: Path, trained_dir: Path, sample_leads: pd.DataFrame
) -> None:
    settings = "workers = 2\n"
    env = {"LEADCAST_RATE_LIMIT_PER_MINUTE": str(PER_MINUTE), "LEADCAST_RATE_LIMIT_BURST": str(BURST)}
    with serve(tmp_path, trained_dir, settings=settings, env=env) as served:
        body = {"lead": lead_records(sample_leads, 1)[0]}
        allowed: list[int] = []
        stop = time.monotonic() + 3.0
        started = time.monotonic()

        def hammer() -> None:
            with served.client() as client:
                while time.monotonic() < stop:
                    status, _ = client.call("POST", "/v1/leads/score?reasons=false", body)
                    allowed.append(status == 200)
                    client.close()  # a new connection each time, so both workers take requests

        threads = [threading.Thread(target=hammer) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        elapsed = time.monotonic() - started
        pids = set(re.findall(r"\[(\d+)\] \[INFO\] leadcast\.api: POST /v1/leads/score \d+ ", served.server.output()))
    expected = BURST + PER_MINUTE / 60 * elapsed  # 10 at once + 10 a second
    got = sum(allowed)
    print(f"\n{got} of {len(allowed)} allowed in {elapsed:.2f} s by {len(pids)} workers; documented {expected:.1f}")
    assert len(pids) == 2, "both workers must have answered"
    assert abs(got - expected) <= 0.1 * expected


def test_each_serve_has_its_own_control_socket_and_leaves_nothing_behind(tmp_path: Path, trained_dir: Path) -> None:
    # A short temp dir of its own: a Unix socket path holds at most 107 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="lc-"))
    try:
        check_instances(tmp, tmp_path, trained_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_instances(tmp: Path, tmp_path: Path, trained_dir: Path) -> None:
    keys = tmp_path / "keys.json"
    shared = f"sqlite:///{tmp_path / 'keys.db'}"  # both instances read their keys from one store
    open_keys(Settings(home=tmp_path, database_url=shared)).create(name="k", scopes=("score",))
    servers = []
    for i in range(2):
        port = free_port()
        settings = tmp_path / f"s{i}.toml"
        settings.write_text(f'home = "{tmp_path / f"home{i}"}"\nmodels_dir = "{trained_dir}"\n'
                            f'api_keys_file = "{keys}"\ndatabase_url = "{shared}"\nworkers = 1\n')
        env = child_env(TMPDIR=str(tmp))
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        servers.append(ServerProcess([sys.executable, "-m", "api.cli", "--settings", str(settings), "serve",
                                      "--port", str(port)], port=port, env=env, log=tmp_path / f"serve{i}.log",
                                     name=f"serve{i}"))
    try:
        for s in servers:
            s.start()
        for s in servers:
            s.wait_ready("/readyz")
        folders = sorted(p.name for p in tmp.iterdir())
        assert len(folders) == 2 and all(f.startswith("leadcast-serve-") for f in folders), folders
        sockets = [next(tmp.glob(f"{f}/gunicorn.ctl"), None) for f in folders]
        assert all(sockets), "each instance has its own control socket"
        with JsonClient(servers[0].port) as client:
            assert client.send("GET", "/metrics")[0] == 200
        for s in servers:
            assert s.terminate(timeout=45) == 0, s.output()[-2000:]
    finally:
        for s in servers:
            s.kill()
    assert list(tmp.iterdir()) == [], "serve must remove its instance folder when it stops"
