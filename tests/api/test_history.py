from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from api.cli import cli
from api.history import LatestScores, ScoreContext
from api.openapi import build_openapi
from api.schemas import ScoreHistoryResponse
from crmdata.synthetic import generate_opportunities
from scoring.artifacts import load_trained, save_trained
from scoring.batch import score_file
from scoring.scorer import REASONS_COLUMN, Reason, load_scorer
from store import Store
from store.history import stored_reasons
from store.schema import predictions
from tests.api.conftest import Service, lead_records
from tests.api.test_pipeline_api import records_of

NAME = "leadcast-lead-scoring"


@pytest.fixture
def svc(make_service: Callable[..., Service], database_url: str) -> Iterator[Service]:
    """Return a service on `database_url` whose percentiles are recomputed and whose trends read the store on
    every request (no worker cache: what is stored is what counts)."""
    with Store(database_url) as store:
        store.upgrade()
    service = make_service(database_url=database_url, percentile_refresh_seconds=0, trend_cache_seconds=0)
    yield service
    rt = service.app.extensions["leadcast"]
    rt.prediction_log.close()
    rt.store.dispose()


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _seed(service: Service, lead_id: str, score: int, *, ago: timedelta = timedelta(0)) -> None:
    with service.app.extensions["leadcast"].store.begin() as conn:
        conn.execute(predictions.insert().values(
            lead_id=lead_id, scored_at=_now() - ago, as_of=None, model_name=NAME, model_version="1",
            model_kind="trained", probability=score / 100, score=score, grade="C", reasons=None,
            features={"source": "web"}))


def _score(service: Service, lead: dict[str, Any], *, model: str | None = None) -> dict[str, Any]:
    path = "/v1/leads/score" if model is None else f"/v1/leads/score?model={model}"
    response = service.post(path, {"lead": lead}, who="score")
    assert response.status_code == 200, response.get_json()
    assert service.app.extensions["leadcast"].prediction_log.flush(timeout=10)
    item: dict[str, Any] = response.get_json()["scores"][0]
    return item


def test_trend_and_percentile_against_what_is_stored(svc: Service, sample_leads: pd.DataFrame) -> None:
    records = lead_records(sample_leads, 40)
    lead = next({**r, "lead_id": "X"} for r in records if 30 <= _score(svc, {**r, "lead_id": "probe"})["score"] <= 60)
    with svc.app.extensions["leadcast"].store.begin() as conn:
        conn.execute(predictions.delete())
    first = _score(svc, lead)
    s = first["score"]
    assert first["trend"] == "new" and first["percentile"] is None  # nothing was stored before it
    _seed(svc, "P1", s - 20)
    _seed(svc, "P2", s + 20)
    _seed(svc, "P3", s - 25, ago=timedelta(days=31))  # outside the 30-day window
    _seed(svc, "P4", s - 5, ago=timedelta(days=2))
    _seed(svc, "P4", s + 30)  # P4 counts once, with its newest score
    second = _score(svc, lead)
    # the stored latest scores: X s, P1 s-20, P2 s+20, P4 s+30 -> 1 below, 1 tie (X's first score), 4 leads:
    # (1 + 0.5) / 4 = 37.5%; X's previous score is s, the same -> steady
    assert (second["score"], second["trend"], second["percentile"]) == (s, "steady", 37.5)
    _seed(svc, "X", s - 4)  # 4 points below now (band 3) -> improving
    assert _score(svc, lead)["trend"] == "improving"
    _seed(svc, "X", s + 3)  # 3 points above: within the band
    assert _score(svc, lead)["trend"] == "steady"
    _seed(svc, "X", s + 10)
    assert _score(svc, lead)["trend"] == "declining"


