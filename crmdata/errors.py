"""Errors the data layer raises; each names the field, the row and the problem."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an input: where (table, row, field), the offending value, and what is wrong."""

    table: str
    field: str
    message: str
    row: int | None = None
    value: str | None = None
    code: str = "invalid"

    def __str__(self) -> str:
        where = f"{self.table}: row {self.row}" if self.row is not None else f"{self.table}"
        shown = "" if self.value is None else f" (value {self.value!r})"
        return f"{where}, field '{self.field}': {self.message}{shown}"


class LeadcastError(Exception):
    """Base class for errors that a user can fix; the message is safe to show."""


class DataValidationError(LeadcastError):
    """Raised when an input table breaks its contract; carries every problem found, not only the first."""

    def __init__(self, problems: list[Problem], *, source: str = "input") -> None:
        self.problems = problems
        self.source = source
        super().__init__(self.summary())

    def __reduce__(self) -> tuple[Callable[[list[Problem], str], DataValidationError], tuple[list[Problem], str]]:
        """Pickle by problems and source, so the error crosses from a scoring process whole."""
        return _data_validation_error, (self.problems, self.source)

    def summary(self, limit: int = 50) -> str:
        """Return one line per problem, or the first `limit` and a count per kind when there are more."""
        lines = [f"{self.source}: {len(self.problems)} problem(s) found"]
        lines += [str(p) for p in self.problems[:limit]]
        if len(self.problems) > limit:
            counts = Counter((p.field, p.code) for p in self.problems)
            lines.append(f"... and {len(self.problems) - limit} more; by field and kind:")
            lines += [f"  {field} [{code}]: {n}" for (field, code), n in counts.most_common()]
        return "\n".join(lines)


def _data_validation_error(problems: list[Problem], source: str) -> DataValidationError:
    """Rebuild a pickled DataValidationError."""
    return DataValidationError(problems, source=source)
