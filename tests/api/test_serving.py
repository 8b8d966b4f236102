"""The champion poll of api.serving.ModelHolder: what a replica does when the champion it is told of changes."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from api.serving import RELOAD_MARKER, ModelHolder, Pointer
from crmdata.synthetic import generate_leads
from scoring.artifacts import TrainedModel, read_registry, save_trained
from scoring.spec import load_spec
from scoring.training import train

NAME = "leadcast-lead-scoring"


@pytest.fixture(scope="module")
def model() -> TrainedModel:
    """Return one small trained model; saved under several versions it stands for successive champions."""
    return train(generate_leads(n=800, seed=31).leads, spec=load_spec(), params={"cv": 3, "max_iter": 20}).trained


def champion(model: TrainedModel, models: Path, version: str) -> Path:
    """Save `model` as `version`, champion of `models`; return its artifact."""
    model.version = version
    return save_trained(model, models_dir=models, name=NAME, aliases=["champion"])


def test_the_poll_loads_a_new_champion_once_and_keeps_the_last_good_one(
    tmp_path: Path, model: TrainedModel, caplog: pytest.LogCaptureFixture
) -> None:
    models = tmp_path / "models"
    named: list[Pointer | Exception | None] = [("1", None)]

    def poll() -> Pointer | None:
        answer = named[-1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    champion(model, models, "1")
    holder = ModelHolder(name=NAME, source={"models_dir": models, "source": "files",
                                            "registered_model_name": NAME, "tracking_uri": None}, poll=poll)
    assert holder.load().version == "1"
    assert holder.poll_once() is False  # the source names the model served: nothing to load

    champion(model, models, "2")
    named.append(("2", None))
    assert holder.poll_once() is True
    served = holder.current()
    assert served is not None and served.version == "2"
    # announced to this host's other workers through the marker, as a reload does
    assert (models / RELOAD_MARKER).read_text() == served.stamp
    assert holder.poll_once() is False

    caplog.set_level(logging.INFO, logger="leadcast.api")
    named.append(ConnectionError("registry down"))
    assert [holder.poll_once() for _ in range(3)] == [False, False, False]
    assert caplog.text.count("cannot ask which model is champion") == 1  # said once, not every poll
    served = holder.current()
    assert served is not None and served.version == "2"

    # A new champion whose artifact is corrupt: refused, version 2 stays, and not retried on every poll.
    v3 = champion(model, models, "3")
    v3.write_bytes(v3.read_bytes()[:100])
    named.append(("3", None))
    assert [holder.poll_once() for _ in range(3)] == [False, False, False]
    assert caplog.text.count("model load failed") == 1
    served = holder.current()
    assert served is not None and served.version == "2"
    assert "the model registry answers again" in caplog.text  # the first poll that got an answer said so
    assert read_registry(models)["aliases"]["champion"] == "3"


def test_polling_is_off_without_a_poll_or_with_zero_seconds(tmp_path: Path) -> None:
    source = {"models_dir": tmp_path, "source": "files", "registered_model_name": NAME, "tracking_uri": None}
    quiet = ModelHolder(name=NAME, source=source)
    assert quiet.poll_once() is False
    quiet.start_polling(1.0)
    off = ModelHolder(name=NAME, source=source, poll=lambda: None)
    off.start_polling(0)
    assert quiet._poller_pid is None and off._poller_pid is None
