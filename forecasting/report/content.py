"""What a report says, independent of how it is written (HTML page or workbook)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pandas as pd
from markupsafe import Markup

from forecasting.report.tables import Kind, Table


@dataclass(frozen=True)
class Headline:
    """One headline figure: its exact value, how it reads, and where it sits in the forecast JSON.

    `source` is a dotted path into the forecast JSON ("total.p50", "backtest.accuracy.0.mape") or a difference
    of two paths ("total.p50 - target").
    """

    key: str
    label: str
    value: float | None
    text: str
    source: str
    kind: Kind


@dataclass(frozen=True)
class Chart:
    """A drawn chart (inline SVG) with its title and a sentence on how to read it."""

    key: str
    title: str
    caption: str
    svg: str


@dataclass(frozen=True)
class Section:
    """A part of the report: charts, then tables, in order; `empty` says why there is nothing to show."""

    key: str
    title: str
    intro: str = ""
    charts: tuple[Chart, ...] = ()
    tables: tuple[Table, ...] = ()
    empty: str = ""


SECTION_KEY = re.compile(r"^[a-z][a-z0-9-]{0,40}$")


@dataclass(frozen=True)
class ExtraSection:
    """A section rendered by someone else (the Model health of the lead model, say), shown after the report's own.

    The one declared way to add a part to the report without the report importing its maker. `html` is trusted
    only when it is `markupsafe.Markup`, which is what a Jinja2 template with autoescape returns: any other text is
    escaped like every value from the data, so nothing user-supplied reaches the page as markup. The title is
    always escaped; `key` becomes the section's id and its link in the page's navigation. The workbook does not
    show these sections (their tables stay with their maker's own JSON).
    """

    key: str
    title: str
    html: Markup | str

    def __post_init__(self) -> None:
        if not SECTION_KEY.match(self.key):
            raise ValueError(f"a report section key is lower-case letters, digits and '-', got {self.key!r}")


@dataclass(frozen=True)
class ReportContent:
    """Everything the page and the workbook show."""

    title: str
    as_of: pd.Timestamp
    horizon: str
    period_text: str
    summary: tuple[str, ...]
    headline: tuple[Headline, ...]
    sections: tuple[Section, ...]
    notes: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    source: str | None = None
    generated_at: str | None = None
    extra_tables: tuple[Table, ...] = field(default=())
    extra_sections: tuple[ExtraSection, ...] = field(default=())

    def tables(self) -> list[Table]:
        """Return every table of the report in order (those shown in sections, then workbook-only ones)."""
        return [t for s in self.sections for t in s.tables] + list(self.extra_tables)
