"""Issue 11 item 7: the TOML formats (and the settings file) are pydantic models; their JSON Schemas are generated
and cannot drift."""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from api.cli import cli
from api.commands.schemas import FORMATS, schema_texts
from api.settings import Settings, SettingsError, load_settings
from crmdata.errors import DataValidationError
from crmdata.mapping import ColumnMapping
from crmdata.stages import StageConfig
from scoring.rules import RULES_DIR, RulesModel
from scoring.spec import SPECS_DIR, ModelSpec


def shipped(repo_root: Path) -> list[tuple[str, Path]]:
    """Every TOML file leadcast ships or documents, with its format."""
    return ([("spec", p) for p in sorted(SPECS_DIR.glob("*.toml"))]
            + [("rules", p) for p in sorted(RULES_DIR.glob("*.toml"))]
            + [("mapping", p) for p in sorted((repo_root / "docs" / "examples").glob("*mapping*.toml"))])


def test_committed_schemas_are_the_generated_ones(repo_root: Path) -> None:
    committed = {p.name: p.read_text() for p in sorted((repo_root / "docs" / "schemas").glob("*.json"))}
    assert committed == schema_texts(), "run `leadcast schemas` and commit docs/schemas"
    assert set(committed) == {f"{name}.schema.json" for name in ("spec", "rules", "mapping", "stages", "settings")}


