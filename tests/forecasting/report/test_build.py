"""The report: headline numbers equal the forecast JSON, a workbook with typed cells, safe HTML, atomic files."""

from __future__ import annotations

import datetime as dt
import io
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import openpyxl
import pandas as pd
import pytest
from markupsafe import escape

from crmdata.loaders import Pipeline
from forecasting.errors import ForecastInputError
from forecasting.forecast import forecast
from forecasting.report import Report, build_report, write_report
from tests.forecasting.report.conftest import OPTIONS, SEED, SIMS, TARGET


class Headline(HTMLParser):
    """Collect the <data> elements of the headline: value, source and the text shown."""

    def __init__(self) -> None:
        super().__init__()
        self.items: list[dict[str, str]] = []
        self._open: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "data":
            self._open = {k: v or "" for k, v in attrs} | {"text": ""}

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open["text"] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "data" and self._open is not None:
            self.items.append(self._open)
            self._open = None


def resolve(doc: dict[str, Any], source: str) -> Any:
    """Return the value at a dotted path ("total.p50", "backtest.accuracy.0.mape") or a difference of two."""
    if " - " in source:
        a, b = source.split(" - ")
        return resolve(doc, a) - resolve(doc, b)
    value: Any = doc
    for part in source.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def as_written(value: float) -> float:
    """Return a float as openpyxl stores it in the file: 16 significant digits (Excel itself keeps 15)."""
    return float(f"{value:.16g}")


def headline_of(html: str) -> list[dict[str, str]]:
    section = html[html.index('<section id="headline"'):]
    parser = Headline()
    parser.feed(section[: section.index("</section>")])
    return parser.items


def test_every_headline_number_equals_the_forecast_json(small_pipeline: Pipeline, small_report: Report) -> None:
    p = small_pipeline
    # The same inputs and seed through the forecast library alone: what `leadcast forecast --json` writes.
    alone = forecast(p.opportunities, stages=p.stages, history=p.history, as_of=OPTIONS["as_of"], horizon="1Q",
                     target=TARGET, n_sims=SIMS, rng=np.random.default_rng(SEED)).to_dict()
    items = headline_of(small_report.html)
    sources = {i["data-source"] for i in items}
    assert {"total.p10", "total.p50", "total.p90", "total.mean", "target", "probability_of_target",
            "total.p50 - target", "metrics.pipeline_coverage", "metrics.required_coverage"} <= sources
    assert any(s.startswith("backtest.accuracy.") for s in sources)
    for item in items:
        shown = float(item["value"])
        assert shown == resolve(small_report.forecast, item["data-source"]), item
        assert item["text"].strip() not in ("", "–"), item
        if not item["data-source"].startswith("backtest"):
            assert shown == resolve(alone, item["data-source"]), item
    by_source = {i["data-source"]: i for i in items}
    # The gap is P50 - target, shown signed.
    gap = alone["total"]["p50"] - TARGET
    assert by_source["total.p50 - target"]["text"].startswith("+" if gap >= 0 else "-")
    for key in ("total", "periods", "probability_of_target", "metrics", "drivers", "stuck"):
        assert small_report.forecast[key] == json.loads(json.dumps(alone[key])), key


def test_the_backtest_only_uses_months_whose_revenue_is_known(small_report: Report) -> None:
    bt = small_report.backtest
    assert bt is not None and bt == small_report.forecast["backtest"]
    # As of the 1st of Apr, May, Jun 2026 the "1Q" horizon ends by Jul 1; Jan-Mar would reach past it.
    assert [r["as_of"] for r in bt["rows"]] == ["2026-04-01", "2026-05-01", "2026-06-01"]
    mc = next(a for a in bt["accuracy"] if a["method"] == "monte_carlo_p50")
    inside = sum(r["inside_p10_p90"] for r in bt["rows"])
    assert mc["coverage"] == inside / 3
    assert "200 simulations per replay" in small_report.html
    json.dumps(small_report.forecast, allow_nan=False)
    json.dumps(small_report.metrics, allow_nan=False)


