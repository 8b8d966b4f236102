"""Trained-model artifacts on disk: a joblib file, a JSON model card and a small local registry file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from crmdata.errors import LeadcastError
from crmdata.loaders import atomic_write
from scoring.spec import ModelSpec

REGISTRY_FILE = "registry.json"


class ModelNotFoundError(LeadcastError):
    """Raised when the requested model (alias, version or file) does not exist."""


@dataclass
class TrainedModel:
    """A fitted pipeline with its spec, model card and the hashed ids of the leads it was trained on."""

    pipeline: Pipeline
    spec: ModelSpec
    card: dict[str, Any]
    train_ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))
    version: str = "unregistered"

    def seen(self, ids: pd.Series) -> np.ndarray:
        """Return, per id, whether this model was trained on that lead."""
        hashed = hash_ids(ids)
        pos = np.searchsorted(self.train_ids, hashed)
        pos = np.minimum(pos, max(len(self.train_ids) - 1, 0))
        return np.asarray(self.train_ids[pos] == hashed) if len(self.train_ids) else np.zeros(len(ids), bool)


def hash_ids(ids: pd.Series) -> np.ndarray:
    """Return a 64-bit hash of each id (stable across runs and machines)."""
    return np.asarray(pd.util.hash_array(ids.astype(str).to_numpy(dtype=object)), dtype=np.uint64)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=str) + "\n"))


def read_registry(models_dir: Path) -> dict[str, Any]:
    """Return the local registry: versions with their files and the aliases (champion, challenger)."""
    path = models_dir / REGISTRY_FILE
    if not path.exists():
        return {"versions": {}, "aliases": {}}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def save_trained(trained: TrainedModel, *, models_dir: Path, name: str, aliases: list[str]) -> Path:
    """Write `<name>-v<version>.joblib` and its `.json` model card; record the version and aliases."""
    stem = f"{name}-v{trained.version}"
    path = models_dir / f"{stem}.joblib"
    atomic_write(path, lambda tmp: joblib.dump(trained, tmp, compress=3))
    write_json(models_dir / f"{stem}.json", trained.card)
    registry = read_registry(models_dir)
    registry["name"] = name
    registry["versions"][trained.version] = {"file": path.name, "card": f"{stem}.json",
                                             "metrics": trained.card.get("metrics", {}).get("selected", {})}
    for alias in aliases:
        registry["aliases"][alias] = trained.version
    write_json(models_dir / REGISTRY_FILE, registry)
    return path


def set_alias(models_dir: Path, alias: str, version: str) -> None:
    """Point `alias` at `version` in the local registry."""
    registry = read_registry(models_dir)
    registry["aliases"][alias] = version
    write_json(models_dir / REGISTRY_FILE, registry)


def load_trained(ref: str | Path | None = None, *, models_dir: Path) -> TrainedModel:
    """Load a trained model by alias (default `champion`), version number or .joblib path."""
    if isinstance(ref, Path) or (ref is not None and str(ref).endswith(".joblib")):
        path = Path(ref)
    else:
        registry = read_registry(models_dir)
        key = str(ref or "champion")
        version = registry["aliases"].get(key, key)
        entry = registry["versions"].get(str(version))
        if entry is None:
            known = ", ".join(sorted(registry["versions"])) or "none"
            raise ModelNotFoundError(f"no model '{key}' in {models_dir} (versions: {known}; aliases: "
                                     f"{', '.join(f'{a}={v}' for a, v in registry['aliases'].items()) or 'none'})")
        path = models_dir / entry["file"]
    if not path.exists():
        raise ModelNotFoundError(f"model file {path} does not exist")
    trained = joblib.load(path)
    if not isinstance(trained, TrainedModel):
        raise ModelNotFoundError(f"{path} is not a leadcast model artifact")
    return trained
