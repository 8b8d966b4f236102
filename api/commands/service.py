"""Service commands: manage API keys, run the service under gunicorn."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from api.commands import settings_of
from api.keys import SCOPES
from api.settings import Settings
from api.stores import open_keys


@click.group()
def keys() -> None:
    """Create, list and revoke API keys (stored as hashes in the store: the database_url setting)."""


@keys.command("create")
@click.option("--name", required=True, help="Who or what the key is for.")
@click.option("--scopes", default="score", show_default=True, help=f"Comma-separated, from {', '.join(SCOPES)}.")
@click.pass_context
def keys_create(ctx: click.Context, name: str, scopes: str) -> None:
    """Create a key; it is printed once, alone on the last line, and only its hash is stored."""
    wanted = tuple(s.strip() for s in scopes.split(",") if s.strip())
    ring = open_keys(settings_of(ctx))
    with ring.store:
        key = ring.create(name=name, scopes=wanted)
    click.echo(f"created key {name!r} with scopes {', '.join(wanted)} in {ring.store.shown_url}; "
               "store it now, it is not shown again:")
    click.echo(key)


@keys.command("list")
@click.pass_context
def keys_list(ctx: click.Context) -> None:
    """List keys by name, scopes and state (never the keys themselves)."""
    ring = open_keys(settings_of(ctx))
    with ring.store:
        rows = ring.list()
    if not rows:
        click.echo(f"no keys in {ring.store.shown_url}")
    for k in rows:
        state = f"revoked {k.revoked_at[:19]}" if k.revoked_at else "active"
        click.echo(f"{k.name:<24} {','.join(k.scopes):<24} created {k.created_at[:19]}  {state}")


@keys.command("revoke")
@click.argument("name")
@click.pass_context
def keys_revoke(ctx: click.Context, name: str) -> None:
    """Revoke the active key with this name; running services refuse it from the next request."""
    ring = open_keys(settings_of(ctx))
    with ring.store:
        count = ring.revoke(name=name)
    click.echo(f"revoked {count} key(s) named {name!r}")


QUICKSTART_KEY = "quickstart"


def settings_environment(settings: Settings) -> dict[str, str]:
    """Return every set field of `settings` as a LEADCAST_<FIELD> variable (paths made absolute).

    The gunicorn process builds its app from the environment alone (api/wsgi.py), so exporting the whole
    object gives it exactly the settings this process read, whether they came from a file or variables.
    """
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, Path):
            text = str(value.resolve())
        elif isinstance(value, list | tuple | set | dict):
            text = json.dumps(value, default=str)  # pydantic-settings reads complex values as JSON
        else:
            text = str(value)
        env[f"LEADCAST_{name.upper()}"] = text
    return env


def example_lead(now: datetime | None = None) -> dict[str, object]:
    """Return one plausible lead, its activity dated just before `now`, to show how scoring is called."""
    now = (now or datetime.now(UTC)).replace(microsecond=0, tzinfo=None)
    return {
        "lead_id": "L-quickstart-1", "source": "organic_search", "product_interest": "CRM", "country": "DE",
        "region": "EMEA", "industry": "software", "employees": 120, "job_level": "director", "web_visits": 9,
        "pages_per_visit": 4.5, "pricing_page_visits": 2, "demo_requested": True, "email_opens": 6,
        "email_clicks": 3, "last_activity_at": (now - timedelta(days=2)).isoformat(),
        "last_engagement_at": (now - timedelta(days=5)).isoformat(), "budget_stated": True,
        "decision_maker": True, "need_stated": True, "purchase_timeframe": "0-3 months",
    }


def quickstart_curl(*, host: str, port: int, key: str) -> str:
    """Return a ready-to-paste curl command that scores the example lead with `key`."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    netloc = f"[{shown}]:{port}" if ":" in shown else f"{shown}:{port}"
    body = json.dumps({"lead": example_lead()}, separators=(",", ":"))
    return (f"curl -sS -X POST http://{netloc}/v1/leads/score -H 'Authorization: Bearer {key}' "
            f"-H 'Content-Type: application/json' -d {shlex.quote(body)}")


