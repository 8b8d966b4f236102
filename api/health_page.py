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


def report_health_section(settings: Settings, *, wanted: bool | None, now: datetime | None = None) -> Any:
    """Return the leadership report's "Model health" section (a forecasting.report.ExtraSection), or None.

    `wanted` None: the section is added when the champion has logged predictions in the store, and left out
    (with the reason returned to say) when there is no trained champion, no store yet or the store is down.
    `wanted` True: it must be added, and every such reason is an error. The figures are `store_health`'s, the
    same report `leadcast monitor --html` draws.
    """
    from api.monitoring import MonitoringError, store_health
    from api.stores import open_store
    from forecasting.report import ExtraSection
    from scoring.artifacts import ModelError
    from scoring.health_page import render_health_section
    from store import StoreError, StoreUnavailable

    if wanted is False:
        return None
    database = settings.resolved_database_url
    if wanted is None and database.startswith("sqlite:///") and not Path(database.removeprefix("sqlite:///")).exists():
        return None  # no store was ever written here: nothing logged, and nothing to create for a report
    try:
        with open_store(settings) as store:
            report = store_health(settings, store, now=now)
    except (MonitoringError, ModelError, StoreError, StoreUnavailable) as exc:
        if wanted:
            raise MonitoringError(f"--health: cannot report the model's health: {exc}") from exc
        return None
    if not report["leads_scored"]:
        if wanted:
            raise MonitoringError(f"--health: no score of the champion ({report['model']}) is logged in the store: "
                                  "log scores with `leadcast score --log` or the service's prediction log")
        return None
    return ExtraSection(key="model-health", title="Model health", html=render_health_section(report))
