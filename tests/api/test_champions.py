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