def _quickstart_key(settings: Settings) -> str:
    """Revoke any active key named "quickstart" and return a new one with the score scope."""
    ring = open_keys(settings)
    with ring.store:  # closed before exec: gunicorn's workers open their own connections
        if any(k.name == QUICKSTART_KEY and k.revoked_at is None for k in ring.list()):
            ring.revoke(name=QUICKSTART_KEY)
        return ring.create(name=QUICKSTART_KEY, scopes=("score",))


@click.command()
@click.option("--host", default=None, help="Address to bind (default: the host setting, 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port (default: the port setting, 8000).")
@click.option("--workers", type=click.IntRange(1, 64), default=None, help="gunicorn worker processes.")
@click.option("--quickstart-key", is_flag=True,
              help=f"Replace the key named {QUICKSTART_KEY!r} with a new score-only key and print a curl that "
                   "scores a lead with it.")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, workers: int | None, quickstart_key: bool) -> None:
    """Run the scoring and forecast service under gunicorn (config: api/gunicorn_conf.py)."""
    settings = settings_of(ctx)
    env = dict(os.environ)
    # gunicorn's app reads its settings from the environment only: hand it every field of ours.
    env.update(settings_environment(settings))
    env["LEADCAST_HOST"] = host or settings.host
    env["LEADCAST_PORT"] = str(port or settings.port)
    env["LEADCAST_WORKERS"] = str(workers or settings.workers)
    # Each worker does its math on one thread: two workers' OpenMP pools fighting for 2 cores cost 100x latency.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    # One private folder per instance for what its processes share (metrics files, the rate-limit buckets, the
    # gunicorn control socket), removed when the service stops: two instances on one host never meet.
    instance = Path(tempfile.mkdtemp(prefix="leadcast-serve-"))
    if "PROMETHEUS_MULTIPROC_DIR" not in env:
        (instance / "prometheus").mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(instance / "prometheus")
    env.setdefault("LEADCAST_RATE_LIMIT_STORAGE", (instance / "ratelimit.bin").as_uri())
    config = Path(__file__).resolve().parents[1] / "gunicorn_conf.py"
    control = instance / "gunicorn.ctl"
    # A Unix socket path holds at most 107 bytes: with a temp dir deeper than that, go without one rather than
    # fall back to gunicorn's per-user default, which every instance of the user would share.
    control_args = ["--control-socket", str(control)] if len(str(control)) < 100 else ["--no-control-socket"]
    args = [sys.executable, "-m", "gunicorn", "--config", str(config), *control_args, "api.wsgi:app"]
    click.echo(f"serving on http://{env['LEADCAST_HOST']}:{env['LEADCAST_PORT']} with {env['LEADCAST_WORKERS']} "
               f"{settings.worker_class} worker(s); Ctrl-C stops it")
    if quickstart_key:
        key = _quickstart_key(settings)
        click.echo(f"created a score-only key named {QUICKSTART_KEY!r}; once the service is up, score a lead with:")
        click.echo(quickstart_curl(host=env["LEADCAST_HOST"], port=int(env["LEADCAST_PORT"]), key=key))
    sys.stdout.flush()
    ctx.exit(_run_until_stopped(args, env, instance))


def _run_until_stopped(args: list[str], env: dict[str, str], instance: Path) -> int:
    """Run gunicorn, pass it the stop and reload signals, and remove the instance folder once it exits."""
    try:
        child = subprocess.Popen(args, env=env)
        forwarded = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
        for sig in forwarded:
            signal.signal(sig, lambda number, _frame: child.send_signal(number))
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:  # pragma: no cover - SIGINT is forwarded above
                continue
    finally:
        shutil.rmtree(instance, ignore_errors=True)


def register(group: click.Group) -> None:
    """Add the service commands to the `leadcast` group."""
    group.add_command(keys)
    group.add_command(serve)
