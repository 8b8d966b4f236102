from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from crmdata.errors import DataValidationError
from crmdata.loaders import write_table
from scoring.batch import count_rows, score_file
from scoring.scorer import ModelScorer
from scoring.spec import prepare
from scoring.training import TrainingResult


@pytest.fixture(scope="module")
def scorer(trained: TrainingResult) -> ModelScorer:
    return ModelScorer(trained.trained)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_chunked_output_equals_one_pass(tmp_path: Path, scorer: ModelScorer, leads: pd.DataFrame,
                                        suffix: str) -> None:
    src = tmp_path / f"leads{suffix}"
    write_table(leads.head(1000).drop(columns=["converted"]), src)
    assert count_rows(src) == 1000
    seen: list[int] = []
    summary = score_file(src, tmp_path / f"out{suffix}", scorer=scorer, chunk_rows=300, progress=seen.append)
    assert seen == [300, 300, 300, 100] and summary.rows == 1000
    out = pd.read_csv(summary.out, dtype={"model_version": str}) if suffix == ".csv" else pd.read_parquet(
        summary.out)
    prepared = prepare(leads.head(1000), spec=scorer.spec)
    whole = scorer.score_frame(prepared.features, prepared.ids)
    assert out["lead_id"].tolist() == whole["lead_id"].tolist()
    assert out["probability"].tolist() == pytest.approx(whole["probability"].tolist(), abs=1e-9)
    assert out["reasons_positive"].fillna("").tolist() == whole["reasons_positive"].tolist()
    assert sum(summary.grades.values()) == 1000


def test_bad_row_in_a_later_chunk_leaves_no_output(tmp_path: Path, scorer: ModelScorer,
                                                   leads: pd.DataFrame) -> None:
    frame = leads.head(700).astype({"web_visits": object})
    frame.loc[650, "web_visits"] = "many"
    src = tmp_path / "leads.csv"
    write_table(frame, src)
    out = tmp_path / "out.csv"
    with pytest.raises(DataValidationError) as exc:
        score_file(src, out, scorer=scorer, chunk_rows=300)
    problem = exc.value.problems[0]
    # data row 651 of the file (row numbers count from 1 across chunks)
    assert (problem.field, problem.row, problem.value) == ("web_visits", 651, "many")
    assert not out.exists() and list(tmp_path.iterdir()) == [src]


def test_without_reasons_and_unsupported_files(tmp_path: Path, scorer: ModelScorer, leads: pd.DataFrame) -> None:
    src = tmp_path / "leads.parquet"
    write_table(leads.head(50), src)
    summary = score_file(src, tmp_path / "out.csv", scorer=scorer, reasons=False)
    assert "reasons_positive" not in pd.read_csv(summary.out).columns
    (tmp_path / "x.xlsx").write_bytes(b"PK")
    with pytest.raises(DataValidationError, match="unsupported file type"):
        score_file(tmp_path / "x.xlsx", tmp_path / "o.csv", scorer=scorer)
    with pytest.raises(DataValidationError, match="does not exist"):
        score_file(tmp_path / "missing.csv", tmp_path / "o.csv", scorer=scorer)


def test_as_of_moves_the_recency_reference(tmp_path: Path, scorer: ModelScorer, leads: pd.DataFrame) -> None:
    src = tmp_path / "leads.parquet"
    write_table(leads.head(300), src)
    default = pd.read_parquet(score_file(src, tmp_path / "a.parquet", scorer=scorer, reasons=False).out)
    later = pd.read_parquet(score_file(src, tmp_path / "b.parquet", scorer=scorer, reasons=False,
                                       as_of="2027-07-01").out)
    # A year later every lead has been quiet for a year longer: its interest has decayed.
    assert (later["probability"] != default["probability"]).mean() > 0.5
    assert later["probability"].mean() < default["probability"].mean()