def test_history_pages_newest_first_and_survives_a_restart(svc: Service, sample_leads: pd.DataFrame,
                                                           make_service: Callable[..., Service],
                                                           database_url: str) -> None:
    lead = {**lead_records(sample_leads, 1)[0], "lead_id": "H/1"}  # a slash in an id: sent encoded
    scores = [_score(svc, {**lead, "web_visits": visits})["score"] for visits in (1, 5, 9)]
    page = svc.get("/v1/leads/H%2F1/scores?limit=2").get_json()
    assert page["lead_id"] == "H/1" and [s["score"] for s in page["scores"]] == scores[::-1][:2]
    assert page["scores"][0]["model"] == {"name": NAME, "version": "1", "kind": "trained"}
    rest = svc.get(f"/v1/leads/H%2F1/scores?limit=2&cursor={page['next_cursor']}").get_json()
    assert [s["score"] for s in rest["scores"]] == scores[:1] and rest["next_cursor"] is None
    restarted = make_service(database_url=database_url)  # a new app on the same store: the history is kept
    again = restarted.get("/v1/leads/H%2F1/scores").get_json()
    assert [s["score"] for s in again["scores"]] == scores[::-1]
    restarted.app.extensions["leadcast"].prediction_log.close()
    restarted.app.extensions["leadcast"].store.dispose()
    for query, loc in (("limit=0", "limit"), ("limit=x", "limit"), ("cursor=zzz", "cursor")):
        bad = svc.get(f"/v1/leads/H%2F1/scores?{query}")
        assert bad.status_code == 422 and bad.get_json()["error"]["details"][0]["loc"] == ["query", loc]


def test_delete_erases_every_row_holding_the_lead(svc: Service, sample_leads: pd.DataFrame) -> None:
    lead = {**lead_records(sample_leads, 1)[0], "lead_id": "ERASE-ME-42"}
    other = {**lead, "lead_id": "KEEP-ME"}
    for _ in range(2):
        _score(svc, lead)
    _score(svc, other)
    outcomes = {"outcomes": [{"lead_id": "ERASE-ME-42", "converted": True}, {"lead_id": "KEEP-ME",
                                                                             "converted": False}]}
    assert svc.post("/v1/leads/outcomes", outcomes, who="outcomes").status_code == 200
    # The lead became a deal: the deal stays in the pipeline, without the link to the erased lead.
    deal = {**records_of(generate_opportunities(n=1, seed=3).opportunities)[0], "lead_id": "ERASE-ME-42"}
    assert svc.client.put("/v1/opportunities", json={"opportunities": [deal]},
                          headers=svc.headers("all")).status_code == 200
    assert svc.client.delete("/v1/leads/ERASE-ME-42", headers=svc.headers("score")).status_code == 403
    response = svc.client.delete("/v1/leads/ERASE-ME-42", headers=svc.headers("all"))
    assert response.status_code == 200
    assert response.get_json() == {"lead_id": "ERASE-ME-42",
                                   "removed": {"features": 2, "predictions": 2, "outcomes": 1,
                                               "opportunities_unlinked": 1}}
    store = svc.app.extensions["leadcast"].store
    with store.begin() as conn:
        for table in sa.inspect(conn).get_table_names():
            for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                assert "ERASE-ME-42" not in str(tuple(row)), table
        assert conn.execute(sa.text("SELECT count(*) FROM predictions WHERE lead_id = 'KEEP-ME'")).scalar() == 1
        assert conn.execute(sa.text("SELECT count(*) FROM opportunities")).scalar() == 1
    again = svc.client.delete("/v1/leads/ERASE-ME-42", headers=svc.headers("all")).get_json()
    assert again["removed"] == {"features": 0, "predictions": 0, "outcomes": 0, "opportunities_unlinked": 0}


def test_db_purge_removes_predictions_older_than_the_retention(svc: Service) -> None:
    for lead_id, days in (("old", 40), ("older", 400), ("new", 5)):
        _seed(svc, lead_id, 50, ago=timedelta(days=days))
    env = {"LEADCAST_DATABASE_URL": str(svc.settings.resolved_database_url), "LEADCAST_RETENTION_DAYS": "30"}
    runner = CliRunner()
    result = runner.invoke(cli, ["db", "purge"], env=env)
    assert result.exit_code == 0 and "removed 2 predictions" in result.output, result.output
    with svc.app.extensions["leadcast"].store.begin() as conn:
        assert conn.execute(sa.select(predictions.c.lead_id)).scalars().all() == ["new"]
    assert "removed 1 predictions" in runner.invoke(cli, ["db", "purge", "--older-than-days", "1"],
                                                    env=env).output
    unset = runner.invoke(cli, ["db", "purge"], env={"LEADCAST_DATABASE_URL": env["LEADCAST_DATABASE_URL"]})
    assert unset.exit_code == 2 and "retention_days" in unset.output


