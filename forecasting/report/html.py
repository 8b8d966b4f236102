"""Write a report as one self-contained HTML page: inline CSS and SVG, no script, nothing loaded from anywhere.

The page is the Jinja2 template `templates/report.html`, rendered with autoescape: every string that comes from the
data (rep, product, stage names...) is escaped by Jinja2; only the charts' SVG, which matplotlib wrote and escaped,
is marked safe. A Content-Security-Policy forbids any request, so even a mistake cannot leak.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import jinja2

from forecasting.report import format as fmt
from forecasting.report.content import Headline, ReportContent

NUMERIC = frozenset({"money", "int", "share", "percent", "signed_percent", "ratio", "days", "float"})
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
# Cards of the headline: title, the main figure, the figures under it.
CARDS = (
    ("Forecast (P50)", "p50", ("p10", "p90", "mean")),
    ("Chance of reaching the target", "probability_of_target", ("target",)),
    ("Gap to target", "gap_to_target", ()),
    ("Pipeline coverage", "pipeline_coverage", ("required_coverage", "open_pipeline", "win_rate")),
    ("Open pipeline", "open_pipeline", ("required_coverage", "win_rate")),
    ("Backtest accuracy (MAPE)", "backtest_mape", ("backtest_coverage", "backtest_bias")),
)


@dataclass(frozen=True)
class Card:
    """One card of the headline: its title, main figure, tone class and the figures under it."""

    title: str
    main: Headline
    tone: str
    details: tuple[Headline, ...]


@cache
def environment() -> jinja2.Environment:
    """Return the template environment (built once): package templates, autoescape on, undefined names fail."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("forecasting.report", "templates"),
                             autoescape=jinja2.select_autoescape(("html",), default=True),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["exact"] = lambda x: repr(float(x))  # the exact value for machines, as `float.__repr__` writes it
    return env


def _cards(headline: tuple[Headline, ...]) -> list[Card]:
    found = {h.key: h for h in headline}
    cards = []
    for title, main, details in CARDS:
        if main not in found or (main == "open_pipeline" and "pipeline_coverage" in found):
            continue
        h = found[main]
        tone = ""
        if main == "gap_to_target" and h.value is not None:
            tone = " good" if h.value >= 0 else " bad"
        cards.append(Card(title=title, main=h, tone=tone, details=tuple(found[d] for d in details if d in found)))
    return cards


def render_html(content: ReportContent) -> str:
    """Return the whole report as one HTML document."""
    meta = [f"as of {fmt.day(content.as_of)} (data known before that day)", f"horizon {content.horizon}"]
    if content.source:
        meta.append(f"data: {content.source}")
    if content.generated_at:
        meta.append(f"generated {content.generated_at}")
    return environment().get_template("report.html").render(c=content, meta=meta, cards=_cards(content.headline),
                                                           csp=CSP, numeric=NUMERIC)
