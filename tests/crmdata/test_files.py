"""The one atomic writer and the one JSON writer every file of the project goes through."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest

from crmdata.files import atomic_write_all, json_text, write_json


def _strict(text: str) -> object:
    """Parse JSON refusing NaN and Infinity, which Python's json writes by default but JSON does not have."""
    def refuse(token: str) -> object:
        raise ValueError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_json_text_writes_only_json() -> None:
    data = {"nan": float("nan"), "inf": np.float64("inf"), "n": np.int64(7), "pair": (1, 2.5),
            "day": date(2026, 7, 1), "at": datetime(2026, 7, 1, 12, 0, tzinfo=UTC), "where": Path("/tmp/x"),
            "array": np.array([1.0, np.nan])}
    assert _strict(json_text(data)) == {"nan": None, "inf": None, "n": 7, "pair": [1, 2.5], "day": "2026-07-01",
                                        "at": "2026-07-01T12:00:00+00:00", "where": "/tmp/x", "array": [1.0, None]}
    assert json_text({"a": 1}, indent=None) == '{"a": 1}\n'
    with pytest.raises(TypeError, match="object is not JSON"):
        json_text({"x": object()})


def test_write_json_writes_nan_as_null(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    write_json(path, {"metrics": {"auc": float("nan"), "brier": 0.125}})
    assert _strict(path.read_text()) == {"metrics": {"auc": None, "brier": 0.125}}


def test_a_failing_writer_leaves_every_file_of_the_set_as_it_was(tmp_path: Path) -> None:
    html, xlsx = tmp_path / "report.html", tmp_path / "report.xlsx"
    html.write_text("old html")
    xlsx.write_bytes(b"old xlsx")

    def fail(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_all([(html, lambda tmp: tmp.write_text("new html")), (xlsx, fail)])
    assert html.read_text() == "old html" and xlsx.read_bytes() == b"old xlsx"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.xlsx"]  # no temporary left
    atomic_write_all([(html, lambda tmp: tmp.write_text("new html")), (xlsx, lambda tmp: tmp.write_bytes(b"new"))])
    assert html.read_text() == "new html" and xlsx.read_bytes() == b"new"
