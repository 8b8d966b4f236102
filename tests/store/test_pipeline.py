"""The live pipeline in the store: syncs of the real Maven export build its stage history, a forecast from the
store equals the forecast of the same data from files, snapshots and the pipeline survive a restart."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from api.cli import cli
from api.live import flow, forecast_from_store, stored_pipeline, sync
from crmdata.loaders import load_pipeline
from forecasting.forecast import forecast
from store import Store
from store.pipeline import list_snapshots, opportunity_events_of, pipeline_at, read_pipeline

MAPPING = Path(__file__).resolve().parents[2] / "docs" / "examples" / "maven-crm-mapping.toml"
FIRST_SYNC = datetime(2018, 1, 1)
SECOND_SYNC = datetime(2018, 1, 8)
# The second export: one deal engaged, one won, one lost, and one new deal (the first rows of each kind).
MOVES = {
    "6CWZFOHJ": {"deal_stage": "Engaging", "engage_date": "2018-01-04"},
    "HAXMC4IX": {"deal_stage": "Won", "close_date": "2018-01-05", "close_value": "3400"},
    "UP409DSB": {"deal_stage": "Lost", "close_date": "2018-01-06", "close_value": "0"},
}
NEW_DEAL = {"opportunity_id": "NEWDEAL1", "sales_agent": "Anna Snelling", "product": "GTX Basic", "account": "",
            "deal_stage": "Engaging", "engage_date": "2018-01-03", "close_date": "", "close_value": ""}
# The stage history those two syncs must build, written by hand: each moved deal's first stage (entered at its
# engage date, or when first seen for a Prospecting deal that has none) and the stage it moved to (at its new
# engage date, else its close date).
HISTORY = pd.DataFrame({
    "opportunity_id": ["6CWZFOHJ", "6CWZFOHJ", "HAXMC4IX", "HAXMC4IX", "UP409DSB", "UP409DSB"],
    "stage": ["Prospecting", "Engaging", "Engaging", "Won", "Engaging", "Lost"],
    "entered_at": ["2018-01-01", "2018-01-04", "2016-11-03", "2018-01-05", "2016-11-10", "2018-01-06"],
})


@pytest.fixture
def exports(maven_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Return the Maven export as is and a copy edited as the CRM would show it a week later (with the lookup
    files beside each)."""
    paths = []
    for name in ("first", "second"):
        folder = tmp_path / name
        folder.mkdir()
        for f in ("sales_pipeline.csv", "sales_teams.csv", "products.csv"):
            shutil.copy(maven_dir / f, folder / f)
        paths.append(folder / "sales_pipeline.csv")
    raw = pd.read_csv(paths[1], dtype=str, keep_default_na=False)
    for deal, changes in MOVES.items():
        row = raw.index[raw["opportunity_id"] == deal]
        assert len(row) == 1 and raw.loc[row[0], "deal_stage"] in ("Prospecting", "Engaging")
        for column, value in changes.items():
            raw.loc[row[0], column] = value
    raw = pd.concat([raw, pd.DataFrame([NEW_DEAL])], ignore_index=True)
    raw.to_csv(paths[1], index=False)
    return paths[0], paths[1]


def _sync(store: Store, path: Path, at: datetime) -> dict[str, object]:
    pipeline = load_pipeline(path, mapping=MAPPING)
    return sync(store, pipeline.opportunities, stages=pipeline.stages, source=path.name, observed_at=at).to_dict()


def test_the_maven_export_synced_twice_builds_the_stage_history_it_lacks(store: Store,
                                                                        exports: tuple[Path, Path]) -> None:
    first = _sync(store, exports[0], FIRST_SYNC)
    assert (first["received"], first["created"], first["updated"], first["events"]) == (8800, 8800, 0, 8800)
    assert read_pipeline(store).history is None  # nothing seen to move yet: no history, as in the export
    again = _sync(store, exports[0], FIRST_SYNC)
    assert (again["created"], again["updated"], again["unchanged"], again["events"]) == (0, 0, 8800, 0)

    second = _sync(store, exports[1], SECOND_SYNC)
    # 8,800 + 1 new; 3 moved on a stage, 2 of them closed (outcome open -> won / lost); nothing else changed.
    assert (second["received"], second["created"], second["updated"], second["unchanged"]) == (8801, 1, 3, 8797)
    assert second["changes"] == {"stage": 3, "amount": 0, "expected_close_date": 0, "owner": 0, "outcome": 2}
    assert second["events"] == 1 + 3 + 2

    pipeline, _ = stored_pipeline(store)
    assert pipeline.history is not None
    got = pipeline.history.assign(entered_at=pipeline.history["entered_at"].dt.strftime("%Y-%m-%d"))
    assert got.astype(str).to_dict(orient="list") == HISTORY.to_dict(orient="list")
    won = opportunity_events_of(store, "HAXMC4IX")
    assert [(e["field"], e["old_value"], e["new_value"], e["changed_at"], e["recorded_at"] is not None)
            for e in won] == [
        ("created", None, "Engaging", datetime(2016, 11, 3), True),
        ("stage", "Engaging", "Won", datetime(2018, 1, 5), True),
        ("outcome", "open", "won", datetime(2018, 1, 5), True),
    ]
    deals = pipeline.opportunities.set_index("opportunity_id")
    assert deals.loc["HAXMC4IX", "won_amount"] == 3400.0 and deals.loc["UP409DSB", "outcome"] == "lost"
    assert deals.loc["NEWDEAL1", "stage"] == "Engaging"


