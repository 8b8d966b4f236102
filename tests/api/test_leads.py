"""POST /v1/leads/score: shapes, outputs, and every way a request can be refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from scoring.scorer import load_scorer
from tests.api.conftest import Service, lead_records

AS_OF = "2026-07-01T00:00:00"


def grade_of(p: float) -> str:
    # The default spec's cut-offs: A >= 0.60, B >= 0.35, C >= 0.15, else D.
    return "A" if p >= 0.60 else "B" if p >= 0.35 else "C" if p >= 0.15 else "D"


def test_one_lead_gets_probability_score_grade_reasons_and_the_model(
    service: Service, sample_leads: pd.DataFrame, trained_dir: Path
) -> None:
    record = lead_records(sample_leads, 1)[0]
    response = service.post("/v1/leads/score", {"lead": record, "as_of": AS_OF})
    assert response.status_code == 200, response.json
    body = response.json
    assert body["model"] == {"name": "leadcast-lead-scoring", "version": "1", "kind": "trained"}
    assert body["warnings"] == []
    [item] = body["scores"]
    assert item["id"] == record["lead_id"]
    # The API answers exactly what the library's scorer answers for the same lead and time.
    [expected] = load_scorer(None, models_dir=trained_dir).score_records([{**record, "as_of": AS_OF}])
    assert item["probability"] == pytest.approx(expected.probability, abs=1e-12)
    assert item["score"] == round(item["probability"] * 100)
    assert item["grade"] == grade_of(item["probability"])
    assert 1 <= len(item["reasons"]) <= 10
    assert {"feature", "text", "contribution"} <= set(item["reasons"][0])
    assert "predictions" not in body


def test_a_batch_keeps_request_order_and_matches_single_calls(service: Service, sample_leads: pd.DataFrame) -> None:
    records = lead_records(sample_leads, 80)  # over 64: the batch takes the frame path, singles the fast path
    batch = service.post("/v1/leads/score", {"leads": records, "as_of": AS_OF}).json["scores"]
    assert [s["id"] for s in batch] == [r["lead_id"] for r in records]
    for i in (0, 41, 79):
        single = service.post("/v1/leads/score", {"lead": records[i], "as_of": AS_OF}).json["scores"][0]
        assert single["probability"] == pytest.approx(batch[i]["probability"], abs=1e-9)
        assert single["reasons"] == batch[i]["reasons"]


def test_mlflow_shapes_answer_like_leadcast_and_add_predictions(service: Service, sample_leads: pd.DataFrame) -> None:
    records = [{**r, "as_of": AS_OF} for r in lead_records(sample_leads, 3)]
    ours = service.post("/v1/leads/score", {"leads": records}).json
    columns = sorted({k for r in records for k in r})
    split = {"columns": columns, "data": [[r.get(c) for c in columns] for r in records]}
    for body in ({"dataframe_records": records}, {"dataframe_split": split}):
        theirs = service.post("/v1/leads/score", body).json
        p = [s["probability"] for s in ours["scores"]]
        assert [s["probability"] for s in theirs["scores"]] == pytest.approx(p, abs=1e-12)
        # MLflow's predict_proba shape: [P(not converted), P(converted)] per row.
        flat = [v for pair in theirs["predictions"] for v in pair]
        assert flat == pytest.approx([v for q in p for v in (1 - q, q)], abs=1e-12)


def test_reasons_can_be_skipped_in_the_body_or_the_query(service: Service, sample_leads: pd.DataFrame) -> None:
    record = lead_records(sample_leads, 1)[0]
    with_reasons = service.post("/v1/leads/score", {"lead": record, "as_of": AS_OF}).json["scores"][0]
    for response in (service.post("/v1/leads/score", {"lead": record, "as_of": AS_OF, "reasons": False}),
                     service.post("/v1/leads/score?reasons=false", {"lead": record, "as_of": AS_OF})):
        item = response.json["scores"][0]
        assert "reasons" not in item
        assert item["probability"] == pytest.approx(with_reasons["probability"], abs=1e-12)


def test_the_reasons_query_parameter_is_a_strict_boolean(service: Service) -> None:
    response = service.post("/v1/leads/score?reasons=perhaps", {"lead": {"lead_id": "a"}})
    assert response.status_code == 422
    assert response.json["error"]["details"] == [{"loc": ["query", "reasons"],
                                                  "msg": "expected true or false, got 'perhaps'"}]


def test_an_unseen_category_is_warned_on_that_lead_only(service: Service, sample_leads: pd.DataFrame) -> None:
    first, second = lead_records(sample_leads, 2)
    second = {**second, "source": "Carrier pigeon"}
    response = service.post("/v1/leads/score", {"leads": [first, second], "as_of": AS_OF})
    assert response.status_code == 200, response.json
    known, unseen = response.json["scores"]
    assert "warnings" not in known  # absent when there is nothing to say: answers stay as they were
    assert unseen["warnings"] == ["Source: 'Carrier pigeon' was not seen in training (or too rarely); scored as "
                                  "'other'"]


def test_unknown_fields_are_ignored_and_listed_missing_ones_scored_as_missing(service: Service) -> None:
    response = service.post("/v1/leads/score", {"leads": [{"lead_id": "x1", "favourite_colour": "teal"},
                                                          {"lead_id": "x2", "shoe_size": 44}]})
    assert response.status_code == 200
    assert response.json["warnings"] == ["ignored unknown field 'favourite_colour'",
                                         "ignored unknown field 'shoe_size'"]
    scores = response.json["scores"]
    # Identical known fields (none): identical scores.
    assert scores[0]["probability"] == scores[1]["probability"]


def test_an_invalid_record_refuses_the_whole_batch_naming_index_and_field(service: Service) -> None:
    leads = [{"lead_id": "a", "web_visits": 3}, {"lead_id": "b", "web_visits": "many"},
             {"lead_id": "c", "employees": "1e400"}]
    response = service.post("/v1/leads/score", {"leads": leads})
    assert response.status_code == 422
    error = response.json["error"]
    assert error["code"] == "invalid_input"
    assert "nothing was scored" in error["message"]
    assert {"loc": ["leads", 1, "web_visits"], "msg": "is not a number (value 'many')"} in error["details"]
    assert {"loc": ["leads", 2, "employees"],
            "msg": "is not a finite number (NaN and Infinity are refused) (value '1e400')"} in error["details"]
    single = service.post("/v1/leads/score", {"lead": {"lead_id": "a", "demo_requested": "perhaps"}})
    assert single.status_code == 422
    assert single.json["error"]["details"][0]["loc"] == ["lead", "demo_requested"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({}, []),  # no shape at all
        ({"lead": {"lead_id": "a"}, "leads": [{"lead_id": "b"}]}, []),  # two shapes
        ({"leads": []}, ["leads"]),
        ({"leads": "a"}, ["leads"]),
        ({"lead": {"lead_id": "a"}, "colour": 1}, ["colour"]),
        ({"dataframe_split": {"columns": ["lead_id", "age"], "data": [["a"]]}}, ["dataframe_split"]),
        ({"lead": {"lead_id": "a"}, "as_of": "last tuesday"}, ["as_of"]),
    ],
)
def test_bodies_that_break_the_schema_are_422_naming_the_field(service: Service, body: object, loc: list[str]) -> None:
    response = service.post("/v1/leads/score", body)
    assert response.status_code == 422
    assert response.json["error"]["code"] == "invalid_input"
    assert response.json["error"]["details"][0]["loc"][:len(loc)] == loc


def test_a_batch_over_the_limit_is_refused(make_service: Callable[..., Service]) -> None:
    service = make_service(max_batch=3)
    response = service.post("/v1/leads/score", {"leads": [{"lead_id": str(i)} for i in range(4)]})
    assert response.status_code == 422
    assert response.json["error"]["message"] == "at most 3 leads per request"
    assert service.post("/v1/leads/score", {"leads": [{"lead_id": str(i)} for i in range(3)]}).status_code == 200


def test_malformed_json_wrong_type_and_oversized_bodies(make_service: Callable[..., Service]) -> None:
    service = make_service(max_body_bytes=2_000)
    h = {**service.headers(), "Content-Type": "application/json"}
    for raw in (b'{"lead": {', b'{"lead": {"lead_id": "a", "age": NaN}}', b"\xff\xfe"):
        bad = service.client.post("/v1/leads/score", data=raw, headers=h)
        assert (bad.status_code, bad.json["error"]["code"]) == (400, "malformed_json")
    text = service.client.post("/v1/leads/score", data=b"lead_id=a", headers={**service.headers(),
                                                                             "Content-Type": "text/plain"})
    assert (text.status_code, text.json["error"]["code"]) == (415, "unsupported_media_type")
    big = service.post("/v1/leads/score", {"leads": [{"lead_id": f"lead-{i}"} for i in range(200)]})
    assert (big.status_code, big.json["error"]["code"]) == (413, "payload_too_large")


def test_keys_are_required_and_scoped(service: Service) -> None:
    body = {"lead": {"lead_id": "a"}}
    none = service.client.post("/v1/leads/score", json=body)
    assert (none.status_code, none.json["error"]["code"]) == (401, "unauthorized")
    assert none.headers["WWW-Authenticate"].startswith("Bearer")
    forged = service.client.post("/v1/leads/score", json=body, headers={"Authorization": "Bearer lc_0123456789ab_"
                                                                                           + "x" * 43})
    assert forged.status_code == 401
    wrong_scope = service.post("/v1/leads/score", body, who="forecast")
    assert (wrong_scope.status_code, wrong_scope.json["error"]["message"]) == (
        403, "this API key lacks the 'score' scope")
    assert service.post("/v1/leads/score", body, who="score").status_code == 200


def test_each_key_is_rate_limited_alone(make_service: Callable[..., Service]) -> None:
    # A burst of 2 and 1 request a minute: the third call at once finds the bucket empty for about 60 s.
    service = make_service(rate_limit_burst=2, rate_limit_per_minute=1)
    body = {"lead": {"lead_id": "a"}}
    assert [service.post("/v1/leads/score", body, who="score").status_code for _ in range(2)] == [200, 200]
    limited = service.post("/v1/leads/score", body, who="score")
    assert (limited.status_code, limited.json["error"]["code"]) == (429, "rate_limited")
    assert 55 <= int(limited.headers["Retry-After"]) <= 60
    assert service.post("/v1/leads/score", body, who="all").status_code == 200  # another key has its own bucket


def test_cold_start_serves_the_rules_with_kind_rules(make_service: Callable[..., Service]) -> None:
    service = make_service(trained=False)
    body = service.post("/v1/leads/score", {"lead": {"lead_id": "a", "demo_requested": True}}).json
    assert body["model"]["kind"] == "rules"
    assert body["model"]["version"] == "rules:default"
    assert "Requested a demo" in [r["text"] for r in body["scores"][0]["reasons"]]


def test_a_registered_champion_that_cannot_load_is_503_not_the_rules(
    make_service: Callable[..., Service], tmp_path: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "registry.json").write_text('{"versions": {"1": {"file": "gone.joblib"}}, "aliases": {"champion": "1"}}')
    service = make_service(trained=False)
    response = service.post("/v1/leads/score", {"lead": {"lead_id": "a"}})
    assert (response.status_code, response.json["error"]["code"]) == (503, "unavailable")
    assert service.client.get("/readyz").status_code == 503
    assert service.client.get("/healthz").status_code == 200
    assert str(tmp_path) not in response.get_data(as_text=True)  # no internal paths leak


def _deep(levels: int) -> list[object]:
    value: list[object] = []
    for _ in range(levels):
        value = [value]
    return value


# One tricky field per lead; `None` means the lead is valid. Each lead must be judged the same whatever the
# batch around it: alone (the per-record path), in 64 (the per-record path) or 65 and 200 (the frame path).
TRICKY: list[tuple[dict[str, object], list[tuple[str, str]] | None]] = [
    ({"email_opens": True}, [("email_opens", "is not a number (value 'True')")]),
    ({"created_at": "2026-13-01"}, [("created_at", "is not a date (ISO 8601, e.g. 2024-03-01 or "
                                                   "2024-03-01T10:00:00+02:00) (value '2026-13-01')")]),
    ({"demo_requested": "maybe"}, [("demo_requested", "is not true or false (true/t/yes or false/f/no) "
                                                      "(value 'maybe')")]),
    ({"web_visits": -5}, [("web_visits", "is negative; it must be 0 or more (value '-5')")]),
    ({"annual_revenue": "inf"}, [("annual_revenue", "is not a finite number (NaN and Infinity are refused) "
                                                    "(value 'inf')")]),
    ({"industry": "x" * 1_000_000}, [("industry", "is longer than 1,000 characters (the limit) (value '"
                                      + "x" * 60 + "... (1,000,000 characters)')")]),
    ({"industry": [1, 2]}, [("industry", "is a list; expected text (value '[...]')")]),
    ({"country": {"a": 1}}, [("country", "is an object; expected text (value '{...}')")]),
    ({"web_visits": _deep(200)}, [("web_visits", "is a list; expected a number (value '[...]')")]),
    ({"last_activity_at": "0001-01-01T00:00:00+02:00"},
     [("last_activity_at", "is a date outside 1677-09-22 to 2262-04-11, the dates leadcast handles "
                           "(value '0001-01-01T00:00:00+02:00')")]),
    ({"last_activity_at": "9999-12-31"},
     [("last_activity_at", "is a date outside 1677-09-22 to 2262-04-11, the dates leadcast handles "
                           "(value '9999-12-31')")]),
    ({"as_of": "9999-12-31T23:59:59+14:00"},
     [("as_of", "is a date outside 1677-09-22 to 2262-04-11, the dates leadcast handles "
                "(value '9999-12-31T23:59:59+14:00')")]),
    ({"lead_id": ""}, [("lead_id", "is empty; every lead needs an id")]),
    ({"demo_requested": 2}, [("demo_requested", "is not true or false (true/t/yes or false/f/no) (value '2')")]),
    ({"last_activity_at": "2026-06-30T12:00:00+02:00"}, None),
    ({"demo_requested": " YES "}, None),
    ({"employees": " 12 ", "industry": 3}, None),
    ({"budget_amount": "-0", "industry": 3.0}, None),
]


def _problems_by_lead(response: Any, n: int) -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = [[] for _ in range(n)]
    if response.status_code == 422:
        for d in response.json["error"]["details"]:
            index = 0 if d["loc"][0] == "lead" else d["loc"][1]
            out[index].append((d["loc"][-1], d["msg"]))
    return out


def test_each_lead_is_judged_alike_in_batches_of_1_64_65_and_200(service: Service, sample_leads: pd.DataFrame) -> None:
    fillers = lead_records(sample_leads, 200)
    tricky = [{**fillers[i], **change} for i, (change, _) in enumerate(TRICKY)]
    expected = [problems or [] for _, problems in TRICKY]
    alone = []
    for lead, want in zip(tricky, expected, strict=True):
        response = service.post("/v1/leads/score", {"lead": lead, "as_of": AS_OF})
        assert response.status_code == (422 if want else 200), (lead.get("lead_id"), response.json)
        alone.append(_problems_by_lead(response, 1)[0])
    assert alone == expected
    for size in (64, 65, 200):
        batch = tricky + fillers[len(tricky):size]
        response = service.post("/v1/leads/score", {"leads": batch, "as_of": AS_OF})
        assert response.status_code == 422
        assert _problems_by_lead(response, size) == expected + [[] for _ in range(size - len(tricky))], size
    valid = [lead for lead, want in zip(tricky, expected, strict=True) if not want]
    scored = [service.post("/v1/leads/score", {"leads": valid + fillers[len(valid):size], "as_of": AS_OF})
              for size in (1, 64, 65, 200)]
    assert [r.status_code for r in scored] == [200] * 4
    for i in range(len(valid)):
        first = scored[1].json["scores"][i]
        for r in scored[2:]:
            assert r.json["scores"][i]["probability"] == pytest.approx(first["probability"], abs=1e-9)
            assert r.json["scores"][i]["reasons"] == first["reasons"]


def test_a_body_level_as_of_keeps_its_offset(service: Service, sample_leads: pd.DataFrame) -> None:
    records = lead_records(sample_leads, 3)
    for lead in (records[:1], records):
        shifted = service.post("/v1/leads/score", {"leads": lead, "as_of": "2026-07-01T12:00:00+02:00"}).json
        utc = service.post("/v1/leads/score", {"leads": lead, "as_of": "2026-07-01T10:00:00Z"}).json
        naive = service.post("/v1/leads/score", {"leads": lead, "as_of": "2026-07-01T12:00:00"}).json
        # The same scores; only the trend moves (the second request's previous score is the first's).
        assert [{**s, "trend": None} for s in shifted["scores"]] == [{**s, "trend": None} for s in utc["scores"]]
        # Two hours of recency move some probability: the offset is not ignored.
        assert [s["probability"] for s in shifted["scores"]] != [s["probability"] for s in naive["scores"]]


@pytest.mark.parametrize("as_of", ["0001-01-01T00:00:00+02:00", "0001-01-01T00:00:00", "9999-12-31T23:59:59-05:00",
                                   "9999-12-31T00:00:00"])
def test_a_body_level_as_of_out_of_range_is_a_422_naming_it(service: Service, sample_leads: pd.DataFrame,
                                                            as_of: str) -> None:
    for leads in (lead_records(sample_leads, 1), lead_records(sample_leads, 65)):
        response = service.post("/v1/leads/score", {"leads": leads, "as_of": as_of})
        assert response.status_code == 422, response.json
        assert response.json["error"]["details"] == [
            {"loc": ["as_of"], "msg": "is a date outside 1677-09-22 to 2262-04-11, the dates leadcast handles"}]


def test_an_array_1000_levels_deep_is_a_422_naming_the_field(service: Service, sample_leads: pd.DataFrame) -> None:
    lead = lead_records(sample_leads, 1)[0]
    raw = json.dumps({"lead": {**lead, "web_visits": 0}})
    body = raw.replace('"web_visits": 0', '"web_visits": ' + "[" * 1_000 + "]" * 1_000)
    for text in (body, body.replace('{"lead": ', '{"leads": [' ).removesuffix("}") + "]}"):
        response = service.client.post("/v1/leads/score", data=text, content_type="application/json",
                                       headers=service.headers("all"))
        assert response.status_code == 422, response.json
        assert response.json["error"]["details"][0]["loc"][-1] == "web_visits"


def test_a_misspelt_query_parameter_is_refused_naming_it(service: Service, sample_leads: pd.DataFrame) -> None:
    # ?reason=false (for reasons) was ignored and every reason sent; schemathesis sent ?=0 and got a 200.
    body = {"leads": lead_records(sample_leads, 1)}
    answer = service.post("/v1/leads/score?reason=false", body)
    assert answer.status_code == 422
    assert answer.json["error"]["message"] == "unknown query parameter(s); use reasons and model"
    assert answer.json["error"]["details"] == [{"loc": ["query", "reason"], "msg": "unknown query parameter"}]
    assert service.post("/v1/leads/score?reasons=false&model=leadcast-lead-scoring", body).status_code == 200
