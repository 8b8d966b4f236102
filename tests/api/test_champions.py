"""One champion per model name (issue 14 item 5): two specs trained in one home are two champions, each scoring
its own leads through `leadcast score --spec` and through the API's `?model=NAME`, each promoted and rolled back
on its own, each recorded under its own name in the prediction log.

The friction this guards against: a second dataset's model trained in the same home became a challenger of the
first one's champion (it cannot score the first dataset's leads), and `leadcast score` then failed with a wall of
missing columns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient

from api.app import create_app
from api.cli import cli
from api.settings import Settings
from api.stores import open_keys
from crmdata.loaders import write_table
from crmdata.synthetic import generate_leads
from scoring.artifacts import read_registry
from scoring.spec import DEFAULT_SPEC
from tests.api.conftest import lead_records

DEFAULT = "leadcast-lead-scoring"  # the home's registered model name: the default spec's models
SECOND = "web-signups"  # the second spec's `name`, so its models' name
FAST = "\n[model]\ncv = 3\nmax_iter = 20\n"  # few folds and trees: the names, not the models, are under test


def _ok(result: Any) -> str:
    assert result.exit_code == 0, result.output
    return str(result.output)


def _second_export(n: int, *, seed: int) -> pd.DataFrame:
    """Return sign-ups of another CRM: no field shared with the lead contract but the outcome's meaning."""
    rng = np.random.default_rng(seed)
    visits = rng.poisson(4, n)
    channel = rng.choice(["ads", "newsletter", "partner"], n)
    logit = -2.0 + 0.35 * visits + np.where(channel == "partner", 1.0, 0.0)
    won = rng.random(n) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame({"signup": [f"S{i}" for i in range(n)], "visits": visits, "channel": channel,
                         "won": np.where(won, "yes", "no")})


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LEADCAST_HOME", str(tmp_path))
    first = generate_leads(n=900, seed=5).leads
    write_table(first, tmp_path / "leads.csv")
    write_table(first.drop(columns=["converted", "converted_at"]).head(40), tmp_path / "leads-new.csv")
    second = _second_export(900, seed=6)
    write_table(second, tmp_path / "signups.csv")
    write_table(second.drop(columns=["won"]).head(30), tmp_path / "signups-new.csv")
    (tmp_path / "leads.toml").write_text(DEFAULT_SPEC.read_text() + FAST)
    (tmp_path / "signups.toml").write_text(
        f'name = "{SECOND}"\nid_column = "signup"\n[target]\ncolumn = "won"\npositive = ["yes"]\nnegative = ["no"]\n'
        '[[features]]\ncolumn = "visits"\nkind = "numeric"\ngroup = "engagement"\nlabel = "Visits"\n'
        '[[features]]\ncolumn = "channel"\nkind = "categorical"\ngroup = "behavioural"\nlabel = "Channel"\n'
        + FAST)
    return tmp_path


def _client(home: Path, *, who: str = "all", **overrides: Any) -> tuple[FlaskClient, dict[str, str], Any]:
    settings = Settings(home=home, **overrides)
    ring = open_keys(settings)
    with ring.store:
        key = ring.create(name=who, scopes=("score", "admin"))
    app = create_app(settings)
    return app.test_client(), {"Authorization": f"Bearer {key}"}, app.extensions["leadcast"]


def _aliases(folder: Path) -> tuple[dict[str, str], list[str]]:
    registry = read_registry(folder)
    return registry["aliases"], registry.get("champion_history", [])


