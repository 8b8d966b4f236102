"""Track training runs in MLflow, register each model, and promote a challenger only when it is not worse.

Promotion rule, on the same held-out leads: challenger AUC >= champion AUC - 0.005 and challenger Brier
<= 1.02 x champion Brier. When the held-out leads are exactly those the champion was evaluated on (the
same data and protocol), the challenger must also have a strictly lower log loss, so retraining on the
same data promotes nothing unless it is better. `force` promotes anyway and says so.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import pandas as pd
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from crmdata.errors import DataValidationError, LeadcastError
from scoring.artifacts import (
    ArtifactIntegrityError,
    ModelError,
    ModelNotFoundError,
    RegistryConflictError,
    TrainedModel,
    load_verified,
    private_dir,
    read_registry,
    resolve_trained,
    save_trained,
    set_alias,
    update_registry,
    write_json,
)
from scoring.compiled import CompiledModel
from scoring.evaluation import save_plots
from scoring.spec import prepare
from scoring.training import TrainingResult

SERVING_ARTIFACT_DIR = "leadcast"
# Run tags naming the leadcast artifact of a run and the SHA-256 it had when it was trained.
ARTIFACT_TAG = "leadcast.artifact"
SHA256_TAG = "leadcast.sha256"
CARD_SHA256_TAG = "leadcast.card_sha256"
# Registered-model tag naming the spec a leadcast model name was trained with: how a replica that has no local
# registry tells leadcast's model names from the other models of a shared tracking server.
SPEC_TAG = "leadcast.spec"
F = TypeVar("F", bound=Callable[..., Any])

AUC_MARGIN = 0.005
BRIER_MARGIN = 0.02
MIN_COMPARE_PER_CLASS = 20


@dataclass(frozen=True)
class Decision:
    """Whether the challenger became champion, why, and the numbers compared."""

    promoted: bool
    reason: str
    forced: bool = False
    challenger: dict[str, float] | None = None
    champion: dict[str, float] | None = None
    champion_version: str | None = None


@dataclass(frozen=True)
class TrackedModel:
    """Where a trained model went: its registry version, MLflow run, local files and promotion decision."""

    version: str
    run_id: str
    artifact: Path
    card: Path
    decision: Decision
    aliases: tuple[str, ...]


def _metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {"roc_auc": float(roc_auc_score(y, p)), "brier": float(brier_score_loss(y, p)),
            "log_loss": float(log_loss(y, np.clip(p, 1e-12, 1 - 1e-12), labels=[0, 1]))}


def decide(result: TrainingResult, champion: TrainedModel | None, *, force: bool = False) -> Decision:
    """Compare the challenger with the champion on the same held-out leads and apply the promotion rule."""
    if champion is None:
        return Decision(True, "no champion yet: the first model becomes champion", forced=False)
    challenger_metrics = _metrics(result.holdout_y, result.holdout_p)
    same = champion.card.get("evaluation_fingerprint") == result.trained.card["evaluation_fingerprint"]
    if same:
        champ = {k: float(champion.card["metrics"]["selected"][k]) for k in ("roc_auc", "brier", "log_loss")}
        basis = "the same held-out leads as the champion's own evaluation"
    else:
        unseen = ~champion.seen(result.holdout_ids)
        y = result.holdout_y[unseen]
        if y.sum() < MIN_COMPARE_PER_CLASS or (1 - y).sum() < MIN_COMPARE_PER_CLASS:
            reason = (f"cannot compare fairly: the champion (v{champion.version}) was trained on "
                      f"{int((~unseen).sum())} of the {len(unseen)} held-out leads")
            return _forced(force, reason, challenger_metrics, None, champion.version)
        try:
            prepared = prepare(result.holdout_raw.iloc[np.flatnonzero(unseen)], spec=champion.spec,
                               table="held-out leads", with_target=True)
        except DataValidationError as exc:
            return _forced(force, f"cannot score the held-out leads with the champion: {exc.problems[0]}",
                           challenger_metrics, None, champion.version)
        compiled = CompiledModel(champion.pipeline)
        champ = _metrics(y, compiled.proba(compiled.features.encode(prepared.features)))
        challenger_metrics = _metrics(y, result.holdout_p[unseen])
        basis = f"{len(y)} held-out leads neither model was trained on"
    auc_ok = challenger_metrics["roc_auc"] >= champ["roc_auc"] - AUC_MARGIN
    brier_ok = challenger_metrics["brier"] <= champ["brier"] * (1 + BRIER_MARGIN)
    better = challenger_metrics["log_loss"] < champ["log_loss"] - 1e-9
    numbers = (f"AUC {challenger_metrics['roc_auc']:.4f} vs {champ['roc_auc']:.4f}, "
               f"Brier {challenger_metrics['brier']:.4f} vs {champ['brier']:.4f}, "
               f"log loss {challenger_metrics['log_loss']:.4f} vs {champ['log_loss']:.4f} on {basis}")
    if not auc_ok or not brier_ok:
        why = []
        if not auc_ok:
            why.append(f"AUC more than {AUC_MARGIN} below the champion's")
        if not brier_ok:
            why.append(f"Brier more than {BRIER_MARGIN:.0%} worse")
        return _forced(force, f"stays challenger: {' and '.join(why)} ({numbers})", challenger_metrics, champ,
                       champion.version)
    if same and not better:
        return _forced(force, f"stays challenger: same data as the champion and not better ({numbers})",
                       challenger_metrics, champ, champion.version)
    return Decision(True, f"promoted: no worse than the champion v{champion.version} ({numbers})",
                    challenger=challenger_metrics, champion=champ, champion_version=champion.version)


def _forced(force: bool, reason: str, challenger: dict[str, float], champion: dict[str, float] | None,
            version: str) -> Decision:
    if force:
        return Decision(True, f"promoted by --force, although it {reason.removeprefix('stays challenger: ')}",
                        forced=True, challenger=challenger, champion=champion, champion_version=version)
    return Decision(False, reason, challenger=challenger, champion=champion, champion_version=version)


def _flat_metrics(report: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    keys = ("roc_auc", "pr_auc", "brier", "log_loss", "ece")
    for name, rep in report["candidates"].items():
        for key in keys:
            out[f"{name}_{key}"] = float(rep[key])
        out[f"{name}_f1"] = float(rep["confusion"]["f1"])
    selected = report["candidates"][report["selected"]]
    out.update({k: float(selected[k]) for k in keys})
    out["f1"] = float(selected["confusion"]["f1"])
    for d in selected["lift"][:3]:
        out[f"lift_decile_{d['decile']}"] = float(d["lift"])
    for column, fair in selected.get("fairness", {}).items():
        out[f"four_fifths_{column}"] = float(fair["four_fifths_ratio"])
    return out


@contextmanager
def quiet_mlflow() -> Iterator[None]:
    """Silence MLflow's own noise that is not ours to fix: two import-time warnings from its dependencies
    and its notice about cloudpickle (our artifacts are pickles by design; load only models you trained)."""
    logger = logging.getLogger("mlflow.sklearn")
    level = logger.level
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"The ``noload`` loader strategy is deprecated",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*Any type hint is inferred as AnyType", category=UserWarning)
        logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            logger.setLevel(level)


def _quietly(fn: F) -> F:
    """Run `fn` with MLflow's import-time and logging noise silenced."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with quiet_mlflow():
            return fn(*args, **kwargs)

    return cast(F, wrapper)


