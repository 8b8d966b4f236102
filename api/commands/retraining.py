"""The retrain loop's commands: retrain (or recalibrate) through the gate, and roll the champion back."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import numpy as np
import pandas as pd

from api.commands import FILE, settings_of
from api.settings import Settings
from crmdata.errors import LeadcastError
from crmdata.loaders import read_raw

RETRAIN_KEY = "retrain"  # the loop's state in the model registry: when it last ran and what it decided
STORE_TIMES = "created_at"  # where store.monitoring.training_frame puts each lead's first-score time by default


def _matured_from_store(settings: Settings, *, spec: Any, name: str, since: datetime | None,
                        now: datetime) -> pd.DataFrame:
    from api.stores import open_store
    from store.monitoring import training_frame

    with open_store(settings) as store:
        # the leads model `name` scored only: another name's log rows are another CRM's fields and outcome
        frame = training_frame(store, spec=spec, since=since, now=now, maturity_days=settings.outcome_maturity_days,
                               model_name=name)
    if frame.empty:
        raise LeadcastError(f"the store holds no matured leads {_of(name, settings)}(logged scores with a known or "
                            "matured outcome) yet: record outcomes with POST /v1/leads/outcomes, or retrain from an "
                            "export with --data")
    return frame


def _of(name: str, settings: Settings) -> str:
    """Return how the loop's output names a model: nothing for the default spec's (as a one-model home always
    read), else `of 'NAME' `."""
    return "" if name == settings.registered_model_name else f"of {name!r} "


@click.command()
@click.option("--data", "data", type=FILE, default=None,
              help="Lead export with outcomes (CSV or Parquet); default the store's logged leads and outcomes of "
                   "the model name retrained.")
@click.option("--model", "--name", "name", default=None,
              help="Model name to retrain (see `leadcast models list`); default the default spec's.")
@click.option("--spec", "spec_path", type=FILE, default=None,
              help="Model spec for a retrain, instead of --model: retrains the model name of this spec (its `name`) "
                   "with it (default: that name's champion's spec).")
@click.option("--mode", type=click.Choice(["auto", "retrain", "recalibrate"]), default="auto", show_default=True,
              help="auto recalibrates when only the base rate moved and retrains when an input shifted.")
@click.option("--if-due", "if_due", is_flag=True, help="Do nothing unless --every has passed since the last run.")
@click.option("--every", "every", default=None, help="Period of the loop with --if-due (e.g. 15d, 12h, 2w); "
              "default the retrain_every setting.")
@click.option("--since", "since", default=None, help="Use leads scored from this date (store only; ISO 8601).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the gate's bootstrap.")
@click.option("--json", "json_out", type=FILE, default=None, help="Also write the decision as JSON.")
@click.pass_context
def retrain(ctx: click.Context, data: Path | None, name: str | None, spec_path: Path | None, mode: str,
            if_due: bool, every: str | None, since: str | None, seed: int, json_out: Path | None) -> None:
    """Retrain or recalibrate one model name's champion on matured leads; promote only through the gate on the
    newest 20%. The other names' champions, registries and loop state are left as they are."""
    from api.commands.scoring import called
    from api.serving import model_source
    from crmdata.files import write_json
    from scoring.artifacts import read_registry, resolve_trained, update_registry
    from scoring.monitoring import health
    from scoring.retraining import GateError, choose_mode, is_due, parse_every, recalibrate
    from scoring.retraining import retrain as retrain_model
    from scoring.spec import load_spec, prepare
    from scoring.tracking import track
    from scoring.training import fingerprint_file

    settings = settings_of(ctx)
    picked = chosen_name(settings, name=name, spec_path=spec_path)
    of = _of(picked, settings)
    models_dir = model_source(settings, name=picked)["models_dir"]  # this name's registry and loop state only
    now = datetime.now(UTC)
    period = parse_every(every or settings.retrain_every)
    state = read_registry(models_dir).get(RETRAIN_KEY, {})
    if if_due and not is_due(last_run=state.get("last_run"), every=period, now=now):
        last = datetime.fromisoformat(state["last_run"])
        click.echo(f"not due: the loop {of}last ran at {state['last_run']}, next run from "
                   f"{(last + period).isoformat(timespec='seconds')}; nothing done")
        return
    started = time.perf_counter()

    def step(message: str) -> None:
        click.echo(f"[{time.perf_counter() - started:6.1f}s] {message}", err=True)

    champion = resolve_trained(None, source="files", models_dir=models_dir, registered_model_name=picked)
    if spec_path is None and champion is None and picked != settings.registered_model_name:
        raise LeadcastError(f"model {picked!r} has no champion to take the spec from: give its spec with --spec")
    spec = load_spec(spec_path) if spec_path is not None or champion is None else champion.spec
    if data is not None:
        raw = read_raw(data, missing_values=spec.missing_values, delimiter=spec.delimiter, encoding=spec.encoding)
        fingerprint: str | None = fingerprint_file(data)
        source, time_column = data.name, None
    else:
        from api.monitoring import parse_since

        since_at = parse_since(since, field="--since")
        raw = _matured_from_store(settings, spec=spec, name=picked, since=since_at, now=now)
        # a spec with no created-at column still has a time order in the store: when each lead was first scored
        fingerprint, source, time_column = None, "the store", STORE_TIMES
    step(f"{len(raw):,} matured leads {of}from {source}")
    why = f"--mode {mode}"
    if champion is None:
        chosen, why = "retrain", "no champion yet: training the first model"
    elif mode == "auto":
        profile = champion.card.get("profile")
        if profile is None:
            chosen, why = "retrain", "the champion has no reference profile: retraining"
        else:
            every_lead = prepare(raw, spec=champion.spec, table=source)
            from scoring.scorer import ModelScorer

            p = ModelScorer(champion).score_frame(every_lead.features, every_lead.ids, reasons=False)["probability"]
            report = health(profile=profile, features=every_lead.features, probability=p.to_numpy(),
                            spec=champion.spec, rng=np.random.default_rng(seed), n_boot=0)
            chosen, why = choose_mode(report)
    else:
        chosen = mode
    step(why)
    rng = np.random.default_rng(seed)
    try:
        if chosen == "recalibrate":
            assert champion is not None
            candidate = recalibrate(raw, champion=champion, rng=rng, time_column=time_column)
        else:
            candidate = retrain_model(raw, spec=spec, champion=champion, rng=rng, data_fingerprint=fingerprint,
                                      table=source, params=None, time_column=time_column)
    except GateError as exc:
        raise LeadcastError(str(exc)) from exc
    step("tracking the run in MLflow and recording the decision")
    tracked = track(candidate.result, tracking_uri=settings.resolved_tracking_uri,
                    artifact_root=settings.resolved_artifact_root, experiment_name=settings.experiment_name,
                    registered_model_name=picked, models_dir=models_dir, spec_path=spec_path,
                    decision=candidate.decision)
    outcome: dict[str, Any] = {"name": picked, "last_run": now.isoformat(timespec="seconds"), "mode": chosen,
                               "why": why,
                               "version": tracked.version, "promoted": tracked.decision.promoted,
                               "decision": tracked.decision.reason, "source": source}
    update_registry(models_dir, lambda registry: registry.__setitem__(RETRAIN_KEY, outcome))
    click.echo(f"{chosen}: {called(picked, settings)}version {tracked.version}, aliases {', '.join(tracked.aliases)}")
    click.echo(tracked.decision.reason)
    if tracked.decision.promoted:
        query = "" if picked == settings.registered_model_name else f"?model={picked}"
        click.echo(f"reload the service to serve it: POST /v1/models/reload{query}")
    if json_out is not None:
        gate = candidate.gate.as_dict() if candidate.gate is not None else None
        write_json(json_out, json.loads(json.dumps({**outcome, "gate": gate}, default=float)))


