"""Read the TOML files leadcast is configured with (specs, rules, mappings, stages) through pydantic models.

Each format is a `TomlModel`: pydantic checks its shape (types, required keys, unknown keys, allowed words, each
table's own rules); `checks` then says how its parts refer to each other once the shape is right. Every error
names the file, the key path (`features[3].min`) and the problem, as one DataValidationError the CLI prints.
The JSON Schema of each format (`json_schema`) is generated from the same model and published in docs/schemas.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from crmdata.errors import DataValidationError, Problem

_STEP = re.compile(r"^[a-z][a-z-]*\[")  # how pydantic names a union branch or validator step in a location
Check = tuple[str, str, object]  # (key path, problem, offending value or None)
M = TypeVar("M", bound="TomlModel")
KNOWN_SHOWN = 12  # past this many keys in a table, an unknown key is answered with the close ones only


class TomlModel(BaseModel):
    """A table of a leadcast TOML file: unknown keys are refused and no value is coerced (`"3"` is not 3)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    def checks(self) -> Iterable[Check]:
        """Yield what is wrong in how this table's parts refer to each other (none by default)."""
        return ()


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


def validated(model: type[M], data: Mapping[str, Any], *, source: str, code: str) -> M:
    """Return `data` read as `model`; raise one DataValidationError naming every key that is wrong.

    The shape is checked first (every shape error at once); how the parts refer to each other once it is right.
    """
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        raise DataValidationError(problems_of(exc, model=model, source=source, code=code), source=source) from exc
    problems = [Problem(source, where, message, value=None if value is None else str(value), code=code)
                for where, message, value in parsed.checks()]
    if problems:
        raise DataValidationError(problems, source=source)
    return parsed


def key_path(loc: tuple[int | str, ...]) -> str:
    """Return a pydantic location as a TOML key path: ('features', 3, 'min') -> `features[3].min`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "-"


def problems_of(exc: ValidationError, *, model: type[BaseModel], source: str, code: str) -> list[Problem]:
    """Turn pydantic's errors into problems: the key path, the problem in leadcast's words, and the value."""
    problems = []
    for error in exc.errors(include_url=False):
        loc = tuple(part for part in error["loc"] if not _is_branch(part))
        kind, ctx = error["type"], error.get("ctx") or {}
        if kind == "missing":
            message = "is required"
        elif kind == "extra_forbidden":
            message = "unknown key" + _known(_keys_at(model, loc[:-1]), str(loc[-1]) if loc else "")
        elif kind == "literal_error":
            choices = str(ctx.get("expected", "")).replace(" or ", ", ").split(", ")
            words = all(c.strip("'").replace("_", "").isalnum() for c in choices)
            message = "must be one of " + ", ".join(c.strip("'") if words else c for c in choices)
        elif kind == "too_short":
            message = f"must have at least {ctx.get('min_length', 1)} item(s)"
        elif kind in ("model_type", "model_attributes_type", "dict_type"):
            message = "must be a table (a [section], an [[entry]] or { key = value })"
        elif kind == "string_pattern_mismatch":
            message = f"must match the pattern {ctx.get('pattern')}"
        elif kind in ("value_error", "assertion_error"):
            message = str(ctx.get("error", error["msg"]))
        else:
            message = error["msg"].replace("Input should be", "must be")
        value = error.get("input")
        shown = None if kind in ("missing",) or isinstance(value, dict | list) else str(value)
        problems.append(Problem(source, key_path(loc), message, value=shown, code=code))
    return problems


def _known(known: list[str], key: str) -> str:
    """Say which keys a table allows: all of them, or for a long list the ones spelled like `key`."""
    if len(known) <= KNOWN_SHOWN:
        return f"; known: {', '.join(known)}" if known else ""
    close = difflib.get_close_matches(key, known, n=3)
    if close:
        return f"; did you mean {' or '.join(close)}?"
    return f"; none of the {len(known)} known keys is spelled like it (see the format's JSON Schema)"


def _is_branch(part: int | str) -> bool:
    """Tell pydantic's union-branch and validator steps (`function-after[...]`, `list[str]`) from TOML keys."""
    return isinstance(part, str) and (_STEP.match(part) is not None or part in ("str", "int", "float", "bool"))


def _keys_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """Return the keys the table at `loc` allows (by alias), following nested models, lists and optionals."""
    current: Any = model
    for part in loc:
        current = _table(current)
        if current is None:
            return []
        if isinstance(part, str):
            field = next((f for name, f in current.model_fields.items() if (f.alias or name) == part), None)
            if field is None:
                return []
            current = field.annotation
    table = _table(current)
    return [] if table is None else sorted(f.alias or name for name, f in table.model_fields.items())


def _table(annotation: Any) -> type[BaseModel] | None:
    """Return the model inside an annotation (`X`, `list[X]`, `X | None`, `dict[str, X]`), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (list, tuple, dict, typing.Union, types.UnionType, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _table(arg)
            if found is not None:
                return found
    return None


def json_schema(model: Any, *, title: str, description: str) -> dict[str, Any]:
    """Return the JSON Schema (draft 2020-12) of a TOML format, as editors read it (keys by their TOML names)."""
    schema = TypeAdapter(model).json_schema(by_alias=True, mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title,
            "description": description, **{k: v for k, v in schema.items() if k not in ("title", "description")}}
