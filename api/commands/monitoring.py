"""Model health commands: compare the leads a model scores with the profile it was trained on."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from api.commands import FILE, settings_of
from crmdata.errors import LeadcastError
from crmdata.loaders import read_raw


@click.command()
@click.option("--data", "data", type=FILE, required=True,
              help="Leads scored since training (CSV or Parquet); rows with an outcome are checked against it.")
@click.option("--model", "model", default=None, help="Model version, alias or .joblib file; default the champion.")
@click.option("--json", "json_out", type=FILE, default=None, help="Also write the whole health report as JSON.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap intervals.")
@click.pass_context
def monitor(ctx: click.Context, data: Path, model: str | None, json_out: Path | None, seed: int) -> None:
    """Say whether a model still fits its leads: drift of each field and of the scores, and calibration."""
    from scoring.artifacts import write_json
    from scoring.monitoring import health
    from scoring.scorer import ModelScorer, load_scorer
    from scoring.spec import prepare

    scorer = load_scorer(model, models_dir=settings_of(ctx).resolved_models_dir)
    if not isinstance(scorer, ModelScorer):
        raise LeadcastError("the cold-start rules have no training profile to compare with: train a model first")
    profile = scorer.trained.card.get("profile")
    if profile is None:
        raise LeadcastError(f"model version {scorer.version} was trained before leadcast saved reference profiles: "
                            "retrain it to monitor it")
    spec = scorer.spec
    raw = read_raw(data, missing_values=spec.missing_values, delimiter=spec.delimiter, encoding=spec.encoding)
    every = prepare(raw, spec=spec, table=data.name)
    p = scorer.score_frame(every.features, every.ids, reasons=False)["probability"].to_numpy()
    outcomes = None
    if spec.target.column in raw.columns and raw[spec.target.column].notna().any():
        decided = prepare(raw, spec=spec, table=data.name, with_target=True)
        assert decided.target is not None
        scored = scorer.score_frame(decided.features, decided.ids, reasons=False)["probability"].to_numpy()
        outcomes = (decided.target, scored)
    report = health(profile=profile, features=every.features, probability=p, spec=spec, outcomes=outcomes,
                    rng=np.random.default_rng(seed))
    click.echo(f"model version {scorer.version}: {report['leads']:,} leads, mean probability "
               f"{report['mean_probability']:.1%} ({profile['mean_probability']:.1%} at training); score PSI "
               f"{report['score_psi']:.2f}")
    matured = report["outcomes"]
    if matured is None:
        click.echo("no outcomes in the file: calibration cannot be checked yet")
    else:
        auc = "n/a" if matured["roc_auc"] is None else f"{matured['roc_auc']:.3f}"
        click.echo(f"{matured['leads']:,} leads with outcomes: converted {matured['base_rate']:.1%} "
                   f"({matured['base_rate_training']:.1%} in training), ECE {matured['ece']:.3f}, ROC AUC {auc}, "
                   f"Brier {matured['brier']:.3f}")
    for sentence in report["alerts"]:
        click.echo(f"ALERT: {sentence}")
    for sentence in report["warnings"]:
        click.echo(f"warning: {sentence}")
    if not report["alerts"] and not report["warnings"]:
        click.echo("no drift and no calibration problem found")
    if json_out is not None:
        write_json(json_out, json.loads(json.dumps(report, default=float)))


def register(group: click.Group) -> None:
    """Add the monitoring commands to the `leadcast` group."""
    group.add_command(monitor)
