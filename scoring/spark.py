"""Batch scoring on Spark: the local engine's scorer, run by each executor's Python worker over Arrow batches.

The driver loads the scorer once (its artifact checked by SHA-256, as `leadcast score` does), broadcasts it,
and `mapInArrow` turns each Arrow batch into pandas exactly as `scoring.batch.read_chunks` does, then calls
the same `prepare` and `score_frame`: the scores and reasons are the local engine's, row for row.

pyspark is an optional extra (`pip install "leadcast[spark]"`) and is imported only inside these functions,
so `scoring` stays importable without it.
"""

from __future__ import annotations

import json
import shutil
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from crmdata.errors import DataValidationError, LeadcastError, Problem
from scoring.scorer import Scorer

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession

ROW_COLUMN = "__leadcast_row"
FILE_COLUMN = "__leadcast_file"
# Problems found in a worker travel to the driver inside the task's error text, between these markers: Spark
# wraps a worker's exception in its own, and the text is the one part that reaches the driver intact.
PROBLEMS_START = "<<leadcast-problems>>"
PROBLEMS_END = "<</leadcast-problems>>"


class SparkUnavailableError(LeadcastError):
    """Raised when the Spark engine is asked for but pyspark or Java is missing."""


def spark_conf(*, master: str, local_dir: Path, shuffle_partitions: int = 4, batch_rows: int = 100_000
               ) -> dict[str, str]:
    """Return the Spark settings for a leadcast batch job: no UI, loopback only for local masters, UTC,
    Arrow batches of `batch_rows` rows, scratch files under `local_dir`."""
    conf = {
        "spark.master": master,
        "spark.app.name": "leadcast-score",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        # Timestamps reach the scorer as the file holds them (UTC instants), whatever the machine's zone.
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(shuffle_partitions),
        # One Arrow batch is one scorer call: the local engine's chunk size, so per-call costs are the same.
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(batch_rows),
        "spark.local.dir": str(local_dir),
        "spark.sql.warehouse.dir": str(local_dir / "warehouse"),
        "spark.driver.extraJavaOptions": f"-Djava.io.tmpdir={local_dir}",
        # Each task is one Python worker scoring on one core; numpy's BLAS threads would only fight it.
        "spark.executorEnv.OMP_NUM_THREADS": "1",
    }
    if master.startswith("local"):
        # A local job listens on loopback only (on a cluster the driver's address is the cluster's business).
        conf["spark.driver.host"] = "127.0.0.1"
        conf["spark.driver.bindAddress"] = "127.0.0.1"
    return conf


def start_session(conf: Mapping[str, str]) -> SparkSession:
    """Start (or join) a Spark session with `conf`; raise SparkUnavailableError if pyspark or Java is missing."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise SparkUnavailableError('the Spark engine needs pyspark: pip install "leadcast[spark]"') from exc
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    try:
        session = builder.getOrCreate()
    except Exception as exc:  # pyspark says only that the Java gateway exited
        raise SparkUnavailableError(f"Spark did not start (it needs Java 17 or later on PATH or in JAVA_HOME): "
                                    f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    session.sparkContext.setLogLevel("ERROR")
    return session


def output_columns(*, id_column: str, reasons: bool) -> list[tuple[str, str]]:
    """Return the scored output's columns (name, Spark SQL type): the columns `score_frame` returns."""
    columns = [(id_column, "string"), ("probability", "double"), ("score", "bigint"), ("grade", "string")]
    if reasons:
        columns += [("reasons_positive", "string"), ("reasons_negative", "string")]
    return [*columns, ("model_kind", "string"), ("model_version", "string")]


def output_ddl(*, id_column: str, reasons: bool) -> str:
    """Return the Spark schema (DDL) of the scored output."""
    return ", ".join(f"`{name}` {kind}" for name, kind in output_columns(id_column=id_column, reasons=reasons))


def output_arrow_schema(*, id_column: str, reasons: bool) -> pa.Schema:
    """Return the Arrow schema of the scored output, the one `output_ddl` describes to Spark."""
    import pyarrow as pa

    arrow = {"string": pa.string(), "double": pa.float64(), "bigint": pa.int64()}
    return pa.schema([(name, arrow[kind]) for name, kind in output_columns(id_column=id_column, reasons=reasons)])


