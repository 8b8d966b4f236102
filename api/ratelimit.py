"""A per-key token bucket: a steady pace with a burst allowance, shared by every worker of one host or by
every replica of a service.

Where the buckets live is a URL (the `rate_limit_storage` setting): `memory://` keeps them in this process (one
app, or tests); `file:///path` keeps them in a small file that every gunicorn worker of the host maps and updates
under an exclusive lock, so a key's rate is the documented one whatever the worker count. `leadcast serve` points
it at a file in its instance folder. `redis://host:port/db` (or `rediss://`) keeps them in Redis, updated by one
Lua script per request on the server's clock, so a key's budget holds across any number of replicas.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

log = logging.getLogger("leadcast.api")

Update = Callable[[tuple[float, float] | None], tuple[float, float]]


class BucketStore(Protocol):
    """Where buckets are kept; `take` spends one token of a key's bucket atomically."""

    def take(self, key: str, *, rate: float, burst: float, now: float) -> tuple[bool, float]:
        """Spend one token of `key` (refilled at `rate`/s up to `burst`); return (allowed, tokens left)."""
        ...


def refill_and_take(bucket: tuple[float, float] | None, *, rate: float, burst: float,
                    now: float) -> tuple[bool, tuple[float, float]]:
    """Return whether a token was taken and the new (tokens, time) of a bucket (None: a new, full one)."""
    tokens, last = bucket if bucket is not None else (burst, now)
    tokens = min(burst, tokens + max(0.0, now - last) * rate)
    if tokens >= 1.0:
        return True, (tokens - 1.0, now)
    return False, (tokens, now)


class UpdatingStore:
    """`take` for stores that apply a change to one bucket atomically (`update`)."""

    def update(self, key: str, change: Update) -> tuple[float, float]:
        """Replace the key's bucket (None when new) with `change(bucket)` atomically and return the new one."""
        raise NotImplementedError

    def take(self, key: str, *, rate: float, burst: float, now: float) -> tuple[bool, float]:
        """Spend one token of `key` under the store's lock."""
        taken = False

        def change(bucket: tuple[float, float] | None) -> tuple[float, float]:
            nonlocal taken
            taken, new = refill_and_take(bucket, rate=rate, burst=burst, now=now)
            return new

        tokens, _ = self.update(key, change)
        return taken, tokens


class MemoryBuckets(UpdatingStore):
    """Buckets in this process's memory."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def update(self, key: str, change: Update) -> tuple[float, float]:
        """Apply `change` to the key's bucket under a lock."""
        with self._lock:
            new = self._buckets[key] = change(self._buckets.get(key))
            return new


SLOT = struct.Struct("<16sdd")  # key digest, tokens, last refill (time.monotonic, one clock for the whole host)
SLOTS = 4096
PROBES = 64


class FileBuckets(UpdatingStore):
    """Buckets in a memory-mapped file shared by the processes of one host, updated under flock.

    A key lives in one of SLOTS fixed slots (open addressing on its digest); when PROBES slots in a row are
    taken, the one refilled longest ago is given to the new key (whose bucket then starts full).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pid = -1
        self._lock = threading.Lock()  # flock does not exclude threads sharing one descriptor
        self._fd = -1
        self._map: mmap.mmap | None = None

    def _mapped(self) -> mmap.mmap:
        # Open per process: a descriptor inherited over fork shares its flock with the parent.
        if self._pid != os.getpid() or self._map is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            if os.fstat(fd).st_size < SLOT.size * SLOTS:
                os.ftruncate(fd, SLOT.size * SLOTS)
            self._fd, self._map, self._pid = fd, mmap.mmap(fd, SLOT.size * SLOTS), os.getpid()
        return self._map

    def update(self, key: str, change: Update) -> tuple[float, float]:
        """Apply `change` to the key's bucket under an exclusive lock on the file."""
        digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
        start = int.from_bytes(digest[:4], "little") % SLOTS
        with self._lock:
            view = self._mapped()
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                oldest, oldest_at = start, float("inf")
                slot, bucket = start, None
                for i in range(PROBES):
                    at = (start + i) % SLOTS
                    owner, tokens, last = SLOT.unpack_from(view, at * SLOT.size)
                    if owner == digest:
                        slot, bucket = at, (tokens, last)
                        break
                    if owner == bytes(16):
                        slot = at
                        break
                    if last < oldest_at:
                        oldest, oldest_at = at, last
                else:
                    slot = oldest
                new = change(bucket)
                SLOT.pack_into(view, slot * SLOT.size, digest, *new)
                return new
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)


