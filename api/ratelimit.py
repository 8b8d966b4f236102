"""A per-key token bucket: a steady pace with a burst allowance, shared by every worker of one host.

Where the buckets live is a URL (the `rate_limit_storage` setting): `memory://` keeps them in this process (one
app, or tests); `file:///path` keeps them in a small file that every gunicorn worker of the host maps and updates
under an exclusive lock, so a key's rate is the documented one whatever the worker count. `leadcast serve` points
it at a file in its instance folder. A store for several hosts (redis) plugs in behind the same `BucketStore`.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

Update = Callable[[tuple[float, float] | None], tuple[float, float]]


class BucketStore(Protocol):
    """Where buckets (tokens, last refill time) are kept; `update` is atomic for one key."""

    def update(self, key: str, change: Update) -> tuple[float, float]:
        """Replace the key's bucket (None when new) with `change(bucket)` atomically and return the new one."""
        ...


class MemoryBuckets:
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


class FileBuckets:
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


def bucket_store(url: str | None) -> BucketStore:
    """Return the bucket store a `rate_limit_storage` URL names (None: this process's memory)."""
    if url is None or url == "memory://":
        return MemoryBuckets()
    parsed = urlparse(url)
    if parsed.scheme == "file" and parsed.path:
        return FileBuckets(Path(unquote(parsed.path)))
    raise ValueError(f"rate_limit_storage {url!r}: use memory:// or file:///path (one host)")


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
        now = self.clock()
        taken = False

        def take(bucket: tuple[float, float] | None) -> tuple[float, float]:
            nonlocal taken
            tokens, last = bucket if bucket is not None else (self.burst, now)
            tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
            taken = tokens >= 1.0
            return (tokens - 1.0 if taken else tokens), now

        tokens, _ = self.store.update(key, take)
        return (True, 0.0) if taken else (False, (1.0 - tokens) / self.rate)
