"""No formulas from data in report.xlsx (issue 10 item 4, OWASP CSV-injection guidance)."""

from __future__ import annotations

import io

import numpy as np
import openpyxl

from crmdata.loaders import Pipeline
from crmdata.synthetic import generate_opportunities
from forecasting.report import build_report

PAYLOADS = ('=HYPERLINK("http://x","y")', "=cmd|' /C calc'!A0", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(1+1)")
CONTROL = ("\t=1+1", "\r=1+1")  # only as accounts: charts show owners and products, and fonts lack a CR glyph


def test_text_from_the_data_is_stored_as_text_and_numbers_stay_numbers() -> None:
    data = generate_opportunities(n=600, seed=3)
    deals = data.opportunities.copy()
    # Every deal's owner, team, product and account is one of the payloads.
    for column, values in (("owner", PAYLOADS), ("team", PAYLOADS), ("product", PAYLOADS),
                           ("account", PAYLOADS + CONTROL)):
        deals[column] = [values[i % len(values)] for i in range(len(deals))]
    pipeline = Pipeline(opportunities=deals, stages=data.stages, history=data.history)
    report = build_report(pipeline, rng=np.random.default_rng(1), as_of="2026-07-01", horizon="1Q",
                          n_sims=300, backtest_months=0)
    wb = openpyxl.load_workbook(io.BytesIO(report.xlsx))
    formulas, seen, numbers = [], set(), 0
    for ws in wb.worksheets:
        for row in ws.iter_rows():
            for cell in row:
                if cell.data_type == "f":
                    formulas.append(f"{ws.title}!{cell.coordinate}={cell.value!r}")
                if isinstance(cell.value, str) and cell.value in PAYLOADS + CONTROL:
                    assert cell.data_type == "s"
                    seen.add(cell.value)
                if isinstance(cell.value, int | float) and not isinstance(cell.value, bool):
                    assert cell.data_type == "n"
                    numbers += 1
    assert formulas == [], f"{len(formulas)} formula cells: {formulas[:5]}"
    # The payloads reach the workbook (as owners, products...), exactly as written.
    assert {p for p in PAYLOADS if p.startswith(("=", "@", "+", "-"))} <= seen
    assert numbers > 50
