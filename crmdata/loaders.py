"""Read CSV and Parquet exports into contract-typed frames, reporting every problem at once."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from crmdata.contracts import LEAD, OPPORTUNITY, STAGE_HISTORY, Column, Contract
from crmdata.errors import DataValidationError, Problem
from crmdata.files import atomic_write
from crmdata.mapping import ColumnMapping, Join
from crmdata.stages import DEFAULT_STAGES, StageConfig
from crmdata.values import (
    FALSE_VALUES,
    MAX_AMOUNT,
    MAX_PROBLEMS,
    PIPELINE_FIRST_DAY,
    PIPELINE_LAST_DAY,
    TRUE_VALUES,
    Rule,
    above_max_amount,
    outside_pipeline,
    parse_series,
)


@dataclass(frozen=True)
class Pipeline:
    """Opportunities that passed validation, with their stage configuration and optional stage history."""

    opportunities: pd.DataFrame
    stages: StageConfig
    history: pd.DataFrame | None = None


def read_csv(source: str | Path | IO[bytes], *, name: str, sep: str = ",",
             missing_values: tuple[str, ...] = (), encoding: str = "utf-8-sig") -> pd.DataFrame:
    """Read CSV text as strings (nothing guessed); raise a DataValidationError if it cannot be parsed."""
    try:
        return pd.read_csv(source, sep=sep, dtype=str, keep_default_na=False, na_values=["", *missing_values],
                           encoding=encoding)
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataValidationError(
            [Problem(name, "-", f"cannot be read: {exc}".splitlines()[0] + _encoding_hint(exc, encoding),
                     code="unreadable")], source=name
        ) from exc


def _encoding_hint(exc: Exception, encoding: str) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f" (read as {encoding}; set the spec's `encoding`, e.g. \"latin-1\" or \"cp1252\")"
    return ""


def csv_separator(path: Path, delimiter: str | None = None) -> str:
    """Return the field separator of a text export: the one given, else a tab for .tsv and a comma otherwise."""
    if delimiter is not None:
        return delimiter
    return "\t" if path.suffix.lower() == ".tsv" else ","


def read_raw(path: Path, *, missing_values: tuple[str, ...] = (), delimiter: str | None = None,
             encoding: str = "utf-8-sig") -> pd.DataFrame:
    """Read a CSV (as text, nothing guessed) or Parquet file; raise a DataValidationError if it cannot be read.

    `delimiter` and `encoding` say how a text export is written (default: comma, or tab for .tsv; UTF-8).
    """
    source = str(path)
    if not path.exists():
        raise DataValidationError([Problem(source, "-", "file does not exist", code="missing_file")], source=source)
    suffixes = "".join(path.suffixes).lower()
    if suffixes.endswith(".parquet") or suffixes.endswith(".pq"):
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise DataValidationError(
                [Problem(source, "-", f"cannot be read: {exc}".splitlines()[0], code="unreadable")], source=source
            ) from exc
        # Arrow's allocator keeps the pages of the table it converted: 95 MiB of RSS after reading 400,000
        # leads, held through a whole training, unless handed back.
        pa.default_memory_pool().release_unused()
        return frame
    if ".csv" in suffixes or ".txt" in suffixes or ".tsv" in suffixes:
        sep = delimiter if delimiter is not None else "\t" if ".tsv" in suffixes else ","
        return read_csv(path, name=source, sep=sep, missing_values=missing_values, encoding=encoding)
    raise DataValidationError(
        [Problem(source, "-", "unsupported file type; use .csv, .tsv or .parquet", code="unsupported")],
        source=source,
    )


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write CSV or Parquet (by suffix) atomically."""
    if path.suffix.lower() in (".parquet", ".pq"):
        atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False, compression="zstd"))
    else:
        atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False, date_format="%Y-%m-%dT%H:%M:%S"))


def _normalise_key(values: pd.Series, how: str) -> pd.Series:
    text = values.astype("string")
    if how == "casefold":
        return text.str.casefold().str.strip()
    if how == "alnum":
        return text.str.casefold().str.replace(r"[^0-9a-z]", "", regex=True)
    return text