def test_a_forecast_from_the_store_equals_the_forecast_of_the_same_data_from_files(
        store: Store, exports: tuple[Path, Path], tmp_path: Path) -> None:
    _sync(store, exports[0], FIRST_SYNC)
    options = {"horizon": "1Q", "n_sims": 2_000}
    from_store, first_id = forecast_from_store(store, as_of="2017-10-01", seed=3, source="test", **options)
    pipeline = load_pipeline(exports[0], mapping=MAPPING)
    from_file = forecast(pipeline.opportunities, stages=pipeline.stages, as_of="2017-10-01",
                         rng=np.random.default_rng(3), **options)
    assert from_store.to_dict() == from_file.to_dict()

    _sync(store, exports[1], SECOND_SYNC)
    history_file = tmp_path / "history.csv"
    HISTORY.to_csv(history_file, index=False)
    from_store, second_id = forecast_from_store(store, as_of="2018-01-09", seed=5, by="team", source="test",
                                                **options)
    pipeline = load_pipeline(exports[1], mapping=MAPPING, history=history_file)
    from_file = forecast(pipeline.opportunities, stages=pipeline.stages, history=pipeline.history,
                         as_of="2018-01-09", by="team", rng=np.random.default_rng(5), **options)
    assert from_store.to_dict() == from_file.to_dict()
    assert from_store.groups and from_store.total.p50 > 0

    rows, total = list_snapshots(store)
    assert total == 2 and [r["id"] for r in rows] == [second_id, first_id]
    newest = rows[0]
    assert (newest["horizon"], newest["method"], newest["group_by"], newest["simulations"], newest["seed"]) == \
        ("1Q", "monte_carlo", "team", 2_000, 5)
    assert pd.Timestamp(newest["as_of"]) == pd.Timestamp("2018-01-09")
    assert [p["p50"] for p in newest["periods"]] == [p.p50 for p in from_file.periods]
    assert [g["group"] for g in newest["groups"]] == [g.group for g in from_file.groups]
    assert newest["stage_model_version"].startswith("sm-") and newest["stage_model_version"] != \
        rows[1]["stage_model_version"]  # learnt from other data


def test_deal_flow_between_the_two_syncs_counts_the_moves(store: Store, exports: tuple[Path, Path]) -> None:
    _sync(store, exports[0], FIRST_SYNC)
    _, first_id = forecast_from_store(store, as_of="2018-01-01", horizon="1Q", n_sims=500, seed=0, source="test")
    _sync(store, exports[1], SECOND_SYNC)
    _, second_id = forecast_from_store(store, as_of="2018-01-09", horizon="1Q", n_sims=500, seed=0, source="test")
    moved, first, second = flow(store, from_id=first_id, to_id=second_id)
    counts = {k: v.deals for k, v in moved.items.items()}
    # new NEWDEAL1; won HAXMC4IX, lost UP409DSB; 6CWZFOHJ only changed stage; the export has no close dates.
    assert counts == {"new": 1, "won": 1, "lost": 1, "pushed": 0, "pulled_in": 0, "amount_changed": 0}
    assert moved.ids["won"] == ("HAXMC4IX",) and moved.ids["lost"] == ("UP409DSB",)
    # Amounts are products.csv list prices: MG Advanced 3,393 for both closed deals; GTX Basic 550 new.
    assert (moved.items["won"].amount, moved.items["lost"].amount, moved.items["new"].amount) == (3393, 3393, 550)
    assert moved.period_end == pd.Timestamp("2018-04-01")  # the end of the first forecast's quarter
    before = pipeline_at(store, int(first["event_mark"])).set_index("opportunity_id")
    assert len(before) == 8800 and before.loc["HAXMC4IX", "stage"] == "Engaging"
    assert before.loc["6CWZFOHJ", "stage"] == "Prospecting"
    assert second is not None and len(pipeline_at(store, int(second["event_mark"]))) == 8801


