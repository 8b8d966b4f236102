from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from scoring.memory import _libc, release_freed_memory


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(_libc() is None, reason="glibc's malloc_trim is not available here")
def test_freed_heap_pages_are_handed_back() -> None:
    # A freed 24 MiB array raises glibc's mmap threshold to 24 MiB, so the forty 4 MiB arrays after it live in
    # the heap; freeing them below a later one (which pins the heap's top) leaves 40 x 4 = 160 MiB of freed,
    # touched pages in RSS until they are trimmed.
    big = np.ones(3 << 20)  # 3 Mi float64 = 24 MiB
    del big
    arrays = [np.ones(1 << 19) for _ in range(40)]  # 512 Ki float64 = 4 MiB each
    pin = np.ones(1 << 19)
    del arrays
    before = _rss_mib()
    assert release_freed_memory() == 1
    assert before - _rss_mib() > 0.75 * 160
    assert pin.sum() == 1 << 19


KEPT = """
import sys
import numpy as np
from scoring.memory import keep_freed_memory
def rss_mib():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096 / 2**20
if sys.argv[1] == "keep":
    assert keep_freed_memory(up_to=1 << 30)
before = rss_mib()
block = np.ones(8 << 20)  # 8 Mi float64 = 64 MiB, every page touched
del block
print(rss_mib() - before)
"""


@pytest.mark.skipif(_libc() is None, reason="glibc's mallopt is not available here")
def test_a_freed_block_is_kept_for_reuse_only_when_asked() -> None:
    # By default glibc maps a 64 MiB array apart and unmaps it when freed: RSS is back where it was, and the
    # next chunk's array faults all its pages in again. Kept, the freed 64 MiB stay in the heap for reuse.
    kept = {mode: float(subprocess.run([sys.executable, "-c", KEPT, mode], capture_output=True, text=True,
                                       check=True).stdout) for mode in ("default", "keep")}
    assert kept["default"] < 8
    assert kept["keep"] > 0.9 * 64


HUGE = """
import sys
import numpy as np
if sys.argv[1] == "small":
    from scoring.batch import _setup_worker
    _setup_worker()  # what every scoring process runs first
block = np.ones(8 << 20)  # 64 MiB: numpy advises huge pages from 4 MiB on
start = block.ctypes.data + (32 << 20)  # the middle: numpy advises the 2 MiB-aligned part
flags = ""
with open("/proc/self/smaps") as handle:
    inside = False
    for line in handle:
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            low, high = (int(x, 16) for x in head.split("-"))
            inside = low <= start < high
        elif inside and head == "VmFlags:":
            flags = line
print("hg" in flags.split())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmFlags are Linux's")
def test_a_scoring_process_asks_for_small_pages() -> None:
    # Huge-page faults on fresh memory cost a first chunk of 100,000 leads 1.4-1.7 s of kernel time here;
    # a scoring process's large arrays must not carry the hugepage advice ("hg" in the mapping's VmFlags).
    advised = {mode: subprocess.run([sys.executable, "-c", HUGE, mode], capture_output=True, text=True,
                                    check=True).stdout.strip() for mode in ("default", "small")}
    if advised["default"] != "True":
        pytest.skip("numpy does not advise huge pages on this kernel")
    assert advised["small"] == "False"