def _apply_join(frame: pd.DataFrame, join: Join, index: int, source: str, base: Path | None) -> list[Problem]:
    where = f"joins[{index}]"
    file = join.file if join.file.is_absolute() or base is None else base / join.file
    lookup = read_raw(file)
    problems = []
    if join.on not in frame.columns:
        problems.append(Problem(source, f"{where}.on", f"column '{join.on}' is not in the export", code="bad_mapping"))
    missing = [c for c in (join.key, *join.columns.values()) if c not in lookup.columns]
    if missing:
        problems.append(Problem(str(file), ", ".join(missing), "column missing from the lookup file",
                                code="missing_column"))
    if problems:
        return problems
    keys = _normalise_key(lookup[join.key], join.normalize)
    dupes = keys[keys.duplicated(keep=False) & keys.notna()]
    if len(dupes):
        return [Problem(str(file), join.key, f"key is not unique ({dupes.nunique()} repeated values)",
                        value=str(dupes.iloc[0]), code="duplicate")]
    table = lookup.assign(_key=keys.to_numpy()).set_index("_key")
    frame_keys = _normalise_key(frame[join.on], join.normalize)
    for target, column in join.columns.items():
        looked_up = frame_keys.map(table[column]).astype(object)
        if target in frame.columns and join.fill == "missing":
            frame[target] = frame[target].astype(object).where(frame[target].notna(), looked_up)
        else:
            frame[target] = looked_up
    return []


def rule_of(col: Column, mapping: ColumnMapping | None = None) -> Rule:
    """Return the value rule of a contract column, with a mapping's extra true/false spellings and date format."""
    mapping = mapping or ColumnMapping()
    return Rule(col.kind, non_negative=col.non_negative,
                true_values=(*TRUE_VALUES, *mapping.true_values), false_values=(*FALSE_VALUES, *mapping.false_values),
                date_format=mapping.date_format)


def _parse_column(
    series: pd.Series, col: Column, mapping: ColumnMapping, table: str
) -> tuple[pd.Series, list[Problem]]:
    """Convert one column to its contract type; report each value that breaks its rule, with its row."""
    values, refused = parse_series(series, rule_of(col, mapping), limit=MAX_PROBLEMS)
    out: pd.Series
    if col.kind == "string":
        out = pd.Series(values, index=series.index, dtype="string")
    elif col.kind == "bool":
        out = pd.Series(values, index=series.index).astype("Float64").astype("boolean")
    elif col.kind == "datetime":
        out = pd.Series(values, index=series.index)
    else:
        out = pd.Series(values, index=series.index).astype("Float64")
    problems = [Problem(table, col.name, r.message, row=r.position + 1, value=r.value, code=r.code) for r in refused]
    return out, problems


def _rows(mask: pd.Series) -> np.ndarray:
    return np.flatnonzero(mask.fillna(False).to_numpy(bool))[:MAX_PROBLEMS]


def conform(
    raw: pd.DataFrame,
    *,
    contract: Contract,
    mapping: ColumnMapping | None = None,
    source: str | None = None,
    base: Path | None = None,
) -> tuple[pd.DataFrame, list[Problem]]:
    """Rename, join, type and check a raw frame against a contract; return it with every problem found.

    Structural problems (a missing column) do not stop the checks: the column is treated as empty, so one pass
    reports everything that is wrong with the file.
    """
    mapping = mapping or ColumnMapping()
    table = source or contract.name
    problems = mapping.check_against(contract)
    frame = raw.reset_index(drop=True).copy()
    renames = {src: target for target, src in mapping.columns.items()}
    absent_sources = {target for target, src in mapping.columns.items() if src not in frame.columns}
    for target in sorted(absent_sources):
        problems.append(Problem(table, mapping.columns[target], "column is missing from the file",
                                code="missing_column"))
    taken = set(renames.values())
    clashes = [c for c in frame.columns if c in taken and c not in renames]
    frame = frame.drop(columns=clashes).rename(columns=renames)
    for i, join in enumerate(mapping.joins):
        if join.on in absent_sources:
            continue  # already reported as a missing column
        problems += _apply_join(frame, join, i, table, base)
    absent_columns = set(absent_sources)
    for col in contract.columns:
        if col.name not in frame.columns:
            absent_columns.add(col.name)
            if col.required and col.name not in absent_sources:
                problems.append(Problem(table, col.name, "required column is missing", code="missing_column"))
            frame[col.name] = pd.Series(pd.NA, index=frame.index, dtype="object")

    for col in contract.columns:
        parsed, col_problems = _parse_column(frame[col.name], col, mapping, table)
        # Missing once read: blank text ("  ", a form feed) is missing too, which the raw value did not show (a
        # required product of "\f" reached the store's NOT NULL and was a 500); a refused value is reported once.
        absent = parsed.isna()
        absent.iloc[[p.row - 1 for p in col_problems if p.row is not None]] = False
        frame[col.name] = parsed
        problems += col_problems
        if not col.nullable and col.name not in absent_columns:
            for i in _rows(absent):
                problems.append(Problem(table, col.name, "is empty; a value is required", row=int(i) + 1,
                                        code="missing_value"))
        if col.unique:
            dup = parsed.duplicated(keep="first") & parsed.notna()
            if dup.any():
                first = parsed[parsed.notna()].drop_duplicates(keep="first")
                first_row = pd.Series(first.index.to_numpy() + 1, index=first.to_numpy())
                for i in _rows(dup):
                    problems.append(Problem(table, col.name, f"duplicate id (first in row {first_row[parsed.iloc[i]]})",
                                            row=int(i) + 1, value=str(parsed.iloc[i]), code="duplicate"))
    ordered = [*contract.names, *[c for c in frame.columns if c not in contract.names]]
    return frame[ordered], problems


