from __future__ import annotations

import pickle
from pathlib import Path

import pandas as pd
import pytest

from crmdata.errors import DataValidationError, Problem
from crmdata.loaders import load_leads, load_pipeline, load_stage_history, write_table
from crmdata.mapping import ColumnMapping

HEADER = "opportunity_id,owner,product,amount,created_at,stage,closed_at,won_amount\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def problems_of(exc: pytest.ExceptionInfo[DataValidationError]) -> set[tuple[int | None, str, str]]:
    return {(p.row, p.field, p.code) for p in exc.value.problems}


def test_valid_opportunities_are_typed_and_get_an_outcome(tmp_path: Path) -> None:
    csv = write(tmp_path / "opps.csv", HEADER + (
        "A1,Ann,Core,1000,2026-01-05,won,2026-02-01,1200\n"
        "A2,Bob,Core,500.5,2026-01-06,lost,2026-01-20,0\n"
        "A3,Ann,Lite,,2026-01-07,proposal,,\n"
    ))
    pipeline = load_pipeline(csv)
    frame = pipeline.opportunities
    assert list(frame["outcome"]) == ["won", "lost", "open"]
    assert frame["amount"].tolist()[:2] == [1000.0, 500.5]
    assert pd.isna(frame["amount"].iloc[2])
    # won_amount of the won deal (1200) is kept apart from its expected amount (1000).
    assert frame["won_amount"].iloc[0] == 1200.0
    assert frame["created_at"].iloc[0] == pd.Timestamp("2026-01-05")
    assert frame["closed_at"].dtype == "datetime64[ns]"
    # Optional contract columns the file lacks are present and empty.
    assert frame["team"].isna().all()


def test_every_problem_is_reported_with_row_field_and_value(tmp_path: Path) -> None:
    csv = write(tmp_path / "opps.csv", HEADER + (
        "A1,Ann,Core,abc,2026-01-05,won,2026-02-01,1200\n"     # row 1: amount is text
        "A2,Bob,Core,-5,2026-01-06,lost,2026-01-20,0\n"        # row 2: negative amount
        "A3,Ann,Lite,10,2026-01-07,negotiation,,\n"           # row 3: unknown stage
        "A3,Cy,Lite,10,2026-13-45,proposal,,\n"               # row 4: duplicate id, bad date
        "A5,Di,Lite,10,2026-03-01,won,2026-02-01,10\n"        # row 5: closed before created
        "A6,,Lite,10,2026-03-01,proposal,,\n"                 # row 6: owner empty
    ))
    with pytest.raises(DataValidationError) as exc:
        load_pipeline(csv)
    assert problems_of(exc) == {
        (1, "amount", "wrong_type"),
        (2, "amount", "negative"),
        (3, "stage", "unknown_stage"),
        (4, "opportunity_id", "duplicate"),
        (4, "created_at", "bad_date"),
        (5, "closed_at", "date_order"),
        (6, "owner", "missing_value"),
    }
    text = str(exc.value)
    assert "row 1, field 'amount': is not a number (value 'abc')" in text
    assert "row 4, field 'opportunity_id': duplicate id (first in row 3) (value 'A3')" in text
    assert "row 5, field 'closed_at': close date is before the creation date (2026-03-01)" in text


def test_missing_required_columns_are_named_and_rows_still_checked(tmp_path: Path) -> None:
    csv = write(tmp_path / "opps.csv", "opportunity_id,product,created_at,stage\nA1,Core,2026-01-01,won\n")
    with pytest.raises(DataValidationError) as exc:
        load_pipeline(csv)
    # owner is missing as a column; the won deal also lacks its close date.
    assert problems_of(exc) == {(None, "owner", "missing_column"), (1, "closed_at", "missing_value")}


def test_a_closed_deal_with_an_unparseable_date_is_reported_once(tmp_path: Path) -> None:
    csv = write(tmp_path / "opps.csv", HEADER + "A1,Ann,Core,10,soon,won,2026-02-01,10\n")
    with pytest.raises(DataValidationError) as exc:
        load_pipeline(csv)
    assert problems_of(exc) == {(1, "created_at", "bad_date")}