def test_latest_scores_keep_the_newest_leads_and_expire_after_their_bound() -> None:
    now = [0.0]
    cache = LatestScores(capacity=2, ttl=10.0, clock=lambda: now[0])
    cache.put("m", [("A", 40), ("B", 50)])
    cache.put("m", [("C", 60)])  # capacity 2: A, the oldest written, is forgotten
    assert (cache.get("m", "A"), cache.get("m", "B"), cache.get("m", "C")) == (None, 50, 60)
    now[0] = 5.0
    cache.put("m", [("B", 55)])  # rewritten at t = 5: now the newest
    now[0] = 10.0  # C (written at 0) is 10 s old: past its bound; B is 5 s old
    assert (cache.get("m", "B"), cache.get("m", "C")) == (55, None)
    cache.put("m", [("D", 70)])  # writing drops every entry past its bound: C goes from memory too
    assert list(cache._entries) == [("m", "B"), ("m", "D")]
    cache.forget("B")
    assert cache.get("m", "B") is None
    off = LatestScores(capacity=2, ttl=0.0, clock=lambda: now[0])
    off.put("m", [("A", 1)])  # a bound of 0 keeps nothing: every trend reads the store
    assert off.get("m", "A") is None and not off._entries


def test_latest_scores_are_kept_per_model_name_and_a_lead_is_forgotten_under_every_name() -> None:
    cache = LatestScores(capacity=10, ttl=10.0, clock=lambda: 0.0)
    cache.put("a", [("X", 40)])
    cache.put("b", [("X", 70)])
    assert (cache.get("a", "X"), cache.get("b", "X"), cache.get("c", "X")) == (40, 70, None)
    cache.forget("X")
    assert (cache.get("a", "X"), cache.get("b", "X")) == (None, None) and not cache._entries


@pytest.mark.parametrize("cache_seconds", [30.0, 0.0], ids=["worker-cache", "store-only"])
def test_a_trend_compares_with_the_same_model_names_last_score_never_another_names(
        make_service: Callable[..., Service], database_url: str, sample_leads: pd.DataFrame, tmp_path: Any,
        trained_dir: Any, cache_seconds: float) -> None:
    """Two champions, one per model name, score on their own scales: A, then B, then A again on one lead."""
    with Store(database_url) as store:
        store.upgrade()
    service = make_service(database_url=database_url, percentile_refresh_seconds=0,
                           trend_cache_seconds=cache_seconds, model_source="files")
    # The second name's champion: the same artifact registered as "second" (its own registry and scores).
    save_trained(load_trained(models_dir=trained_dir), models_dir=tmp_path / "models" / "second", name="second",
                 aliases=["champion"])
    records = lead_records(sample_leads, 40)
    probes = [_score(service, {**r, "lead_id": "probe"})["score"] for r in records]
    low, high = probes.index(min(probes)), probes.index(max(probes))
    s, t = probes[low], probes[high]
    assert t - s > 3  # more than the band of 3 points apart
    lead_low, lead_high = {**records[low], "lead_id": "X"}, {**records[high], "lead_id": "X"}
    first = _score(service, lead_low)  # A scores X at s: nothing of A's before
    assert (first["score"], first["trend"]) == (s, "new")
    b = _score(service, lead_high, model="second")  # B scores X at t: B never scored X, so "new"
    # (against A's s it would say improving: t - s > 3)
    assert (b["score"], b["trend"]) == (t, "new")
    again = _score(service, lead_low)  # A again at s: against A's s (s - s = 0, steady), not B's t (declining)
    assert (again["score"], again["trend"]) == (s, "steady")
    b_again = _score(service, lead_low, model="second")  # B at s after B's t: s - t < -3 -> declining
    assert (b_again["score"], b_again["trend"]) == (s, "declining")
    page = service.get("/v1/leads/X/scores").get_json()["scores"]
    assert [(p["model"]["name"], p["score"]) for p in page] == [("second", s), (NAME, s), ("second", t), (NAME, s)]
    rt = service.app.extensions["leadcast"]
    rt.prediction_log.close()
    rt.store.dispose()


