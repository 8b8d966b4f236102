"""Write a report as an Excel workbook: one sheet per table, real number, date and true/false cells (exact values,
formatted for reading), a frozen header row, filters and column widths that fit."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import pandas as pd
from openpyxl import Workbook
from openpyxl.cell import Cell, WriteOnlyCell
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

from forecasting.report import format as fmt
from forecasting.report.content import ReportContent
from forecasting.report.tables import DISPLAY, EXCEL_FORMAT, Kind, Table

HEADER_FONT = Font(bold=True)
HEADER_FILL = PatternFill("solid", fgColor="F1F5F9")
MAX_WIDTH = 60
MIN_WIDTH = 6


def _cell(ws: WriteOnlyWorksheet, value: Any) -> Cell:
    """Return a cell holding `value`; text is always stored as text, never as a formula.

    openpyxl turns any string starting with "=" into a formula. Text from the data (owners, accounts,
    products...) could read "=HYPERLINK(...)" or "=cmd|...": OWASP's CSV-injection guidance is to keep every
    value starting with =, +, -, @, tab or carriage return inert, so every string is typed as a string.
    """
    cell = WriteOnlyCell(ws, value=value)
    if isinstance(value, str):
        cell.data_type = "s"
    return cell


def _row(ws: WriteOnlyWorksheet, values: list[Any]) -> list[Any]:
    return [v if isinstance(v, Cell) else _cell(ws, v) for v in values]


def _value(kind: Kind, value: Any) -> Any:
    """Return the cell value: a date for dates, a bool for yes/no, numbers as numbers, None for missing."""
    if value is None:
        return None
    if kind == "date":
        stamp = pd.Timestamp(value)
        return None if pd.isna(stamp) else stamp.date()
    if kind == "bool":
        return bool(value)
    if kind == "text":
        return str(value)
    return float(value) if kind != "int" else int(value)


def _width(texts: list[str]) -> float:
    longest = max((len(t) for t in texts), default=0)
    return float(min(MAX_WIDTH, max(MIN_WIDTH, longest + 2)))


def _header(ws: WriteOnlyWorksheet, headers: list[str]) -> list[Cell]:
    cells = []
    for h in headers:
        cell = _cell(ws, h)
        cell.font, cell.fill = HEADER_FONT, HEADER_FILL
        cells.append(cell)
    return cells


def _table_sheet(wb: Workbook, table: Table) -> None:
    ws = wb.create_sheet(table.sheet)
    rows = table.records()
    for i, col in enumerate(table.columns, start=1):
        shown = [DISPLAY[col.kind](r[i - 1]) for r in rows[:5000]]
        ws.column_dimensions[get_column_letter(i)].width = _width([col.header, *shown])
    ws.freeze_panes = "A2"
    if rows:
        ws.auto_filter.ref = f"A1:{get_column_letter(len(table.columns))}{len(rows) + 1}"
    ws.append(_header(ws, [c.header for c in table.columns]))
    formats = [EXCEL_FORMAT[c.kind] for c in table.columns]
    for r in rows:
        out = []
        for col, number_format, v in zip(table.columns, formats, r, strict=True):
            cell = _cell(ws, _value(col.kind, v))
            if col.kind not in ("text", "bool"):
                cell.number_format = number_format
            out.append(cell)
        ws.append(out)


def _readme(wb: Workbook, content: ReportContent) -> None:
    ws = wb.create_sheet("Read me")
    ws.column_dimensions["A"].width = 16
    ws.column_dimensions["B"].width = 120
    title = _cell(ws, content.title)
    title.font = Font(bold=True, size=14)
    ws.append([title])
    as_of = WriteOnlyCell(ws, value=content.as_of.date())
    as_of.number_format = "yyyy-mm-dd"
    ws.append(_row(ws, ["As of", as_of]))
    ws.append(_row(ws, ["Horizon", f"{content.horizon}: {content.period_text}"]))
    if content.source:
        ws.append(_row(ws, ["Data", content.source]))
    if content.generated_at:
        ws.append(_row(ws, ["Generated", content.generated_at]))
    wrap = Alignment(wrap_text=True, vertical="top")
    for heading, lines in (("Summary", content.summary), ("Check the data", content.warnings),
                           ("Notes", content.notes)):
        if not lines:
            continue
        ws.append([])
        head = _cell(ws, heading)
        head.font = HEADER_FONT
        ws.append([head])
        for line in lines:
            cell = _cell(ws, line)
            cell.alignment = wrap
            ws.append([None, cell])
    ws.append([])
    sheets = ("Headline: the figures at the top of report.html, with the forecast JSON field of each; "
              "then one sheet per table. Values are exact; only their display is rounded.")
    ws.append(_row(ws, ["Sheets", sheets]))


def _headline(wb: Workbook, content: ReportContent) -> None:
    ws = wb.create_sheet("Headline")
    headers = ["measure", "value", "shown as", "forecast JSON field"]
    rows = [[h.label, h.value, h.text, h.source] for h in content.headline]
    for i, header in enumerate(headers, start=1):
        texts = [header, *(fmt.DASH if r[i - 1] is None else str(r[i - 1]) for r in rows)]
        ws.column_dimensions[get_column_letter(i)].width = _width(texts if i != 2 else [header, "#,###,###,###"])
    ws.freeze_panes = "A2"
    ws.append(_header(ws, headers))
    for h in content.headline:
        value = WriteOnlyCell(ws, value=None if h.value is None else float(h.value))
        value.number_format = EXCEL_FORMAT[h.kind]
        ws.append(_row(ws, [h.label, value, h.text, h.source]))


def workbook_bytes(content: ReportContent) -> bytes:
    """Return the report's workbook (.xlsx) as bytes."""
    wb = Workbook(write_only=True)
    _readme(wb, content)
    _headline(wb, content)
    for table in content.tables():
        _table_sheet(wb, table)
    wb.properties.title = content.title
    wb.properties.creator = "leadcast"
    # A fixed timestamp keeps the same inputs' workbook byte for byte the same.
    stamp = dt.datetime.combine(content.as_of.date(), dt.time())
    wb.properties.created = wb.properties.modified = stamp
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()
