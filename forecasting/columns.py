"""Vectorised look-ups on label columns (ids, stages, products) through Arrow's hash kernels.

pandas 3 keeps strings in Arrow, and `Series.isin(other_series)` and `Series.map(func)` on them turn every value
into a Python object first (`isin` builds one Python scalar per value of the pool): with 100,000 deal ids and
340,000 stage changes that was a sixth of a report. These helpers hash the values in Arrow instead and return
numpy arrays, so no Python code runs per value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def arrow(values: pd.Series | pd.Index | np.ndarray | Iterable[object]) -> pa.Array:
    """Return the values as one Arrow array (zero-copy for Arrow-backed strings; categories decoded)."""
    if isinstance(values, pd.Series | pd.Index):
        values = values.array
    elif not isinstance(values, np.ndarray):
        values = np.asarray(list(values), dtype=object)
    arr = pa.array(values, from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr


def _value_set(labels: pd.Series | pd.Index | np.ndarray | Iterable[object], like: pa.Array) -> pa.Array:
    pool = arrow(labels)
    if pool.type != like.type and not (pa.types.is_null(pool.type) or pa.types.is_null(like.type)):
        pool = pool.cast(like.type)
    return pool


def positions(values: pd.Series | pd.Index | np.ndarray, labels: pd.Series | pd.Index | np.ndarray | Iterable[object]
              ) -> np.ndarray:
    """Return, per value, the position of its first occurrence in `labels` (-1 when absent or missing)."""
    arr = arrow(values)
    if len(arr) == 0:
        return np.zeros(0, dtype=np.int64)
    pool = _value_set(labels, arr)
    if pa.types.is_null(arr.type) or len(pool) == 0:
        return np.full(len(arr), -1, dtype=np.int64)
    found = pc.index_in(arr, value_set=pool, skip_nulls=True)
    return np.asarray(pc.fill_null(found, -1).to_numpy(zero_copy_only=False), dtype=np.int64)


def is_in(values: pd.Series | pd.Index | np.ndarray, labels: pd.Series | pd.Index | np.ndarray | Iterable[object]
          ) -> np.ndarray:
    """Return, per value, whether it occurs in `labels` (a missing value never does)."""
    return positions(values, labels) >= 0


def lookup(values: pd.Series | pd.Index | np.ndarray, table: Mapping[str, float], *, default: float = np.nan
           ) -> np.ndarray:
    """Return table[value] per value as floats, `default` for a value the table lacks (or a missing one)."""
    keys = list(table)
    out = np.append(np.asarray([table[k] for k in keys], dtype=float), default)
    pos = positions(values, keys)
    return out[np.where(pos >= 0, pos, len(keys))]


def equals(values: pd.Series, label: str) -> np.ndarray:
    """Return, per value, whether it is `label` (False where missing)."""
    return np.asarray((values == label).fillna(False).to_numpy(dtype=bool), dtype=bool)


def sorted_codes(values: pd.Series | pd.Index | np.ndarray) -> np.ndarray:
    """Return, per value, the rank of its label among the distinct labels in sorted order (missing: last).

    Sorting rows by these codes orders them as sorting by the labels does (UTF-8 byte order is code point
    order), without comparing strings in Python.
    """
    arr = arrow(values)
    if len(arr) == 0:
        return np.zeros(0, dtype=np.int64)
    encoded = pc.dictionary_encode(arr)
    rank = np.empty(len(encoded.dictionary), dtype=np.int64)
    rank[np.asarray(pc.sort_indices(encoded.dictionary))] = np.arange(len(encoded.dictionary))
    indices = encoded.indices
    codes = np.asarray(pc.fill_null(indices, 0).to_numpy(zero_copy_only=False), dtype=np.int64)
    out = rank[codes] if len(rank) else codes
    if indices.null_count:
        out[np.asarray(indices.is_null())] = len(rank)
    return out


def take(values: pd.Series, rows: np.ndarray) -> pd.Series:
    """Return the values at integer `rows`, with a fresh 0..n-1 index."""
    return values.iloc[rows].reset_index(drop=True)
