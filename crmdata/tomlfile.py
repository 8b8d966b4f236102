"""Read the TOML files leadcast is configured with (specs, rules, mappings, stages), with errors that name them."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from crmdata.errors import DataValidationError, Problem


def read_toml(path: Path, *, what: str, code: str) -> dict[str, Any]:
    """Parse a TOML file, or raise a DataValidationError saying the `what` file is missing or malformed."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as exc:
        raise DataValidationError([Problem(str(path), "-", f"{what} file does not exist", code="missing_file")],
                                  source=str(path)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise DataValidationError([Problem(str(path), "-", f"not valid TOML: {exc}", code=code)],
                                  source=str(path)) from exc
