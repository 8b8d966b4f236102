"""The settings object: where shared state lives for replicas, and how a settings file is checked."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from api.cli import cli
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


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "leadcast.toml"
    path.write_text(text)
    return path


def test_a_bad_settings_file_names_the_file_each_key_and_its_problem(tmp_path: Path) -> None:
    path = _file(tmp_path, 'port = "8000"\nworkres = 2\nprediction_log = "yes"\nworkers = 0\n'
                           'model_source = "mlfow"\nhome = 2026-07-01\nmax_batch = 2.5\n[database]\nurl = "x"\n'
                           '[colours]\nred = 1\n')
    with pytest.raises(SettingsError) as exc:
        load_settings(path)
    # one line per key, in the order of the settings object's fields, then the unknown keys
    assert str(exc.value).splitlines() == [
        f"settings file {path}: 9 problem(s) found",
        f"{path}, field 'home': must be a valid string",  # a TOML date, not text
        f"{path}, field 'max_batch': must be a valid integer (value '2.5')",
        f"{path}, field 'model_source': must be one of auto, mlflow, files (value 'mlfow')",
        f"{path}, field 'port': must be a valid integer (value '8000')",  # text is not coerced into a number
        f"{path}, field 'workers': must be greater than or equal to 1 (value '0')",
        f"{path}, field 'prediction_log': must be a valid boolean (value 'yes')",
        f"{path}, field 'workres': unknown key; did you mean workers or worker_class? (value '2')",
        f"{path}, field 'database': unknown key; did you mean database_url?",
        f"{path}, field 'colours': unknown key; none of the 40 known keys is spelled like it (see the format's "
        "JSON Schema)"]


def test_a_good_settings_file_is_read_with_its_types(tmp_path: Path) -> None:
    path = _file(tmp_path, f'home = "{tmp_path}"\nport = 8001\nreload_poll_seconds = 2\nprediction_log = false\n'
                           'model_source = "files"\n')
    settings = load_settings(path)
    # an integer is a number where a float is asked for (2 -> 2.0), as JSON Schema's "number" says
    assert (settings.home, settings.port, settings.reload_poll_seconds, settings.prediction_log,
            settings.model_source) == (tmp_path, 8001, 2.0, False, "files")
    for text, problem in (('timeout_seconds = inf\n', "field 'timeout_seconds': must be a valid integer"),
                          ('monitoring_refresh_seconds = nan\n',
                           "field 'monitoring_refresh_seconds': must be a finite number (value 'nan')")):
        with pytest.raises(SettingsError, match=re.escape(problem)):
            load_settings(_file(tmp_path, text))


def test_a_missing_or_malformed_settings_file_is_one_message(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings(tmp_path / "nope.toml")
    assert str(exc.value) == (f"settings file {tmp_path / 'nope.toml'}: 1 problem(s) found\n"
                              f"{tmp_path / 'nope.toml'}, field '-': settings file does not exist")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(_file(tmp_path, "port = \n"))


def test_the_cli_refuses_a_bad_settings_file_with_exit_2_and_no_traceback(tmp_path: Path) -> None:
    path = _file(tmp_path, 'port = "8000"\n')
    result = CliRunner().invoke(cli, ["--settings", str(path), "schemas", "--out", str(tmp_path / "s")],
                                env={"LEADCAST_HOME": str(tmp_path)})
    assert result.exit_code == 2 and result.exception is not None and isinstance(result.exception, SystemExit)
    assert result.output == (f"error: settings file {path}: 1 problem(s) found\n"
                             f"{path}, field 'port': must be a valid integer (value '8000')\n")
    assert not (tmp_path / "s").exists()  # nothing ran


def test_environment_variables_override_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _file(tmp_path, "port = 8001\nworkers = 3\n")
    monkeypatch.setenv("LEADCAST_PORT", "9000")  # text, as every variable is: read as pydantic reads it
    settings = load_settings(path)
    assert (settings.port, settings.workers) == (9000, 3)
    assert load_settings(path, port=9100).port == 9100  # an explicit override outranks both
    monkeypatch.setenv("LEADCAST_WORKERS", "many")
    with pytest.raises(SettingsError) as exc:
        load_settings(path)
    assert str(exc.value) == ("invalid settings: environment variable LEADCAST_WORKERS: must be a valid integer, "
                              "unable to parse string as an integer (value 'many')")


def test_the_whole_file_is_checked_even_a_key_a_variable_overrides(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADCAST_PORT", "9000")
    with pytest.raises(SettingsError, match="field 'port': must be a valid integer"):
        load_settings(_file(tmp_path, 'port = "8000"\n'))