def test_outcome_column_must_agree_with_the_stage(tmp_path: Path) -> None:
    csv = write(tmp_path / "opps.csv", HEADER.replace("\n", ",outcome\n") + (
        "A1,Ann,Core,10,2026-01-05,won,2026-02-01,10,lost\n"
        "A2,Ann,Core,10,2026-01-05,proposal,,,maybe\n"
    ))
    with pytest.raises(DataValidationError) as exc:
        load_pipeline(csv)
    assert problems_of(exc) == {(1, "outcome", "inconsistent"), (2, "outcome", "wrong_value")}


def test_a_mapping_renames_joins_and_sets_stages(tmp_path: Path) -> None:
    write(tmp_path / "products.csv", "product,series,sales_price\nGTX Pro,GTX,4821\nMG Special,MG,55\n")
    csv = write(tmp_path / "export.csv", (
        "id,agent,product,deal_stage,engage_date,close_date,close_value\n"
        "X1,Ann,GTXPro,Won,2017-01-02,2017-02-01,4500\n"
        "X2,Bob,MG Special,Engaging,2017-01-03,,\n"
    ))
    mapping = ColumnMapping.from_dict({
        "columns": {"opportunity_id": "id", "owner": "agent", "stage": "deal_stage", "created_at": "engage_date",
                    "closed_at": "close_date", "won_amount": "close_value"},
        "stages": {"open": ["Prospecting", "Engaging"], "won": ["Won"], "lost": ["Lost"]},
        "joins": [{"file": "products.csv", "on": "product", "key": "product", "normalize": "alnum",
                   "columns": {"amount": "sales_price", "product_category": "series"}}],
    })
    pipeline = load_pipeline(csv, mapping=mapping)
    frame = pipeline.opportunities
    # "GTXPro" matches "GTX Pro" once case, spaces and punctuation are ignored.
    assert frame["amount"].tolist() == [4821.0, 55.0]
    assert frame["product_category"].tolist() == ["GTX", "MG"]
    assert frame["outcome"].tolist() == ["won", "open"]
    assert pipeline.stages.open == ("Prospecting", "Engaging")


def test_mapping_errors_use_the_exports_column_names(tmp_path: Path) -> None:
    csv = write(tmp_path / "export.csv", "id,agent,product,deal_stage,engage_date\nX1,Ann,P,Won,2017-01-02\n")
    mapping = ColumnMapping.from_dict({
        "columns": {"opportunity_id": "id", "owner": "agent", "stage": "deal_stage", "created_at": "engage_date",
                    "closed_at": "close_date"},
        "stages": {"open": ["Engaging"], "won": ["Won"], "lost": ["Lost"]},
    })
    with pytest.raises(DataValidationError) as exc:
        load_pipeline(csv, mapping=mapping)
    assert problems_of(exc) == {(None, "close_date", "missing_column"), (1, "close_date (closed_at)", "missing_value")}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"colums": {}}, "colums"),
        ({"columns": {"amount": 3}}, "columns.amount"),
        ({"joins": [{"file": "p.csv", "on": "product"}]}, "joins[0].key joins[0].columns"),
        ({"joins": [{"file": "p.csv", "on": "a", "key": "b", "columns": {}, "normalize": "fuzzy"}]},
         "joins[0].normalize"),
        ({"stages": {"open": ["a"], "won": ["a"], "lost": ["b"]}}, "stages"),
    ],
)
def test_malformed_mappings_are_refused(data: dict[str, object], field: str) -> None:
    with pytest.raises(DataValidationError) as exc:
        ColumnMapping.from_dict(data)
    assert [p.field for p in exc.value.problems] == field.split()


def test_mapping_to_a_column_outside_the_contract_is_refused(tmp_path: Path) -> None:
    csv = write(tmp_path / "e.csv", HEADER + "A1,Ann,Core,10,2026-01-05,proposal,,\n")
    with pytest.raises(DataValidationError) as exc:
        load_pipeline(csv, mapping=ColumnMapping.from_dict({"columns": {"price": "amount"}}))
    assert ("columns.price", "bad_mapping") in {(p.field, p.code) for p in exc.value.problems}


