"""`leadcast score --engine spark`: the same scores and reasons as the local engine, row for row.

The Spark runs need pyspark (`pip install "leadcast[spark]"`, pulled in by the dev extra) and Java 17; they
skip, saying which is missing, where either is absent. The import checks run everywhere.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TypeVar

import pandas as pd
import pytest
from click.testing import CliRunner

from api.cli import cli
from crmdata.errors import DataValidationError
from crmdata.loaders import write_table
from crmdata.synthetic import generate_leads
from scoring.artifacts import save_trained
from scoring.spark import output_arrow_schema, output_ddl, spark_conf, unpack_problems
from scoring.training import TrainingResult

F = TypeVar("F")

HAVE_PYSPARK = importlib.util.find_spec("pyspark") is not None
HAVE_JAVA = shutil.which("java") is not None or bool(os.environ.get("JAVA_HOME"))


def needs_spark(test: F) -> F:
    """Mark a test that runs Spark: slow, skipped (saying why) without pyspark or Java."""
    test = pytest.mark.skipif(not HAVE_PYSPARK, reason='pyspark is not installed (pip install "leadcast[spark]")'
                              )(test)
    test = pytest.mark.skipif(not HAVE_JAVA, reason="Java is missing (no java on PATH, JAVA_HOME unset): Spark "
                              "needs Java 17+")(test)
    return pytest.mark.slow(test)


def test_scoring_imports_without_pyspark() -> None:
    # pyspark made unimportable: the scoring library, the Spark module and the CLI still import, and asking
    # for a session says what to install.
    code = ("import sys; sys.modules['pyspark'] = None\n"
            "import scoring.batch, scoring.scorer, scoring.spark, api.cli\n"
            "from scoring.spark import SparkUnavailableError, start_session\n"
            "try:\n    start_session({})\nexcept SparkUnavailableError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == 'the Spark engine needs pyspark: pip install "leadcast[spark]"'


def test_importing_scoring_does_not_load_pyspark() -> None:
    code = "import sys, scoring.batch, scoring.scorer, scoring.spark, api.cli; print('pyspark' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_conf_for_a_local_master_listens_on_loopback_only(tmp_path: Path) -> None:
    local = spark_conf(master="local[2]", local_dir=tmp_path, batch_rows=5000)
    assert (local["spark.driver.bindAddress"], local["spark.ui.enabled"], local["spark.local.dir"]) == (
        "127.0.0.1", "false", str(tmp_path))
    assert local["spark.sql.execution.arrow.maxRecordsPerBatch"] == "5000"
    # On a cluster the driver's address is the cluster's business.
    cluster = spark_conf(master="spark://10.0.0.5:7077", local_dir=tmp_path)
    assert "spark.driver.bindAddress" not in cluster and cluster["spark.master"] == "spark://10.0.0.5:7077"


def test_output_schema_is_the_local_engines_columns() -> None:
    assert output_ddl(id_column="lead_id", reasons=False) == (
        "`lead_id` string, `probability` double, `score` bigint, `grade` string, `model_kind` string, "
        "`model_version` string")
    assert "`reasons_positive` string, `reasons_negative` string" in output_ddl(id_column="lead_id", reasons=True)
    arrow = output_arrow_schema(id_column="lead_id", reasons=True)
    assert arrow.names == ["lead_id", "probability", "score", "grade", "reasons_positive", "reasons_negative",
                           "model_kind", "model_version"]
    assert [str(t) for t in arrow.types[:3]] == ["string", "double", "int64"]


def test_problems_travel_back_from_a_worker_error() -> None:
    text = ("org.apache.spark.api.python.PythonException: Traceback ...\nRuntimeError: <<leadcast-problems>>"
            '[{"table": "leads.parquet", "field": "web_visits", "message": "is not a number", "row": 651, '
            '"value": "many", "code": "not_a_number"}]<</leadcast-problems>>\n\tat org.apache...')
    found = unpack_problems(text, source="leads.parquet")
    assert isinstance(found, DataValidationError)
    assert str(found.problems[0]) == "leads.parquet: row 651, field 'web_visits': is not a number (value 'many')"
    assert unpack_problems("java.lang.OutOfMemoryError", source="x") is None


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trained: TrainingResult) -> Path:
    """A leadcast home whose champion is the session's fast model."""
    monkeypatch.setenv("LEADCAST_HOME", str(tmp_path))
    model = copy.copy(trained.trained)
    model.version = "1"
    save_trained(model, models_dir=tmp_path / "models", name="lead-scoring", aliases=["champion"])
    return tmp_path