def raise_if_any(problems: list[Problem], *, source: str, mapping: ColumnMapping | None = None) -> None:
    """Raise one DataValidationError with every problem, named by the export's own column names, row order."""
    if not problems:
        return
    if mapping is not None and mapping.columns:
        problems = [
            replace(p, field=f"{mapping.columns[p.field]} ({p.field})")
            if p.field in mapping.columns and mapping.columns[p.field] != p.field else p
            for p in problems
        ]
    # A value that did not parse is reported once, not again as missing by the rules that needed it.
    unparsed = {(p.row, p.field) for p in problems if p.code in ("wrong_type", "bad_date")}
    problems = [p for p in problems if p.code != "missing_value" or (p.row, p.field) not in unparsed]
    problems = sorted(problems, key=lambda p: (p.row is not None, p.row or 0))
    raise DataValidationError(problems, source=source)


def _check_stages(frame: pd.DataFrame, stages: StageConfig, table: str, allowed: tuple[str, ...]) -> list[Problem]:
    unknown = frame["stage"].notna() & ~frame["stage"].isin(allowed)
    return [
        Problem(table, "stage", f"unknown stage; expected one of {', '.join(allowed)}", row=int(i) + 1,
                value=str(frame["stage"].iloc[i]), code="unknown_stage")
        for i in _rows(unknown)
    ]


def _check_order(
    frame: pd.DataFrame, earlier: str, later: str, table: str, what: str, what_earlier: str = "creation date"
) -> list[Problem]:
    bad = frame[later] < frame[earlier]
    return [
        Problem(table, later, f"{what} is before the {what_earlier} ({frame[earlier].iloc[i]:%Y-%m-%d})",
                row=int(i) + 1, value=f"{frame[later].iloc[i]:%Y-%m-%d}", code="date_order")
        for i in _rows(bad)
    ]


def _check_window(frame: pd.DataFrame, contract: Contract, table: str) -> list[Problem]:
    """Refuse a pipeline date outside the years a pipeline may span (their differences must fit datetime64[ns])."""
    problems = []
    first, end = pd.Timestamp(PIPELINE_FIRST_DAY), pd.Timestamp(PIPELINE_LAST_DAY) + pd.Timedelta(days=1)
    for col in contract.columns:
        if col.kind == "datetime":
            values = frame[col.name]
            problems += [Problem(table, col.name, outside_pipeline().message, row=int(i) + 1,
                                 value=f"{values.iloc[i]:%Y-%m-%d}", code="bad_date")
                         for i in _rows((values < first) | (values >= end))]
    return problems


def _check_amounts(frame: pd.DataFrame, table: str) -> list[Problem]:
    """Refuse an amount above MAX_AMOUNT (the pipeline's sums and squares must stay finite)."""
    problems = []
    for col in OPPORTUNITY.columns:
        if col.kind == "float":
            values = frame[col.name]
            problems += [Problem(table, col.name, above_max_amount().message, row=int(i) + 1,
                                 value=str(values.iloc[i]), code="wrong_value") for i in _rows(values > MAX_AMOUNT)]
    return problems