@_quietly
def track(
    result: TrainingResult,
    *,
    tracking_uri: str,
    artifact_root: str | None,
    experiment_name: str,
    registered_model_name: str,
    models_dir: Path,
    spec_path: Path | None = None,
    force: bool = False,
    decision: Decision | None = None,
) -> TrackedModel:
    """Log the run to MLflow, register the model as `challenger`, promote it to `champion` if it earns it,
    and write the joblib artifact and model card to `models_dir`.

    `decision` replaces the default promotion rule with one the caller reached (the retrain loop's gate); the
    registry records each version's promotion reason and the order in which versions became champion.
    `artifact_root` None leaves a new experiment's artifacts where the tracking server keeps them (a server
    started with `--artifacts-destination` proxies them, so every host reads the same files).
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    private_sqlite(tracking_uri)
    if artifact_root is not None and artifact_root.startswith("file://"):
        from urllib.parse import urlsplit
        from urllib.request import url2pathname

        private_dir(Path(url2pathname(urlsplit(artifact_root).path)))
    private_dir(models_dir)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    previous_uri = mlflow.get_tracking_uri()
    previous_registry = mlflow.get_registry_uri()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        experiment = client.get_experiment_by_name(experiment_name)
        experiment_id = (experiment.experiment_id if experiment is not None
                         else client.create_experiment(experiment_name, artifact_location=artifact_root))
        check_registries_agree(client, registered_model_name=registered_model_name, models_dir=models_dir,
                               tracking_uri=tracking_uri)
        trained = result.trained
        card = trained.card
        try:
            champion = resolve_trained(None, source="files", models_dir=models_dir,
                                       registered_model_name=registered_model_name)
        except LeadcastError:
            if not force:
                raise
            champion = None  # --force replaces a champion that cannot even be loaded
        if decision is None:
            decision = decide(result, champion, force=force)
        with mlflow.start_run(experiment_id=experiment_id) as run, tempfile.TemporaryDirectory() as tmp:
            mlflow.log_params({
                "spec": card["spec_name"], "selected": card["selected"], "calibration": card["calibration"],
                "blend_weight_linear": card["blend_weight_linear"], "threshold": round(card["threshold"], 6),
                "evaluation": card["evaluation"]["kind"], **{f"model_{k}": v for k, v in card["params"].items()},
            })
            mlflow.set_tags({"data_fingerprint": card["data_fingerprint"],
                             "evaluation_fingerprint": card["evaluation_fingerprint"],
                             "promotion": decision.reason})
            mlflow.log_metrics({**_flat_metrics(result.report),
                                **{f"rows_{k}": float(v) for k, v in card["rows"].items()}})
            if spec_path is not None and spec_path.exists():
                mlflow.log_artifact(str(spec_path), artifact_path="spec")
            mlflow.log_dict(card["spec"], "spec/spec.json")
            mlflow.log_dict(result.report, "evaluation/report.json")
            selected = result.report["candidates"][result.report["selected"]]
            plots = save_plots(selected, Path(tmp) / "plots", title=card["spec_name"])
            for plot in plots:
                mlflow.log_artifact(str(plot), artifact_path="plots")
            example = result.input_example.copy()
            # An object-dtype column index keeps MLflow's example check off a pandas 3 deprecation path.
            example.columns = pd.Index(list(example.columns), dtype=object)
            for column in example.columns:
                if isinstance(example[column].dtype, pd.CategoricalDtype):
                    example[column] = example[column].astype(object)
            signature = _serving_signature(infer_signature(example, trained.pipeline.predict_proba(example)),
                                           optional={f.column for f in trained.spec.features if f.optional})
            info = mlflow.sklearn.log_model(
                trained.pipeline, name="model", signature=signature, input_example=example,
                serialization_format="cloudpickle", pyfunc_predict_fn="predict_proba",
                pip_requirements=[f"{k}=={v}" for k, v in card["libraries"].items()
                                  if k in ("scikit-learn", "pandas", "numpy", "joblib")],
                registered_model_name=registered_model_name,
            )
            version = str(info.registered_model_version)
            run_id = run.info.run_id
            trained.version = version
            # The card never holds the tracking URI: it is served to every CRM key, and URIs carry credentials.
            card.update({"version": version, "mlflow_run_id": run_id,
                         "registered_model_name": registered_model_name, "promotion": decision.reason,
                         "promoted": decision.promoted})
            # Write-once files named by version and content hash; aliases only once the artifact and its hash
            # are recorded everywhere, so a reload in between never finds a champion it cannot verify.
            path = save_trained(trained, models_dir=models_dir, name=registered_model_name, aliases=[],
                                run_id=run_id)
            card_path = path.with_suffix(".json")
            # The report and plots also go beside the model card, for readers without a tracking server.
            local = private_dir(path.with_name(f"{path.stem}-report"))
            for plot in plots:
                shutil.copy2(plot, local / plot.name)
            write_json(local / "report.json", result.report)
        # The leadcast artifact (pipeline, spec, card) rides with the run, so a service on another machine
        # can serve the champion from the tracking server alone, after checking it against the run's tag.
        client.log_artifact(run_id, str(path), artifact_path=SERVING_ARTIFACT_DIR)
        client.log_artifact(run_id, str(card_path), artifact_path=SERVING_ARTIFACT_DIR)
        entry = read_registry(models_dir)["versions"][version]
        client.set_tag(run_id, ARTIFACT_TAG, path.name)
        client.set_tag(run_id, SHA256_TAG, entry["sha256"])
        client.set_tag(run_id, CARD_SHA256_TAG, entry["card_sha256"])
        client.set_model_version_tag(registered_model_name, version, "promotion", decision.reason)
        client.set_model_version_tag(registered_model_name, version, "promoted", str(decision.promoted).lower())
        client.set_registered_model_tag(registered_model_name, SPEC_TAG, str(card["spec_name"]))
        aliases = ["challenger", "champion"] if decision.promoted else ["challenger"]
        for alias in aliases:
            client.set_registered_model_alias(registered_model_name, alias, version)
        update_registry(models_dir, lambda registry: _record_aliases(registry, version=version, aliases=aliases,
                                                                     reason=decision.reason))
        return TrackedModel(version=version, run_id=run_id, artifact=path, card=card_path, decision=decision,
                            aliases=tuple(aliases))
    finally:
        mlflow.set_tracking_uri(previous_uri)
        mlflow.set_registry_uri(previous_registry)


def _record_aliases(registry: dict[str, Any], *, version: str, aliases: list[str], reason: str) -> None:
    """Point `aliases` at `version`, keep its promotion reason, and append it to the champion history."""
    previous = registry["aliases"].get("champion")
    registry["aliases"].update(dict.fromkeys(aliases, version))
    registry["versions"][version]["promotion"] = reason
    if "champion" in aliases:
        history = registry.setdefault("champion_history", [])
        if not history and previous is not None:
            history.append(str(previous))  # a registry older than the history: its champion comes first
        history.append(version)


def _serving_signature(inferred: Any, *, optional: set[str]) -> Any:
    """Return the signature `mlflow models serve` checks requests against: the spec's optional fields may be
    absent (as leadcast accepts them), and an optional `as_of` time sets the recency reference per lead."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema, TensorSpec

    columns: list[ColSpec | TensorSpec] = [ColSpec(c.type, c.name, required=c.name not in optional)
                                           for c in inferred.inputs.inputs]
    if "as_of" not in {c.name for c in columns}:
        columns.append(ColSpec("datetime", "as_of", required=False))
    return ModelSignature(inputs=Schema(columns), outputs=inferred.outputs, params=inferred.params)


