"""Benchmark: a sync of a 200,000-opportunity export against the store (issue 12 item 9; target under 30 s).

Three syncs of a synthetic CRM export (crmdata/synthetic.py) written as CSV, each timed whole (read and validate
the file, diff it against the stored pipeline, write the changes and their events) and by part: the first into
an empty store (200,000 new deals), a nightly export with 10,000 deals moved on (5,000 advanced a stage, 3,000
won, 2,000 re-priced) and the same export again (nothing changed). Then a forecast from the store (read back,
same value layer as a file) for scale. Printed, never asserted: run with `make bench`.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from api.live import stored_pipeline, sync
from crmdata.loaders import load_pipeline, write_table
from crmdata.synthetic import generate_opportunities
from store import Store

DEALS = 200_000


def _nightly(deals: pd.DataFrame, *, seed: int) -> pd.DataFrame:
    """Return the export a day later: 5,000 open deals one stage on, 3,000 won, 2,000 re-priced (+10%)."""
    rng = np.random.default_rng(seed)
    out = deals.copy()
    is_open = (out["outcome"] == "open").to_numpy(bool)
    movable = rng.permutation(np.flatnonzero(is_open & (out["stage"] != "closing").to_numpy(bool)))
    advance = movable[:5_000]
    rest = rng.permutation(np.setdiff1d(np.flatnonzero(is_open), advance))
    win, price = rest[:3_000], rest[3_000:5_000]
    nxt = {"lead_generation": "qualification", "qualification": "contact", "contact": "proposal",
           "proposal": "closing"}
    day = out["created_at"].max().normalize() + pd.Timedelta(days=1)
    stage = out["stage"].astype(object).to_numpy(copy=True)
    stage[advance] = [nxt[s] for s in stage[advance]]
    stage[win] = "won"
    out["stage"] = stage
    out.loc[out.index[advance], "stage_entered_at"] = day
    out.loc[out.index[win], "closed_at"] = day
    out.loc[out.index[win], "outcome"] = "won"
    out.loc[out.index[win], "won_amount"] = out["amount"].iloc[win].to_numpy()
    out.loc[out.index[price], "amount"] = (out["amount"].iloc[price] * 1.1).round(2).to_numpy()
    return out


def _timed_sync(store: Store, path: Path, at: datetime) -> tuple[float, float, dict[str, object]]:
    start = time.perf_counter()
    pipeline = load_pipeline(path)
    loaded = time.perf_counter()
    result = sync(store, pipeline.opportunities, stages=pipeline.stages, source=path.name, observed_at=at)
    return loaded - start, time.perf_counter() - loaded, result.to_dict()


@pytest.mark.bench
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_bench_sync_of_a_200k_export(tmp_path: Path, backend: str, postgres_admin_url: str | None) -> None:
    if backend == "postgresql":
        if postgres_admin_url is None:
            pytest.skip("no PostgreSQL server")
        from tests.postgres import create_database, drop_database

        url = create_database(postgres_admin_url)
    else:
        url = f"sqlite:///{tmp_path / 'leadcast.db'}"
    deals = generate_opportunities(n=DEALS, seed=12).opportunities
    first, second = tmp_path / "export-1.csv", tmp_path / "export-2.csv"
    write_table(deals, first)
    write_table(_nightly(deals, seed=1), second)
    store = Store(url)
    store.upgrade()
    try:
        print(f"\nsync of a {DEALS:,}-opportunity CSV export into {backend} (target under 30 s)")
        for label, path, at in (("first sync, empty store", first, datetime(2026, 7, 1)),
                                ("nightly, 10,000 moved", second, datetime(2026, 7, 2)),
                                ("same export again", second, datetime(2026, 7, 3))):
            read, stored, result = _timed_sync(store, path, at)
            print(f"  {label:<26} {read + stored:6.1f} s  (read + validate {read:5.1f} s, diff + write "
                  f"{stored:5.1f} s): new {result['created']:,}, changed {result['updated']:,}, "
                  f"events {result['events']:,}")
        start = time.perf_counter()
        pipeline, _ = stored_pipeline(store)
        print(f"  read back for a forecast   {time.perf_counter() - start:6.1f} s  ({len(pipeline.opportunities):,} "
              f"deals, stage history of {0 if pipeline.history is None else len(pipeline.history):,} rows)")
    finally:
        store.dispose()
        if backend == "postgresql":
            assert postgres_admin_url is not None
            drop_database(postgres_admin_url, url)