def check_opportunities(frame: pd.DataFrame, stages: StageConfig, table: str) -> list[Problem]:
    """Check the rules that span columns of an opportunity table and derive its outcome from its stage."""
    problems = _check_stages(frame, stages, table, stages.all)
    problems += _check_window(frame, OPPORTUNITY, table)
    problems += _check_amounts(frame, table)
    problems += _check_order(frame, "created_at", "closed_at", table, "close date")
    problems += _check_order(frame, "created_at", "stage_entered_at", table, "stage entry date")
    derived = frame["stage"].map({s: stages.outcome(s) for s in stages.all}).astype("string")
    given = frame["outcome"].str.casefold()
    for i in _rows(given.notna() & ~given.isin(["open", "won", "lost"])):
        problems.append(Problem(table, "outcome", "must be open, won or lost", row=int(i) + 1,
                                value=str(frame["outcome"].iloc[i]), code="wrong_value"))
    for i in _rows(given.notna() & derived.notna() & given.isin(["open", "won", "lost"]) & (given != derived)):
        problems.append(Problem(table, "outcome", f"disagrees with stage '{frame['stage'].iloc[i]}'",
                                row=int(i) + 1, value=str(frame["outcome"].iloc[i]), code="inconsistent"))
    closed = derived.isin(["won", "lost"]).fillna(False)
    for i in _rows(closed & frame["closed_at"].isna()):
        problems.append(Problem(table, "closed_at", "a won or lost deal needs a close date", row=int(i) + 1,
                                code="missing_value"))
    for i in _rows(closed & frame["created_at"].isna()):
        problems.append(Problem(table, "created_at", "a won or lost deal needs a creation date", row=int(i) + 1,
                                code="missing_value"))
    for i in _rows((derived == "open") & frame["closed_at"].notna()):
        problems.append(Problem(table, "closed_at", "an open deal has a close date; use expected_close_date",
                                row=int(i) + 1, value=f"{frame['closed_at'].iloc[i]:%Y-%m-%d}",
                                code="inconsistent"))
    frame["outcome"] = derived
    return problems


def check_leads(frame: pd.DataFrame, stages: StageConfig, table: str) -> list[Problem]:
    """Check the rules that span columns of a lead table."""
    problems = _check_stages(frame, stages, table, stages.lead_stages)
    problems += _check_order(frame, "created_at", "converted_at", table, "conversion date")
    for i in _rows((frame["converted"] == False) & frame["converted_at"].notna()):  # noqa: E712
        problems.append(Problem(table, "converted_at", "set on a lead that did not convert", row=int(i) + 1,
                                code="inconsistent"))
    return problems


def _mapping(mapping: ColumnMapping | Path | None) -> ColumnMapping:
    if isinstance(mapping, Path):
        return ColumnMapping.from_file(mapping)
    return mapping or ColumnMapping()


def load_leads(
    path: Path, *, mapping: ColumnMapping | Path | None = None, stages: StageConfig | None = None
) -> pd.DataFrame:
    """Load a lead export (CSV or Parquet) into the lead contract, or raise with every problem found."""
    m = _mapping(mapping)
    raw = read_raw(path, missing_values=m.missing_values)
    frame, problems = conform(raw, contract=LEAD, mapping=m, source=path.name, base=path.parent)
    problems += check_leads(frame, stages or m.stages or DEFAULT_STAGES, path.name)
    raise_if_any(problems, source=path.name, mapping=m)
    return frame


def load_stage_history(
    path: Path, *, mapping: ColumnMapping | Path | None = None, stages: StageConfig | None = None
) -> pd.DataFrame:
    """Load a stage-change table (one row per stage entered), or raise with every problem found."""
    m = _mapping(mapping)
    raw = read_raw(path, missing_values=m.missing_values)
    frame, problems = conform(raw, contract=STAGE_HISTORY, mapping=m, source=path.name, base=path.parent)
    config = stages or m.stages or DEFAULT_STAGES
    problems += _check_stages(frame, config, path.name, config.all)
    problems += _check_window(frame, STAGE_HISTORY, path.name)
    raise_if_any(problems, source=path.name, mapping=m)
    return frame.sort_values(["opportunity_id", "entered_at"], kind="stable").reset_index(drop=True)