def test_thousands_of_problems_are_summarised() -> None:
    problems = [Problem("t.csv", "amount", "is not a number", row=i, value="x", code="wrong_type")
                for i in range(1, 3001)]
    text = str(DataValidationError(problems, source="t.csv"))
    lines = text.splitlines()
    # a header, the first 50 problems, a count line and one line per (field, kind)
    assert lines[0] == "t.csv: 3000 problem(s) found"
    assert len(lines) == 1 + 50 + 1 + 1
    assert lines[-1] == "  amount [wrong_type]: 3000"


def test_unreadable_and_missing_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="file does not exist"):
        load_pipeline(tmp_path / "nope.csv")
    with pytest.raises(DataValidationError, match="unsupported file type"):
        load_pipeline(write(tmp_path / "x.json", "{}"))
    with pytest.raises(DataValidationError, match="cannot be read"):
        load_pipeline(write(tmp_path / "x.parquet", "not parquet"))


def test_leads_load_with_booleans_and_conversion_dates(tmp_path: Path) -> None:
    csv = write(tmp_path / "leads.csv", (
        "lead_id,created_at,demo_requested,web_visits,converted,converted_at,stage\n"
        "L1,2026-01-01T10:00:00Z,yes,3,true,2026-02-01,contact\n"
        "L2,2026-01-02,no,0,false,,lead_generation\n"
        "L3,2026-01-03,,,,,\n"
    ))
    leads = load_leads(csv)
    assert leads["demo_requested"].tolist()[:2] == [True, False]
    assert pd.isna(leads["demo_requested"].iloc[2])
    # The UTC time zone is dropped after conversion: 10:00Z stays 10:00.
    assert leads["created_at"].iloc[0] == pd.Timestamp("2026-01-01 10:00")


def test_lead_rules_are_checked(tmp_path: Path) -> None:
    csv = write(tmp_path / "leads.csv", (
        "lead_id,created_at,demo_requested,converted,converted_at,stage\n"
        "L1,2026-01-05,maybe,false,2026-01-01,won\n"
    ))
    with pytest.raises(DataValidationError) as exc:
        load_leads(csv)
    assert problems_of(exc) == {
        (1, "demo_requested", "wrong_type"),
        (1, "converted_at", "date_order"),
        (1, "converted_at", "inconsistent"),
        (1, "stage", "unknown_stage"),
    }


def test_parquet_round_trip_keeps_types(tmp_path: Path) -> None:
    csv = write(tmp_path / "opps.csv", HEADER + "A1,Ann,Core,1000,2026-01-05,won,2026-02-01,1200\n")
    frame = load_pipeline(csv).opportunities
    write_table(frame, tmp_path / "opps.parquet")
    again = load_pipeline(tmp_path / "opps.parquet").opportunities
    pd.testing.assert_frame_equal(frame, again)


def test_stage_history_must_name_known_deals(tmp_path: Path) -> None:
    opps = write(tmp_path / "opps.csv", HEADER + "A1,Ann,Core,1000,2026-01-05,won,2026-02-01,1200\n")
    hist = write(tmp_path / "hist.csv", (
        "opportunity_id,stage,entered_at\nA1,qualification,2026-01-05\nA1,won,2026-02-01\nB9,contact,2026-01-01\n"
    ))
    with pytest.raises(DataValidationError) as exc:
        load_pipeline(opps, history=hist)
    assert problems_of(exc) == {(3, "opportunity_id", "unknown_id")}
    assert len(load_stage_history(hist)) == 3


def test_write_table_leaves_no_partial_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.parquet"
    bad = pd.DataFrame({"a": [object()]})
    with pytest.raises(Exception):  # noqa: B017 - pyarrow's own error type
        write_table(bad, target)
    assert list(tmp_path.iterdir()) == []


def test_a_validation_error_pickles_whole() -> None:
    # A scoring process raises it; the parent must get every problem and the source, not a message string.
    error = DataValidationError([Problem("leads.csv", "web_visits", "is not a number", row=651, value="many")],
                                source="leads.csv")
    again = pickle.loads(pickle.dumps(error))
    assert isinstance(again, DataValidationError)
    assert again.problems == error.problems and again.source == "leads.csv" and str(again) == str(error)
