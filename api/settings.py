"""Read leadcast's configuration once, at the edge, into one typed frozen object."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(ValueError):
    """Raised when the settings file or environment holds an invalid value."""


class Settings(BaseSettings):
    """Hold every setting leadcast reads; environment variables use the `LEADCAST_` prefix."""

    model_config = SettingsConfigDict(env_prefix="LEADCAST_", frozen=True, extra="forbid")

    home: Path = Field(default_factory=Path.cwd, description="Folder for embedded stores (MLflow, demo data).")
    models_dir: Path | None = Field(default=None, description="Trained artifacts and model cards; default home/models.")
    mlflow_tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; default a SQLite store home/mlflow.db."
    )
    mlflow_artifact_root: str | None = Field(
        default=None, description="Where a new MLflow experiment keeps artifacts; default home/mlartifacts."
    )
    experiment_name: str = "leadcast-lead-scoring"
    registered_model_name: str = "leadcast-lead-scoring"
    demo_dir: Path | None = Field(default=None, description="Where `leadcast demo-data` writes by default.")

    @property
    def resolved_models_dir(self) -> Path:
        """Return the models folder, defaulting to home/models."""
        return self.models_dir if self.models_dir is not None else self.home / "models"

    @property
    def resolved_tracking_uri(self) -> str:
        """Return the MLflow tracking URI, defaulting to a SQLite file under home."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @property
    def resolved_artifact_root(self) -> str:
        """Return the artifact root for new experiments, defaulting to home/mlartifacts."""
        if self.mlflow_artifact_root:
            return self.mlflow_artifact_root
        return (self.home / "mlartifacts").resolve().as_uri()

    @property
    def resolved_demo_dir(self) -> Path:
        """Return the demo data folder, defaulting to home/demo-data."""
        return self.demo_dir if self.demo_dir is not None else self.home / "demo-data"


def load_settings(file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from defaults, then a TOML file, then `LEADCAST_*` variables, then explicit overrides."""
    values: dict[str, Any] = {}
    if file is not None:
        try:
            with file.open("rb") as handle:
                from_file = tomllib.load(handle)
        except FileNotFoundError as exc:
            raise SettingsError(f"settings file {file} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"settings file {file} is not valid TOML: {exc}") from exc
        # The environment outranks the file, so drop what a LEADCAST_ variable sets.
        values.update({k: v for k, v in from_file.items() if f"LEADCAST_{k.upper()}" not in os.environ})
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise SettingsError(f"invalid settings: {problems}") from exc
