"""The Model health page: one self-contained HTML file (inline CSS, charts as inline SVG, no script, nothing
fetched) from a health report of `scoring.monitoring`.

The template is Jinja2 with autoescape on: every string from the data (field labels, alert sentences, versions)
is escaped; only the SVG that matplotlib drew (and escaped itself) goes in as markup. A Content-Security-Policy
forbids any request, so even a mistake cannot leak.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any, cast

import matplotlib
from jinja2 import Environment, select_autoescape
from markupsafe import Markup
from matplotlib.figure import Figure

from scoring.monitoring import PSI_ALERT, PSI_WARNING, UNSEEN_ALERT, UNSEEN_WARNING, unseen_level

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
BLUE, GREY, INK, RED, ORANGE = "#2563eb", "#9ca3af", "#1f2937", "#dc2626", "#ea580c"
_LOCK = threading.Lock()  # matplotlib's font caches are shared: one chart at a time, also in a threaded server
_ID = re.compile(r'(\bid="|url\(#|href="#)([^")]+)')
# text stays text (searchable, smaller); stable ids, so the same report gives the same page
RC: dict[str, Any] = {"svg.fonttype": "none", "svg.hashsalt": "leadcast", "font.size": 9}

# The parts shared by the page and by its section in the leadership report: `h` is the heading tag of a part,
# `pre` prefixes every id, so the section's ids never collide with the report's own ("summary", chart ids).
PARTS = """
{%- macro parts(report, outcomes, cards, charts, h, pre) -%}
<section id="{{ pre }}summary">
{% if report.alerts %}<ul class="alerts">{% for a in report.alerts %}<li>{{ a }}</li>{% endfor %}</ul>{% endif %}
{% if report.warnings %}<ul class="warnings">{% for w in report.warnings %}<li>{{ w }}</li>{% endfor %}</ul>{% endif %}
{% if not report.alerts and not report.warnings %}<p class="ok">No drift and no calibration problem found.</p>
{% endif %}
<div class="cards">
{% for card in cards %}<div class="card"><div class="label">{{ card[0] }}</div>
<div class="value" data-key="{{ card[2] }}">{{ card[1] }}</div>{% if card[3] %}<div class="note">{{ card[3] }}</div>
{% endif %}</div>
{% endfor %}</div>
</section>
{% if outcomes %}
<section id="{{ pre }}calibration">
<{{ h }}>Calibration on matured outcomes</{{ h }}>
<p class="note">Realised conversion against the mean predicted probability, per decile of score (1 = highest).
Points on the diagonal mean the probabilities mean what they say.</p>
<figure class="chart" id="chart-{{ pre }}calibration"
 aria-label="Realised conversion against mean prediction per decile">
{{ charts.calibration }}</figure>
<table id="{{ pre }}by-grade"><caption>By grade</caption>
<tr><th>grade</th><th class="num">leads</th><th class="num">mean prediction</th><th class="num">realised</th></tr>
{% for g in outcomes.by_grade %}<tr><td>{{ g.grade }}</td><td class="num">{{ "{:,}".format(g.leads) }}</td>
<td class="num">{{ pct(g.mean_probability) }}</td><td class="num">{{ pct(g.realised_rate) }}</td></tr>
{% endfor %}</table>
<table id="{{ pre }}by-decile"><caption>By decile</caption>
<tr><th>decile</th><th class="num">leads</th><th class="num">mean prediction</th><th class="num">realised</th></tr>
{% for d in outcomes.by_decile %}<tr><td>{{ d.decile }}</td><td class="num">{{ "{:,}".format(d.leads) }}</td>
<td class="num">{{ pct(d.mean_probability) }}</td><td class="num">{{ pct(d.realised_rate) }}</td></tr>
{% endfor %}</table>
<table id="{{ pre }}live-metrics"><caption>Live metrics (90% bootstrap intervals)</caption>
<tr><th>metric</th><th class="num">value</th><th class="num">interval</th></tr>
{% for name, key in metrics %}<tr><td>{{ name }}</td><td class="num">{{ num(outcomes[key]) }}</td>
<td class="num">{{ interval(outcomes[key ~ "_interval"]) }}</td></tr>
{% endfor %}</table>
</section>
{% endif %}
<section id="{{ pre }}drift">
<{{ h }}>Drift of the inputs</{{ h }}>
<p class="note">Population stability index of each field against the held-out leads at training: a warning from
{{ psi_warning }}, an alert from {{ psi_alert }}.</p>
{% if charts.psi %}<figure class="chart" id="chart-{{ pre }}psi" aria-label="PSI per field">{{ charts.psi }}</figure>
{% endif %}
<table id="{{ pre }}features">
<tr><th>field</th><th class="num">PSI</th><th class="num">missing at training</th><th class="num">missing now</th>
<th class="num">unseen categories</th></tr>
{% for f in report.features %}<tr class="{{ f.level }}"><td>{{ f.column }}</td><td class="num">{{ num(f.psi, 3) }}</td>
<td class="num">{{ pct(f.missing_rate_training) }}</td><td class="num">{{ pct(f.missing_rate_now) }}</td>
<td class="num">{{ pct(f.unseen_share) }}</td></tr>
{% endfor %}</table>
{% if unseen %}
<table id="{{ pre }}unseen"><caption>Unseen categories: leads whose value training never saw or saw too rarely</caption>
<tr><th>field</th><th class="num">share of leads</th><th class="num">warning from</th>
<th class="num">alert from</th></tr>
{% for f in unseen %}<tr class="{{ f.unseen_level }}"><td>{{ f.column }}</td>
<td class="num">{{ pct(f.unseen_share) }}</td>
<td class="num">{{ pct(unseen_warning) }}</td><td class="num">{{ pct(unseen_alert) }}</td></tr>
{% endfor %}</table>
{% endif %}
</section>
{%- endmacro -%}
"""

STYLE = """body { margin: 0; font: 14px/1.5 -apple-system, "Segoe UI", Roboto, Arial, "DejaVu Sans", sans-serif;
       color: #1f2937; background: #f8fafc; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; }
h1 { font-size: 26px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 32px 0 8px; border-top: 2px solid #e5e7eb;
padding-top: 8px; }
.meta, .note { color: #6b7280; font-size: 13px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(190px, 1fr)); gap: 12px; margin: 16px 0; }
.card { border: 1px solid #e5e7eb; border-radius: 8px; padding: 12px 14px; }
.card .label { color: #6b7280; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .value { font-size: 24px; font-weight: 700; }
.alerts { background: #fef2f2; border-left: 4px solid #dc2626; padding: 8px 14px 8px 30px; }
.warnings { background: #fff7ed; border-left: 4px solid #ea580c; padding: 8px 14px 8px 30px; }
.ok { background: #f0fdf4; border-left: 4px solid #15803d; padding: 8px 14px; }
figure { margin: 18px 0; } figure svg { width: 100%; height: auto; display: block; }
table { border-collapse: collapse; width: 100%; font-size: 12.5px; margin: 10px 0; }
th, td { padding: 4px 8px; border-bottom: 1px solid #e5e7eb; text-align: left; }
th { background: #f1f5f9; } td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.alert td { color: #b91c1c; font-weight: 600; } tr.warning td { color: #c2410c; }
"""

# The section's own look inside the report (which already styles cards, tables and figures): scoped to it.
SECTION_STYLE = """
.model-health .alerts { background: #fef2f2; border-left: 4px solid #dc2626; padding: 8px 14px 8px 30px; }
.model-health .warnings { background: #fff7ed; border-left: 4px solid #ea580c; padding: 8px 14px 8px 30px; }
.model-health .ok { background: #f0fdf4; border-left: 4px solid #15803d; padding: 8px 14px; }
.model-health tr.alert td { color: #b91c1c; font-weight: 600; } .model-health tr.warning td { color: #c2410c; }
.model-health h3 { font-size: 15px; margin: 18px 0 4px; }
"""

META = """<p class="meta">Model <strong>{{ report.model }}</strong>
{%- if report.since %}, leads scored since {{ report.since }}
{%- endif %}{% if report.until %}, as of {{ report.until }}{% endif %}.
{% if report.maturity_days %}A lead with no conversion counts as not converted {{ report.maturity_days|round|int }}
days after its first score.{% endif %}</p>
"""

TEMPLATE = PARTS + """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Model health: {{ report.model }}</title>
<style>
""" + STYLE + """</style>
</head>
<body><main>
<h1>Model health</h1>
""" + META + """{{ parts(report, outcomes, cards, charts, "h2", "") }}
<footer class="note">Written by leadcast monitor. The same report is served as JSON by GET /v1/models/monitoring.
</footer>
</main></body></html>
"""

SECTION = PARTS + """<div class="model-health"><style>
""" + SECTION_STYLE + """</style>
""" + META + """{{ parts(report, outcomes, cards, charts, "h3", prefix) }}
<p class="note">The lead model's health on the leads it scored and their matured outcomes, as of when this report
was written (not the report's as-of date); the same figures as leadcast monitor and GET /v1/models/monitoring.</p>
</div>
"""

_ENV = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
_PAGE = _ENV.from_string(TEMPLATE)
_SECTION = _ENV.from_string(SECTION)


def _svg(fig: Figure, name: str) -> Markup:
    buffer = io.StringIO()
    with matplotlib.rc_context(cast(Any, RC)):
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    # ids prefixed per chart, so the clip paths of two charts never collide in one page
    return Markup(_ID.sub(lambda m: f"{m.group(1)}{name}-{m.group(2)}", text))


def calibration_chart(deciles: Sequence[Mapping[str, Any]], *, prefix: str = "") -> Markup:
    """Return an SVG chart: realised conversion against mean prediction per decile, with the diagonal."""
    with _LOCK:
        fig = Figure(figsize=(6.4, 3.6))
        ax = fig.add_subplot()
        x = [d["mean_probability"] for d in deciles]
        y = [d["realised_rate"] for d in deciles]
        top = max([*x, *y, 0.05]) * 1.1
        ax.plot([0, top], [0, top], color=GREY, linestyle="--", linewidth=1, label="perfect calibration")
        ax.plot(x, y, marker="o", color=BLUE, label="deciles of score")
        for d in deciles:
            ax.annotate(str(d["decile"]), (d["mean_probability"], d["realised_rate"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points", color=INK)
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_xlabel("mean predicted probability")
        ax.set_ylabel("realised conversion")
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(frameon=False, fontsize=8)
        return _svg(fig, f"{prefix}calibration")


def psi_chart(features: Sequence[Mapping[str, Any]], *, score_psi: float | None, prefix: str = "") -> Markup | None:
    """Return an SVG chart: PSI per field (and of the score), the warning and alert levels marked."""
    rows = [(f["column"], float(f["psi"])) for f in features if f.get("psi") is not None]
    if score_psi is not None:
        rows.append(("(score)", float(score_psi)))
    if not rows:
        return None
    rows.sort(key=lambda r: r[1])
    with _LOCK:
        fig = Figure(figsize=(6.4, max(2.0, 0.22 * len(rows) + 0.8)))
        ax = fig.add_subplot()
        colours = [RED if v >= PSI_ALERT else ORANGE if v >= PSI_WARNING else BLUE for _, v in rows]
        ax.barh([r[0] for r in rows], [r[1] for r in rows], color=colours)
        ax.axvline(PSI_WARNING, color=ORANGE, linestyle=":", linewidth=1)
        ax.axvline(PSI_ALERT, color=RED, linestyle=":", linewidth=1)
        ax.set_xlabel("population stability index")
        ax.tick_params(axis="y", labelsize=7)
        ax.spines[["top", "right"]].set_visible(False)
        return _svg(fig, f"{prefix}psi")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _num(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _interval(pair: Sequence[float] | None) -> str:
    return "n/a" if not pair else f"{pair[0]:.4f} to {pair[1]:.4f}"


def _context(report: Mapping[str, Any], *, prefix: str) -> dict[str, Any]:
    outcomes = report.get("outcomes")
    cards: list[tuple[str, str, str, str | None]] = [
        ("Leads scored", f"{report.get('leads_scored') or 0:,}", "leads_scored", None)]
    if outcomes:
        cards += [("Matured outcomes", f"{outcomes['leads']:,}", "leads_matured", None),
                  ("Converted", _pct(outcomes["base_rate"]), "base_rate",
                   f"{_pct(outcomes['base_rate_training'])} in training"),
                  ("ECE", _num(outcomes["ece"], 3), "ece", "expected calibration error"),
                  ("ROC AUC", _num(outcomes["roc_auc"], 3), "roc_auc", None)]
    if report.get("score_psi") is not None:
        cards.append(("Score PSI", _num(report["score_psi"], 3), "score_psi", None))
    charts = {"calibration": calibration_chart(outcomes["by_decile"], prefix=prefix) if outcomes else None,
              "psi": psi_chart(report.get("features", []), score_psi=report.get("score_psi"), prefix=prefix)}
    unseen = [{**f, "unseen_level": unseen_level(f["unseen_share"])} for f in report.get("features", [])
              if f.get("unseen_share") is not None]
    return {"report": report, "outcomes": outcomes, "cards": cards, "charts": charts, "unseen": unseen,
            "metrics": [("ROC AUC", "roc_auc"), ("Brier", "brier"), ("log loss", "log_loss")],
            "psi_warning": PSI_WARNING, "psi_alert": PSI_ALERT, "unseen_warning": UNSEEN_WARNING,
            "unseen_alert": UNSEEN_ALERT, "pct": _pct, "num": _num, "interval": _interval}


def render_health_page(report: Mapping[str, Any]) -> str:
    """Return the Model health page of a health report as one self-contained HTML string."""
    return _PAGE.render(csp=CSP, **_context(report, prefix=""))


def render_health_section(report: Mapping[str, Any], *, prefix: str = "health-") -> Markup:
    """Return the Model health of a health report as an HTML fragment for another page (the leadership report).

    Markup, because the template escaped every value from the data itself: the receiving page inserts it as is.
    `prefix` starts every element id, so two models' sections in one page never share one.
    """
    return Markup(_SECTION.render(prefix=prefix, **_context(report, prefix=prefix)))
