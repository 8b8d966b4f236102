"""Trained-model artifacts on disk: write-once joblib files checked by SHA-256, JSON model cards, and a small
local registry file whose updates are serialised by a file lock.

joblib files are pickles: loading one runs whatever code it holds. So every load first checks the file's
SHA-256 against the hash the registry (or the MLflow run) recorded when the model was trained, and a file is
never overwritten once written: its name carries its version and a prefix of its content hash.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import joblib
import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from crmdata.errors import LeadcastError
from crmdata.files import json_text, write_json
from scoring.spec import DEFAULT_SPEC, ModelSpec

REGISTRY_FILE = "registry.json"
LOCK_FILE = ".registry.lock"
HASH_PREFIX = 12  # hex digits of the SHA-256 in a file name: 48 bits, enough to never collide in one folder
ModelSource = Literal["files", "mlflow"]
# A model name is a folder under models/ (each name but the home's default keeps its registry in its own
# folder), so it is one path segment that never starts with a dot (.mlflow-cache, .reload are ours).
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class ModelError(LeadcastError):
    """A model that cannot be served; `reason` says why without naming a file, a URI or a credential."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ModelNotFoundError(ModelError):
    """Raised when the requested model (alias, version or file) does not exist."""

    def __init__(self, message: str, *, reason: str = "the champion's artifact does not exist") -> None:
        super().__init__(message, reason=reason)


class ArtifactIntegrityError(ModelError):
    """Raised when an artifact's bytes do not match the SHA-256 recorded at training, or none was recorded."""


class ArtifactUnreadableError(ModelError):
    """Raised when an artifact matches its hash but cannot be loaded as a leadcast model."""


class RegistryConflictError(ModelError):
    """Raised when the local registry and the MLflow registry disagree, or a write would overwrite a version."""


class UnknownModelError(ModelError):
    """Raised when a model name is not one of the names the registry holds; `known` lists those it holds."""

    def __init__(self, message: str, *, name: str, known: list[str]) -> None:
        super().__init__(message, reason=f"no model named '{name}' is registered")
        self.name = name
        self.known = known


@dataclass
class TrainedModel:
    """A fitted pipeline with its spec, model card and the hashed ids of the leads it was trained on."""

    pipeline: Pipeline
    spec: ModelSpec
    card: dict[str, Any]
    train_ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))
    version: str = "unregistered"
    # SHA-256 of the artifact this model was loaded from (set by the loaders, never pickled with a value)
    sha256: str | None = None

    def seen(self, ids: pd.Series) -> np.ndarray:
        """Return, per id, whether this model was trained on that lead."""
        hashed = hash_ids(ids)
        pos = np.searchsorted(self.train_ids, hashed)
        pos = np.minimum(pos, max(len(self.train_ids) - 1, 0))
        return np.asarray(self.train_ids[pos] == hashed) if len(self.train_ids) else np.zeros(len(ids), bool)


def hash_ids(ids: pd.Series) -> np.ndarray:
    """Return a 64-bit hash of each id (stable across runs and machines)."""
    return np.asarray(pd.util.hash_array(ids.astype(str).to_numpy(dtype=object)), dtype=np.uint64)


