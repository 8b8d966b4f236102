"""The analysts' notebooks run end to end on a small synthetic CRM, with a temporary MLflow store and models folder
(set through the LEADCAST_* variables the notebooks read, as the `leadcast` command does)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from crmdata.synthetic import write_demo
from tests.conftest import REPO

NOTEBOOKS = REPO / "notebooks"
NAMES = ("01-retrain-lead-model.ipynb", "02-forecast-review.ipynb")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A LEADCAST_HOME with a small synthetic CRM in demo-data/, for the kernel the notebooks run in."""
    write_demo(out=tmp_path / "demo-data", leads=1200, opportunities=1200, seed=5)
    for name in ("LEADCAST_MODELS_DIR", "LEADCAST_MLFLOW_TRACKING_URI", "LEADCAST_MLFLOW_ARTIFACT_ROOT",
                 "LEADCAST_DEMO_DIR", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LEADCAST_HOME", str(tmp_path))
    monkeypatch.setenv("LEADCAST_FORECAST_SIMULATIONS", "500")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    return tmp_path


def execute(name: str, home: Path, overrides: str = "") -> nbformat.NotebookNode:
    """Run a notebook in a fresh kernel with `overrides` appended to its parameters cell; fail on any error."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source += "\n" + overrides
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(home)}}).execute()
    return nb


def text_of(nb: nbformat.NotebookNode) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", "") + "".join(str(v) for v in o.get("data", {}).values()))
    return "\n".join(out)


@pytest.mark.parametrize("name", NAMES)
def test_notebooks_are_stored_without_outputs(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1


@pytest.mark.slow
def test_the_retraining_notebook_trains_tracks_and_promotes(home: Path) -> None:
    nb = execute(NAMES[0], home)
    text = text_of(nb)
    assert "no champion yet: the first model becomes champion" in text
    assert "version 1, aliases challenger, champion" in text
    registry: dict[str, Any] = json.loads((home / "models" / "registry.json").read_text())
    assert registry["aliases"]["champion"] == "1"
    assert (home / "mlflow.db").exists() and (home / "my-lead-spec.toml").exists()
    assert "MLflow aliases: {'challenger': 1, 'champion': 1}" in text  # the MLflow registry agrees


@pytest.mark.slow
def test_the_forecast_review_notebook_ends_with_the_report(home: Path) -> None:
    nb = execute(NAMES[1], home, overrides="BACKTEST_SIMS = 200")
    text = text_of(nb)
    assert "stuck deals, expected value at risk $" in text
    assert "chance of reaching $600,000:" in text
    assert "Monte Carlo P50" in text  # the backtest's accuracy table
    assert "<svg" in text  # the fan chart
    assert (home / "reports" / "report.html").exists() and (home / "reports" / "report.xlsx").exists()