@pytest.mark.slow
def test_two_specs_in_one_home_are_two_champions_each_scoring_its_own_leads(home: Path) -> None:
    runner = CliRunner()
    first = _ok(runner.invoke(cli, ["train", "--data", str(home / "leads.csv"), "--spec", str(home / "leads.toml")]))
    assert "version 1, aliases challenger, champion" in first
    second = _ok(runner.invoke(cli, ["train", "--data", str(home / "signups.csv"),
                                     "--spec", str(home / "signups.toml")]))
    # the friction: this model became the first one's challenger; now it is its own name's first champion
    assert f"'{SECOND}' version 1, aliases challenger, champion" in second
    assert "no champion yet: the first model becomes champion" in second
    models = home / "models"
    assert _aliases(models) == ({"challenger": "1", "champion": "1"}, ["1"])
    assert _aliases(models / SECOND) == ({"challenger": "1", "champion": "1"}, ["1"])
    assert sorted(read_registry(models)["versions"]) == ["1"]  # the second spec added no version to the first
    assert read_registry(models / SECOND)["name"] == SECOND
    assert _ok(runner.invoke(cli, ["models", "list"])).splitlines() == [
        f"{DEFAULT} (default): champion 1, challenger 1", f"{SECOND}: champion 1, challenger 1"]

    # The CLI: each spec's leads scored by its own name's champion (the default spec's without --spec).
    out = _ok(runner.invoke(cli, ["score", "--data", str(home / "leads-new.csv"), "--out", str(home / "a.csv")]))
    assert "scored 40 leads with model version 1 into" in out
    out = _ok(runner.invoke(cli, ["score", "--data", str(home / "signups-new.csv"), "--out", str(home / "b.csv"),
                                  "--spec", str(home / "signups.toml"), "--log"]))
    assert f"scored 30 leads with model '{SECOND}' version 1 into" in out and "logged 30 scores" in out
    scored = pd.read_csv(home / "b.csv")
    assert len(scored) == 30 and set(scored["model_version"].astype(str)) == {"1"}

    # The MLflow aliases are per name too.
    from mlflow import MlflowClient

    uri = f"sqlite:///{(home / 'mlflow.db').resolve()}"
    mlflow = MlflowClient(tracking_uri=uri, registry_uri=uri)

    def champion_in_mlflow(name: str) -> str:
        return str(mlflow.get_model_version_by_alias(name, "champion").version)

    assert (champion_in_mlflow(DEFAULT), champion_in_mlflow(SECOND)) == ("1", "1")

    # The API: ?model=NAME picks the name's champion, the default spec's without it.
    client, auth, rt = _client(home)
    leads = lead_records(generate_leads(n=900, seed=5).leads, 3)
    signups = [{"signup": "S1", "visits": 9, "channel": "partner"}, {"signup": "S2", "visits": 0, "channel": "ads"}]
    listed = client.get("/v1/models", headers=auth).json
    assert listed == {"default": DEFAULT, "models": [
        {"name": DEFAULT, "version": "1", "kind": "trained", "status": "ready"},
        {"name": SECOND, "version": "1", "kind": "trained", "status": "ready"}]}
    ready = client.get("/readyz").json
    assert ready["model"]["name"] == DEFAULT and [m["name"] for m in ready["models"]] == [DEFAULT, SECOND]
    body = {"leads": leads, "as_of": "2026-11-01T00:00:00Z"}  # one recency reference for both answers
    plain = client.post("/v1/leads/score", json=body, headers=auth)
    named = client.post(f"/v1/leads/score?model={DEFAULT}", json=body, headers=auth)
    assert plain.status_code == named.status_code == 200
    assert plain.json["model"] == named.json["model"] == {"name": DEFAULT, "version": "1", "kind": "trained"}
    assert [s["probability"] for s in plain.json["scores"]] == [s["probability"] for s in named.json["scores"]]
    other = client.post(f"/v1/leads/score?model={SECOND}", json={"leads": signups}, headers=auth)
    assert other.status_code == 200, other.json
    assert other.json["model"] == {"name": SECOND, "version": "1", "kind": "trained"}
    high, low = (s["probability"] for s in other.json["scores"])
    assert high > low  # 9 partner visits against none from ads: logit -2+3.15+1 = 2.15 against -2
    card = client.get(f"/v1/models/current?model={SECOND}", headers=auth).json
    assert card["model"]["name"] == SECOND and card["card"]["spec_name"] == SECOND

    # An unknown name is a 404 naming it and listing the known ones; a malformed one is a 422; neither a 500.
    unknown = client.post("/v1/leads/score?model=nope", json={"leads": signups}, headers=auth)
    assert unknown.status_code == 404 and unknown.json["error"]["code"] == "not_found"
    assert unknown.json["error"]["message"] == f"no model named 'nope'; the known models are {DEFAULT}, {SECOND}"
    assert unknown.json["error"]["details"] == [{"loc": ["query", "model"],
                                                  "msg": f"unknown model; known: {DEFAULT}, {SECOND}"}]
    for bad in ("../models", ".reload", ""):
        answer = client.get(f"/v1/models/current?model={bad}", headers=auth)
        assert (answer.status_code, answer.json["error"]["details"][0]["loc"]) == (422, ["query", "model"]), bad

    # Promotion of one name leaves the other alone: a forced v2 of the second spec.
    promoted = _ok(runner.invoke(cli, ["train", "--data", str(home / "signups.csv"),
                                       "--spec", str(home / "signups.toml"), "--force"]))
    assert f"'{SECOND}' version 2, aliases challenger, champion" in promoted
    assert _aliases(models / SECOND) == ({"challenger": "2", "champion": "2"}, ["1", "2"])
    assert _aliases(models) == ({"challenger": "1", "champion": "1"}, ["1"])
    assert (champion_in_mlflow(DEFAULT), champion_in_mlflow(SECOND)) == ("1", "2")
    reloaded = client.post(f"/v1/models/reload?model={SECOND}", headers=auth)
    assert reloaded.status_code == 200 and reloaded.json["model"] == {"name": SECOND, "version": "2",
                                                                      "kind": "trained"}
    assert reloaded.json["previous"] == {"name": SECOND, "version": "1", "kind": "trained"}
    again = client.post(f"/v1/leads/score?model={SECOND}", json={"leads": signups}, headers=auth).json
    assert again["model"]["version"] == "2"
    assert client.post("/v1/leads/score", json={"leads": leads}, headers=auth).json["model"]["version"] == "1"

    # Rollback of one name: the second goes back to v1, the default's champion and history are untouched.
    refused = runner.invoke(cli, ["models", "rollback"])
    assert refused.exit_code == 2 and "the only champion" in refused.output  # the default name has one champion
    rolled = _ok(runner.invoke(cli, ["models", "rollback", "--name", SECOND]))
    assert f"champion of '{SECOND}' is version 1 again (was 2)" in rolled and f"reload?model={SECOND}" in rolled
    assert _aliases(models / SECOND)[0]["champion"] == "1"
    assert _aliases(models) == ({"challenger": "1", "champion": "1"}, ["1"])
    assert (champion_in_mlflow(DEFAULT), champion_in_mlflow(SECOND)) == ("1", "1")
    missing = runner.invoke(cli, ["models", "rollback", "--name", "nope"])
    assert missing.exit_code == 2 and f"the known models are {DEFAULT}, {SECOND}" in missing.output
    everything = client.post("/v1/models/reload", headers=auth).json  # no ?model=: every name
    assert [(m["name"], m["version"]) for m in everything["models"]] == [(DEFAULT, "1"), (SECOND, "1")]

    # The prediction log, the history and the trend record each score under the name that made it.
    assert rt.prediction_log is not None
    rt.prediction_log.flush(timeout=10)
    history = client.get("/v1/leads/S1/scores", headers=auth).json["scores"]
    # newest first: the API's v2 score, the API's v1 score, then the CLI's --log batch (v1)
    assert [(h["model"]["name"], h["model"]["version"]) for h in history] == [(SECOND, "2"), (SECOND, "1"),
                                                                              (SECOND, "1")]
    lead_id = leads[0]["lead_id"]
    assert [h["model"]["name"] for h in client.get(f"/v1/leads/{lead_id}/scores", headers=auth).json["scores"]] \
        == [DEFAULT] * 3  # plain, ?model=DEFAULT, and after the second name's promotion
    latest = client.post(f"/v1/leads/score?model={SECOND}", json={"leads": signups}, headers=auth).json
    assert latest["model"]["version"] == "1" and latest["scores"][0]["trend"] is not None
    rt.prediction_log.close()
    rt.store.dispose()

    # Served from the MLflow registry (a replica), the names are the registered models leadcast tagged.
    from scoring.tracking import champion_names

    assert champion_names(tracking_uri=uri) == [DEFAULT, SECOND]
    replica, auth, rt = _client(home, who="replica", model_source="mlflow", prediction_log=False)
    assert [(m["name"], m["version"]) for m in replica.get("/v1/models", headers=auth).json["models"]] == [
        (DEFAULT, "1"), (SECOND, "1")]
    remote = replica.post(f"/v1/leads/score?model={SECOND}", json={"leads": signups}, headers=auth)
    assert remote.json["model"] == {"name": SECOND, "version": "1", "kind": "trained"}
    assert replica.post("/v1/leads/score?model=nope", json={"leads": signups}, headers=auth).status_code == 404
    rt.store.dispose()