def test_two_apps_on_one_store_see_each_others_scores_once_the_cache_bound_passes(
        make_service: Callable[..., Service], database_url: str, sample_leads: pd.DataFrame) -> None:
    with Store(database_url) as store:
        store.upgrade()
    a = make_service(database_url=database_url, percentile_refresh_seconds=0)
    b = make_service(database_url=database_url, percentile_refresh_seconds=0)  # another worker or replica
    now = [0.0]
    rt = a.app.extensions["leadcast"]
    rt.score_history = ScoreContext(rt.store, band_points=3, refresh_seconds=0, latest_seconds=30.0,
                                                clock=lambda: now[0])  # a's cache on a clock the test moves
    probes = {i: _score(b, {**r, "lead_id": "probe"})["score"] for i, r in enumerate(lead_records(sample_leads, 40))}
    low, high = min(probes, key=probes.__getitem__), max(probes, key=probes.__getitem__)
    assert probes[high] - probes[low] > 3  # so that high after low is improving, low after high declining
    records = lead_records(sample_leads, 40)
    lead = {name: {**records[i], "lead_id": name} for name, i in (("X", low), ("Y", low))}
    assert [_score(a, lead[n])["trend"] for n in ("X", "Y")] == ["new", "new"]  # a remembers low for both at t=0
    raised = {n: _score(b, {**records[high], "lead_id": n})["trend"] for n in ("X", "Y")}
    assert raised == {"X": "improving", "Y": "improving"}  # b has no entry: it reads a's low from the store
    now[0] = 29.9  # within a's bound: a compares with its own low score and does not see b's high one yet
    assert _score(a, lead["X"])["trend"] == "steady"  # against the store it would be declining
    now[0] = 30.0  # Y's entry (written at t = 0) is 30 s old: a asks the store and sees b's high score
    assert _score(a, lead["Y"])["trend"] == "declining"
    for service in (a, b):
        service.app.extensions["leadcast"].prediction_log.close()
        service.app.extensions["leadcast"].store.dispose()


# Two leads the default cold-start rules score by hand (scoring/rules/default.toml, no activity fields sent):
# L1's fit rules give 12 + 10 + 8 + 6 + 5 = 41 points, over the fit cap of 40, so each shrinks by 40/41
# (12 -> 11.71, 10 -> 9.76, 8 -> 7.80, 6 -> 5.85, 5 -> 4.88: the same whole points); no email engagement
# costs 6. Score 5 (base) + 40 - 6 = 39. L2: 5 - 15 (student) - 6 - 5 (12+ months) = -21, clipped to 0.
LEADS_CSV = ("lead_id,job_level,employees,industry,budget_stated,purchase_timeframe\n"
             "L1,vp,120,software,true,0-3 months\nL2,student,10,retail,false,12+ months\n")
NO_ENGAGEMENT = {"feature": "last_engagement_at", "text": "No email engagement for over 45 days", "contribution": -6}
L1_REASONS = [{"feature": "job_level", "text": "Senior role (vp)", "contribution": 12},
              {"feature": "budget_stated", "text": "Has a budget", "contribution": 10},
              {"feature": "purchase_timeframe", "text": "Plans to buy in 0-3 months", "contribution": 8},
              {"feature": "employees", "text": "120 employees", "contribution": 6},
              {"feature": "industry", "text": "Industry: software", "contribution": 5}, NO_ENGAGEMENT]
L2_REASONS = [{"feature": "job_level", "text": "Student", "contribution": -15}, NO_ENGAGEMENT,
              {"feature": "purchase_timeframe", "text": "Plans to buy in 12+ months", "contribution": -5}]