def redact_uri(uri: str) -> str:
    """Return `uri` without a password or token (user:secret@host becomes user:***@host)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password is None and "@" not in parts.netloc:
        return uri
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}" if user else f"***@{host}"))


def private_sqlite(tracking_uri: str) -> None:
    """Create the SQLite file a `sqlite:///` tracking URI names, private to this user, before MLflow does."""
    if not tracking_uri.startswith("sqlite:///"):
        return
    path = Path(tracking_uri.removeprefix("sqlite:///"))
    if path.exists():
        return
    private_dir(path.parent)
    # an empty file is an empty SQLite database; MLflow creates its tables in it
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def check_registries_agree(client: Any, *, registered_model_name: str, models_dir: Path,
                           tracking_uri: str) -> None:
    """Refuse to go on when the local registry lists versions the MLflow registry lacks or gave to other runs
    (the MLflow store was reset or replaced): training on would hand out those version numbers again."""
    from mlflow.exceptions import MlflowException

    local = read_registry(models_dir)["versions"]
    if not local:
        return
    try:
        found = client.search_model_versions(f"name='{registered_model_name}'")
    except MlflowException as exc:
        raise ModelError(f"cannot list the versions of {registered_model_name!r} in {redact_uri(tracking_uri)}: "
                         f"{exc.message}", reason="the MLflow registry cannot be read") from exc
    runs = {str(v.version): v.run_id for v in found}
    for version, entry in sorted(local.items()):
        if version not in runs or (entry.get("run_id") and entry["run_id"] != runs[version]):
            where = "has no such version" if version not in runs else f"gives it to run {runs[version]}"
            raise RegistryConflictError(
                f"{models_dir / 'registry.json'} records version {version} of {registered_model_name!r} "
                f"(run {entry.get('run_id') or 'unknown'}) but the MLflow registry at {redact_uri(tracking_uri)} "
                f"{where}: the MLflow store was reset or replaced. Restore it, or train into a new models folder; "
                "nothing was trained or overwritten",
                reason=f"the local registry and the MLflow registry disagree about version {version}")


def fetch_model(ref: str | None, *, tracking_uri: str, registered_model_name: str,
                models_dir: Path) -> TrainedModel | None:
    """Return the model an MLflow alias (default `champion`) or version names, its leadcast artifact fetched
    into `models_dir/.mlflow-cache` and checked against the SHA-256 tag of its run before it is loaded.

    None when no version holds the alias `champion` and the local registry names no champion either; when the
    local registry names a champion that MLflow does not, that is a `RegistryConflictError`.
    """
    with quiet_mlflow():
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        key = ref or "champion"
        where = redact_uri(tracking_uri)
        try:
            found = (client.get_model_version(registered_model_name, key) if key.isdigit()
                     else client.get_model_version_by_alias(registered_model_name, key))
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                raise ModelError(f"cannot read model {key!r} of {registered_model_name!r} from {where}: "
                                 f"{exc.message}", reason="the MLflow registry cannot be read") from exc
            found = None
        local_champion = read_registry(models_dir)["aliases"].get("champion") if key == "champion" else None
        if found is None:
            if key != "champion":
                raise ModelNotFoundError(f"no model {key!r} of {registered_model_name!r} in {where}",
                                         reason=f"no model '{key}' is registered") from None
            if local_champion is not None:
                raise RegistryConflictError(
                    f"{models_dir / 'registry.json'} names version {local_champion} champion but the MLflow "
                    f"registry at {where} has no champion for {registered_model_name!r}: the MLflow store was "
                    "reset or replaced. Restore it, or set model_source = \"files\"",
                    reason=f"the local registry names version {local_champion} champion but MLflow has none")
            return None
        version = str(found.version)
        if local_champion is not None:
            entry = read_registry(models_dir)["versions"].get(str(local_champion), {})
            if str(local_champion) != version or (entry.get("run_id") and entry["run_id"] != found.run_id):
                raise RegistryConflictError(
                    f"the MLflow alias champion names version {version} (run {found.run_id}) but "
                    f"{models_dir / 'registry.json'} names version {local_champion} "
                    f"(run {entry.get('run_id') or 'unknown'})",
                    reason=f"the MLflow alias names version {version} champion but the local registry names "
                           f"version {local_champion}")
        if found.run_id is None:
            raise ModelError(f"model version {version} of {registered_model_name!r} has no run to fetch its "
                             "leadcast artifact from; register models with `leadcast train`",
                             reason=f"model version {version} has no leadcast artifact")
        try:
            tags = client.get_run(found.run_id).data.tags
        except MlflowException as exc:
            raise ModelError(f"cannot read run {found.run_id} from {where}: {exc.message}",
                             reason="the MLflow run of the model cannot be read") from exc
        name, sha256 = tags.get(ARTIFACT_TAG), tags.get(SHA256_TAG)
        if not name or not sha256:
            raise ArtifactIntegrityError(
                f"run {found.run_id} of version {version} records no leadcast artifact SHA-256 "
                f"(tags {ARTIFACT_TAG}, {SHA256_TAG}): retrain the model with `leadcast train`",
                reason=f"no SHA-256 is recorded for version {version}'s artifact")
        cache = private_dir(models_dir / ".mlflow-cache")
        local = cache / Path(name).name
        if local.exists():
            try:
                return load_verified(local, sha256=sha256, version=version)
            except ArtifactIntegrityError:
                local.unlink(missing_ok=True)  # a damaged cache copy: fetch it again, checked again
        _download(client, run_id=found.run_id, name=Path(name).name, into=cache, version=version)
        return load_verified(local, sha256=sha256, version=version)


def champion_pointer(*, tracking_uri: str, registered_model_name: str) -> tuple[str, str | None] | None:
    """Return (version, run id) of the version the MLflow alias `champion` names, None when no version holds it.

    One registry call: what each replica asks every `reload_poll_seconds` to learn whether to load.
    """
    with quiet_mlflow():
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        try:
            found = client.get_model_version_by_alias(registered_model_name, "champion")
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                return None
            raise ModelError(f"cannot read the champion of {registered_model_name!r} from "
                             f"{redact_uri(tracking_uri)}: {exc.message}",
                             reason="the MLflow registry cannot be read") from exc
        return str(found.version), found.run_id


def champion_names(*, tracking_uri: str) -> list[str]:
    """Return, sorted, the names of the MLflow registered models leadcast trained (tagged with their spec) that
    have a version holding the alias `champion`: every model name a replica can serve."""
    with quiet_mlflow():
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        names: list[str] = []
        token: str | None = None
        try:
            while True:
                page = client.search_registered_models(max_results=200, page_token=token)
                names += [m.name for m in page if SPEC_TAG in (m.tags or {}) and "champion" in (m.aliases or {})]
                token = page.token
                if not token:
                    return sorted(names)
        except MlflowException as exc:
            raise ModelError(f"cannot list the registered models of {redact_uri(tracking_uri)}: {exc.message}",
                             reason="the MLflow registry cannot be read") from exc


def _download(client: Any, *, run_id: str, name: str, into: Path, version: str) -> None:
    """Download a run's leadcast artifact into `into`, renamed in place so no reader sees half a file."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(dir=into) as tmp:
        try:
            downloaded = client.download_artifacts(run_id, f"{SERVING_ARTIFACT_DIR}/{name}", tmp)
        except MlflowException as exc:
            raise ModelNotFoundError(f"model version {version} has no leadcast artifact in run {run_id}: "
                                     f"{exc.message}", reason=f"version {version}'s artifact cannot be fetched") \
                from exc
        staged = Path(tmp) / f".{name}"
        shutil.copyfile(downloaded, staged)
        staged.chmod(0o600)
        staged.replace(into / name)


