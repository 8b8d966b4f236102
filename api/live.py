"""The stored pipeline at the edge: sync records into the store, forecast from it (each forecast saved as a
snapshot), live accuracy and deal flow. One place, used by the HTTP views and the CLI alike."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import exc as sa_exc

from crmdata.contracts import OPPORTUNITY, STAGE_HISTORY
from crmdata.loaders import Pipeline, frame_from_records
from crmdata.stages import DEFAULT_STAGES, StageConfig
from forecasting.errors import ForecastInputError
from forecasting.forecast import ForecastResult, forecast
from forecasting.live import DealFlow, deal_flow, live_accuracy, stage_model_version
from forecasting.periods import as_day
from forecasting.snapshot import last_known_date
from store import Store, StoreError
from store.pipeline import (
    SyncResult,
    all_snapshots,
    event_mark,
    get_snapshot,
    pipeline_at,
    read_pipeline,
    save_snapshot,
    sync_opportunities,
)

EMPTY = ("the store holds no opportunities: sync an export first (`leadcast sync opportunities FILE`) or send "
         "them with PUT /v1/opportunities")


class EmptyPipeline(ForecastInputError):
    """Raised when a forecast is asked of a store that holds no opportunities: a state to fix first (PUT or sync
    the deals), not an invalid input."""


class SnapshotNotFound(StoreError):
    """Raised for a forecast snapshot id that the store does not hold."""


def now_utc() -> datetime:
    """Return the time now as naive UTC, to the second (the store's convention)."""
    return pd.Timestamp.now("UTC").tz_localize(None).floor("s").to_pydatetime()


def stages_table(stages: StageConfig) -> dict[str, Any]:
    """Return a stage configuration as its `[stages]` table."""
    return {"open": list(stages.open), "won": list(stages.won), "lost": list(stages.lost),
            "lead_stages": list(stages.lead_stages)}


def sync(store: Store, deals: pd.DataFrame, *, stages: StageConfig, source: str,
         observed_at: datetime | None = None) -> SyncResult:
    """Store validated opportunity records (the contract frame a loader returned) and their changes."""
    when = observed_at or now_utc()
    try:
        return sync_opportunities(store, deals, observed_at=when, source=source, stages=stages_table(stages))
    except sa_exc.IntegrityError:
        # Another sync stored one of these new deals between our read and our write: diff again against it.
        return sync_opportunities(store, deals, observed_at=when, source=source, stages=stages_table(stages))


def stored_pipeline(store: Store, *, empty_ok: bool = False) -> tuple[Pipeline, int]:
    """Return the stored pipeline as the file path would load it (the same value layer and checks), and the last
    event it includes; raise EmptyPipeline for a store without opportunities unless `empty_ok` (metrics and
    accuracy of no deals are zeros and empty lists, a forecast of none is undefined)."""
    stored = read_pipeline(store)
    if stored.opportunities.empty and not empty_ok:
        raise EmptyPipeline(EMPTY)
    stages = StageConfig.from_mapping(stored.stages) if stored.stages else DEFAULT_STAGES
    deals = frame_from_records(stored.opportunities, contract=OPPORTUNITY, stages=stages, source="store")
    history = None
    if stored.history is not None:
        history = frame_from_records(stored.history, contract=STAGE_HISTORY, stages=stages, source="store history")
        # As crmdata.loaders.load_stage_history orders a history file.
        history = history.sort_values(["opportunity_id", "entered_at"], kind="stable").reset_index(drop=True)
    return Pipeline(opportunities=deals, stages=stages, history=history), stored.event_mark


def present(pipeline: Pipeline) -> pd.Timestamp:
    """Return the as-of date of "now" for a pipeline: the day after the last date it mentions."""
    last = last_known_date(pipeline.opportunities)
    if last is None:
        raise ForecastInputError("the stored pipeline has no dates; give an as-of date")
    return as_day(last) + pd.Timedelta(days=1)


def snapshot_record(forecast_dict: dict[str, Any], *, mark: int, seed: int | None, source: str,
                    made_at: datetime | None = None) -> dict[str, Any]:
    """Return the row that keeps a forecast (ForecastResult.to_dict()) made from the store."""
    keep = ("label", "start", "end", "p10", "p50", "p90", "mean")
    return {
        "made_at": made_at or now_utc(),
        "as_of": pd.Timestamp(forecast_dict["as_of"]).to_pydatetime(),
        "horizon": forecast_dict["horizon"],
        "method": "monte_carlo",
        "group_by": forecast_dict.get("by"),
        "simulations": int(forecast_dict["model"]["simulations"]),
        "seed": seed,
        "stage_model_version": stage_model_version(forecast_dict["model"]),
        "event_mark": mark,
        "open_deals": int(forecast_dict["model"]["open_deals"]),
        "periods": [{k: p[k] for k in keep} for p in forecast_dict["periods"]],
        "total": {k: forecast_dict["total"][k] for k in keep},
        "groups": [{k: g[k] for k in ("group", "open_deals", "pipeline", "p10", "p50", "p90", "mean")}
                   for g in forecast_dict.get("groups", [])],
        "source": source,
    }


def forecast_from_store(store: Store, *, as_of: object | None, horizon: str, n_sims: int, seed: int,
                        target: float | None = None, by: str | None = None, source: str,
                        pipeline: tuple[Pipeline, int] | None = None,
                        runner: Callable[..., ForecastResult] | None = None) -> tuple[ForecastResult, int]:
    """Forecast the stored pipeline (as of the day after its last date when `as_of` is None) with the forecasting
    library's own call, save it as a snapshot, and return it with the snapshot's id.

    `runner(forecast, **arguments)` makes the call where the caller wants it (the API: its forecast pool); by
    default it is made here. The store is read and written here either way.
    """
    deals, mark = pipeline or stored_pipeline(store)
    t = present(deals) if as_of is None else as_day(as_of)
    arguments: dict[str, Any] = dict(opportunities=deals.opportunities, stages=deals.stages, history=deals.history,
                                     as_of=t, horizon=horizon, target=target, by=by, n_sims=n_sims,
                                     rng=np.random.default_rng(seed))
    result = forecast(**arguments) if runner is None else runner(forecast, **arguments)
    snapshot_id = save_snapshot(store, snapshot_record(result.to_dict(), mark=mark, seed=seed, source=source))
    return result, snapshot_id


def snapshot_or_raise(store: Store, snapshot_id: int) -> dict[str, Any]:
    """Return a saved forecast, or raise SnapshotNotFound."""
    found = get_snapshot(store, snapshot_id)
    if found is None:
        raise SnapshotNotFound(f"no saved forecast has id {snapshot_id}")
    return found


def flow(store: Store, *, from_id: int, to_id: int | None = None) -> tuple[DealFlow, dict[str, Any],
                                                                        dict[str, Any] | None]:
    """Return the deal flow from one saved forecast to another (or to the pipeline as stored now), judged
    against the end of the earlier forecast's horizon."""
    first = snapshot_or_raise(store, from_id)
    second = None if to_id is None else snapshot_or_raise(store, to_id)
    if second is not None and second["event_mark"] < first["event_mark"]:
        first, second = second, first  # deal flow runs forward in time
    before = pipeline_at(store, int(first["event_mark"]))
    if second is None:
        with store.begin() as conn:
            mark = event_mark(conn)
    else:
        mark = int(second["event_mark"])
    after = pipeline_at(store, mark)
    return deal_flow(before, after, period_end=pd.Timestamp(first["total"]["end"])), first, second


def live_rows(store: Store, *, now: pd.Timestamp, opportunities: pd.DataFrame | None = None) -> pd.DataFrame:
    """Return the saved forecasts' periods that have ended by `now`, against the revenue the store shows won."""
    deals = opportunities if opportunities is not None else stored_pipeline(store, empty_ok=True)[0].opportunities
    return live_accuracy(all_snapshots(store), deals, now=now)


def live_records(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Return live-accuracy rows as JSON-ready dicts (ISO dates; None for what is undefined)."""
    out = []
    for row in rows.to_dict(orient="records"):
        out.append({str(k): (v.isoformat() if isinstance(v, pd.Timestamp) else
                        None if v is None or (isinstance(v, float) and not np.isfinite(v)) else
                        v.item() if isinstance(v, np.generic) else v) for k, v in row.items()})
    return out