def test_score_with_a_spec_that_has_no_model_uses_the_rules_not_another_names_champion(home: Path) -> None:
    runner = CliRunner()
    _ok(runner.invoke(cli, ["train", "--data", str(home / "leads.csv"), "--spec", str(home / "leads.toml")]))
    # Before one champion per name, this scored the sign-ups with the lead model: a wall of missing columns.
    result = runner.invoke(cli, ["score", "--data", str(home / "signups-new.csv"), "--out", str(home / "b.csv"),
                                 "--spec", str(home / "signups.toml")])
    # Now the sign-ups' name has no model, so the cold-start rules of that spec answer: they share no field
    # with these sign-ups and say so (exit 2), naming the sign-ups' fields rather than the lead model's.
    assert result.exit_code == 2, result.output
    assert "column is missing" not in result.output
    assert "none is shared: write rules for these fields" in result.output and "channel" in result.output


def _turned_signups(n_per_channel: int) -> pd.DataFrame:
    """Return sign-ups of a later period whose channels turned round, with outcomes fixed by row so every count
    is known by hand: of each channel's k = 0..n-1, ads converts unless k % 5 == 0 (4 in 5), the newsletter when
    k % 5 == 0 (1 in 5), partners when k % 10 == 0 (1 in 10). Rows interleave the channels (ads, newsletter,
    partner, ads, ...), so every slice of them, the gate's newest 20% included, holds each channel."""
    rows = []
    for k in range(n_per_channel):
        for channel, won in (("ads", k % 5 != 0), ("newsletter", k % 5 == 0), ("partner", k % 10 == 0)):
            rows.append({"signup": f"N{len(rows):05d}", "visits": k % 7, "channel": channel,
                         "won": "yes" if won else "no"})
    return pd.DataFrame(rows)