def test_the_summary_is_written_from_the_numbers(small_report: Report) -> None:
    f = small_report.forecast
    first = small_report.summary[0]
    p50 = f["total"]["p50"]
    assert first.startswith("The P50 forecast of won revenue for 2026-Q3 (1 Jul 2026 to 30 Sep 2026) is $")
    # e.g. $655k vs $600k: |655 - 600| / 600 = 9% above.
    side = "above" if p50 >= TARGET else "below"
    assert f"{abs(p50 - TARGET) / TARGET * 100:.0f}% {side} the $600k target" in first
    assert f"chance of reaching the target is {f['probability_of_target'] * 100:.0f}%" in first
    stuck = pd.DataFrame(f["stuck"])
    assert any(s.startswith(f"{len(stuck):,} deals worth") for s in small_report.summary)
    for sentence in small_report.summary:
        assert escape(sentence) in small_report.html  # as the template escapes it


def test_the_workbook_has_typed_cells_that_match_the_json(small_report: Report) -> None:
    wb = openpyxl.load_workbook(io.BytesIO(small_report.xlsx))
    f = small_report.forecast
    assert wb.sheetnames[:2] == ["Read me", "Headline"]
    for name in ("Forecast by period", "Spread drivers", "Backtest", "Backtest accuracy", "Stuck deals",
                 "Reps by velocity", "Products by velocity", "Product mix", "Monthly revenue", "Velocity trend"):
        ws = wb[name]
        assert ws.freeze_panes == "A2", name
        headers = [c.value for c in ws[1]]
        for i, header in enumerate(headers, start=1):
            width = ws.column_dimensions[openpyxl.utils.get_column_letter(i)].width
            assert width >= min(len(str(header)), 58), (name, header)
    period = wb["Forecast by period"]
    assert [c.value for c in period[1]][:7] == ["period", "from", "until (excluded)", "P10", "P50", "P90", "mean"]
    row = [c for c in period[2]]
    assert row[0].value == "2026-Q3"
    assert row[1].is_date and row[1].value == dt.datetime(2026, 7, 1)
    assert row[2].value == dt.datetime(2026, 10, 1)
    assert [c.value for c in row[3:7]] == [as_written(f["periods"][0][k]) for k in ("p10", "p50", "p90", "mean")]
    assert row[4].data_type == "n" and row[4].number_format == '"$"#,##0'
    headline = {r[3].value: r[1] for r in wb["Headline"].iter_rows(min_row=2)}
    assert headline["total.p50"].value == as_written(f["total"]["p50"])
    assert headline["probability_of_target"].value == as_written(f["probability_of_target"])
    assert headline["probability_of_target"].number_format == "0.0%"
    stuck = wb["Stuck deals"]
    assert stuck.max_row == len(f["stuck"]) + 1
    risk = [c.value for c in next(stuck.iter_cols(min_col=11, max_col=11, min_row=2))]
    assert risk == [as_written(s["value_at_risk"]) for s in f["stuck"]]
    backtest = wb["Backtest"]
    assert all(isinstance(c.value, bool) for c in next(backtest.iter_cols(min_col=7, max_col=7, min_row=2)))
    drivers = wb["Spread drivers"]
    assert drivers["A2"].value == f["drivers"][0]["opportunity_id"]


def test_data_strings_are_escaped(small_pipeline: Pipeline) -> None:
    opps = small_pipeline.opportunities.copy()
    top_owner = opps["owner"].value_counts().index[0]
    evil = '<script>alert("x")</script>'
    opps["owner"] = opps["owner"].replace(top_owner, evil)
    opps["product"] = opps["product"].replace("Core CRM", 'Core & "CRM" <b>')
    report = build_report(Pipeline(opps, small_pipeline.stages, small_pipeline.history),
                          rng=np.random.default_rng(1), **{**OPTIONS, "n_sims": 200, "backtest_months": 0})
    assert "<script" not in report.html.lower()
    # Jinja2's autoescape (markupsafe) writes a double quote as &#34; and an apostrophe as &#39;.
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in report.html
    assert "Core &amp; &#34;CRM&#34; &lt;b&gt;" in report.html
    assert "<b>" not in report.html
    assert "The backtest was not run for this report" in report.html  # switched off, not "too little history"
    wb = openpyxl.load_workbook(io.BytesIO(report.xlsx))
    assert evil in [c.value for c in next(wb["Reps by velocity"].iter_cols(min_col=2, max_col=2))]


