"""The C heap's freed memory: handed back between the large steps of training, kept in a scoring worker."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import sys
from collections.abc import Iterator
from typing import Any

import pyarrow as pa


@functools.cache
def _libc() -> Any:
    """Return the C library when it has glibc's `malloc_trim`, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def release_freed_memory() -> int:
    """Return freed pages to the system (Arrow's pool, then the C heap); return 1 if the heap was trimmed."""
    # Arrow's allocator keeps the pages of the columns it converted while the lead table was typed.
    pa.default_memory_pool().release_unused()
    libc = _libc()
    if libc is None:
        return 0
    # glibc keeps freed arrays of a few MB inside its heap (its mmap threshold rises to 32 MB once such an
    # array is freed), and the matrices allocated afterwards are mmapped apart, so those pages sat in RSS
    # at the peak: about 200 MiB after typing a million leads.
    return int(libc.malloc_trim(0))


# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def keep_freed_memory(*, up_to: int) -> bool:
    """Keep freed blocks of up to `up_to` bytes in the C heap for reuse; return whether glibc took it.

    For a process that allocates and frees the same large temporaries over and over (a scoring worker):
    by default each array over the mmap threshold is mapped apart and unmapped when freed, so every chunk
    pays its pages again as page faults (1.9 us a lead of system time with reasons, 0.8 us with this).
    """
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, up_to)) and bool(libc.mallopt(M_TRIM_THRESHOLD, up_to))


def small_pages() -> bool:
    """Stop numpy asking for transparent huge pages for its large arrays; return whether it had been asking.

    numpy advises MADV_HUGEPAGE on every array of 4 MiB or more, so with THP set to "madvise" each fault
    on one maps a whole 2 MiB page. On this project's 2-core machine (a VM; no compaction stalls counted)
    those faults on fresh memory were slow: a scoring worker's first chunk of 100,000 leads spent 1.4-1.7 s
    in the kernel against 0.3 s with small pages, and the later chunks, which reuse the kept heap, ran as
    fast either way.
    A no-op where numpy has no such switch (not Linux, or a numpy without it).
    """
    import importlib

    for name in ("numpy._core.multiarray", "numpy.core.multiarray"):  # numpy 2, then 1.26
        try:
            toggle = getattr(importlib.import_module(name), "_set_madvise_hugepage", None)
        except ImportError:
            continue
        if toggle is not None:
            return bool(toggle(False))
    return False


def use_system_arrow_pool() -> None:
    """Allocate this process's Arrow buffers from the C heap (glibc), not Arrow's bundled allocator.

    Arrow's default (mimalloc here) hands freed pages back to the system within milliseconds, so a loop that
    reads, converts and writes chunks of the same size faults its pages in again every chunk. Scoring 1M
    leads with reasons on this project's 2-core machine: the parent process spent 3.9-5.0 s of CPU with
    mimalloc and 2.3-2.5 s with the C heap, the workers 2.2-2.6 s of system time against 0.6 s, and the
    run took 14.3-14.8 s against 11.8-12.1 s. For a process the library owns (a scoring worker).
    """
    pa.set_memory_pool(pa.system_memory_pool())


@contextlib.contextmanager
def system_arrow_pool() -> Iterator[None]:
    """Allocate Arrow buffers from the C heap while the block runs (see `use_system_arrow_pool`).

    Arrow's default pool is one per process: it is put back at exit. A buffer keeps the pool it came from,
    so buffers made inside and freed after (or the other way round) go back to their own.
    """
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)