def score_batches(batches: Iterator[pa.RecordBatch], *, scorer: Scorer, reasons: bool, as_of: str | None,
                  table: str, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """Score Arrow batches of raw leads (with their file and row numbers) into Arrow batches of scores."""
    import pyarrow as pa

    from scoring.batch import with_as_of
    from scoring.spec import prepare

    for batch in batches:
        if batch.num_rows == 0:
            continue
        rows = batch.column(ROW_COLUMN).to_pylist()
        files = batch.column(FILE_COLUMN).to_pylist()
        raw = batch.drop_columns([ROW_COLUMN, FILE_COLUMN]).to_pandas()  # as read_chunks converts it
        raw = with_as_of(raw, as_of)
        try:
            prepared = prepare(raw, spec=scorer.spec, table=table)
        except DataValidationError as exc:
            raise RuntimeError(_pack(exc, rows=rows, files=files)) from None
        out = scorer.score_frame(prepared.features, prepared.ids, reasons=reasons)
        scored = pa.Table.from_pandas(out, preserve_index=False).cast(schema)
        yield from scored.to_batches()


def _pack(exc: DataValidationError, *, rows: list[int], files: list[str]) -> str:
    """Write the problems with the file and the 1-based row of the file each was found in."""
    problems = []
    for p in exc.problems:
        where = None if p.row is None else p.row - 1
        problems.append({"table": Path(files[where]).name if where is not None else p.table, "field": p.field,
                         "message": p.message, "row": None if where is None else int(rows[where]) + 1,
                         "value": p.value, "code": p.code})
    return PROBLEMS_START + json.dumps(problems) + PROBLEMS_END


def unpack_problems(text: str, *, source: str) -> DataValidationError | None:
    """Return the DataValidationError a worker packed into an error's text, or None if there is none."""
    start = text.find(PROBLEMS_START)
    end = text.find(PROBLEMS_END, start)
    if start < 0 or end < 0:
        return None
    found = json.loads(text[start + len(PROBLEMS_START):end])
    return DataValidationError([Problem(**p) for p in found], source=source)


def score_parquet(
    spark: SparkSession,
    *,
    src: Path,
    dst: Path,
    scorer: Scorer,
    reasons: bool = True,
    as_of: str | None = None,
    step: Callable[[str], None] | None = None,
) -> tuple[int, dict[str, int]]:
    """Score the Parquet file or folder `src` into the Parquet folder `dst` (one part file per task); return
    the rows and the count per grade. Written to a temporary folder beside `dst` and renamed at the end, so a
    bad row in any task leaves no output (the error names the file, row and field)."""
    from pyspark.sql import functions as sf

    say = step or (lambda _message: None)
    if not src.exists():
        raise DataValidationError([Problem(str(src), "-", "file does not exist", code="missing_file")],
                                  source=str(src))
    ddl = output_ddl(id_column=scorer.spec.id_column, reasons=reasons)
    schema = output_arrow_schema(id_column=scorer.spec.id_column, reasons=reasons)
    shared = spark.sparkContext.broadcast(scorer)
    table = src.name

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return score_batches(batches, scorer=shared.value, reasons=reasons, as_of=as_of, table=table,
                             schema=schema)

    frame = spark.read.parquet(str(src))
    frame = frame.select("*", sf.col("_metadata.row_index").alias(ROW_COLUMN),
                         sf.col("_metadata.file_path").alias(FILE_COLUMN))
    parts, cores = frame.rdd.getNumPartitions(), spark.sparkContext.defaultParallelism
    if parts < cores:
        # One Parquet row group is one task: a single-row-group file would score on one core. Spread it over
        # every core by ranges of (file, row), sorted within each, so the part files keep the input's order.
        say(f"reading {src}: {parts} partition(s) for {cores} cores, spread into {cores} ranges")
        frame = frame.repartitionByRange(cores, FILE_COLUMN, ROW_COLUMN).sortWithinPartitions(FILE_COLUMN,
                                                                                              ROW_COLUMN)
    else:
        say(f"reading {src} in {parts} partition(s) for {cores} cores")
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        say(f"scoring with {scorer.kind} {scorer.version}{' and reasons' if reasons else ''} into {dst}")
        try:
            with warnings.catch_warnings():
                # pyspark warns about pandas 3 when it builds any Python UDF; this one hands Spark Arrow
                # batches only (pandas is pyarrow's conversion, as in the local engine), so it does not apply.
                warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas",
                                        category=FutureWarning)
                scored = frame.mapInArrow(score, ddl)
            scored.write.parquet(str(tmp), compression="zstd")
        except Exception as exc:  # Spark wraps a worker's error in its own: take the problems back out
            problems = unpack_problems(str(exc), source=src.name)
            if problems is not None:
                raise problems from None
            raise
        say("counting the grades")
        counted = spark.read.parquet(str(tmp)).groupBy("grade").count().collect()
        grades = {g: 0 for g in "ABCD"}
        for row in counted:
            grades[str(row["grade"])] = int(row["count"])
        rows = sum(grades.values())
        if rows == 0:
            raise DataValidationError([Problem(src.name, "-", "no lead to score", code="empty")], source=src.name)
        if dst.is_dir():
            shutil.rmtree(dst)
        elif dst.exists():
            dst.unlink()
        tmp.rename(dst)
    finally:
        shared.destroy()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return rows, grades
