"""API keys in the store: salted hashes with their scopes, checked in constant time, revoked without a restart."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from crmdata.errors import LeadcastError
from store import Store, StoreUnavailable
from store.schema import api_keys, imports

log = logging.getLogger("leadcast.keys")

SCOPES = ("score", "forecast", "outcomes", "admin", "monitor")
KEY_PATTERN = re.compile(r"^lc_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class KeyStoreError(LeadcastError):
    """Raised for a key operation that cannot be done (bad name, unknown scope, duplicate)."""


@dataclass(frozen=True)
class ApiKey:
    """One stored key: who it is for, what it may do, and the salted SHA-256 of its secret."""

    name: str
    key_id: str
    salt: str
    digest: str
    scopes: tuple[str, ...]
    created_at: str
    revoked_at: str | None = None


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.replace(tzinfo=UTC).isoformat()


def _from_iso(text: str | None) -> datetime | None:
    if text is None:
        return None
    parsed = datetime.fromisoformat(text)
    return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


def _row_to_key(row: Any) -> ApiKey:
    return ApiKey(name=row.name, key_id=row.key_id, salt=row.salt, digest=row.digest, scopes=tuple(row.scopes),
                  created_at=_iso(row.created_at) or "", revoked_at=_iso(row.revoked_at))


def read_key_file(path: Path) -> list[ApiKey]:
    """Read the keys of an api-keys.json written by earlier releases (raise KeyStoreError when it is invalid)."""
    try:
        data = json.loads(path.read_text())
        return [ApiKey(**{**k, "scopes": tuple(k["scopes"])}) for k in data["keys"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyStoreError(f"API keys file {path} is not valid: {exc}") from exc


class KeyStore:
    """The keys of one store; an api-keys.json of an earlier release is imported into it once, on first use."""

    def __init__(self, store: Store, *, legacy_file: Path | None = None, outage_grace_seconds: float = 300.0,
                 cache_seconds: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.legacy_file = legacy_file
        self.outage_grace_seconds = outage_grace_seconds
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._imported = legacy_file is None
        # key_id -> (key, when the store last confirmed it): only keys that authenticated, so bounded by the
        # number of real keys whatever callers send.
        self._confirmed: dict[str, tuple[ApiKey, float]] = {}

    def _import_legacy(self) -> None:
        """Import the legacy keys file once per store; a broken file is a store fault until it is fixed."""
        if self._imported:
            return
        assert self.legacy_file is not None
        source = str(self.legacy_file.resolve())
        with self.store.begin() as conn:
            done = conn.execute(sa.select(imports.c.source).where(imports.c.source == source)).first()
        if done is None and self.legacy_file.exists():
            try:
                keys = read_key_file(self.legacy_file)
            except (KeyStoreError, OSError) as exc:
                raise StoreUnavailable(f"cannot import the API keys file: {exc}") from exc
            try:
                with self.store.begin() as conn:
                    known = set(conn.execute(sa.select(api_keys.c.key_id)).scalars())
                    rows = [{"key_id": k.key_id, "name": k.name, "salt": k.salt, "digest": k.digest,
                             "scopes": list(k.scopes), "created_at": _from_iso(k.created_at),
                             "revoked_at": _from_iso(k.revoked_at)} for k in keys if k.key_id not in known]
                    if rows:
                        conn.execute(api_keys.insert(), rows)
                    conn.execute(imports.insert().values(source=source, kind="api_keys", rows=len(rows),
                                                         imported_at=_now()))
                log.info("imported %d API key(s) from %s into the store; the file is no longer read",
                         len(rows), source)
            except sa_exc.IntegrityError:
                log.info("API keys file %s was imported by another process", source)
        self._imported = True

    def create(self, *, name: str, scopes: tuple[str, ...]) -> str:
        """Store a new key's hash and return the key itself, which is shown once and never stored."""
        if not NAME_PATTERN.match(name):
            raise KeyStoreError(f"key name {name!r} must be 1-64 letters, digits, '_', '.' or '-'")
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown or not scopes:
            raise KeyStoreError(f"scopes must be some of {', '.join(SCOPES)}; got {', '.join(scopes) or 'none'}")
        self._import_legacy()
        key_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_hex(16)
        try:
            with self.store.begin() as conn:
                conn.execute(api_keys.insert().values(
                    key_id=key_id, name=name, salt=salt, digest=_digest(salt, secret),
                    scopes=list(dict.fromkeys(scopes)), created_at=_now(), revoked_at=None))
        except sa_exc.IntegrityError as exc:  # the partial unique index: one active key per name
            raise KeyStoreError(f"an active key named {name!r} exists; revoke it first") from exc
        return f"lc_{key_id}_{secret}"

    def revoke(self, *, name: str) -> int:
        """Revoke every active key with this name; return how many were revoked."""
        self._import_legacy()
        with self.store.begin() as conn:
            result = conn.execute(api_keys.update()
                                  .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
                                  .values(revoked_at=_now()))
        if result.rowcount == 0:
            raise KeyStoreError(f"no active key named {name!r}")
        return int(result.rowcount)

    def list(self) -> list[ApiKey]:
        """Return every key, active and revoked, oldest first."""
        self._import_legacy()
        with self.store.begin() as conn:
            rows = conn.execute(sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id)).all()
        return [_row_to_key(r) for r in rows]

    def authenticate(self, token: str) -> ApiKey | None:
        """Return the active key this bearer token belongs to, or None (one primary-key lookup).

        A key the store confirmed less than `cache_seconds` ago is accepted without asking the store again
        (its secret is still checked), so a revocation takes effect in every worker within `cache_seconds`.
        While the store is unavailable, a key the store confirmed within `outage_grace_seconds` is still
        accepted (so scoring goes on through a database restart); any other raises StoreUnavailable.
        """
        match = KEY_PATTERN.match(token)
        if match is None:
            return None
        known = self._confirmed.get(match.group(1))
        if known is not None and self._clock() - known[1] < self.cache_seconds:
            key = known[0]
            return key if hmac.compare_digest(key.digest, _digest(key.salt, match.group(2))) else None
        try:
            self._import_legacy()
            with self.store.reading() as conn:
                row = conn.execute(sa.select(api_keys).where(api_keys.c.key_id == match.group(1),
                                                             api_keys.c.revoked_at.is_(None))).first()
        except StoreUnavailable:
            known = self._confirmed.get(match.group(1))
            if known is None or self._clock() - known[1] > self.outage_grace_seconds:
                raise
            key = known[0]
            return key if hmac.compare_digest(key.digest, _digest(key.salt, match.group(2))) else None
        if row is None:
            self._confirmed.pop(match.group(1), None)
            return None
        if not hmac.compare_digest(row.digest, _digest(row.salt, match.group(2))):
            return None
        key = _row_to_key(row)
        self._confirmed[key.key_id] = (key, self._clock())
        return key
