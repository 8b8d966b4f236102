"""Model names: a spec's `name` names its models, the default spec's keep the home's registered name, and each
name other than the default keeps its registry in its own folder under models/."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from crmdata.errors import LeadcastError
from scoring.artifacts import (
    ModelError,
    check_model_name,
    model_dir,
    registered_names,
    spec_model_name,
    update_registry,
)
from scoring.spec import ModelSpec, load_spec

DEFAULT = "leadcast-lead-scoring"


def test_the_default_spec_keeps_the_home_name_and_any_other_spec_names_its_models() -> None:
    spec: ModelSpec = load_spec()
    assert spec_model_name(spec, default_name=DEFAULT) == DEFAULT
    assert spec_model_name(replace(spec, name="web-signups"), default_name=DEFAULT) == "web-signups"
    assert spec_model_name(replace(spec, name=DEFAULT), default_name=DEFAULT) == DEFAULT


@pytest.mark.parametrize("bad", ["", "../models", ".reload", "a/b", "a..b", "x" * 101, "-dash", "sp ace"])
def test_a_name_that_is_not_one_path_segment_is_refused(bad: str) -> None:
    with pytest.raises(ModelError, match="cannot name a model: use up to 100 letters") as caught:
        check_model_name(bad)
    assert isinstance(caught.value, LeadcastError)  # the CLI reports it in one line, exit 2
    with pytest.raises(ModelError):
        spec_model_name(replace(load_spec(), name=bad), default_name=DEFAULT)


def test_each_name_but_the_default_has_its_own_folder_and_the_registry_lists_them(tmp_path: Path) -> None:
    assert model_dir(tmp_path, name=DEFAULT, default_name=DEFAULT) == tmp_path
    assert model_dir(tmp_path, name="web-signups", default_name=DEFAULT) == tmp_path / "web-signups"
    assert registered_names(tmp_path / "absent", default_name=DEFAULT) == []
    assert registered_names(tmp_path, default_name=DEFAULT) == []
    for folder in (tmp_path / "zeta", tmp_path / "alpha", tmp_path):
        update_registry(folder, lambda registry: registry["aliases"].__setitem__("champion", "1"))
    (tmp_path / "empty").mkdir()  # a folder with no registry is no model
    (tmp_path / ".mlflow-cache").mkdir()
    assert registered_names(tmp_path, default_name=DEFAULT) == [DEFAULT, "alpha", "zeta"]
