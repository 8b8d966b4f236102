"""Hand freed memory back to the system between the large steps of training."""

from __future__ import annotations

import ctypes
import functools
import sys
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