def test_a_restart_keeps_the_pipeline_and_the_snapshots(database_url: str, exports: tuple[Path, Path]) -> None:
    first = Store(database_url)
    first.upgrade()
    _sync(first, exports[0], FIRST_SYNC)
    result, snapshot_id = forecast_from_store(first, as_of="2017-10-01", horizon="3M", n_sims=500, seed=1,
                                              source="test")
    first.dispose()
    again = Store(database_url)  # a new process: nothing but the URL
    pipeline, _ = stored_pipeline(again)
    assert len(pipeline.opportunities) == 8800
    rows, total = list_snapshots(again)
    assert total == 1 and rows[0]["id"] == snapshot_id
    assert [p["p50"] for p in rows[0]["periods"]] == [p.p50 for p in result.periods]
    with again.begin() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM opportunity_events")).scalar() == 8800
    again.dispose()


def test_the_cli_syncs_then_forecasts_and_reports_from_the_store(database_url: str, exports: tuple[Path, Path],
                                                                 tmp_path: Path) -> None:
    env = {"LEADCAST_HOME": str(tmp_path / "home"), "LEADCAST_DATABASE_URL": database_url}
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"], env=env).exit_code == 0
    for path, at in ((exports[0], "2018-01-01"), (exports[1], "2018-01-08")):
        done = runner.invoke(cli, ["sync", "opportunities", str(path), "--mapping", str(MAPPING), "--at", at],
                             env=env)
        assert done.exit_code == 0, done.output
    assert "new 1, changed 3, unchanged 8,797" in done.output
    assert "changes by field: stage 3, outcome 2" in done.output
    assert "HAXMC4IX: stage Engaging -> Won" in done.output
    shown = runner.invoke(cli, ["forecast", "--from-store", "--as-of", "2017-10-01", "--sims", "500"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "saved as forecast 1" in shown.output
    both = runner.invoke(cli, ["forecast", "--from-store", "--opportunities", str(exports[0])], env=env)
    assert both.exit_code == 2 and "not both" in both.output
    out = tmp_path / "report"
    made = runner.invoke(cli, ["report", "--from-store", "--as-of", "2018-01-09", "--horizon", "1M", "--sims", "500",
                               "--backtest-months", "2", "--backtest-sims", "200", "--out", str(out)], env=env)
    assert made.exit_code == 0, made.output
    # Forecast 1 (as of 2017-10-01, one quarter) has ended by 2018-01-09: its quarter is scored live.
    assert "saved the report's forecast as forecast 2; 1 past period(s)" in made.output
    page = (out / "report.html").read_text()
    assert "Our forecasts of past periods, as made at the time" in page
    listed = runner.invoke(cli, ["forecasts", "list"], env=env)
    assert listed.exit_code == 0 and "2 saved forecast(s)" in listed.output
    moved = runner.invoke(cli, ["forecasts", "flow", "1", "2"], env=env)
    assert moved.exit_code == 0, moved.output
    assert "won" in moved.output and "against the period end 2018-01-01" in moved.output


def test_two_syncs_of_the_same_new_deals_at_once_store_each_deal_once(store: Store) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from crmdata.synthetic import generate_opportunities

    synthetic = generate_opportunities(n=2_000, seed=8)
    results = []
    for round_ in range(3):  # a few rounds: the race is not certain to happen in any one of them
        batch = synthetic.opportunities.assign(
            opportunity_id=synthetic.opportunities["opportunity_id"] + f"-{round_}")
        with ThreadPoolExecutor(2) as pool:
            done = list(pool.map(lambda at, deals=batch: sync(store, deals, stages=synthetic.stages, source="race",
                                                              observed_at=at), [FIRST_SYNC, SECOND_SYNC]))
        results.append(sorted(r.created for r in done))
    # Whoever lost the race saw the other's rows on its retry: 2,000 new deals in all per round, never twice.
    assert results == [[0, 2_000]] * 3
    with store.begin() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM opportunities")).scalar() == 6_000
        assert conn.execute(sa.text("SELECT count(*) FROM opportunity_events WHERE field = 'created'")).scalar() \
            == 6_000
