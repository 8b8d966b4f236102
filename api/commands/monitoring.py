"""Model health commands: compare the leads a model scores with the profile it was trained on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import numpy as np

from api.commands import FILE, settings_of
from api.settings import Settings
from crmdata.errors import LeadcastError
from crmdata.loaders import read_raw


@click.command()
@click.option("--data", "data", type=FILE, default=None,
              help="Leads scored since training (CSV or Parquet); rows with an outcome are checked against it. "
                   "Default: the prediction log and the outcomes in the store.")
@click.option("--model", "model", default=None,
              help="A model name (its champion), NAME@VERSION, or a version or alias (champion, challenger) of the "
                   "default spec's model; default the default spec's champion. See `leadcast models list`.")
@click.option("--since", "since", default=None, help="Only leads scored from this date (ISO 8601; store only).")
@click.option("--json", "json_out", type=FILE, default=None, help="Also write the whole health report as JSON.")
@click.option("--html", "html_out", type=FILE, default=None, help="Also write the Model health page (HTML).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap intervals.")
@click.pass_context
def monitor(ctx: click.Context, data: Path | None, model: str | None, since: str | None, json_out: Path | None,
            html_out: Path | None, seed: int) -> None:
    """Say whether a model still fits its leads: drift of each field and of the scores, and calibration."""
    from api.commands.retraining import chosen_name
    from api.monitoring import split_model_ref
    from crmdata.files import write_json

    settings = settings_of(ctx)
    name, version = split_model_ref(model)
    # the one name resolver of the CLI (`models rollback --name`, `retrain --model`): an unknown name lists the known
    picked = chosen_name(settings, name=name, spec_path=None)
    if data is not None:
        if since is not None:
            raise LeadcastError("--since filters the store's prediction log; a --data file is read whole")
        report = _file_health(settings, data, name=picked, version=version, seed=seed)
    else:
        from api.monitoring import parse_since, store_health
        from api.stores import open_store

        with open_store(settings) as store:  # closed at the end: no connection left for the collector
            report = store_health(settings, store, name=picked, version=version,
                                  since=parse_since(since, field="--since"), seed=seed)
    _print(report)
    if json_out is not None:
        write_json(json_out, json.loads(json.dumps(report, default=float)))
    if html_out is not None:
        from api.health_page import write_health_page

        write_health_page(report, html_out)
        click.echo(f"wrote {html_out}")


def _file_health(settings: Settings, data: Path, *, name: str, version: str | None, seed: int) -> dict[str, Any]:
    from api.serving import model_source
    from scoring.monitoring import health
    from scoring.scorer import ModelScorer, load_scorer
    from scoring.spec import prepare

    scorer = load_scorer(version, **model_source(settings, name=name))
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
    return {"model": f"{name}@{scorer.version}", "name": name, "version": scorer.version,
            "source": data.name, "base_rate_training": profile["base_rate"], "leads_scored": report["leads"],
            **report}


def _print(report: dict[str, Any]) -> None:
    mean = report.get("mean_probability")
    if report.get("leads_scored"):
        click.echo(f"model {report['model']}: {report['leads_scored']:,} leads scored, mean probability {mean:.1%}; "
                   f"score PSI {report['score_psi']:.2f}")
    matured = report["outcomes"]
    if matured is None:
        click.echo("no matured outcomes yet: calibration cannot be checked")
    else:
        auc = "n/a" if matured["roc_auc"] is None else f"{matured['roc_auc']:.3f}"
        click.echo(f"{matured['leads']:,} leads with outcomes: converted {matured['base_rate']:.1%} "
                   f"({matured['base_rate_training']:.1%} in training), ECE {matured['ece']:.3f}, ROC AUC {auc}, "
                   f"Brier {matured['brier']:.3f}, log loss {matured['log_loss']:.3f}")
    unseen = {c: share for c, share in (report.get("unseen_categories") or {}).items() if share}
    if unseen:
        click.echo("unseen categories (share of leads with a value training never saw or saw too rarely): "
                   + ", ".join(f"{c} {share:.1%}" for c, share in sorted(unseen.items(), key=lambda kv: -kv[1])))
    for sentence in report["alerts"]:
        click.echo(f"ALERT: {sentence}")
    for sentence in report["warnings"]:
        click.echo(f"warning: {sentence}")
    if not report["alerts"] and not report["warnings"]:
        click.echo("no drift and no calibration problem found")


def register(group: click.Group) -> None:
    """Add the monitoring commands to the `leadcast` group."""
    group.add_command(monitor)
