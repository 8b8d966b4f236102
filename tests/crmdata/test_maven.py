"""The real Maven CRM export loads through the shipped mapping, and a broken copy is refused in detail."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from crmdata.errors import DataValidationError
from crmdata.loaders import load_pipeline


@pytest.fixture
def mapping(repo_root: Path) -> Path:
    return repo_root / "docs" / "examples" / "maven-crm-mapping.toml"


def test_maven_loads_with_no_edits(maven_dir: Path, mapping: Path) -> None:
    pipeline = load_pipeline(maven_dir / "sales_pipeline.csv", mapping=mapping)
    frame = pipeline.opportunities
    assert len(frame) == 8800
    # SOURCE.md: Won 4238, Lost 2473, Engaging 1589 + Prospecting 500 = 2089 open.
    assert frame["outcome"].value_counts().to_dict() == {"won": 4238, "lost": 2473, "open": 2089}
    assert frame.loc[frame["outcome"] == "won", "won_amount"].sum() == 10_005_534
    # Every deal gets its product's list price; GTXPro finds "GTX Pro" at $4,821.
    assert frame["amount"].notna().all()
    assert set(frame.loc[frame["product"] == "GTXPro", "amount"]) == {4821.0}
    assert frame["created_at"].isna().sum() == 500  # the Prospecting deals
    assert frame["team"].notna().all() and frame["region"].notna().all()


def test_a_broken_maven_copy_names_every_problem(maven_dir: Path, mapping: Path, tmp_path: Path) -> None:
    raw = pd.read_csv(maven_dir / "sales_pipeline.csv", dtype=str, keep_default_na=False)
    raw.loc[3, "close_value"] = "lots"
    raw.loc[5, "close_date"] = "2016-01-01"
    raw.loc[7, "deal_stage"] = "Negotiating"
    raw = raw.drop(columns=["account"])
    for name in ("products.csv", "sales_teams.csv"):
        shutil.copy(maven_dir / name, tmp_path / name)
    raw.to_csv(tmp_path / "sales_pipeline.csv", index=False)
    with pytest.raises(DataValidationError) as exc:
        load_pipeline(tmp_path / "sales_pipeline.csv", mapping=mapping)
    assert {(p.row, p.field, p.code) for p in exc.value.problems} == {
        (None, "account", "missing_column"),
        (4, "close_value (won_amount)", "wrong_type"),
        (6, "close_date (closed_at)", "date_order"),
        (8, "deal_stage (stage)", "unknown_stage"),
    }
