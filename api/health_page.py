"""Write the Model health page of a health report to a file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crmdata.files import atomic_write


def write_health_page(report: dict[str, Any], out: Path) -> None:
    """Render the Model health page and write it atomically to `out`."""
    from scoring.health_page import render_health_page

    page = render_health_page(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: tmp.write_text(page, encoding="utf-8"))
