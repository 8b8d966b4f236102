"""API keys: stored only as salted hashes with their scopes, checked in constant time."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from crmdata.errors import LeadcastError
from crmdata.loaders import atomic_write

SCOPES = ("score", "forecast", "admin")
KEY_PATTERN = re.compile(r"^lc_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class KeyStoreError(LeadcastError):
    """Raised for a key-file operation that cannot be done (bad name, unknown scope, duplicate)."""


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


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_keys(path: Path) -> list[ApiKey]:
    """Read every key from the file (none when it does not exist)."""
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text())
        return [ApiKey(**{**k, "scopes": tuple(k["scopes"])}) for k in data["keys"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyStoreError(f"API keys file {path} is not valid: {exc}") from exc


def _write_keys(path: Path, keys: list[ApiKey]) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text(json.dumps({"keys": [asdict(k) for k in keys]}, indent=2))
        tmp.chmod(0o600)

    atomic_write(path, write)


def create_key(path: Path, *, name: str, scopes: tuple[str, ...]) -> str:
    """Store a new key's hash and return the key itself, which is shown once and never stored."""
    if not NAME_PATTERN.match(name):
        raise KeyStoreError(f"key name {name!r} must be 1-64 letters, digits, '_', '.' or '-'")
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise KeyStoreError(f"scopes must be some of {', '.join(SCOPES)}; got {', '.join(scopes) or 'none'}")
    with _locked(path):
        keys = read_keys(path)
        if any(k.name == name and k.revoked_at is None for k in keys):
            raise KeyStoreError(f"an active key named {name!r} exists; revoke it first")
        key_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_hex(16)
        keys.append(ApiKey(name=name, key_id=key_id, salt=salt, digest=_digest(salt, secret),
                           scopes=tuple(dict.fromkeys(scopes)), created_at=datetime.now(UTC).isoformat()))
        _write_keys(path, keys)
    return f"lc_{key_id}_{secret}"


def revoke_key(path: Path, *, name: str) -> int:
    """Revoke every active key with this name; return how many were revoked."""
    with _locked(path):
        keys = read_keys(path)
        now = datetime.now(UTC).isoformat()
        hits = [k for k in keys if k.name == name and k.revoked_at is None]
        if not hits:
            raise KeyStoreError(f"no active key named {name!r}")
        _write_keys(path, [ApiKey(**{**asdict(k), "revoked_at": now}) if k in hits else k for k in keys])
    return len(hits)


class KeyRing:
    """The keys a running service accepts, re-read when the file changes so revocation needs no restart."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._by_id: dict[str, ApiKey] = {}

    def _refresh(self) -> None:
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = (0, 0)
        if stamp != self._stamp:
            self._by_id = {k.key_id: k for k in read_keys(self.path) if k.revoked_at is None}
            self._stamp = stamp

    def authenticate(self, token: str) -> ApiKey | None:
        """Return the active key this bearer token belongs to, or None."""
        self._refresh()
        match = KEY_PATTERN.match(token)
        if match is None:
            return None
        key = self._by_id.get(match.group(1))
        if key is None:
            return None
        return key if hmac.compare_digest(key.digest, _digest(key.salt, match.group(2))) else None