def test_master_needs_the_spark_engine_and_spark_reads_parquet(home: Path) -> None:
    runner = CliRunner()
    csv = home / "leads.csv"
    csv.write_text("lead_id\nL1\n")
    result = runner.invoke(cli, ["score", "--data", str(csv), "--out", str(home / "o.csv"), "--master", "local[2]"])
    assert result.exit_code == 2 and "--master needs --engine spark" in result.output
    result = runner.invoke(cli, ["score", "--engine", "spark", "--data", str(csv), "--out", str(home / "o")])
    assert result.exit_code == 2 and "the Spark engine reads Parquet" in result.output
    result = runner.invoke(cli, ["score", "--data", str(home), "--out", str(home / "o.csv")])
    assert result.exit_code == 2 and "is a folder; the local engine reads one CSV or Parquet file" in result.output


@pytest.mark.parametrize("reasons", [True, False], ids=["reasons", "no-reasons"])
@needs_spark
def test_spark_scores_equal_the_local_engine(home: Path, reasons: bool) -> None:
    # 20,000 generated leads; --as-of sets the recency reference on both engines.
    leads = generate_leads(n=20_000, seed=5).leads.drop(columns=["converted"])
    src = home / "leads.parquet"
    write_table(leads, src)
    flags = ["--as-of", "2026-07-01"] + ([] if reasons else ["--no-reasons"])
    runner = CliRunner()
    local = runner.invoke(cli, ["score", "--data", str(src), "--out", str(home / "local.parquet"), *flags])
    assert local.exit_code == 0, local.output
    # Small Arrow batches, so the 20k leads span several batches and both tasks of local[2].
    spark = runner.invoke(cli, ["score", "--engine", "spark", "--master", "local[2]", "--chunk-rows", "3000",
                                "--data", str(src), "--out", str(home / "spark"), *flags])
    assert spark.exit_code == 0, spark.output
    for step in ("starting Spark at local[2]", "scoring with model 1", "stopping Spark", "done"):
        assert step in spark.stderr
    want = pd.read_parquet(home / "local.parquet")
    # The one row group is spread over both cores by ranges of rows: the part files keep the input's order.
    assert "1 partition(s) for 2 cores, spread into 2 ranges" in spark.stderr
    assert len(list((home / "spark").glob("part-*.parquet"))) == 2
    got = pd.read_parquet(home / "spark")
    assert len(got) == len(want) == 20_000
    assert list(got.columns) == list(want.columns)
    assert (got["probability"] - want["probability"]).abs().max() <= 1e-9
    for column in [c for c in want.columns if c != "probability"]:
        assert got[column].tolist() == want[column].tolist(), column
    # The summary line (rows and grades) is the same too.
    assert spark.stdout.split(" into ")[0] == local.stdout.split(" into ")[0]
    assert spark.stdout.split("(grades: ")[1] == local.stdout.split("(grades: ")[1]
    assert not list(home.glob(".spark.*"))


@needs_spark
def test_a_bad_row_names_the_same_row_as_the_local_engine_and_writes_nothing(home: Path) -> None:
    leads = generate_leads(n=7000, seed=6).leads.astype({"web_visits": str})  # text, as an export may hold
    leads.loc[6500, "web_visits"] = "many"
    src = home / "leads.parquet"
    write_table(leads, src)
    runner = CliRunner()
    local = runner.invoke(cli, ["score", "--data", str(src), "--out", str(home / "local.parquet")])
    spark = runner.invoke(cli, ["score", "--engine", "spark", "--master", "local[2]", "--chunk-rows", "2000",
                                "--data", str(src), "--out", str(home / "spark")])
    assert local.exit_code == spark.exit_code == 2
    # data row 6501 of the file (row numbers count from 1), found by the task that read it
    line = "leads.parquet: row 6501, field 'web_visits': is not a number (value 'many')"
    assert line in local.stderr.splitlines() and line in spark.stderr.splitlines()
    assert "Traceback" not in spark.output
    assert not (home / "spark").exists() and not list(home.glob(".spark.*"))