def sha256_bytes(data: bytes) -> str:
    """Return the SHA-256 of `data` as hex."""
    return hashlib.sha256(data).hexdigest()


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) readable by this user only (0700) and return it."""
    if not path.exists():
        path.mkdir(parents=True, mode=0o700, exist_ok=True)
        path.chmod(0o700)  # mkdir's mode is masked by the umask
    return path


def check_model_name(name: str) -> str:
    """Return `name` if it can name a model (letters, digits, '.', '_', '-', not first a dot), else raise."""
    if not MODEL_NAME.fullmatch(name) or ".." in name:
        raise ModelError(f"{name[:120]!r} cannot name a model: use up to 100 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit (the model's name is its spec's `name`)",
                         reason="the model name is not valid")
    return name


@functools.cache
def _default_spec_name() -> str:
    return ModelSpec.from_file(DEFAULT_SPEC).name


def spec_model_name(spec: ModelSpec, *, default_name: str) -> str:
    """Return the name of the models trained with `spec`: its `name`, or `default_name` for the default spec
    (models of the leadcast lead contract keep the home's registered model name, as before names were per spec)."""
    if spec.name in (_default_spec_name(), default_name):
        return default_name
    return check_model_name(spec.name)


def model_dir(models_dir: Path, *, name: str, default_name: str) -> Path:
    """Return the folder holding the registry of model `name`: `models_dir` itself for the home's default name
    (exactly where a one-model home keeps it), `models_dir/NAME` for every other name."""
    if name == default_name:
        return models_dir
    return models_dir / check_model_name(name)


def registered_names(models_dir: Path, *, default_name: str) -> list[str]:
    """Return the model names registered in `models_dir`: the default name first when its registry exists,
    then each other name whose folder holds a registry, sorted (a registry that cannot be read is still listed: its
    load says why)."""
    names = [default_name] if (models_dir / REGISTRY_FILE).is_file() else []
    try:
        folders = sorted(p for p in models_dir.iterdir() if p.is_dir() and MODEL_NAME.fullmatch(p.name))
    except FileNotFoundError:
        return names
    for folder in folders:
        if folder.name != default_name and (folder / REGISTRY_FILE).is_file():
            names.append(folder.name)
    return names


def read_registry(models_dir: Path) -> dict[str, Any]:
    """Return the local registry: versions with their files and hashes, and the aliases (champion, challenger)."""
    path = models_dir / REGISTRY_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {"versions": {}, "aliases": {}}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ModelError(f"the model registry {path} is not valid JSON: {exc}",
                         reason="the local model registry is not valid JSON") from exc
    if not isinstance(data, dict) or not isinstance(data.get("versions"), dict) \
            or not isinstance(data.get("aliases"), dict):
        raise ModelError(f"the model registry {path} has no 'versions' and 'aliases' tables",
                         reason="the local model registry is malformed")
    return data


@contextlib.contextmanager
def registry_lock(models_dir: Path) -> Iterator[None]:
    """Hold the registry's exclusive file lock (blocking) so read-modify-write updates never interleave."""
    private_dir(models_dir)
    fd = os.open(models_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def update_registry(models_dir: Path, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Apply `change` to the registry under its lock and write the result atomically; return it."""
    with registry_lock(models_dir):
        registry = read_registry(models_dir)
        change(registry)
        write_json(models_dir / REGISTRY_FILE, registry)
        return registry


def _write_once(path: Path, data: bytes) -> None:
    """Write `data` to `path` unless it exists; an existing file must hold exactly these bytes."""
    if path.exists():
        if sha256_bytes(path.read_bytes()) != sha256_bytes(data):
            raise RegistryConflictError(f"{path} exists with other content: artifacts are never overwritten",
                                        reason="an artifact of this version exists with other content")
        return
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # link, unlike rename, refuses to replace a file another writer created meanwhile
        try:
            os.link(tmp, path)
        except FileExistsError:
            _write_once(path, data)
    finally:
        tmp.unlink(missing_ok=True)


def dump_trained(trained: TrainedModel) -> bytes:
    """Return the joblib bytes of a trained model (without any hash it was loaded with)."""
    loaded_hash, trained.sha256 = trained.sha256, None
    try:
        buffer = io.BytesIO()
        joblib.dump(trained, buffer, compress=3)
        return buffer.getvalue()
    finally:
        trained.sha256 = loaded_hash


def save_trained(trained: TrainedModel, *, models_dir: Path, name: str, aliases: list[str],
                 run_id: str | None = None) -> Path:
    """Write `<name>-v<version>-<hash>.joblib` and its `.json` model card once, record the version with the
    files' SHA-256 (and MLflow run) in the registry, and point `aliases` at it.

    A version already recorded with another artifact is refused: a lost or replaced MLflow store that hands out
    version numbers again must never overwrite the models trained before.
    """
    private_dir(models_dir)
    data = dump_trained(trained)
    digest = sha256_bytes(data)
    stem = f"{name}-v{trained.version}-{digest[:HASH_PREFIX]}"
    path = models_dir / f"{stem}.joblib"
    card_bytes = json_text(trained.card).encode()
    entry = {"file": path.name, "sha256": digest, "card": f"{stem}.json", "card_sha256": sha256_bytes(card_bytes),
             "run_id": run_id, "metrics": trained.card.get("metrics", {}).get("selected", {})}

    def record(registry: dict[str, Any]) -> None:
        known = registry["versions"].get(trained.version)
        if known is not None and known.get("sha256") != digest:
            raise RegistryConflictError(
                f"version {trained.version} of {name!r} is already recorded in {models_dir / REGISTRY_FILE} with "
                f"another artifact ({known.get('file')}); refusing to overwrite it. If the MLflow store was reset "
                "or replaced, restore it, or train into a new models folder",
                reason=f"version {trained.version} is already recorded with another artifact")
        _write_once(path, data)
        _write_once(models_dir / entry["card"], card_bytes)
        registry["name"] = name
        registry["versions"][trained.version] = entry
        for alias in aliases:
            registry["aliases"][alias] = trained.version

    update_registry(models_dir, record)
    trained.sha256 = digest
    return path


def set_alias(models_dir: Path, alias: str, version: str) -> None:
    """Point `alias` at `version` in the local registry."""
    update_registry(models_dir, lambda registry: registry["aliases"].__setitem__(alias, version))


def load_verified(path: Path, *, sha256: str | None, version: str | None = None) -> TrainedModel:
    """Load a leadcast artifact only if its bytes have the SHA-256 recorded at training.

    The bytes are read once, hashed, then unpickled from memory, so the file cannot change between the check
    and the load. Whatever unpickling raises (zlib.error, EOFError, KeyError, UnpicklingError, ...) is an
    `ArtifactUnreadableError`.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelNotFoundError(f"model file {path} does not exist") from exc
    except OSError as exc:
        raise ArtifactUnreadableError(f"cannot read model file {path}: {exc}",
                                      reason="the champion's artifact cannot be read") from exc
    if not sha256:
        raise ArtifactIntegrityError(
            f"no SHA-256 is recorded for {path.name}: leadcast loads only artifacts whose hash was recorded when "
            "they were trained; retrain the model with `leadcast train`",
            reason="no SHA-256 is recorded for the champion's artifact")
    actual = sha256_bytes(data)
    if actual != sha256:
        raise ArtifactIntegrityError(
            f"model file {path} has SHA-256 {actual}, not the {sha256} recorded at training: refusing to load it",
            reason="the champion's artifact does not match the SHA-256 recorded at training")
    try:
        trained = joblib.load(io.BytesIO(data))
    except Exception as exc:  # any unpickling failure is a bad artifact, not a bug of ours
        raise ArtifactUnreadableError(f"cannot load model file {path}: {type(exc).__name__}: {exc}",
                                      reason="the champion's artifact cannot be loaded") from exc
    if not isinstance(trained, TrainedModel):
        raise ArtifactUnreadableError(f"{path} is not a leadcast model artifact",
                                      reason="the champion's artifact is not a leadcast model")
    trained.sha256 = actual
    if version is not None:
        trained.version = version
    return trained


def registry_entry(ref: str | None, *, models_dir: Path) -> tuple[str, dict[str, Any]] | None:
    """Return (version, entry) for an alias (default `champion`) or version; None when the alias is unset."""
    registry = read_registry(models_dir)
    key = str(ref or "champion")
    if key == "champion" and key not in registry["aliases"]:
        return None
    version = registry["aliases"].get(key, key)
    entry = registry["versions"].get(str(version))
    if entry is None:
        known = ", ".join(sorted(registry["versions"])) or "none"
        aliases = ", ".join(f"{a}={v}" for a, v in registry["aliases"].items()) or "none"
        raise ModelNotFoundError(f"no model '{key}' in {models_dir} (versions: {known}; aliases: {aliases})",
                                 reason=f"no model '{key}' is registered")
    return str(version), entry


def load_trained(ref: str | Path | None = None, *, models_dir: Path) -> TrainedModel:
    """Load a trained model by alias (default `champion`), version number or .joblib path, checking its hash.

    A .joblib path must be listed in the registry of its own folder, which holds its recorded SHA-256.
    """
    if isinstance(ref, Path) or (ref is not None and str(ref).endswith(".joblib")):
        path = Path(ref)
        registry = read_registry(path.parent)
        found = [(v, e) for v, e in registry["versions"].items() if e.get("file") == path.name]
        if not found:
            if not path.exists():
                raise ModelNotFoundError(f"model file {path} does not exist")
            raise ArtifactIntegrityError(
                f"{path} is not listed in {path.parent / REGISTRY_FILE}, so no SHA-256 vouches for it: leadcast "
                "loads only artifacts recorded when they were trained",
                reason="the artifact is not in the model registry")
        version, entry = found[0]
        return load_verified(path, sha256=entry.get("sha256"), version=version)
    resolved = registry_entry(None if ref is None else str(ref), models_dir=models_dir)
    if resolved is None:
        raise ModelNotFoundError(f"no champion in {models_dir}: train one with `leadcast train`",
                                 reason="no champion is registered")
    version, entry = resolved
    return load_verified(models_dir / entry["file"], sha256=entry.get("sha256"), version=version)


def resolve_trained(ref: str | Path | None = None, *, source: ModelSource, models_dir: Path,
                    registered_model_name: str, tracking_uri: str | None = None) -> TrainedModel | None:
    """Return the model `ref` names (default the champion) from the local registry (`files`) or the MLflow
    registry (`mlflow`), verified by its SHA-256; None only when no champion exists at all and none was asked.

    This is the one champion resolver: the service, `leadcast score`, `leadcast report` and the notebooks call
    it (through `scoring.scorer.load_scorer`), so all of them answer with the same model or the same error.
    """
    if source == "mlflow" and not (isinstance(ref, Path) or str(ref or "").endswith(".joblib")):
        if tracking_uri is None:
            raise ModelError("model_source is 'mlflow' but no tracking URI is set",
                             reason="no MLflow tracking store is configured")
        from scoring.tracking import fetch_model  # MLflow loads only when it is the source

        return fetch_model(None if ref is None else str(ref), tracking_uri=tracking_uri,
                           registered_model_name=registered_model_name, models_dir=models_dir)
    if (ref is None or str(ref) == "champion") and registry_entry(None, models_dir=models_dir) is None:
        return None
    return load_trained(ref, models_dir=models_dir)