def _is_in(values: pd.Series, pool: pd.Series) -> pd.Series:
    """Return, per value, whether it occurs in `pool`, hashed in Arrow (pandas 3's Arrow-string `isin` builds one
    Python scalar per value of the pool: a second per 100,000 deal ids)."""
    arr = pa.array(values.astype("string").array, from_pandas=True)
    ids = pa.array(pool.astype("string").array, from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    hit = pc.fill_null(pc.is_in(arr, value_set=ids.cast(arr.type), skip_nulls=True), False)
    return pd.Series(np.asarray(hit.to_numpy(zero_copy_only=False), dtype=bool), index=values.index)


def load_pipeline(
    path: Path,
    *,
    mapping: ColumnMapping | Path | None = None,
    stages: StageConfig | None = None,
    history: Path | None = None,
) -> Pipeline:
    """Load an opportunity export, and optionally its stage history, into a validated Pipeline."""
    m = _mapping(mapping)
    config = stages or m.stages or DEFAULT_STAGES
    raw = read_raw(path, missing_values=m.missing_values)
    frame, problems = conform(raw, contract=OPPORTUNITY, mapping=m, source=path.name, base=path.parent)
    problems += check_opportunities(frame, config, path.name)
    raise_if_any(problems, source=path.name, mapping=m)
    hist = None
    if history is not None:
        hist = load_stage_history(history, stages=config)
        unknown = ~_is_in(hist["opportunity_id"], frame["opportunity_id"])
        raise_if_any(
            [Problem(history.name, "opportunity_id", "not an opportunity in the export", row=int(i) + 1,
                     value=str(hist["opportunity_id"].iloc[i]), code="unknown_id") for i in _rows(unknown)],
            source=history.name,
        )
    return Pipeline(opportunities=frame, stages=config, history=hist)


def frame_from_records(
    records: list[dict[str, object]] | pd.DataFrame, *, contract: Contract, stages: StageConfig | None = None,
    source: str = "records",
) -> pd.DataFrame:
    """Conform JSON records or a raw text frame (as an API receives them) to a contract, or raise every problem."""
    if isinstance(records, pd.DataFrame):
        raw = records
    else:
        raw = pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=list(contract.names))
    frame, problems = conform(raw, contract=contract, source=source)
    config = stages or DEFAULT_STAGES
    if contract is OPPORTUNITY:
        problems += check_opportunities(frame, config, source)
    elif contract is LEAD:
        problems += check_leads(frame, config, source)
    elif contract is STAGE_HISTORY:
        problems += _check_stages(frame, config, source, config.all)
        problems += _check_window(frame, STAGE_HISTORY, source)
    raise_if_any(problems, source=source)
    return frame


@dataclass(frozen=True)
class OutcomeTable:
    """Lead outcomes read from an export: id, converted (bool) and converted_at (UTC, NaT when not known)."""

    outcomes: pd.DataFrame
    undecided: int  # rows whose outcome column is empty (an open lead): left out


def load_outcomes(
    path: Path,
    *,
    id_column: str,
    target_column: str,
    positive: tuple[str, ...],
    negative: tuple[str, ...],
    converted_at_column: str | None = "converted_at",
    missing_values: tuple[str, ...] = (),
) -> OutcomeTable:
    """Read the outcomes of a lead export (CSV or Parquet) by a spec's id and target columns, or raise with every
    problem found. Rows with an empty outcome are undecided leads and are counted, not read; a conversion time
    (`converted_at_column`, when the export has it) is read for converted leads and refused on the others."""
    source = path.name
    raw = read_raw(path, missing_values=missing_values).reset_index(drop=True)
    problems = [Problem(source, name, f"column is missing ({what})", code="missing_column")
                for name, what in ((id_column, "the id column"), (target_column, "the target column"))
                if name not in raw.columns]
    raise_if_any(problems, source=source)
    ids, refused = parse_series(raw[id_column], Rule("string", missing_values=missing_values))
    problems += [Problem(source, id_column, r.message, row=r.position + 1, value=r.value, code=r.code)
                 for r in refused]
    # The target read as true/false with the spec's own spellings: the value layer names anything else.
    target_rule = Rule("bool", true_values=positive, false_values=negative, missing_values=missing_values)
    converted, refused = parse_series(raw[target_column], target_rule)
    problems += [Problem(source, target_column, r.message, row=r.position + 1, value=r.value, code=r.code)
                 for r in refused]
    refused_rows = {r.position for r in refused}
    decided = ~np.isnan(converted)
    decided[list(refused_rows)] = False
    for i in _rows(pd.Series(pd.isna(ids) & decided))[:MAX_PROBLEMS]:
        problems.append(Problem(source, id_column, "is empty; every outcome needs a lead id", row=int(i) + 1,
                                code="missing_value"))
    if converted_at_column is not None and converted_at_column in raw.columns:
        times, refused = parse_series(raw[converted_at_column], Rule("datetime", missing_values=missing_values))
        problems += [Problem(source, converted_at_column, r.message, row=r.position + 1, value=r.value,
                             code=r.code) for r in refused]
        for i in _rows(pd.Series(decided & (converted == 0.0) & ~pd.isna(times)))[:MAX_PROBLEMS]:
            problems.append(Problem(source, converted_at_column, "set on a lead that did not convert",
                                    row=int(i) + 1, code="inconsistent"))
    else:
        times = np.full(len(raw), np.datetime64("NaT"), dtype="datetime64[ns]")
    raise_if_any(problems, source=source)
    undecided = int((~decided).sum())
    keep = np.flatnonzero(decided)
    frame = pd.DataFrame({"lead_id": pd.Series(ids[keep], dtype=object),
                          "converted": converted[keep] == 1.0,
                          "converted_at": pd.Series(times[keep], dtype="datetime64[ns]")})
    return OutcomeTable(outcomes=frame, undecided=undecided)
