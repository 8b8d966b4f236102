from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from crmdata.errors import DataValidationError, LeadcastError
from crmdata.loaders import write_table
from scoring.batch import count_rows, read_chunks, score_file
from scoring.scorer import ModelScorer
from scoring.spec import ModelSpec, prepare
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


class _KillsItself:
    """A scorer that kills its own process on the chunk holding `lead`: a worker dying mid-file (as the OOM
    killer ends one). Module-level, so a fork server's worker can unpickle it."""

    def __init__(self, inner: ModelScorer, lead: str) -> None:
        self.inner, self.lead = inner, lead
        self.spec, self.kind, self.version = inner.spec, inner.kind, inner.version

    def score_frame(self, features: pd.DataFrame, ids: pd.Series, **kwargs: Any) -> pd.DataFrame:
        if self.lead in set(ids.tolist()):
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner.score_frame(features, ids, **kwargs)


class _SaysItsAllocator:
    """A scorer that writes, as each lead's model version, the Arrow allocator and numpy page advice of the
    process that scored it. Module-level, so a fork server's worker can unpickle it."""

    def __init__(self, inner: ModelScorer) -> None:
        self.inner = inner
        self.spec, self.kind, self.version = inner.spec, inner.kind, inner.version

    def score_frame(self, features: pd.DataFrame, ids: pd.Series, **kwargs: Any) -> pd.DataFrame:
        said = f"{pa.default_memory_pool().backend_name} huge={_huge_advice()}"
        return self.inner.score_frame(features, ids, **kwargs).assign(model_version=said)


@pytest.mark.parametrize("workers", [1, 2])
def test_batch_scoring_allocates_from_the_c_heap_and_puts_arrow_back(tmp_path: Path, scorer: ModelScorer,
                                                                    leads: pd.DataFrame, workers: int) -> None:
    # Arrow's bundled allocator hands freed pages back at once, so every chunk faulted them in again (a
    # quarter of the run's time for 1M leads here); huge pages cost the first chunk 1.4-1.7 s in the kernel.
    src = tmp_path / "leads.parquet"
    write_table(leads.head(600).drop(columns=["converted"]), src)
    before = pa.default_memory_pool().backend_name
    in_parent: list[str] = []

    def progress(_: int) -> None:
        in_parent.append(pa.default_memory_pool().backend_name)

    score_file(src, tmp_path / "out.parquet", scorer=_SaysItsAllocator(scorer),  # type: ignore[arg-type]
               chunk_rows=200, workers=workers, progress=progress)
    said = set(pd.read_parquet(tmp_path / "out.parquet")["model_version"])
    # A worker process allocates from the C heap with small pages; one thread of this process from the C heap
    # (numpy's advice here is this process's own, left as it was).
    assert said == ({"system huge=False"} if workers == 2 else {f"system huge={_huge_advice()}"})
    assert in_parent == ["system"] * 3
    assert pa.default_memory_pool().backend_name == before


def _huge_advice() -> bool:
    """Return whether numpy advises huge pages in this process (read by setting it, then put back)."""
    import numpy as np

    advice = np._core.multiarray._set_madvise_hugepage(False)
    np._core.multiarray._set_madvise_hugepage(advice)
    return bool(advice)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_processes_write_byte_for_byte_what_one_thread_writes(tmp_path: Path, scorer: ModelScorer,
                                                               leads: pd.DataFrame, suffix: str) -> None:
    src = tmp_path / "leads.parquet"
    write_table(leads.head(1000).drop(columns=["converted"]), src)
    seen: list[int] = []
    # 1,000 leads in chunks of 300: 4 chunks over 2 processes, against one thread of this process.
    two = score_file(src, tmp_path / f"two{suffix}", scorer=scorer, chunk_rows=300, workers=2, progress=seen.append)
    one = score_file(src, tmp_path / f"one{suffix}", scorer=scorer, chunk_rows=300, workers=1)
    assert seen == [300, 300, 300, 100]
    assert (two.rows, two.grades, two.unseen) == (one.rows, one.grades, one.unseen)
    assert sum(two.grades.values()) == 1000
    if suffix == ".csv":
        assert two.out.read_bytes() == one.out.read_bytes()
    else:
        assert pd.read_parquet(two.out).equals(pd.read_parquet(one.out))


