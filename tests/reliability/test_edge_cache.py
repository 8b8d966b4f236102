"""The scorer's reason caches stay bounded in bytes whatever the values (issue 10 item 3, the cache part)."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

import pandas as pd

from crmdata.values import MAX_TEXT_LENGTH
from scoring.scorer import CACHEABLE_CHARS, ModelScorer, load_scorer
from tests.api.conftest import lead_records

MB = 2**20


def rss_mib() -> float:
    """Return this process's resident set size in MiB (Linux /proc)."""
    with open(f"/proc/{os.getpid()}/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def cache_bytes(scorer: ModelScorer) -> int:
    """Return the bytes held by the strings of both caches (keys and values)."""
    total = 0
    for key, text in scorer._text_cache.items():
        total += sum(sys.getsizeof(k) for k in key) + sys.getsizeof(text)
    for key, reason in scorer._reason_cache.items():
        total += sum(sys.getsizeof(k) for k in key) + sys.getsizeof(reason.text)
    return total


def test_unique_long_categories_leave_the_caches_and_rss_bounded(trained_dir: Path,
                                                                 sample_leads: pd.DataFrame) -> None:
    scorer = load_scorer(models_dir=trained_dir)
    assert isinstance(scorer, ModelScorer)
    records = lead_records(sample_leads, 1000)
    scorer.score_records(records[:5], reasons=True)  # warm: the usual short values are cached
    gc.collect()
    start = rss_mib()
    # Values longer than MAX_TEXT_LENGTH are refused by the value layer (a 422); at the cap, 3,000 unique
    # values would leave about 3,000 x 2 x 1 KB = 6 MB in caches that keep every value and word they meet.
    for i, record in enumerate(records):
        value = f"{i:04d}" + "x" * (MAX_TEXT_LENGTH - 4)
        for field in ("industry", "country", "source"):
            scored = scorer.score_records([{**record, field: value}], reasons=True)
            assert scored[0].score >= 0
    gc.collect()
    grown = rss_mib() - start
    held = cache_bytes(scorer)
    print(f"\nRSS grew {grown:.1f} MiB over 3,000 requests with unique {MAX_TEXT_LENGTH:,}-character values; "
          f"caches hold {held / MB:.2f} MiB")
    assert all(len(text) <= CACHEABLE_CHARS for text in scorer._text_cache.values())
    assert all(len(r.text) <= CACHEABLE_CHARS for r in scorer._reason_cache.values())
    assert held < 1 * MB
    assert grown < 50