def test_a_batch_logged_score_reads_back_with_the_reasons_the_api_answers(
        tmp_path: Path, make_service: Callable[..., Service], database_url: str) -> None:
    cli_home = tmp_path / "cli"  # no model there: the cold-start rules score the file
    cli_home.mkdir()
    with Store(database_url) as store:
        store.upgrade()
    (cli_home / "leads.csv").write_text(LEADS_CSV)
    result = CliRunner().invoke(cli, ["score", "--data", str(cli_home / "leads.csv"), "--out",
                                      str(cli_home / "s.csv"), "--log", "--as-of", "2026-11-30"],
                                env={"LEADCAST_HOME": str(cli_home), "LEADCAST_DATABASE_URL": database_url})
    assert result.exit_code == 0, result.output
    # the file keeps its words-and-points columns, the same reasons as text
    scored = pd.read_csv(cli_home / "s.csv", keep_default_na=False)
    assert scored[["score", "reasons_negative"]].values.tolist() == [
        [39, "No email engagement for over 45 days: -6"],
        [0, "Student: -15; No email engagement for over 45 days: -6; Plans to buy in 12+ months: -5"]]
    assert "reasons" not in scored.columns  # the Reason objects go to the log only
    service = make_service(trained=False, database_url=database_url)
    try:
        for lead_id, score, reasons in (("L1", 39, L1_REASONS), ("L2", 0, L2_REASONS)):
            body = service.get(f"/v1/leads/{lead_id}/scores").get_json()
            assert [(s["score"], s["reasons"]) for s in body["scores"]] == [(score, reasons)]
            typed = ScoreHistoryResponse.model_validate(body).scores[0].reasons
            assert typed == [Reason(**r) for r in reasons]  # the scorer's own type, as the OpenAPI says
        # the live answer for L1 carries the same reasons, field names included
        lead = {"lead_id": "L1-live", "job_level": "vp", "employees": 120, "industry": "software",
                "budget_stated": True, "purchase_timeframe": "0-3 months"}
        live = service.post("/v1/leads/score", {"lead": lead, "as_of": "2026-11-30T00:00:00Z"}, who="score")
        assert live.status_code == 200, live.get_json()
        assert live.get_json()["scores"][0]["reasons"] == L1_REASONS
        component = build_openapi(max_batch=10, version="0")["components"]["schemas"]
        assert component["HistoryScore"]["properties"]["reasons"]["anyOf"][0] == {
            "items": {"$ref": "#/components/schemas/Reason"}, "type": "array"}
    finally:
        service.app.extensions["leadcast"].prediction_log.close()
        service.app.extensions["leadcast"].store.dispose()


# What `leadcast score --log` logged before reasons carried their field: its file columns parsed back,
# "Senior role (vp): +12; Notes: a; b: +3" and "Student: -15", split on "; " and at the last ": ", where the
# piece "Notes: a" of words that themselves held "; " had no points.
OLD_SHAPE = [{"text": "Senior role (vp)", "contribution": 12.0}, {"text": "Notes: a", "contribution": None},
             {"text": "b", "contribution": 3.0}, {"text": "Student", "contribution": -15.0}]


def test_a_score_logged_in_the_old_shape_still_reads(svc: Service) -> None:
    with svc.app.extensions["leadcast"].store.begin() as conn:
        for lead_id, reasons in (("OLD", OLD_SHAPE), ("NEW", L2_REASONS), ("NONE", None)):
            conn.execute(predictions.insert().values(
                lead_id=lead_id, scored_at=_now(), as_of=None, model_name=NAME, model_version="rules:default",
                model_kind="rules", probability=0.1, score=10, grade="D", reasons=reasons, features={}))
    old = svc.get("/v1/leads/OLD/scores")
    assert old.status_code == 200
    # no field was recorded: feature ""; the null piece joins the words after it, as the file said them
    assert old.get_json()["scores"][0]["reasons"] == [
        {"feature": "", "text": "Senior role (vp)", "contribution": 12.0},
        {"feature": "", "text": "Notes: a; b", "contribution": 3.0},
        {"feature": "", "text": "Student", "contribution": -15.0}]
    assert ScoreHistoryResponse.model_validate(old.get_json()).scores[0].reasons == [
        Reason("", "Senior role (vp)", 12.0), Reason("", "Notes: a; b", 3.0), Reason("", "Student", -15.0)]
    assert svc.get("/v1/leads/NEW/scores").get_json()["scores"][0]["reasons"] == L2_REASONS  # read as stored
    assert svc.get("/v1/leads/NONE/scores").get_json()["scores"][0]["reasons"] is None  # scored without reasons