def test_the_command_writes_one_schema_per_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADCAST_HOME", str(tmp_path))
    result = CliRunner().invoke(cli, ["schemas", "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert {p.name: p.read_text() for p in (tmp_path / "s").iterdir()} == schema_texts()
    assert len(result.output.splitlines()) == len(FORMATS) == 5


def test_every_shipped_file_reads_and_matches_its_schema(repo_root: Path) -> None:
    files = shipped(repo_root)
    assert [kind for kind, _ in files].count("spec") == 4 and len(files) == 6  # 4 specs, default rules, Maven map
    readers = {"spec": ModelSpec.from_file, "rules": RulesModel.from_file, "mapping": ColumnMapping.from_file}
    for kind, path in files:
        readers[kind](path)
        schema = jsonschema.Draft202012Validator(jsonschema_of(kind))
        assert list(schema.iter_errors(tomllib.loads(path.read_text()))) == [], path
    stages = tomllib.loads((repo_root / "docs" / "examples" / "maven-crm-mapping.toml").read_text())["stages"]
    jsonschema.Draft202012Validator(jsonschema_of("stages")).validate(stages)
    jsonschema.Draft202012Validator(jsonschema_of("stages")).validate({"stages": stages})


def jsonschema_of(kind: str) -> dict[str, object]:
    return dict(json.loads(schema_texts()[f"{kind}.schema.json"]))


def test_the_schema_refuses_what_the_reader_refuses() -> None:
    spec = jsonschema.Draft202012Validator(jsonschema_of("spec"))
    good = {"name": "t", "target": {"column": "won", "positive": ["yes"]},
            "features": [{"column": "visits", "kind": "numeric", "group": "behavioural", "min": 0}]}
    assert spec.is_valid(good)
    for bad in ({**good, "colour": "red"}, {**good, "features": [{**good["features"][0], "kind": "text"}]},  # type: ignore[dict-item]
                {**good, "features": [{**good["features"][0], "min": "0"}]}, {**good, "grades": {"method": "x"}}):  # type: ignore[dict-item]
        assert not spec.is_valid(bad), bad
        with pytest.raises(DataValidationError) as exc:
            ModelSpec.from_dict(bad)
        assert {p.code for p in exc.value.problems} == {"bad_spec"}


def test_a_bad_file_is_one_message_with_file_key_path_and_problem(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text('name = "t"\n[target]\ncolumn = "won"\npositive = ["yes"]\n'
                    '[[features]]\ncolumn = "a"\nkind = "numeric"\ngroup = "bant"\nmin = "3"\n'
                    '[[features]]\ncolumn = "b"\nkind = "numeric"\ngroup = "bant"\ncolour = 1\n')
    mapping = tmp_path / "map.toml"
    mapping.write_text('[stages]\nopen = ["a"]\nwon = ["a"]\nlost = ["b"]\n')
    monkeypatch.setenv("LEADCAST_HOME", str(tmp_path))
    leads = tmp_path / "leads.csv"
    leads.write_text("lead_id,a,b\n1,2,3\n")
    result = CliRunner().invoke(cli, ["validate", "opportunities", str(leads), "--mapping", str(mapping)])
    assert result.exit_code == 2  # a message, no traceback
    assert result.output == (f"error: {mapping}: 1 problem(s) found\n"
                             f"{mapping}, field 'stages': names appear more than once: a\n")
    with pytest.raises(DataValidationError) as exc:
        ModelSpec.from_file(spec)
    assert str(exc.value) == (
        f"{spec}: 2 problem(s) found\n"
        f"{spec}, field 'features[0].min': must be a valid number (value '3')\n"
        f"{spec}, field 'features[1].colour': unknown key; known: column, group, kind, label, max, min, optional, "
        "reason, reason_false, reason_missing, reason_true (value '1')")
    assert StageConfig.from_mapping({"open": ["a"], "won": ["b"], "lost": ["c"]}).all == ("a", "b", "c")


def test_pydantic_errors_read_in_leadcast_words() -> None:
    with pytest.raises(DataValidationError) as exc:
        ModelSpec.from_dict({"name": "t", "target": "won", "features": [], "decimal": ";", "grades": {"a": 0.5}})
    assert [str(p) for p in exc.value.problems] == [
        "spec, field 'target': must be a table (a [section], an [[entry]] or { key = value }) (value 'won')",
        "spec, field 'features': must have at least 1 item(s)",
        "spec, field 'grades.a': unknown key; known: A, B, C, method (value '0.5')",
        "spec, field 'decimal': must be one of '.', ',' (value ';')"]


def settings_files(repo_root: Path) -> list[tuple[str, str]]:
    """Every settings file leadcast ships or documents: the example file, and each TOML block of the README and
    docs that is one (its first line names a leadcast.toml or trainer.toml)."""
    found = [("docs/examples/leadcast.toml", (repo_root / "docs" / "examples" / "leadcast.toml").read_text())]
    for doc in [repo_root / "README.md", *sorted((repo_root / "docs").glob("*.md"))]:
        for block in re.findall(r"```toml\n(.*?)```", doc.read_text(), flags=re.DOTALL):
            if re.match(r"#.*\b(leadcast|trainer)\.toml\b", block):
                found.append((doc.name, block))
    return found


def test_every_shipped_settings_file_reads_and_matches_its_schema(repo_root: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("LEADCAST_")]:
        monkeypatch.delenv(name)  # the files alone, as a fresh shell reads them
    files = settings_files(repo_root)
    assert [where for where, _ in files] == ["docs/examples/leadcast.toml", "deploy.md"]
    schema = jsonschema.Draft202012Validator(jsonschema_of("settings"))
    for i, (where, text) in enumerate(files):
        assert list(schema.iter_errors(tomllib.loads(text))) == [], where
        (tmp_path / f"{i}.toml").write_text(text)
        load_settings(tmp_path / f"{i}.toml")
    deploy = load_settings(tmp_path / "1.toml")
    assert (deploy.model_source, deploy.workers, deploy.reload_poll_seconds) == ("mlflow", 2, 5.0)
    # `make run` passes no file: the defaults, which the example writes out, are valid too
    defaults = Settings().model_dump(mode="json")
    assert schema.is_valid(defaults) and schema.is_valid({})
    example = load_settings(repo_root / "docs" / "examples" / "leadcast.toml").model_dump()
    assert {k: v for k, v in example.items() if v != defaults[k] and k != "home"} == {}
    assert example["home"] == Path(".")


def test_the_settings_schema_refuses_what_the_reader_refuses(tmp_path: Path) -> None:
    schema = jsonschema.Draft202012Validator(jsonschema_of("settings"))
    good = 'port = 8001\nworkers = 4\nmodel_source = "files"\nreload_poll_seconds = 0.5\nhome = "/srv/x"\n'
    assert schema.is_valid(tomllib.loads(good))
    (tmp_path / "good.toml").write_text(good)
    assert load_settings(tmp_path / "good.toml").port == 8001
    for i, bad in enumerate(('port = "8000"\n', "workres = 2\n", 'prediction_log = "yes"\n', "workers = 0\n",
                             'model_source = "mlfow"\n', 'retrain_every = "2x"\n', "max_batch = 2.5\n",
                             "port = 70000\n", "[database]\nurl = 1\n", 'rate_limit_storage = "x"\n')):
        assert not schema.is_valid(tomllib.loads(bad)), bad
        (tmp_path / f"{i}.toml").write_text(bad)
        with pytest.raises(SettingsError, match=r"1 problem\(s\) found"):
            load_settings(tmp_path / f"{i}.toml")
