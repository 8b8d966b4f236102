"""Write a report as one self-contained HTML page: inline CSS and SVG, no script, nothing loaded from anywhere.

Every string that comes from the data (rep, product, stage names...) goes through `esc`; the charts are SVG that
matplotlib wrote and escaped. A Content-Security-Policy forbids any request, so even a mistake cannot leak.
"""

from __future__ import annotations

from html import escape

from forecasting.report import format as fmt
from forecasting.report.content import Chart, Headline, ReportContent, Section
from forecasting.report.tables import Table

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

STYLE = """
:root { --ink:#1f2937; --muted:#6b7280; --line:#e5e7eb; --blue:#2563eb; --bg:#f8fafc; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "DejaVu Sans",
       sans-serif; color: var(--ink); background: var(--bg); }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 36px 0 8px; padding-top: 8px; border-top: 2px solid var(--line); }
h3 { font-size: 15px; margin: 0 0 2px; }
p { margin: 4px 0 10px; }
.meta, .note, figcaption p, .empty { color: var(--muted); font-size: 13px; }
nav { margin: 12px 0 4px; font-size: 13px; }
nav a { color: var(--blue); margin-right: 14px; text-decoration: none; }
.summary { font-size: 15px; padding: 12px 18px 12px 34px; background: #eff6ff; border-left: 4px solid var(--blue);
           margin: 16px 0; }
.summary li { margin: 4px 0; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr)); gap: 12px; margin: 16px 0; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .value { font-size: 26px; font-weight: 700; margin: 2px 0; }
.card .detail { font-size: 12px; color: var(--muted); }
.card .detail span { display: block; }
.good { color: #15803d; } .bad { color: #b91c1c; }
figure { margin: 18px 0; break-inside: avoid; }
figure svg { width: 100%; height: auto; display: block; }
.table-wrap { overflow-x: auto; margin: 14px 0 4px; }
table { border-collapse: collapse; width: 100%; font-size: 12.5px; break-inside: auto; }
caption { text-align: left; font-weight: 600; font-size: 14px; padding: 4px 0; }
th, td { padding: 4px 8px; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
th { background: #f1f5f9; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr { break-inside: avoid; }
.warnings { background: #fff7ed; border-left: 4px solid #ea580c; padding: 8px 14px; }
footer { margin-top: 28px; color: var(--muted); font-size: 12px; }
@page { size: A4; margin: 12mm; }
@media print { body { background: #fff; } main { padding: 0; } nav { display: none; } h2 { break-after: avoid; } }
"""


def esc(text: object) -> str:
    """Escape any value for HTML text or a quoted attribute."""
    return escape(str(text), quote=True)


def _data(h: Headline) -> str:
    """Return a headline figure as <data>: the exact value for machines, the written one for people."""
    value = "" if h.value is None else repr(float(h.value))
    return f'<data value="{esc(value)}" data-key="{esc(h.key)}" data-source="{esc(h.source)}">{esc(h.text)}</data>'


def _cards(headline: tuple[Headline, ...]) -> str:
    found = {h.key: h for h in headline}
    out = []
    for title, main, details in CARDS:
        if main not in found or (main == "open_pipeline" and "pipeline_coverage" in found):
            continue
        h = found[main]
        tone = ""
        if main == "gap_to_target" and h.value is not None:
            tone = " good" if h.value >= 0 else " bad"
        lines = "".join(f"<span>{esc(found[d].label)}: {_data(found[d])}</span>" for d in details if d in found)
        out.append(f'<div class="card"><div class="label">{esc(title)}</div>'
                   f'<div class="value{tone}">{_data(h)}</div><div class="detail">{lines}</div></div>')
    return f'<section id="headline" class="cards" aria-label="Headline figures">{"".join(out)}</section>'


def table_html(table: Table) -> str:
    """Return a table, its first `html_rows` rows, and a note when the workbook has more."""
    rows = table.records()
    shown = rows if table.html_rows is None else rows[: table.html_rows]
    cls = [' class="num"' if c.kind in NUMERIC else "" for c in table.columns]
    head = "".join(f'<th{k} scope="col">{esc(c.header)}</th>' for c, k in zip(table.columns, cls, strict=True))
    body = "".join(
        "<tr>" + "".join(f"<td{k}>{esc(table.display(c, v))}</td>"
                         for c, k, v in zip(table.columns, cls, row, strict=True)) + "</tr>"
        for row in shown
    )
    if not rows:
        body = f'<tr><td colspan="{len(table.columns)}" class="empty">none</td></tr>'
    notes = []
    if len(shown) < len(rows):
        notes.append(f"Showing the first {len(shown):,} of {len(rows):,} rows; all are in report.xlsx, sheet "
                     f"“{table.sheet}”.")
    if table.note:
        notes.append(table.note)
    note = "".join(f'<p class="note">{esc(n)}</p>' for n in notes)
    return (f'<div class="table-wrap"><table><caption>{esc(table.title)}</caption><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>{note}")


def _chart(chart: Chart) -> str:
    return (f'<figure class="chart" id="chart-{esc(chart.key)}"><figcaption><h3>{esc(chart.title)}</h3>'
            f"<p>{esc(chart.caption)}</p></figcaption>{chart.svg}</figure>")


def _section(section: Section) -> str:
    parts = [f'<section id="{esc(section.key)}"><h2>{esc(section.title)}</h2>']
    if section.intro:
        parts.append(f"<p>{esc(section.intro)}</p>")
    if section.empty:
        parts.append(f'<p class="empty">{esc(section.empty)}</p>')
    parts += [_chart(c) for c in section.charts]
    parts += [table_html(t) for t in section.tables]
    parts.append("</section>")
    return "".join(parts)


def render_html(content: ReportContent) -> str:
    """Return the whole report as one HTML document."""
    meta = [f"as of {fmt.day(content.as_of)} (data known before that day)", f"horizon {content.horizon}"]
    if content.source:
        meta.append(f"data: {content.source}")
    if content.generated_at:
        meta.append(f"generated {content.generated_at}")
    nav = "".join(f'<a href="#{esc(s.key)}">{esc(s.title.split(":")[0])}</a>' for s in content.sections)
    summary = "".join(f"<li>{esc(s)}</li>" for s in content.summary)
    warnings = ""
    if content.warnings:
        warnings = ('<div class="warnings"><h3>Check the data</h3><ul>'
                    + "".join(f"<li>{esc(w)}</li>" for w in content.warnings) + "</ul></div>")
    notes = "".join(f"<li>{esc(n)}</li>" for n in content.notes)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(content.title)}</title><style>{STYLE}</style></head>\n"
        f'<body><main><header><h1>{esc(content.title)}</h1><p class="meta">{esc(" · ".join(meta))}</p>'
        f'<nav aria-label="Sections"><a href="#summary">Summary</a>{nav}<a href="#notes">Notes</a></nav></header>\n'
        f'<section id="summary" aria-label="Summary"><ul class="summary">{summary}</ul>{warnings}</section>\n'
        f"{_cards(content.headline)}\n"
        + "\n".join(_section(s) for s in content.sections)
        + f'\n<section id="notes"><h2>How to read this report</h2><ul class="note">{notes}</ul></section>'
        "<footer>Made by leadcast: numbers also in report.xlsx, one sheet per table.</footer>"
        "</main></body></html>\n"
    )
