"""Scoring commands: train (and maybe promote) a model, score a file of leads."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from api.commands import FILE, settings_of
from api.settings import Settings
from crmdata.loaders import read_raw
from scoring.spec import DEFAULT_SPEC, load_spec

UNSEEN_SHOWN = 10  # unseen categories named in the score command's warning; the rest are counted

if TYPE_CHECKING:
    import pandas as pd

    from scoring.scorer import Scorer
    from store.predictions import PredictionLog


@click.command()
@click.option("--data", "data", type=FILE, required=True, help="Lead export with outcomes (CSV or Parquet).")
@click.option("--spec", "spec_path", type=FILE, default=None,
              help=f"Model spec (TOML); default {DEFAULT_SPEC.name}, the leadcast lead contract.")
@click.option("--json", "json_out", type=FILE, default=None, help="Also write the metrics and decision as JSON.")
@click.option("--force", is_flag=True, help="Make the new model champion even if it is not as good.")
@click.pass_context
def train(ctx: click.Context, data: Path, spec_path: Path | None, json_out: Path | None, force: bool) -> None:
    """Train a lead scoring model, evaluate it on held-out leads, track it in MLflow, promote it if better."""
    from api.serving import model_source
    from scoring.artifacts import spec_model_name
    from scoring.tracking import track
    from scoring.training import fingerprint_file
    from scoring.training import train as train_model

    settings = settings_of(ctx)
    spec = load_spec(spec_path)
    # One champion per model name, the spec's: a second spec's model never challenges the first one's champion.
    name = spec_model_name(spec, default_name=settings.registered_model_name)
    where = model_source(settings, name=name)
    raw = read_raw(data, missing_values=spec.missing_values, delimiter=spec.delimiter, encoding=spec.encoding)
    started = time.perf_counter()

    def step(message: str) -> None:
        click.echo(f"[{time.perf_counter() - started:6.1f}s] {message}", err=True)

    step(f"training {called(name, settings)}on {len(raw):,} leads from {data.name}")
    result = train_model(raw, spec=spec, data_fingerprint=fingerprint_file(data), table=data.name, progress=step)
    step("tracking the run in MLflow and deciding on promotion")
    tracked = track(
        result, tracking_uri=settings.resolved_tracking_uri, artifact_root=settings.resolved_artifact_root,
        experiment_name=settings.experiment_name, registered_model_name=name,
        models_dir=where["models_dir"], spec_path=spec_path or DEFAULT_SPEC, force=force,
    )
    step("done")
    card = result.trained.card
    click.echo(f"evaluation: {card['evaluation']['kind']} on {card['rows']['evaluated']:,} leads "
               f"({card['rows']['converted']:,} of {card['rows']['trained']:,} converted"
               + (f"; {card['rows']['undecided']:,} undecided leads left out" if card["rows"]["undecided"] else "")
               + ")")
    click.echo(f"{'model':<8} {'ROC AUC':>8} {'PR AUC':>8} {'Brier':>8} {'log loss':>9} {'ECE':>7} {'F1':>6}")
    for candidate in result.report["candidates"]:
        m = card["metrics"][candidate]
        label = f"{candidate}*" if candidate == card["selected"] else candidate
        click.echo(f"{label:<8} {m['roc_auc']:>8.4f} {m['pr_auc']:>8.4f} {m['brier']:>8.4f} {m['log_loss']:>9.4f} "
                   f"{m['ece']:>7.4f} {m['f1']:>6.3f}")
    evaluation = card["evaluation"]
    if evaluation["kind"] == "time split":
        shift = evaluation["base_rate_shift"]
        click.echo(f"held out: the newest {evaluation['holdout_share']:.0%} by {evaluation['order']}; converted "
                   f"{shift['older']:.1%} of the older leads, {shift['newest']:.1%} of the newest")
    click.echo(f"selected: {card['selection']['reason']}")
    click.echo(f"calibrated on {card['selection']['calibrated_on']}; grades ({card['grades']['method']}) "
               f"A >= {card['grades']['A']:.3f}, B >= {card['grades']['B']:.3f}, C >= {card['grades']['C']:.3f}")
    click.echo(f"{called(name, settings)}version {tracked.version}, aliases {', '.join(tracked.aliases)}")
    selected = result.report["candidates"][card["selected"]]
    for column, fair in selected.get("fairness", {}).items():
        verdict = "below 0.8: review" if fair["flagged"] else "ok"
        click.echo(f"fairness by {column}: four-fifths ratio of A-grade rates {fair['four_fifths_ratio']:.2f} "
                   f"({verdict})")
    for warning in card["warnings"]:
        click.echo(f"warning: {warning}")
    click.echo(f"{'FORCED: ' if tracked.decision.forced else ''}{tracked.decision.reason}")
    click.echo(f"wrote {tracked.artifact} and {tracked.card}; MLflow run {tracked.run_id}")
    if json_out is not None:
        from crmdata.files import write_json

        write_json(json_out, {"name": name, "version": tracked.version, "run_id": tracked.run_id,
                              "aliases": tracked.aliases,
                              "promoted": tracked.decision.promoted, "forced": tracked.decision.forced,
                              "decision": tracked.decision.reason, "card": card,
                              "report": json.loads(json.dumps(result.report, default=float))})


PATH = click.Path(path_type=Path)


@click.command()
@click.option("--data", "data", type=PATH, required=True,
              help="Leads to score (CSV or Parquet; with --engine spark a Parquet file or folder).")
@click.option("--out", "out", type=PATH, required=True,
              help="Output file (.csv or .parquet); with --engine spark a Parquet folder of part files.")
@click.option("--model", "model", default=None,
              help="Model version, alias (champion, challenger) or .joblib file of the spec's model name; default "
                   "its champion.")
@click.option("--spec", "spec_path", type=FILE, default=None,
              help="Spec of the leads: scores with the champion of its model name (the spec's `name`), or with "
                   "the cold-start rules when that name has no model (default: the lead contract).")
@click.option("--rules", "rules_path", type=FILE, default=None,
              help="Cold-start rules file used when no model is trained (default: scoring/rules/default.toml).")
@click.option("--no-reasons", is_flag=True, help="Skip the reasons (several times faster).")
@click.option("--as-of", "as_of", default=None,
              help="Measure recency from this date (ISO 8601), e.g. the export date; default: the model's "
                   "training reference (rules: now).")
@click.option("--chunk-rows", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Leads per scorer call (with --engine spark: per Arrow batch).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Chunks scored at once, each in a process of its own (local engine); default: every core the "
                   "command may use. With --log, threads of this process.")
@click.option("--log", "log_scores", is_flag=True,
              help="Record every score in the store's prediction log, as the API does (local engine).")
@click.option("--engine", type=click.Choice(["local", "spark"]), default="local", show_default=True,
              help='Score in this process, or on Spark (needs pip install "leadcast[spark]" and Java 17).')
@click.option("--master", default=None,
              help="Spark master URL with --engine spark, e.g. spark://host:7077; default local[*] (every core "
                   "of this machine).")
@click.pass_context
def score(ctx: click.Context, data: Path, out: Path, model: str | None, spec_path: Path | None,
          rules_path: Path | None, no_reasons: bool, as_of: str | None, chunk_rows: int, engine: str,
          master: str | None, log_scores: bool, workers: int | None) -> None:
    """Score a file of leads: probability, score 0-100, grade A-D, reasons, model version."""
    from api.serving import model_source
    from scoring.artifacts import spec_model_name
    from scoring.batch import count_rows, score_file
    from scoring.scorer import load_scorer

    if master is not None and engine != "spark":
        raise click.UsageError("--master needs --engine spark")
    if engine == "local" and data.is_dir():
        raise click.UsageError(f"--data {data} is a folder; the local engine reads one CSV or Parquet file")
    if engine == "spark" and not (data.is_dir() or data.suffix.lower() in (".parquet", ".pq")):
        raise click.UsageError(f"--data {data}: the Spark engine reads Parquet (a .parquet file or a folder)")
    if engine == "spark" and workers is not None:
        raise click.UsageError("--workers is for the local engine; Spark's workers come from --master")
    if engine == "spark" and log_scores:
        raise click.UsageError("--log records scores from the local engine only: drop --engine spark or --log")
    settings = settings_of(ctx)
    name = spec_model_name(load_spec(spec_path), default_name=settings.registered_model_name)
    scorer = load_scorer(model, **model_source(settings, name=name), spec_path=spec_path, rules_path=rules_path)
    if scorer.kind == "rules":
        click.echo(f"no trained model {called(name, settings)}{where_models(settings)}: scoring with the "
                   f"cold-start rules ({scorer.version})", err=True)
    if not scorer.spec.id_column:
        click.echo(f"the spec names no id column: leads are identified by their row number (column "
                   f"'{scorer.spec.id_label}', 1 = the first data row)", err=True)
    if engine == "spark":
        rows, grades = score_on_spark(data, out, scorer=scorer, reasons=not no_reasons, as_of=as_of,
                                      master=master or "local[*]", chunk_rows=chunk_rows)
        where, unseen = out, {}
    else:
        total = count_rows(data) if data.exists() else 0
        with contextlib.ExitStack() as stack:
            on_chunk = stack.enter_context(_batch_log(settings, scorer, name=name)) if log_scores else None
            with click.progressbar(length=total, label=f"scoring {total:,} leads", file=sys.stderr) as bar:
                summary = score_file(data, out, scorer=scorer, reasons=not no_reasons, chunk_rows=chunk_rows,
                                     progress=bar.update, as_of=as_of, workers=workers,
                                     on_chunk=None if on_chunk is None else lambda raw, s: on_chunk(raw, s, as_of))
        rows, grades, where, unseen = summary.rows, summary.grades, summary.out, summary.unseen
    counts = ", ".join(f"{g} {n:,}" for g, n in grades.items())
    used = (f"model {called(name, settings)}version {scorer.version}" if scorer.kind == "model"
            else f"cold-start rules ({scorer.version})")
    click.echo(f"scored {rows:,} leads with {used} into {where} (grades: {counts})")
    if unseen:
        leads = sum(unseen.values())
        shown = ", ".join(f"{key} ({n:,})" for key, n in list(unseen.items())[:UNSEEN_SHOWN])
        more = len(unseen) - UNSEEN_SHOWN
        click.echo(f"warning: {leads:,} categor{'y' if leads == 1 else 'ies'} not seen in training were scored as "
                   f"'other': {shown}" + (f" and {more:,} more" if more > 0 else ""), err=True)
    if log_scores:
        click.echo(f"logged {rows:,} scores in the prediction log")


@contextlib.contextmanager
def _batch_log(settings: Settings, scorer: Scorer, *,
               name: str) -> Iterator[Callable[[pd.DataFrame, pd.DataFrame, str | None], None]]:
    """Yield a chunk callback that records scores in the prediction log; every row is written by the end.

    The store is reached before scoring starts, so a database that is down fails the command at once. One
    chunk is written while the next is scored; waiting for it before queueing the next keeps memory bounded
    and nothing is ever dropped.
    """
    from api.predictions import log_batch
    from api.stores import open_store
    from store.predictions import PredictionLog

    store = open_store(settings)
    with store.begin():
        pass  # reachable, and the schema up to date (or upgraded: the embedded SQLite default)
    log = PredictionLog(store, capacity=2**62)
    model = {"name": name, "version": scorer.version,
             "kind": "rules" if scorer.kind == "rules" else "trained"}

    def on_chunk(raw: pd.DataFrame, scored: pd.DataFrame, as_of: str | None) -> None:
        _written(log, timeout=FLUSH_SECONDS)
        log_batch(log, spec=scorer.spec, model=model, raw=raw, scored=scored, as_of=as_of)

    try:
        yield on_chunk
        _written(log, timeout=FLUSH_SECONDS)
    finally:
        log.close(timeout=1)
        store.dispose()


FLUSH_SECONDS = 300.0  # a chunk of 100,000 rows takes seconds; minutes mean the database stopped answering


def _written(log: PredictionLog, *, timeout: float) -> None:
    from store import StoreUnavailable

    if not log.flush(timeout=timeout) or log.dropped:
        raise StoreUnavailable(f"the prediction log could not write its rows to {log.store.shown_url} within "
                               f"{timeout:.0f} s ({log.written:,} written); the database stopped answering")

def score_on_spark(data: Path, out: Path, *, scorer: Scorer, reasons: bool, as_of: str | None, master: str,
                   chunk_rows: int) -> tuple[int, dict[str, int]]:
    """Score `data` into `out` on Spark at `master`, printing each step; stop the session at the end."""
    import shutil
    import tempfile

    from scoring.spark import score_parquet, spark_conf, start_session

    started = time.perf_counter()

    def step(message: str) -> None:
        click.echo(f"[{time.perf_counter() - started:6.1f}s] {message}", err=True)

    if master.startswith("local"):
        # pyspark starts local workers with $PYSPARK_PYTHON (else `python3` on PATH, which may not see this
        # environment) and binds to $SPARK_LOCAL_IP: this interpreter, loopback only, unless the user says.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Spark's scratch files (shuffle, spills, the JVM's temp files) in a private folder under TMPDIR.
    local_dir = Path(tempfile.mkdtemp(prefix="leadcast-spark-"))
    try:
        step(f"starting Spark at {master}")
        spark = start_session(spark_conf(master=master, local_dir=local_dir, batch_rows=chunk_rows))
        try:
            rows, grades = score_parquet(spark, src=data, dst=out, scorer=scorer, reasons=reasons, as_of=as_of,
                                         step=step)
        finally:
            step("stopping Spark")
            spark.stop()
    finally:
        shutil.rmtree(local_dir, ignore_errors=True)
    step("done")
    return rows, grades


def called(name: str, settings: Settings) -> str:
    """Return how output names a model: nothing for the default spec's (as a one-model home always read), else
    its name and a space."""
    return "" if name == settings.registered_model_name else f"{name!r} "


def where_models(settings: Settings) -> str:
    """Return where the champion was looked for, in words (the tracking URI without credentials)."""
    if settings.serves_from_mlflow:
        from scoring.tracking import redact_uri

        return f"in the MLflow registry at {redact_uri(settings.resolved_tracking_uri)}"
    return f"in {settings.resolved_models_dir}"


def register(group: click.Group) -> None:
    """Add the scoring commands to the `leadcast` group."""
    group.add_command(train)
    group.add_command(score)