# One round trip per request: refill, take and expire in one atomic script on the server's clock (TIME), so the
# replicas' clocks never enter it. Numbers travel as strings: Redis would truncate a Lua number to an integer.
# A bucket untouched for burst/rate seconds is full again, so it may expire then: memory stays bounded by the
# keys active in that window.
TAKE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1])
local at = tonumber(b[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.9f', tokens), 'at', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, string.format('%.9f', tokens)}
"""
KEY_PREFIX = "leadcast:ratelimit:"
# Redis is asked within this time or the request goes on without it (see RedisBuckets).
REDIS_TIMEOUT_SECONDS = 0.5
REDIS_RETRY_SECONDS = 5.0


class RedisBuckets:
    """Buckets in Redis, shared by every replica: one `EVALSHA` of TAKE_SCRIPT per request.

    A rate limit protects the service; it is not worth an outage. When Redis cannot be reached, requests are
    limited by a bucket in this process instead (each worker then allows the key's budget on its own), the
    fault is logged, and Redis is tried again after REDIS_RETRY_SECONDS.
    """

    def __init__(self, url: str, *, timeout: float = REDIS_TIMEOUT_SECONDS,
                 retry_seconds: float = REDIS_RETRY_SECONDS) -> None:
        import redis  # only services that share their buckets need the client

        self.url = url
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        # redis-py's pool notices a fork (it checks the pid) and opens new connections in each gunicorn worker.
        self._client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                            health_check_interval=30)
        self._script: Any = self._client.register_script(TAKE_SCRIPT)
        self._fallback = MemoryBuckets()
        self._retry_seconds = retry_seconds
        self._down_until = 0.0
        self.failures = 0

    @property
    def shown_url(self) -> str:
        """Return the URL without a password, for logs."""
        parsed = urlparse(self.url)
        host = parsed.netloc.rsplit("@", 1)[-1]
        return parsed._replace(netloc=host).geturl()

    def close(self) -> None:
        """Close this process's connections to Redis."""
        self._client.close()

    def take(self, key: str, *, rate: float, burst: float, now: float) -> tuple[bool, float]:
        """Spend one token of `key` in Redis, or in this process's bucket while Redis is unreachable."""
        if time.monotonic() >= self._down_until:
            try:
                allowed, tokens = self._script(keys=[KEY_PREFIX + key], args=[repr(rate), repr(burst)])
            except self._errors as exc:
                self.failures += 1
                self._down_until = time.monotonic() + self._retry_seconds
                log.error("rate-limit store %s unreachable (%s: %s): limiting per worker for %.0f s",
                          self.shown_url, type(exc).__name__, exc, self._retry_seconds)
            else:
                return bool(int(allowed)), float(tokens)
        return self._fallback.take(key, rate=rate, burst=burst, now=now)


def bucket_store(url: str | None) -> BucketStore:
    """Return the bucket store a `rate_limit_storage` URL names (None: this process's memory)."""
    if url is None or url == "memory://":
        return MemoryBuckets()
    parsed = urlparse(url)
    if parsed.scheme == "file" and parsed.path:
        return FileBuckets(Path(unquote(parsed.path)))
    if parsed.scheme in ("redis", "rediss") and parsed.hostname:
        return RedisBuckets(url)
    raise ValueError(f"rate_limit_storage {url!r}: use memory://, file:///path (one host) or "
                     "redis://host:port/db (several hosts)")


class RateLimiter:
    """Allow `per_minute` requests a minute per key, with up to `burst` at once."""

    def __init__(self, *, per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic,
                 store: BucketStore | None = None) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self.store = store or MemoryBuckets()

    def allow(self, key: str) -> tuple[bool, float]:
        """Take one token for `key`; return whether allowed and, if not, the seconds until one is free."""
        taken, tokens = self.store.take(key, rate=self.rate, burst=self.burst, now=self.clock())
        return (True, 0.0) if taken else (False, (1.0 - tokens) / self.rate)
