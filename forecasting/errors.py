"""Errors a forecasting caller can fix; the CLI shows their message and exits with code 2."""

from __future__ import annotations

from crmdata.errors import LeadcastError


class ForecastInputError(LeadcastError):
    """Raised when a forecast, metric or backtest is asked for with input it cannot use (names the problem)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field
