"""Issue 14 items 4 and 7 end to end: quantile grades from training, unseen categories counted at scoring."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from crmdata.loaders import write_table
from scoring.batch import score_file
from scoring.scorer import ModelScorer
from scoring.spec import Grades, ModelSpec
from scoring.training import TrainingResult, train
from tests.scoring.conftest import FAST

UNSEEN = "Source: 'Carrier pigeon' was not seen in training (or too rarely); scored as 'other'"


def test_training_fits_quantile_grades_to_the_held_out_leads(leads: pd.DataFrame, spec: ModelSpec) -> None:
    result = train(leads, spec=replace(spec, grades=Grades(method="quantile", targets=(0.1, 0.3, 0.6))),
                   params=FAST)
    grades = result.trained.spec.grades
    assert grades.method == "quantile"
    assert grades.a == np.quantile(result.holdout_p, 0.9) and grades.c == np.quantile(result.holdout_p, 0.4)
    assert result.trained.card["grades"] == {"method": "quantile", "A": grades.a, "B": grades.b, "C": grades.c}
    # 600 held-out leads: 10% A, 20% B, 30% C, 40% D (ties aside)
    counts = [result.report["candidates"][result.report["selected"]]["grades"][g]["leads"] for g in "ABCD"]
    assert counts == [60, 120, 180, 240]
    # the scorer grades with the fitted cut-offs
    scorer = ModelScorer(result.trained)
    assert scorer.spec.grades == grades


def test_an_unseen_category_is_warned_per_lead(trained: TrainingResult, leads: pd.DataFrame) -> None:
    scorer = ModelScorer(trained.trained)
    records = leads.head(2).drop(columns=["converted", "converted_at", "stage"]).to_dict("records")
    records = [{k: (None if pd.isna(v) else str(v)) for k, v in r.items()} for r in records]
    records[1]["source"] = "Carrier pigeon"
    first, second = scorer.score_records(records)
    assert first.warnings is None and "warnings" not in first.as_json()
    assert second.warnings == [UNSEEN] and second.as_json()["warnings"] == [UNSEEN]
    # the frame path (more than 64 records) warns the same lead the same way
    many = [dict(records[0]) for _ in range(70)]
    many[65]["source"] = "Carrier pigeon"
    scored = scorer.score_records(many)
    assert [i for i, s in enumerate(scored) if s.warnings] == [65] and scored[65].warnings == [UNSEEN]


def test_a_batch_counts_unseen_categories(trained: TrainingResult, leads: pd.DataFrame, tmp_path: Path) -> None:
    frame = leads.head(10).copy()
    frame.loc[[2, 5, 7], "source"] = "Carrier pigeon"
    frame.loc[4, "industry"] = "Alchemy"
    src, dst = tmp_path / "leads.csv", tmp_path / "scored.csv"
    write_table(frame, src)
    summary = score_file(src, dst, scorer=ModelScorer(trained.trained))
    assert summary.unseen == {"Source 'Carrier pigeon'": 3, "Industry 'Alchemy'": 1}


def test_without_an_id_column_leads_are_numbered_across_chunks(leads: pd.DataFrame, spec: ModelSpec,
                                                                 tmp_path: Path) -> None:
    no_id = replace(spec, id_column="")
    result = train(leads.drop(columns=["lead_id"]), spec=no_id, params={**FAST, "candidates": ("linear",)})
    assert any("row number" in note for note in result.trained.card["notes"])
    src, dst = tmp_path / "leads.csv", tmp_path / "scored.csv"
    write_table(leads.head(25).drop(columns=["lead_id"]), src)
    score_file(src, dst, scorer=ModelScorer(result.trained), chunk_rows=10)
    # chunks of 10, 10 and 5 rows: numbered 1..25 across them, in a column named `row`
    assert pd.read_csv(dst)["row"].tolist() == list(range(1, 26))