def test_the_page_is_self_contained(small_report: Report) -> None:
    html = small_report.html
    assert html.startswith("<!DOCTYPE html>")
    assert "default-src &#39;none&#39;" in html  # the page may not load anything, even by mistake
    for marker in ("http://", "https://", "<script", "<link", "@import", "url(http", "src="):
        assert marker not in html.replace('xmlns="http://www.w3.org/2000/svg"', "").replace(
            'xmlns:xlink="http://www.w3.org/1999/xlink"', ""), marker
    assert html.count('<figure class="chart"') == 9
    assert html.count("<svg ") == 9


def test_leads_add_the_grade_section(small_pipeline: Pipeline) -> None:
    scores = pd.DataFrame({"lead_id": ["l1", "l2", "l3", "l4"], "score": [81, 45, 44, 3],
                           "grade": ["A", "B", "B", "D"], "model_version": "rules:default"})
    report = build_report(small_pipeline, rng=np.random.default_rng(2), leads_scores=scores,
                          **{**OPTIONS, "n_sims": 200, "backtest_months": 0})
    assert 'id="chart-grades"' in report.html
    assert report.metrics["lead_grades"][0] == {"grade": "A", "leads": 1, "mean_score": 81.0, "share": 0.25}
    assert any(s == "Of 4 open leads, 1 (25%) are grade A and 2 (50%) grade B." for s in report.summary)
    assert "rules:default" in report.html


def test_write_report_writes_both_files(small_report: Report, tmp_path: Path) -> None:
    html, xlsx = write_report(small_report, tmp_path / "out")
    assert html.read_text(encoding="utf-8") == small_report.html
    assert xlsx.read_bytes() == small_report.xlsx
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "report.xlsx"]


@pytest.mark.parametrize(("options", "message"), [
    ({"horizon": "1X"}, "horizon '1X' does not parse"),
    ({"as_of": "2020-01-01"}, "choose a later as-of date"),
    ({"target": -1.0}, "target must be a non-negative amount"),
    ({"backtest_months": -1}, "backtest months must be 0 or more"),
    ({"backtest_sims": 50}, "at least 100 backtest simulations"),
])
def test_bad_options_are_refused(small_pipeline: Pipeline, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ForecastInputError, match=message):
        build_report(small_pipeline, rng=np.random.default_rng(0), **{**OPTIONS, "n_sims": 200, **options})


def test_the_page_template_escapes_every_field_and_keeps_the_charts(small_pipeline: Pipeline) -> None:
    """Every data string reaches the page through Jinja2's autoescape; only matplotlib's SVG is marked safe."""
    from forecasting.report.content import Chart, Headline, ReportContent, Section
    from forecasting.report.html import render_html
    from forecasting.report.tables import Column, Table

    evil = "<i>x</i>&'\""
    table = Table(sheet="S", title=evil, columns=(Column("name", evil), Column("n", "n", "int")),
                  frame=pd.DataFrame({"name": [evil, "b"], "n": [1234, 5]}), note=evil, html_rows=1)
    content = ReportContent(
        title=evil, as_of=pd.Timestamp("2026-07-01"), horizon="1Q", period_text="", summary=(evil,),
        headline=(Headline(key="p50", label=evil, value=0.5, text=evil, source="total.p50", kind="money"),),
        sections=(Section(key="k", title=evil, intro=evil, charts=(Chart("c", evil, evil, "<svg ><g/></svg>"),),
                          tables=(table,)),),
        notes=(evil,), warnings=(evil,), source=evil)
    page = render_html(content)
    assert "<i>" not in page
    # 1 title + 1 h1 + 1 meta + 1 nav + summary + warning + card + section h2 + intro + chart h3 + caption
    # + table caption + header + the one shown row + note + notes = 16 escaped copies of the string.
    assert page.count("&lt;i&gt;x&lt;/i&gt;&amp;&#39;&#34;") == 16
    assert "<svg ><g/></svg>" in page  # the chart is inserted as it is
    assert '<data value="0.5" data-key="p50" data-source="total.p50">' in page
    assert "Showing the first 1 of 2 rows" in page and '<td class="num">1,234</td>' in page
