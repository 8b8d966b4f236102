"""Settings that decide where shared state lives when the service runs as replicas."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.settings import SettingsError, load_settings


def test_a_tracking_server_keeps_its_own_artifact_root(tmp_path: Path) -> None:
    # A file:// root under this host's home would hide the artifacts from every other host.
    assert load_settings(home=tmp_path, mlflow_tracking_uri="http://127.0.0.1:5000").resolved_artifact_root is None
    assert load_settings(home=tmp_path).resolved_artifact_root == (tmp_path / "mlartifacts").resolve().as_uri()
    assert load_settings(home=tmp_path, mlflow_tracking_uri="https://mlflow.internal",
                         mlflow_artifact_root="s3://bucket/leadcast").resolved_artifact_root == "s3://bucket/leadcast"


def test_reload_poll_seconds_is_bounded() -> None:
    assert load_settings().reload_poll_seconds == 5.0
    assert load_settings(reload_poll_seconds=0).reload_poll_seconds == 0
    with pytest.raises(SettingsError, match="reload_poll_seconds"):
        load_settings(reload_poll_seconds=-1)
