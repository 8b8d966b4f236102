"""Batch scoring of lead files (CSV or Parquet) in chunks, so memory stays flat on millions of rows."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from threadpoolctl import threadpool_limits

from crmdata.errors import DataValidationError, Problem
from crmdata.files import atomic_write
from crmdata.loaders import csv_separator
from scoring.scorer import REASONS_COLUMN, Scorer
from scoring.spec import prepare

CHUNK_ROWS = 100_000
SCORE_WORKERS = 2  # chunks typed and scored at once (the machine's cores; numpy releases the GIL)


@dataclass(frozen=True)
class BatchSummary:
    """What a batch run scored: rows, grades and the model used."""

    rows: int
    grades: dict[str, int]
    model_kind: str
    model_version: str
    out: Path
    unseen: dict[str, int] = field(default_factory=dict)  # "Field 'value'" -> leads with a category never kept


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def count_rows(path: Path) -> int:
    """Return the number of data rows of a CSV or Parquet file (for progress bars)."""
    if _is_parquet(path):
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    with path.open("rb") as handle:
        lines = sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))
    return max(lines - 1, 0)


def _read_ahead(chunks: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Yield the chunks while the next one is read in a background thread (Arrow reads release the GIL)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="leadcast-read") as pool:
        pending = pool.submit(next, chunks, None)
        while (chunk := pending.result()) is not None:
            pending = pool.submit(next, chunks, None)
            yield chunk


def read_chunks(path: Path, *, chunk_rows: int = CHUNK_ROWS, missing_values: tuple[str, ...] = (),
                delimiter: str | None = None, encoding: str = "utf-8-sig") -> Iterator[pd.DataFrame]:
    """Yield the file in chunks of raw values (CSV as text, nothing guessed)."""
    source = str(path)
    if not path.exists():
        raise DataValidationError([Problem(source, "-", "file does not exist", code="missing_file")], source=source)
    if _is_parquet(path):
        import pyarrow.parquet as pq

        yield from _read_ahead(batch.to_pandas() for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows))
        return
    if path.suffix.lower() not in (".csv", ".tsv", ".txt"):
        raise DataValidationError([Problem(source, "-", "unsupported file type; use .csv, .tsv or .parquet",
                                           code="unsupported")], source=source)
    try:
        yield from pd.read_csv(path, sep=csv_separator(path, delimiter), dtype=str, keep_default_na=False,
                               na_values=["", *missing_values], encoding=encoding, chunksize=chunk_rows)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataValidationError([Problem(source, "-", f"cannot be read: {exc}".splitlines()[0],
                                           code="unreadable")], source=source) from exc


def with_as_of(chunk: pd.DataFrame, as_of: str | None) -> pd.DataFrame:
    """Return the chunk with `as_of` (ISO date) filled in where a lead has no `as_of` value of its own."""
    if as_of is None:
        return chunk
    if "as_of" in chunk.columns:
        return chunk.assign(as_of=chunk["as_of"].fillna(as_of))
    return chunk.assign(as_of=as_of)


def score_file(
    src: Path,
    dst: Path,
    *,
    scorer: Scorer,
    reasons: bool = True,
    chunk_rows: int = CHUNK_ROWS,
    progress: Callable[[int], None] | None = None,
    as_of: str | None = None,
    on_chunk: Callable[[pd.DataFrame, pd.DataFrame], None] | None = None,
) -> BatchSummary:
    """Score every lead of `src` into `dst` (CSV or Parquet by suffix): the id column, probability, score,
    grade, reasons, model kind and version. Written to a temporary file and renamed at the end, so a
    failure (a bad row in any chunk) never leaves a half-written output. `as_of` (ISO date) is the time
    recency is measured from for leads without their own `as_of` value; without it, the model's reference.
    `on_chunk(raw, scored)` is called with each chunk's raw values and its scores, in order, once scored;
    with reasons, `scored` also holds each lead's Reason list (REASONS_COLUMN), which the file does not."""
    spec = scorer.spec
    rows = 0
    grades = {g: 0 for g in "ABCD"}
    unseen: dict[str, int] = {}
    count_unseen = getattr(scorer, "unseen_counts", None)

    parquet_out = _is_parquet(dst)

    def score_chunk(chunk: pd.DataFrame, offset: int) -> tuple[pd.DataFrame, pd.DataFrame, Any, dict[str, int]]:
        """Type and score one chunk (in a worker thread); return it, its scores, their Arrow table, unseen."""
        chunk = with_as_of(chunk, as_of)
        try:
            prepared = prepare(chunk, spec=spec, table=src.name)
        except DataValidationError as exc:
            problems = [Problem(p.table, p.field, p.message, None if p.row is None else p.row + offset,
                                p.value, p.code) for p in exc.problems]
            raise DataValidationError(problems, source=src.name) from exc
        ids = prepared.ids if spec.id_column else (prepared.ids.astype(int) + offset).astype(str)
        # A chunk callback gets each lead's Reason objects as well (the prediction log keeps them); the file
        # gets the reason columns only.
        out = scorer.score_frame(prepared.features, ids, reasons=reasons, structured=on_chunk is not None)
        table = None
        if parquet_out:
            import pyarrow as pa

            table = pa.Table.from_pandas(out.drop(columns=REASONS_COLUMN, errors="ignore"), preserve_index=False)
        return chunk, out, table, count_unseen(prepared.features) if count_unseen is not None else {}

    def write(tmp: Path) -> None:
        nonlocal rows
        writer = None
        # SCORE_WORKERS chunks are typed and scored at once in threads (the tree and linear passes are numpy
        # calls that release the GIL, so two cores both work), while the next chunk is read and the last
        # one's Parquet is encoded and written in the background. Results are taken in file order, so the
        # output, the callbacks and the first error are those of a one-chunk-at-a-time pass; memory stays
        # at a few chunks.
        scoring = ThreadPoolExecutor(max_workers=SCORE_WORKERS, thread_name_prefix="leadcast-score")
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leadcast-write")
        written: Future[None] | None = None
        pending: deque[Future[tuple[pd.DataFrame, pd.DataFrame, Any, dict[str, int]]]] = deque()

        def take() -> None:
            nonlocal rows, writer, written
            chunk, out, table, chunk_unseen = pending.popleft().result()
            for g, n in out["grade"].value_counts().items():
                grades[str(g)] += int(n)
            for key, n in chunk_unseen.items():
                unseen[key] = unseen.get(key, 0) + n
            if table is not None:
                import pyarrow.parquet as pq

                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
                if written is not None:
                    written.result()
                written = pool.submit(writer.write_table, table)
            else:
                out.drop(columns=REASONS_COLUMN, errors="ignore").to_csv(tmp, mode="w" if rows == 0 else "a",
                                                                          header=rows == 0, index=False)
            rows += len(out)
            if on_chunk is not None:
                on_chunk(chunk, out)
            if progress is not None:
                progress(len(chunk))

        try:
            offset = 0
            for chunk in read_chunks(src, chunk_rows=chunk_rows, missing_values=spec.missing_values,
                                     delimiter=spec.delimiter, encoding=spec.encoding):
                pending.append(scoring.submit(score_chunk, chunk, offset))
                offset += len(chunk)
                if len(pending) >= SCORE_WORKERS:
                    take()
            while pending:
                take()
            if written is not None:
                written.result()
        finally:
            for future in pending:
                future.cancel()
            scoring.shutdown(wait=True)
            pool.shutdown(wait=True)
            if writer is not None:
                writer.close()
        if rows == 0:
            raise DataValidationError([Problem(src.name, "-", "no lead to score", code="empty")], source=src.name)

    # One BLAS thread: the scoring workers already take a core each, and the reasons' small matrix products
    # (a block of 2,048 leads) spent more CPU spinning BLAS threads than computing (45 vs 22 us a lead).
    with threadpool_limits(limits=1, user_api="blas"):
        atomic_write(dst, write)
    return BatchSummary(rows=rows, grades=grades, model_kind=scorer.kind, model_version=scorer.version, out=dst,
                        unseen=dict(sorted(unseen.items(), key=lambda kv: -kv[1])))
