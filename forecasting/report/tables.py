"""The report's tables: which columns, with what kind of value, so the HTML and the workbook show the same thing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

from forecasting.report import format as fmt

Kind = Literal["text", "money", "int", "share", "percent", "signed_percent", "ratio", "days", "date", "bool",
               "float"]

DISPLAY: dict[str, Callable[[Any], str]] = {
    "text": lambda v: fmt.DASH if v is None or v is pd.NA or (isinstance(v, float) and v != v) else str(v),
    "money": fmt.dollars,
    "int": fmt.count,
    "share": lambda v: fmt.pct(v, 1),
    "percent": fmt.points,
    "signed_percent": lambda v: fmt.points(v, signed=True),
    "ratio": fmt.ratio,
    "days": lambda v: f"{float(v):,.0f}" if fmt.finite(v) else fmt.DASH,
    "date": lambda v: fmt.DASH if v is None or pd.isna(v) else f"{pd.Timestamp(v):%Y-%m-%d}",
    "bool": lambda v: fmt.DASH if v is None or v is pd.NA else ("yes" if bool(v) else "no"),
    "float": lambda v: f"{float(v):,.3f}" if fmt.finite(v) else fmt.DASH,
}

# Excel number formats that show the same as DISPLAY while the cell keeps the exact value.
EXCEL_FORMAT: dict[str, str] = {
    "text": "@",
    "money": '"$"#,##0',
    "int": "#,##0",
    "share": "0.0%",
    "percent": '0.0"%"',
    "signed_percent": '+0.0"%";-0.0"%";0.0"%"',
    "ratio": '0.00"x"',
    "days": "#,##0",
    "date": "yyyy-mm-dd",
    "bool": "General",
    "float": "#,##0.000",
}


@dataclass(frozen=True)
class Column:
    """One column of a table: the frame's column, its header, and the kind of value it holds."""

    key: str
    header: str
    kind: Kind = "text"


@dataclass(frozen=True)
class Table:
    """A titled table: a frame and the columns shown, in order. `sheet` names its workbook sheet."""

    sheet: str
    title: str
    columns: tuple[Column, ...]
    frame: pd.DataFrame
    note: str = ""
    html_rows: int | None = None

    def display(self, column: Column, value: Any) -> str:
        """Return a cell's value written for people."""
        return DISPLAY[column.kind](value)

    def records(self) -> list[list[Any]]:
        """Return the rows as lists of the shown columns' values (None for missing)."""
        shown = self.frame.reindex(columns=[c.key for c in self.columns])
        return [[_plain(v) for v in row] for row in shown.itertuples(index=False, name=None)]


def _plain(value: Any) -> Any:
    """Return a Python value (numpy scalars unwrapped, NaN/NA as None)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if hasattr(value, "item") and not isinstance(value, pd.Timestamp):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value