@_quietly
def rollback(*, models_dir: Path, tracking_uri: str | None, registered_model_name: str) -> tuple[str, str]:
    """Make the previous champion champion again in the local registry (and the MLflow alias); return
    (from version, to version). The history shrinks, so a second rollback goes one further back."""
    registry = read_registry(models_dir)
    current = registry["aliases"].get("champion")
    if current is None:
        raise ModelNotFoundError(f"no champion in {models_dir}: nothing to roll back",
                                 reason="no champion is registered")
    history = [str(v) for v in registry.get("champion_history", [])]
    while history and history[-1] == str(current):
        history.pop()
    if not history:
        raise ModelError(f"version {current} is the only champion {models_dir / 'registry.json'} remembers: "
                         "nothing to roll back to", reason="no previous champion is recorded")
    target = history[-1]
    if target not in registry["versions"]:
        raise ModelNotFoundError(f"the previous champion, version {target}, is no longer in the registry",
                                 reason=f"version {target} is not registered")
    if tracking_uri is not None and any(e.get("run_id") for e in registry["versions"].values()):
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        client.set_registered_model_alias(registered_model_name, "champion", target)
        client.set_model_version_tag(registered_model_name, target, "promotion",
                                     f"rolled back to from version {current}")

    def change(reg: dict[str, Any]) -> None:
        reg["aliases"]["champion"] = target
        reg["champion_history"] = history
        reg["versions"][target]["promotion"] = f"rolled back to from version {current}"

    update_registry(models_dir, change)
    return str(current), target


def read_champion_version(models_dir: Path) -> str | None:
    """Return the version the local registry calls champion, if any."""
    version = read_registry(models_dir)["aliases"].get("champion")
    return None if version is None else str(version)


__all__ = ["Decision", "TrackedModel", "champion_names", "champion_pointer", "check_registries_agree", "decide",
           "fetch_model", "quiet_mlflow", "redact_uri", "rollback", "set_alias", "track"]