def test_beside_another_thread_the_processes_come_from_a_fork_server(tmp_path: Path, scorer: ModelScorer,
                                                                     leads: pd.DataFrame) -> None:
    # Forking beside a running thread could copy a lock it holds: a fork server starts the workers instead,
    # and they must score the same.
    src = tmp_path / "leads.csv"
    write_table(leads.head(400).drop(columns=["converted"]), src)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    try:
        served = score_file(src, tmp_path / "served.csv", scorer=scorer, chunk_rows=150, workers=2)
    finally:
        stop.set()
        other.join()
    forked = score_file(src, tmp_path / "forked.csv", scorer=scorer, chunk_rows=150, workers=2)
    assert served.out.read_bytes() == forked.out.read_bytes()
    assert served.rows == 400


@pytest.mark.parametrize("beside_a_thread", [False, True])
def test_a_killed_scoring_process_fails_the_file_cleanly(tmp_path: Path, scorer: ModelScorer,
                                                         leads: pd.DataFrame, beside_a_thread: bool) -> None:
    frame = leads.head(900).drop(columns=["converted"])
    src = tmp_path / "leads.parquet"
    write_table(frame, src)
    out = tmp_path / "out.parquet"
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    if beside_a_thread:
        other.start()
    try:
        # Lead 700 is in the third chunk of 300: the first two are scored and written before it dies.
        with pytest.raises(LeadcastError, match="a scoring process died") as exc:
            score_file(src, out, scorer=_KillsItself(scorer, str(frame["lead_id"].iloc[700])),  # type: ignore[arg-type]
                       chunk_rows=300, workers=2)
    finally:
        stop.set()
        if beside_a_thread:
            other.join()
    assert "nothing was written to out.parquet" in str(exc.value)
    assert not out.exists() and list(tmp_path.iterdir()) == [src]


def test_a_bad_row_found_in_a_process_names_its_row_in_the_file(tmp_path: Path, scorer: ModelScorer,
                                                                leads: pd.DataFrame) -> None:
    frame = leads.head(700).drop(columns=["converted"])
    frame["time_on_site"] = frame["time_on_site"].astype(object)
    frame.loc[420, "time_on_site"] = -3.0
    src = tmp_path / "leads.parquet"
    write_table(frame.astype({"time_on_site": float}), src)
    with pytest.raises(DataValidationError) as exc:
        score_file(src, tmp_path / "out.csv", scorer=scorer, chunk_rows=200, workers=2)
    # Frame row 420 is data row 421; it is in the third chunk of 200 (rows 401-600), scored in a worker.
    problem = exc.value.problems[0]
    assert (problem.field, problem.row) == ("time_on_site", 421)
    assert exc.value.source == "leads.parquet"


def test_a_parquet_file_is_read_for_the_columns_the_spec_scores_only(tmp_path: Path, spec: ModelSpec,
                                                                      leads: pd.DataFrame) -> None:
    src = tmp_path / "leads.parquet"
    write_table(leads.head(10).assign(notes="x" * 1000), src)
    wanted = set(spec.scored_columns)
    (chunk,) = read_chunks(src, columns=wanted)
    assert "notes" not in chunk.columns and "converted" not in chunk.columns
    assert set(chunk.columns) == wanted & set(leads.columns)
    # A file holding none of them is read whole, so typing it names the missing columns.
    other = tmp_path / "other.parquet"
    write_table(pd.DataFrame({"a": [1, 2]}), other)
    (whole,) = read_chunks(other, columns=wanted)
    assert list(whole.columns) == ["a"]
