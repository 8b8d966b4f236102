"""Errors a forecasting caller can fix; the CLI shows their message and exits with code 2."""

from __future__ import annotations

import functools
from typing import Any

from crmdata.errors import LeadcastError


class ForecastInputError(LeadcastError):
    """Raised when a forecast, metric or backtest is asked for with input it cannot use (names the problem)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle with its field, so the error crosses from a backtest process whole."""
        return functools.partial(ForecastInputError, field=self.field), (str(self),)
