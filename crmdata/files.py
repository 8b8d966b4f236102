"""The files leadcast writes: never half-written, and JSON that is always JSON (no NaN, no Infinity)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import numpy as np


def json_safe(value: Any) -> Any:
    """Return `value` with NaN and infinities as None, numpy scalars as Python values, tuples as lists."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _encode_other(value: Any) -> Any:
    """Encode what JSON has no type for: dates and times as ISO 8601, paths as text, arrays as lists."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    raise TypeError(f"{type(value).__name__} is not JSON: convert it before writing")


def json_text(data: Any, *, indent: int | None = 2) -> str:
    """Return `data` as JSON text ending in a newline: NaN and infinities as null, dates in ISO 8601."""
    return json.dumps(json_safe(data), indent=indent, allow_nan=False, default=_encode_other) + "\n"


def _temp_beside(path: Path) -> Path:
    """Create an empty temporary file private to this user in `path`'s folder (so a rename stays atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return Path(name)


def atomic_write_all(writes: Sequence[tuple[Path, Callable[[Path], object]]]) -> None:
    """Call each writer on a temporary file beside its path; once all are complete, rename each over its path.

    A failure in any writer leaves every target as it was, so a set of files (a report's HTML and workbook)
    never mixes an old and a new one because of an error.
    """
    temps: list[Path] = []
    try:
        for path, write in writes:
            temps.append(_temp_beside(path))
            write(temps[-1])
        for tmp, (path, _) in zip(temps, writes, strict=True):
            tmp.replace(path)
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call `write` on a temporary file beside `path` and rename it over `path` once complete."""
    atomic_write_all([(path, write)])


def write_text(path: Path, text: str) -> None:
    """Write a UTF-8 text file atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, data: Any) -> None:
    """Write `data` as JSON atomically, by `json_text`'s rules."""
    write_text(path, json_text(data))
