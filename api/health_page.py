"""Write the Model health page of a health report to a file; build its section of the leadership report."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from api.settings import Settings
from crmdata.files import atomic_write


def write_health_page(report: dict[str, Any], out: Path) -> None:
    """Render the Model health page and write it atomically to `out`."""
    from scoring.health_page import render_health_page

    page = render_health_page(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: tmp.write_text(page, encoding="utf-8"))


def report_health_sections(settings: Settings, *, wanted: bool | None, now: datetime | None = None) -> list[Any]:
    """Return the leadership report's "Model health" sections (forecasting.report.ExtraSection), one per model name.

    A name gets a section when its champion has logged predictions in the store; the default name's comes first,
    keyed `model-health`, each other name's after it (`model-health-2`, ...), titled with the name. `wanted`
    None: names without logged scores are left out, and so is every section when there is no store yet or it
    is down. `wanted` True: a store that cannot be read, or no name with logged scores, is an error. The figures
    are `store_health`'s, the same report `leadcast monitor --model NAME --html` draws.
    """
    from api.monitoring import MonitoringError, NoTrainedModel, store_health
    from api.serving import model_names
    from api.stores import open_store
    from forecasting.report import ExtraSection
    from scoring.artifacts import ModelError
    from scoring.health_page import render_health_section
    from store import StoreError, StoreUnavailable

    if wanted is False:
        return []
    database = settings.resolved_database_url
    if wanted is None and database.startswith("sqlite:///") and not Path(database.removeprefix("sqlite:///")).exists():
        return []  # no store was ever written here: nothing logged, and nothing to create for a report
    reports: list[dict[str, Any]] = []
    unlogged: list[str] = []
    untrained: NoTrainedModel | None = None
    try:
        with open_store(settings) as store:
            for name in model_names(settings):
                try:
                    report = store_health(settings, store, name=name, now=now)
                except NoTrainedModel as exc:  # on the cold-start rules: no training profile to compare with
                    untrained = untrained or exc
                    continue
                if report["leads_scored"]:
                    reports.append(report)
                else:
                    unlogged.append(report["model"])
    except (MonitoringError, ModelError, StoreError, StoreUnavailable) as exc:
        if wanted:
            raise MonitoringError(f"--health: cannot report the model's health: {exc}") from exc
        return []
    if wanted and not reports:
        if not unlogged and untrained is not None:
            raise MonitoringError(f"--health: cannot report the model's health: {untrained}") from untrained
        raise MonitoringError(f"--health: no score of the champion ({', '.join(unlogged)}) is logged in the store: "
                              "log scores with `leadcast score --log` or the service's prediction log")
    sections = []
    for index, report in enumerate(reports, start=1):
        default = report["name"] == settings.registered_model_name
        # Keys and element ids from the position, not the name: a name may hold '.' or '_' or be 100 long.
        suffix = "" if default else f"-{index}"
        sections.append(ExtraSection(key=f"model-health{suffix}",
                                     title="Model health" if default else f"Model health: {report['name']}",
                                     html=render_health_section(report, prefix=f"health{suffix}-")))
    return sections