@click.group()
def models() -> None:
    """Manage the model registry."""


def chosen_name(settings: Settings, *, name: str | None, spec_path: Path | None) -> str:
    """Return the model name `--name` or `--spec` picks (default the default spec's), refusing an unknown one."""
    from api.serving import model_names
    from scoring.artifacts import UnknownModelError, check_model_name, spec_model_name
    from scoring.spec import load_spec

    if name is not None and spec_path is not None:
        raise click.UsageError("give --name or --spec, not both")
    if name is None:
        return spec_model_name(load_spec(spec_path), default_name=settings.registered_model_name)
    known = model_names(settings)
    if check_model_name(name) not in known:
        raise UnknownModelError(f"no model named {name!r}: the known models are {', '.join(known)}", name=name,
                                known=known)
    return name


NAME_OPTION = click.option("--name", "name", default=None,
                           help="Model name (see `leadcast models list`); default the default spec's.")
SPEC_OPTION = click.option("--spec", "spec_path", type=FILE, default=None,
                           help="Pick the model name of this spec (its `name`) instead of --name.")


@models.command("list")
@click.pass_context
def list_models(ctx: click.Context) -> None:
    """List every model name with its champion and challenger versions, the default first."""
    from api.serving import model_names, model_source
    from scoring.artifacts import read_registry

    settings = settings_of(ctx)
    for name in model_names(settings):
        aliases = read_registry(model_source(settings, name=name)["models_dir"])["aliases"]
        default = " (default)" if name == settings.registered_model_name else ""
        click.echo(f"{name}{default}: champion {aliases.get('champion', 'none (cold-start rules)' if default else '-')}"
                   f", challenger {aliases.get('challenger', '-')}")


@models.command()
@NAME_OPTION
@SPEC_OPTION
@click.pass_context
def rollback(ctx: click.Context, name: str | None, spec_path: Path | None) -> None:
    """Make the previous champion of one model name champion again (the service picks it up on its next
    reload); the other names' champions are left as they are."""
    from api.serving import model_source
    from scoring.tracking import rollback as roll_back

    settings = settings_of(ctx)
    picked = chosen_name(settings, name=name, spec_path=spec_path)
    before, after = roll_back(models_dir=model_source(settings, name=picked)["models_dir"],
                              tracking_uri=settings.resolved_tracking_uri, registered_model_name=picked)
    which = "" if picked == settings.registered_model_name else f" of {picked!r}"
    query = "" if picked == settings.registered_model_name else f"?model={picked}"
    click.echo(f"champion{which} is version {after} again (was {before}); reload the service: "
               f"POST /v1/models/reload{query}")


def register(group: click.Group) -> None:
    """Add the retrain loop's commands to the `leadcast` group."""
    group.add_command(retrain)
    group.add_command(models)