def _json(path: Path) -> Any:
    import json

    return json.loads(path.read_text())


@pytest.mark.slow
def test_monitor_and_retrain_of_one_name_read_and_change_that_name_only(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model health and the retrain loop per name (issue 14 item 5): two names each with a version 1 logged
    in one store; `monitor --model`, `?model=` and the gauges report each name's rows only, and `retrain --model`
    trains on that name's logged leads and promotes within that name."""
    import time

    from api.metrics import Metrics
    from api.monitoring import HealthRefresh

    maturity = 1 / 86_400  # one second: the logged leads mature while the test runs
    monkeypatch.setenv("LEADCAST_OUTCOME_MATURITY_DAYS", str(maturity))
    runner = CliRunner()
    _ok(runner.invoke(cli, ["train", "--data", str(home / "leads.csv"), "--spec", str(home / "leads.toml")]))
    _ok(runner.invoke(cli, ["train", "--data", str(home / "signups.csv"), "--spec", str(home / "signups.toml")]))
    models = home / "models"

    # The default name logs 40 leads, 10 of them converted (every fourth); the second name logs 1,200 sign-ups,
    # 400 per channel: 320 + 80 + 40 = 440 converted, 760 not.
    leads = generate_leads(n=900, seed=5).leads.head(40).copy()
    leads["converted"] = [i % 4 == 0 for i in range(40)]
    leads["converted_at"] = pd.NaT
    write_table(leads, home / "leads-outcomes.csv")
    turned = _turned_signups(400)
    assert (len(turned), int((turned["won"] == "yes").sum())) == (1200, 440)
    write_table(turned.drop(columns=["won"]), home / "turned-new.csv")
    write_table(turned, home / "turned-outcomes.csv")
    out = _ok(runner.invoke(cli, ["score", "--data", str(home / "leads-new.csv"), "--out", str(home / "a.csv"),
                                  "--log", "--no-reasons"]))
    assert "logged 40 scores" in out
    out = _ok(runner.invoke(cli, ["score", "--data", str(home / "turned-new.csv"), "--out", str(home / "b.csv"),
                                  "--spec", str(home / "signups.toml"), "--log", "--no-reasons"]))
    assert f"with model '{SECOND}' version 1" in out and "logged 1,200 scores" in out
    _ok(runner.invoke(cli, ["outcomes", "import", str(home / "leads-outcomes.csv")]))
    imported = _ok(runner.invoke(cli, ["outcomes", "import", str(home / "turned-outcomes.csv"),
                                       "--spec", str(home / "signups.toml")]))
    assert "read 1,200 outcomes from turned-outcomes.csv (440 converted, 760 not" in imported
    time.sleep(1.2)  # past the one-second maturity: the unconverted leads count as not converted

    # `leadcast monitor`: each name's champion over its own rows. Both are version 1; before names reached the
    # monitor, `--model web-signups` was read as a version of the default name and refused.
    out = _ok(runner.invoke(cli, ["monitor", "--model", SECOND, "--json", str(home / "b.json"),
                                  "--html", str(home / "b.html")]))
    assert f"model {SECOND}@1: 1,200 leads scored" in out
    report = _json(home / "b.json")
    assert (report["name"], report["version"], report["leads_scored"], report["rows_logged"],
            report["leads_matured"], report["leads_converted"]) == (SECOND, "1", 1200, 1200, 1200, 440)
    assert [f["column"] for f in report["features"]] and {f["column"] for f in report["features"]} <= {
        "visits", "channel"}  # the second spec's fields, none of the lead contract's
    assert report["outcomes"]["leads"] == 1200 and report["outcomes"]["base_rate"] == pytest.approx(440 / 1200)
    assert f"{SECOND}@1" in (home / "b.html").read_text(encoding="utf-8")
    _ok(runner.invoke(cli, ["monitor", "--model", f"{SECOND}@champion", "--json", str(home / "b1.json")]))
    assert _json(home / "b1.json")["leads_scored"] == 1200
    _ok(runner.invoke(cli, ["monitor", "--json", str(home / "a.json")]))  # no --model: the default name
    report = _json(home / "a.json")
    assert (report["model"], report["leads_scored"], report["leads_matured"], report["leads_converted"]) == (
        f"{DEFAULT}@1", 40, 40, 10)
    assert _json(home / "b1.json")["rows_logged"] + report["rows_logged"] == 1240  # every logged row, once
    # from a file, the same name's champion: all 1,200 rows have an outcome, 440 converted
    _ok(runner.invoke(cli, ["monitor", "--data", str(home / "turned-outcomes.csv"), "--model", SECOND,
                            "--json", str(home / "f.json")]))
    report = _json(home / "f.json")
    assert (report["model"], report["leads_scored"], report["outcomes"]["leads"]) == (f"{SECOND}@1", 1200, 1200)
    assert report["outcomes"]["base_rate"] == pytest.approx(440 / 1200)
    unknown = runner.invoke(cli, ["monitor", "--model", "nope"])
    assert unknown.exit_code == 2 and f"no model named 'nope': the known models are {DEFAULT}, {SECOND}" \
        in unknown.output
    for bad, says in (("../x", "cannot name a model"), ("@1", "is not NAME@VERSION"),
                      (f"{SECOND}@9", "no model '9'")):
        refused = runner.invoke(cli, ["monitor", "--model", bad])
        assert refused.exit_code == 2 and says in refused.output and "Traceback" not in refused.output, bad

    # The endpoint: `?model=` checked as the score endpoint checks it (404 listing the names, 422 malformed).
    client, auth, rt = _client(home, outcome_maturity_days=maturity)
    answer = client.get(f"/v1/models/monitoring?model={SECOND}", headers=auth)
    assert answer.status_code == 200, answer.json
    assert (answer.json["model"], answer.json["leads_scored"], answer.json["leads_converted"]) == (
        f"{SECOND}@1", 1200, 440)
    plain = client.get("/v1/models/monitoring", headers=auth).json
    assert (plain["model"], plain["leads_scored"], plain["leads_converted"]) == (f"{DEFAULT}@1", 40, 10)
    assert client.get("/v1/models/monitoring?model=1", headers=auth).json["model"] == f"{DEFAULT}@1"  # as before
    missing = client.get("/v1/models/monitoring?model=nope", headers=auth)
    assert missing.status_code == 404 and missing.json["error"]["message"] == \
        f"no model named 'nope'; the known models are {DEFAULT}, {SECOND}"
    for bad in ("../models", ".reload", "", "@1", f"{SECOND}@"):
        refused = client.get(f"/v1/models/monitoring?model={bad}", headers=auth)
        assert refused.status_code == 422 and refused.json["error"]["code"] == "invalid_input", bad
    assert client.get(f"/v1/models/monitoring?model={SECOND}@9", headers=auth).status_code == 404

    # The gauges: one refresh publishes both names' champions, each labelled by its name (both are version 1).
    metrics = Metrics()
    refresh = HealthRefresh(rt.settings, rt.store, metrics, every=300)
    assert refresh.refresh_once() and (refresh.runs, refresh.failures) == (1, 0)
    text = metrics.render().decode()
    for name in (DEFAULT, SECOND):
        assert f'leadcast_monitoring_alerts{{model_name="{name}",model_version="1"}}' in text, name
    assert f'leadcast_feature_psi{{feature="visits",model_name="{SECOND}",model_version="1"}}' in text
    assert f'leadcast_feature_psi{{feature="web_visits",model_name="{DEFAULT}",model_version="1"}}' in text

    # `leadcast retrain --model`: the second name's 1,200 logged leads only (not the default name's 40), its gate
    # the newest 20%: 1,200 - int(0.8 * 1,200) = 240 leads; the turned channels make v2 better beyond noise.
    refused = runner.invoke(cli, ["retrain", "--model", "nope"])
    assert refused.exit_code == 2 and f"the known models are {DEFAULT}, {SECOND}" in refused.output
    both = runner.invoke(cli, ["retrain", "--model", SECOND, "--spec", str(home / "signups.toml")])
    assert both.exit_code == 2 and "give --name or --spec, not both" in both.output
    # an export of a spec with no created-at column has no time order for the gate: refused, nothing written
    untimed = runner.invoke(cli, ["retrain", "--model", SECOND, "--mode", "retrain",
                                  "--data", str(home / "turned-outcomes.csv")])
    assert untimed.exit_code == 2 and "the spec names no created_at_column" in untimed.output, untimed.output
    assert "retrain" not in read_registry(models / SECOND)
    out = _ok(runner.invoke(cli, ["retrain", "--model", SECOND, "--mode", "retrain", "--if-due", "--every", "15d",
                                  "--json", str(home / "r.json")]))
    assert f"1,200 matured leads of '{SECOND}' from the store" in out
    decision = _json(home / "r.json")
    assert (decision["name"], decision["version"], decision["promoted"], decision["source"]) == (
        SECOND, "2", True, "the store")
    assert decision["gate"]["leads"] == 240 and decision["gate"]["interval"][1] < 0, decision["gate"]
    assert f"retrain: '{SECOND}' version 2, aliases challenger, champion" in out
    assert f"reload the service to serve it: POST /v1/models/reload?model={SECOND}" in out
    assert _aliases(models / SECOND) == ({"challenger": "2", "champion": "2"}, ["1", "2"])
    assert _aliases(models) == ({"challenger": "1", "champion": "1"}, ["1"])  # the default name is untouched
    assert sorted(read_registry(models)["versions"]) == ["1"] and "retrain" not in read_registry(models)
    # --if-due is per name: the second name's loop ran (--spec picks the same name), the default's never did
    again = _ok(runner.invoke(cli, ["retrain", "--spec", str(home / "signups.toml"), "--if-due", "--every", "15d"]))
    assert again.startswith(f"not due: the loop of '{SECOND}' last ran at") and "nothing done" in again

    # Served after a reload, the second name's champion is v2: it has logged nothing yet; v1's rows stay v1's.
    assert client.post(f"/v1/models/reload?model={SECOND}", headers=auth).status_code == 200
    now = client.get(f"/v1/models/monitoring?model={SECOND}", headers=auth).json
    assert (now["model"], now["leads_scored"], now["warnings"]) == (
        f"{SECOND}@2", 0, ["no score of version 2 is logged in this window"])
    assert client.get(f"/v1/models/monitoring?model={SECOND}@1", headers=auth).json["leads_scored"] == 1200
    rt.prediction_log.close()
    rt.store.dispose()


@pytest.mark.parametrize(("ref", "parts"), [
    (None, (None, None)), ("web-signups", ("web-signups", None)), ("web-signups@3", ("web-signups", "3")),
    ("web-signups@champion", ("web-signups", "champion")), ("3", (None, "3")), ("challenger", (None, "challenger")),
    ("2024@champion", ("2024", "champion")),  # a name that looks like a version is written NAME@ALIAS
])
def test_a_monitored_model_is_a_name_a_version_or_both(ref: str | None, parts: tuple[str | None, str | None]) -> None:
    from api.monitoring import split_model_ref

    assert split_model_ref(ref) == parts


def test_the_retrain_gate_orders_a_spec_without_time_by_the_stores_first_scores(home: Path) -> None:
    """The second spec names no created-at column; the store knows when each lead was first scored, and the
    retrain loop from the store gates on the newest 20% by that time."""
    from scoring.retraining import GateError, _split
    from scoring.spec import load_spec

    spec = load_spec(home / "signups.toml")
    assert spec.created_at_column is None
    # 100 sign-ups scored one minute apart, newest first in the frame; outcomes alternate yes, no
    frame = pd.DataFrame({"signup": [f"S{i}" for i in range(100)], "visits": 1, "channel": "ads",
                          "won": ["yes" if i % 2 == 0 else "no" for i in range(100)],
                          "created_at": pd.date_range("2026-11-01", periods=100, freq="min")[::-1]})
    older, gate, y_gate, gate_from = _split(frame, spec=spec, time_column="created_at")
    # the newest 20% = ceil(0.2 * 100) = 20 rows: the first 20 of the frame (S0..S19), 10 yes and 10 no
    assert sorted(gate["signup"], key=lambda s: int(s[1:])) == [f"S{i}" for i in range(20)] and len(older) == 80
    assert int(y_gate.sum()) == 10 and gate_from == "2026-11-01 01:20:00"  # S19 = 00:00 + (99 - 19) minutes
    with pytest.raises(GateError, match="the spec names no created_at_column"):
        _split(frame, spec=spec)


def test_the_gauges_refresh_every_name_and_stop_a_round_at_a_store_that_is_down(
        tmp_path: Path, trained_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Two names (the fixture's model copied under a second name) and an empty store: one refresh gauges both
    names' champions with no leads logged (0 alerts each); a store that is down fails the round once, not once per
    name, and a name on the cold-start rules is skipped without a failure."""
    import shutil

    from api.metrics import Metrics
    from api.monitoring import HealthRefresh
    from store import Store

    models = tmp_path / "models"
    shutil.copytree(trained_dir, models)
    shutil.copytree(trained_dir, models / SECOND)
    settings = Settings(home=tmp_path, models_dir=models)
    metrics = Metrics()
    with Store(settings.resolved_database_url) as store:
        store.upgrade()
        refresh = HealthRefresh(settings, store, metrics, every=300)
        assert refresh.refresh_once()
    text = metrics.render().decode()
    for name in (DEFAULT, SECOND):
        assert f'leadcast_monitoring_alerts{{model_name="{name}",model_version="1"}} 0.0' in text, name
    down = Store("postgresql+psycopg://leadcast@127.0.0.1:1/leadcast")  # nothing listens on port 1
    refresh = HealthRefresh(settings, down, Metrics(), every=300)
    with caplog.at_level("WARNING", logger="leadcast.api.monitoring"):
        assert not refresh.refresh_once()
    assert (refresh.runs, refresh.failures) == (1, 1)
    assert sum("model-health gauges not refreshed" in r.getMessage() for r in caplog.records) == 1
    down.dispose()
    # the default name on the rules (no registry of its own), the second name trained: only the second is gauged
    (models / "registry.json").unlink()
    metrics = Metrics()
    with Store(settings.resolved_database_url) as store:
        refresh = HealthRefresh(settings, store, metrics, every=300)
        assert refresh.refresh_once() and refresh.failures == 0
    text = metrics.render().decode()
    assert f'model_name="{SECOND}"' in text and f'model_name="{DEFAULT}"' not in text
