"""Read leadcast's configuration once, at the edge, into one typed frozen object.

The settings file (`leadcast --settings FILE`) is checked as its JSON Schema (docs/schemas/settings.schema.json,
generated from `Settings`) checks it: unknown keys refused and no value coerced (`port = "8000"` is text, not a
number). `LEADCAST_*` environment variables are text by nature, so they are read as pydantic reads them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, create_model
from pydantic_settings import BaseSettings, SettingsConfigDict

from crmdata.errors import DataValidationError, Problem
from crmdata.tomlfile import TomlModel, problems_of, read_toml


class SettingsError(ValueError):
    """Raised when the settings file or environment holds an invalid value."""


class Settings(BaseSettings):
    """Hold every setting leadcast reads; environment variables use the `LEADCAST_` prefix."""

    model_config = SettingsConfigDict(env_prefix="LEADCAST_", frozen=True, extra="forbid", allow_inf_nan=False)

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
    api_keys_file: Path | None = Field(default=None,
                                       description="API key hashes and scopes; default home/api-keys.json.")
    max_body_bytes: int = Field(default=16 * 2**20, gt=0, description="Largest request body accepted, in bytes.")
    max_batch: int = Field(default=10_000, gt=0, description="Most leads scored in one request.")
    rate_limit_per_minute: int = Field(default=1200, gt=0, description="Requests a key may make per minute.")
    rate_limit_burst: int = Field(default=200, gt=0, description="Requests a key may make at once above the pace.")
    model_source: Literal["auto", "mlflow", "files"] = Field(
        default="auto",
        description="Where the served champion comes from: the MLflow alias (mlflow), models/registry.json (files), "
                    "or auto: MLflow when a tracking URI is set, else models/.")
    forecast_simulations: int = Field(default=10_000, gt=0, le=200_000, description="Monte Carlo runs per forecast.")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=2, ge=1, le=64)
    threads: int = Field(default=1, ge=1, le=64)
    timeout_seconds: int = Field(default=60, ge=1)
    # The edge (issue 10: slow clients, bounded forecasts, shared rate limits); see docs/deploy.md.
    worker_class: Literal["gevent", "gthread", "sync"] = Field(
        default="gevent",
        description="gunicorn worker class: gevent (default: a slow client costs a greenlet, not a worker), "
                    "gthread (uses `threads`) or sync (only behind a buffering proxy).")
    worker_connections: int = Field(default=1000, ge=1, le=100_000,
                                    description="Most connections one gevent worker holds at once.")
    rate_limit_storage: str | None = Field(
        default=None, pattern=r"^(memory://|file:///.+|rediss?://.+)$",
        description="Where rate-limit buckets live: memory:// (this process), file:///path (every worker of one "
                    "host; `leadcast serve` uses a file in its instance folder) or redis://host:port/db (every "
                    "replica of the service). Default: memory, or serve's file.")
    # Replicas (issue 15): each instance follows the MLflow champion alias on its own, no marker file needed.
    reload_poll_seconds: float = Field(
        default=5.0, ge=0, le=3600,
        description="How often each worker of `leadcast serve` asks MLflow which version is champion and loads it "
                    "when it changed (model_source mlflow); 0 turns the polling off.")
    # Measured here: 10.4k open deals x 20k simulations x 12 months = 2.5e9 cells took 6.5 s in process, but 2e9
    # cells over HTTP (a 100k-record body, load 4.5 on 2 cores) took 32 s: 5e8 keeps one request near 10 s.
    max_forecast_cells: int = Field(
        default=500_000_000, gt=0,
        description="Most open deals x simulations x periods one forecast request may ask for (refused with 422).")
    # Forecasts run in their own processes so a long one never holds a worker's scoring (api/workpool.py).
    forecast_processes: int = Field(
        default=1, ge=0, le=64,
        description="Forecast processes per worker (spawned on first use, niced); a forecast finding them all "
                    "busy is answered 503 with Retry-After. 0 runs forecasts in the worker itself.")
    forecast_timeout_seconds: float = Field(
        default=30.0, gt=0, le=3600,
        description="Longest a forecast may run in its process: past it the process is killed and replaced, "
                    "and the request answered 503.")
    # The store (issue 12).
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the store (sqlite:///... or postgresql+psycopg://...); "
                                  "default an SQLite file home/leadcast.db that upgrades itself.")
    prediction_log: bool = Field(default=True, description="Record every score the API returns in the store.")
    prediction_log_queue_rows: int = Field(
        default=100_000, gt=0, description="Rows the prediction log holds while the database is slow or down; "
                                           "rows beyond are dropped and counted.")
    # Model health and the retrain loop (issue 13); see docs/monitoring.md.
    outcome_maturity_days: float = Field(
        default=90.0, gt=0, le=3650, description="Days after its first score by which a lead that has not converted "
                                                 "counts as not converted (its outcome has matured).")
    monitoring_sample_rows: int = Field(
        default=25_000, ge=1_000, le=1_000_000,
        description="First scores whose logged features the model-health drift figures (PSI, unseen categories, "
                    "missing rates) are read from: PSI's error from sampling is about (bins - 1) / rows, 0.0004 "
                    "for 10 bins at 25,000, below the reference profile's own (bins - 1) / held-out leads.")
    monitoring_refresh_seconds: float = Field(
        default=300.0, ge=0, description="Each worker recomputes the model-health gauges (leadcast_feature_psi, "
                                         "leadcast_score_psi, leadcast_live_ece, leadcast_monitoring_alerts) this "
                                         "often in the background, from its first request on (0: only when "
                                         "GET /v1/models/monitoring is called).")
    retrain_every: str = Field(default="15d", pattern=r"^\s*\d+(\.\d+)?\s*[hdw]\s*$",
                               description="How often `leadcast retrain --if-due` runs the loop (15d, 12h, 2w).")
    trend_band_points: int = Field(
        default=3, ge=0, le=100, description="A score more than this many points above the lead's previous logged "
                                             "score is improving, more below declining, else steady.")
    percentile_window_days: int = Field(
        default=30, gt=0, description="Percentiles rank a score among the leads the same model version scored in "
                                      "this many days.")
    percentile_refresh_seconds: float = Field(
        default=300.0, ge=0, description="How old a worker's cached score distribution may get before it is "
                                         "refreshed in the background (0: recomputed on every request).")
    # The hot path (issue 12 item 3, issue 16 item 2): what each worker keeps instead of asking the store per request.
    key_cache_seconds: float = Field(
        default=5.0, ge=0, le=300, description="How long a worker accepts an API key the store confirmed without "
                                               "asking again: a revoked key is refused everywhere within this "
                                               "many seconds (0: the store is asked on every request).")
    trend_cache_seconds: float = Field(
        default=30.0, ge=0, le=3600, description="How long a worker compares a lead's new score with the score it "
                                                 "returned itself, without asking the store; a lead scored "
                                                 "meanwhile by another worker or replica is seen after this many "
                                                 "seconds (0: the store is asked on every request).")
    trend_cache_leads: int = Field(
        default=100_000, gt=0, le=10_000_000, description="Most leads whose latest score one worker keeps for "
                                                          "trends (the oldest are forgotten first).")
    retention_days: int | None = Field(
        default=None, gt=0, description="`leadcast db purge` removes predictions logged more than this many days "
                                        "ago; default: kept until purged with --older-than-days.")

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
    def resolved_artifact_root(self) -> str | None:
        """Return the artifact root for new experiments: home/mlartifacts for a local store; for a tracking
        server (http/https) None, so the server's own artifact root (`--artifacts-destination`) is used."""
        if self.mlflow_artifact_root:
            return self.mlflow_artifact_root
        if self.resolved_tracking_uri.startswith(("http://", "https://")):
            return None
        return (self.home / "mlartifacts").resolve().as_uri()

    @property
    def serves_from_mlflow(self) -> bool:
        """Return whether the service resolves the champion through the MLflow registry alias."""
        return self.model_source == "mlflow" or (self.model_source == "auto" and self.mlflow_tracking_uri is not None)

    @property
    def resolved_api_keys_file(self) -> Path:
        """Return the API keys file, defaulting to home/api-keys.json."""
        return self.api_keys_file if self.api_keys_file is not None else self.home / "api-keys.json"

    @property
    def resolved_database_url(self) -> str:
        """Return the store's URL, defaulting to the embedded SQLite file home/leadcast.db."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'leadcast.db').resolve()}"

    @property
    def resolved_demo_dir(self) -> Path:
        """Return the demo data folder, defaulting to home/demo-data."""
        return self.demo_dir if self.demo_dir is not None else self.home / "demo-data"


class _FileTable(TomlModel):
    """The settings file's own rules on top of TomlModel's (unknown keys refused, nothing coerced)."""

    model_config = ConfigDict(**TomlModel.model_config, allow_inf_nan=False)


# The file's shape is the Settings fields themselves, read strictly: one description, two strictness levels.
_FIELDS: dict[str, Any] = {name: (f.annotation, f) for name, f in Settings.model_fields.items()}
SettingsFile = create_model("SettingsFile", __base__=_FileTable, **_FIELDS)


def read_settings_file(file: Path) -> dict[str, Any]:
    """Return a settings file's values; raise SettingsError naming the file, each wrong key and its problem."""
    try:
        values = read_toml(file, what="settings", code="bad_settings")
        try:
            # As JSON: a path is text there (strict Python would want a Path object); a TOML date becomes a
            # table, which no setting is, so it is refused like any other wrong type.
            SettingsFile.model_validate_json(json.dumps(values, default=lambda v: {"date": str(v)}))
        except ValidationError as exc:
            raise DataValidationError(problems_of(exc, model=SettingsFile, source=str(file), code="bad_settings"),
                                      source=str(file)) from exc
    except DataValidationError as exc:
        raise SettingsError(f"settings file {exc}") from exc
    return values


def load_settings(file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from defaults, then a TOML file, then `LEADCAST_*` variables, then explicit overrides.

    The whole file is checked, even a key a variable overrides: a wrong file is wrong wherever it runs.
    """
    values: dict[str, Any] = {}
    if file is not None:
        # The environment outranks the file, so drop what a LEADCAST_ variable sets.
        values.update({k: v for k, v in read_settings_file(file).items() if _variable(k) not in os.environ})
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**values)
    except ValidationError as exc:  # the file was checked above: the value is a variable's or an override's
        problems = problems_of(exc, model=SettingsFile, source="settings", code="bad_settings")
        raise SettingsError("invalid settings: " + "; ".join(_said(p, given=values) for p in problems)) from exc


def _variable(key: str) -> str:
    return f"LEADCAST_{key.upper()}"


def _said(problem: Problem, *, given: dict[str, Any]) -> str:
    """Return a problem naming where its value came from: a LEADCAST_ variable, or the setting's name."""
    key = problem.field
    where = f"environment variable {_variable(key)}" if key not in given and _variable(key) in os.environ else key
    return f"{where}: {problem.message}" + ("" if problem.value is None else f" (value {problem.value!r})")
