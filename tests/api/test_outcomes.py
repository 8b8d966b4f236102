from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from api.cli import cli
from api.stores import open_store
from store.outcomes import Outcome, read_outcomes
from tests.api.conftest import Service


def _stored(service: Service, *ids: str) -> dict[str, Outcome]:
    return read_outcomes(service.app.extensions["leadcast"].store, lead_ids=list(ids))


def test_outcomes_are_upserted_idempotently(store_service: Service) -> None:
    body = {"outcomes": [{"lead_id": "L1", "converted": True, "converted_at": "2026-11-05T10:00:00+01:00"},
                         {"lead_id": "L2", "converted": False}]}
    first = store_service.post("/v1/leads/outcomes", body, who="outcomes")
    assert first.status_code == 200, first.get_json()
    assert first.get_json() == {"received": 2, "inserted": 2, "updated": 0, "unchanged": 0}
    again = store_service.post("/v1/leads/outcomes", body, who="outcomes")
    assert again.get_json() == {"received": 2, "inserted": 0, "updated": 0, "unchanged": 2}
    changed = store_service.post("/v1/leads/outcomes", {"outcomes": [{"lead_id": "L2", "converted": True}]},
                                 who="outcomes")
    assert changed.get_json() == {"received": 1, "inserted": 0, "updated": 1, "unchanged": 0}
    # 10:00+01:00 is stored as 09:00 UTC
    assert _stored(store_service, "L1", "L2") == {"L1": Outcome("L1", True, datetime(2026, 11, 5, 9)),
                                                  "L2": Outcome("L2", True, None)}


def test_outcomes_need_their_own_scope(store_service: Service) -> None:
    body = {"outcomes": [{"lead_id": "L1", "converted": True}]}
    refused = store_service.post("/v1/leads/outcomes", body, who="score")
    assert refused.status_code == 403 and "'outcomes' scope" in refused.get_json()["error"]["message"]
    assert store_service.client.post("/v1/leads/outcomes", json=body).status_code == 401
    assert _stored(store_service, "L1") == {}


def test_bad_outcomes_are_refused_naming_the_row_and_field(service: Service) -> None:
    cases = [
        ({"outcomes": [{"lead_id": "L1", "converted": True}, {"lead_id": "L2", "converted": "yes"}]},
         ["outcomes", 1, "converted"]),
        ({"outcomes": [{"lead_id": "L1", "converted": False, "converted_at": "2026-11-05"}]}, ["outcomes", 0]),
        ({"outcomes": [{"lead_id": "", "converted": True}]}, ["outcomes", 0, "lead_id"]),
        ({"outcomes": [{"lead_id": "L1", "converted": True, "converted_at": "3000-01-01"}]},
         ["outcomes", 0, "converted_at"]),
        ({"outcomes": [{"lead_id": "L1", "converted": True, "stage": "won"}]}, ["outcomes", 0, "stage"]),
        ({"outcomes": []}, ["outcomes"]),
    ]
    for body, loc in cases:
        response = service.post("/v1/leads/outcomes", body, who="outcomes")
        assert response.status_code == 422, (body, response.get_json())
        assert loc in [d["loc"] for d in response.get_json()["error"]["details"]], response.get_json()
    assert _stored(service, "L1", "L2") == {}


def test_the_batch_limit_applies_to_outcomes(make_service: Callable[..., Service]) -> None:
    service = make_service(max_batch=2)
    body = {"outcomes": [{"lead_id": f"L{i}", "converted": True} for i in range(3)]}
    response = service.post("/v1/leads/outcomes", body, who="outcomes")
    assert response.status_code == 422 and response.get_json()["error"]["message"] == "at most 2 outcomes per request"


def test_outcomes_import_reads_a_crm_export_by_the_spec_and_can_run_again(tmp_path: Path,
                                                                         database_url: str) -> None:
    export = tmp_path / "leads.csv"
    pd.DataFrame({
        "lead_id": ["A", "B", "C", "D"],
        "converted": ["yes", "false", "", "1"],  # the default spec: yes/1/true converted, no/0/false not
        "converted_at": ["2026-11-05T10:00:00Z", "", "", ""],
        "source": ["web", "ads", "web", "ads"],
    }).to_csv(export, index=False)
    env = {"LEADCAST_DATABASE_URL": database_url, "LEADCAST_HOME": str(tmp_path)}
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"], env=env).exit_code == 0
    first = runner.invoke(cli, ["outcomes", "import", str(export)], env=env)
    assert first.exit_code == 0, first.output
    assert "read 3 outcomes from leads.csv (2 converted, 1 not; 1 undecided rows left out)" in first.output
    assert "3 new, 0 changed, 0 unchanged" in first.output
    again = runner.invoke(cli, ["outcomes", "import", str(export)], env=env)
    assert "0 new, 0 changed, 3 unchanged" in again.output
    from api.settings import load_settings

    with open_store(load_settings(database_url=database_url)) as store:
        assert read_outcomes(store, lead_ids=["A", "B", "C", "D"]) == {
            "A": Outcome("A", True, datetime(2026, 11, 5, 10)), "B": Outcome("B", False),
            "D": Outcome("D", True)}


def test_outcomes_import_names_each_bad_row_and_stores_nothing(tmp_path: Path) -> None:
    export = tmp_path / "leads.csv"
    pd.DataFrame({"lead_id": ["A", "", "C", "D"], "converted": ["yes", "no", "maybe", "no"],
                  "converted_at": ["", "", "", "2026-11-05"]}).to_csv(export, index=False)
    env = {"LEADCAST_HOME": str(tmp_path)}
    result = CliRunner().invoke(cli, ["outcomes", "import", str(export)], env=env)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "row 2, field 'lead_id': is empty; every outcome needs a lead id" in result.output
    assert "row 3, field 'converted': is not true or false (true/1/yes or false/0/no) (value 'maybe')" \
        in result.output
    assert "row 4, field 'converted_at': set on a lead that did not convert" in result.output
    missing = tmp_path / "no-target.csv"
    pd.DataFrame({"lead_id": ["A"]}).to_csv(missing, index=False)
    result = CliRunner().invoke(cli, ["outcomes", "import", str(missing)], env=env)
    assert result.exit_code == 2 and "field 'converted': column is missing (the target column)" in result.output
    from api.settings import load_settings

    with open_store(load_settings(home=tmp_path)) as store:
        assert read_outcomes(store, lead_ids=["A", "C", "D"]) == {}