def test_stored_reasons_reads_each_shape_in_one_place() -> None:
    assert stored_reasons(None) is None and stored_reasons([]) == []
    assert stored_reasons(L1_REASONS) is L1_REASONS  # the current shape is returned as it is, not copied
    # a trailing piece without points (never written so) keeps its words on the reason before it
    assert stored_reasons([{"text": "x", "contribution": 2.0}, {"text": "y", "contribution": None}]) == [
        {"feature": "", "text": "x; y", "contribution": 2.0}]


def test_a_trained_models_batch_reasons_are_the_apis_reasons(tmp_path: Path, trained_dir: Path,
                                                             sample_leads: pd.DataFrame) -> None:
    scorer = load_scorer(models_dir=trained_dir)
    assert scorer.kind == "model"
    records = lead_records(sample_leads, 70)  # more than one chunk of 64, and a Parquet output
    src = tmp_path / "leads.parquet"
    pd.DataFrame.from_records(records).to_parquet(src)
    seen: list[pd.DataFrame] = []
    score_file(src, tmp_path / "out.parquet", scorer=scorer, chunk_rows=64, as_of="2026-11-30",
               on_chunk=lambda raw, scored: seen.append(scored))
    assert [len(s) for s in seen] == [64, 6]
    logged = [r for s in seen for r in s[REASONS_COLUMN]]
    live = scorer.score_records([{**r, "as_of": "2026-11-30"} for r in records])  # as the API scores them
    assert logged == [s.reasons for s in live] and all(logged)
    written = pd.read_parquet(tmp_path / "out.parquet")
    assert REASONS_COLUMN not in written.columns
    # the file's text columns say the same reasons in words and points
    assert written["reasons_positive"].fillna("").tolist() == [
        "; ".join(str(r) for r in reasons if r.contribution > 0) for reasons in logged]
    assert written["reasons_negative"].fillna("").tolist() == [
        "; ".join(str(r) for r in reasons if r.contribution < 0) for reasons in logged]


@pytest.mark.slow
def test_a_first_score_while_postgresql_is_down_has_no_trend_and_trends_return_with_the_server(
        make_service: Callable[..., Service], sample_leads: pd.DataFrame) -> None:
    """The documented answer while the store is down: 200, trend and percentile null (docs/api.md); the cache
    miss is the driver's own lookup, whose psycopg error must become that answer, never a 500."""
    from tests.postgres import start_server

    server = start_server()
    if server is None:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) to start a server to stop")
    try:
        with Store(server.url) as store:
            store.upgrade()
        service = make_service(database_url=server.url, percentile_refresh_seconds=0)
        rt = service.app.extensions["leadcast"]
        # No pause after a fault, so the request right after the restart asks the store again; the percentiles'
        # distribution is loaded once, so a lead's lookup is the only question a request asks the store.
        rt.score_history = ScoreContext(rt.store, band_points=3, refresh_seconds=300, latest_seconds=30.0,
                                        outage_pause_seconds=0.0)
        lead = {**lead_records(sample_leads, 1)[0], "lead_id": "K"}
        known = _score(service, lead)
        assert known["trend"] == "new"  # the store was asked: K has no score yet
        server.stop()
        down = service.post("/v1/leads/score", {"lead": {**lead, "lead_id": "NEW-1"}}, who="score")
        assert down.status_code == 200, down.get_json()  # a lead this worker never scored: the lookup fails
        assert (down.get_json()["scores"][0]["trend"], down.get_json()["scores"][0]["percentile"]) == (None, None)
        server.start()
        after = _score(service, {**lead, "lead_id": "NEW-2"})  # the first lookup after the restart
        assert after["trend"] == "new"  # answered by the store, not nulled by a fault
        assert rt.prediction_log.flush(timeout=30)  # NEW-1's row, kept while the server was down, is written
        # A worker that never scored NEW-1 (an empty cache) reads its logged score from the store: same record,
        # same score, so the difference is 0 points: steady.
        rt.score_history = ScoreContext(rt.store, band_points=3, refresh_seconds=300, latest_seconds=30.0)
        back = _score(service, {**lead, "lead_id": "NEW-1"})
        assert (back["score"], back["trend"]) == (known["score"], "steady")
        rt.prediction_log.close()
        rt.store.dispose()
    finally:
        server.remove()
