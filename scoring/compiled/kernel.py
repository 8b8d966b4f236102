"""A few model-matrix rows scored in one machine-code call: linear terms, tree walks, blend and calibration.

`RowKernel.of(model)` copies a `CompiledModel`'s arrays; `proba(X)` then returns what `model.proba_matrix(X)`
returns, to KERNEL_TOLERANCE, from one call compiled by numba instead of some thirty numpy calls. It is built for
the request path, where numpy's per-call cost dominates: one lead and its 23 substitutions take 23 us instead
of 192 us. Large batches gain less (1.6 against 2.2 us a row at 100,000 rows).
numba compiles the loop at its first call (about a second; cached on disk after that, so a restarted worker
loads it); `compile_pipeline` checks it on the probe rows and falls back to numpy when numba is missing or the
kernel disagrees.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from scoring.compiled.model import CompiledModel

KERNEL_TOLERANCE = 1e-12  # the kernel reproduces the numpy path's probabilities to this (tested)
log = logging.getLogger("leadcast.scoring")


def _proba_rows(X: np.ndarray, out: np.ndarray, use_linear: bool, c0: float, num_cols: np.ndarray, wz: np.ndarray,
                medians: np.ndarray, knot_pos: np.ndarray, knot_val: np.ndarray, knot_w: np.ndarray,
                miss_cols: np.ndarray, miss_w: np.ndarray, cat_cols: np.ndarray, cat_codes: np.ndarray,
                cat_w: np.ndarray, use_trees: bool, order: np.ndarray, n_cat: int, recode: np.ndarray,
                roots: np.ndarray, feature: np.ndarray, threshold: np.ndarray, missing_left: np.ndarray,
                is_leaf: np.ndarray, left: np.ndarray, right: np.ndarray, value: np.ndarray, cat_row: np.ndarray,
                cat_table: np.ndarray, baseline: float, weight: float, isotonic: bool, a: float, b: float,
                iso_x: np.ndarray, iso_y: np.ndarray) -> None:  # pragma: no cover (runs as machine code)
    # The same terms, decisions and order of operations as LinearTerms.total, CompiledTrees.raw,
    # CompiledModel.logit and Calibrator: only the order of the summations inside a dot product differs.
    z = np.empty(num_cols.shape[0])
    xp = np.empty(order.shape[0])
    for r in range(X.shape[0]):
        logit = 0.0
        if use_linear:
            s = 0.0
            for k in range(num_cols.shape[0]):
                v = X[r, num_cols[k]]
                z[k] = medians[k] if np.isnan(v) else np.sign(v) * np.log1p(abs(v))
                s += z[k] * wz[k]
            lin = c0 + s
            s = 0.0
            for k in range(knot_pos.shape[0]):
                d = z[knot_pos[k]] - knot_val[k]
                s += (d if d > 0.0 or np.isnan(d) else 0.0) * knot_w[k]  # np.maximum keeps a NaN
            lin += s
            s = 0.0
            for k in range(miss_cols.shape[0]):
                if np.isnan(X[r, miss_cols[k]]):
                    s += miss_w[k]
                else:
                    s += 0.0 * miss_w[k]
            lin += s
            s = 0.0
            for k in range(cat_cols.shape[0]):
                if X[r, cat_cols[k]] == cat_codes[k]:
                    s += cat_w[k]
                else:
                    s += 0.0 * cat_w[k]
            lin += s
            logit += weight * lin
        if use_trees:
            for p in range(order.shape[0]):
                v = X[r, order[p]]
                if p < n_cat:
                    odd = np.isnan(v) or v < 0.0 or v >= 256.0 or v != np.floor(v)
                    v = recode[p, 256] if odd else recode[p, int(v)]
                xp[p] = v
            t = 0.0
            for i in range(roots.shape[0]):
                node = roots[i]
                while not is_leaf[node]:
                    v = xp[feature[node]]
                    c = cat_row[node]
                    if c > 0:
                        bad = np.isnan(v) or v < 0.0 or v > 255.0
                        go = cat_table[c, 256] if bad else cat_table[c, int(v)]
                    elif np.isnan(v):
                        go = missing_left[node]
                    else:
                        go = v <= threshold[node]
                    node = left[node] if go else right[node]
                t += value[node]
            logit += (1.0 - weight) * (t + baseline)
        if isotonic:
            out[r] = np.interp(logit, iso_x, iso_y)
        else:
            out[r] = 1.0 / (1.0 + np.exp(-(a * logit + b)))


@functools.cache
def _compiled() -> Callable[..., None] | None:
    """Return the compiled kernel (numba's dispatcher, compiled at its first call), or None without numba."""
    try:
        import numba
    except ImportError:
        return None
    try:
        return numba.njit(cache=True, nogil=True)(_proba_rows)
    except RuntimeError:  # no writable cache directory: compile in memory, once per process
        return numba.njit(cache=False, nogil=True)(_proba_rows)


@dataclass(frozen=True)
class _Arrays:
    """What the kernel reads, in its argument order after (X, out)."""

    use_linear: bool
    c0: float
    num_cols: np.ndarray
    wz: np.ndarray
    medians: np.ndarray
    knot_pos: np.ndarray
    knot_val: np.ndarray
    knot_w: np.ndarray
    miss_cols: np.ndarray
    miss_w: np.ndarray
    cat_cols: np.ndarray
    cat_codes: np.ndarray
    cat_w: np.ndarray
    use_trees: bool
    order: np.ndarray
    n_cat: int
    recode: np.ndarray
    roots: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    missing_left: np.ndarray
    is_leaf: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    cat_row: np.ndarray
    cat_table: np.ndarray
    baseline: float
    weight: float
    isotonic: bool
    a: float
    b: float
    iso_x: np.ndarray
    iso_y: np.ndarray


def _ints(values: Any) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.int64)


def _floats(values: Any) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.float64)


class RowKernel:
    """A compiled model's arrays laid out for the kernel; `proba(X)` scores model-matrix rows in one call."""

    def __init__(self, arrays: _Arrays) -> None:
        self.arrays = arrays
        # Not dataclasses.astuple: it deep-copies every array.
        self.args = tuple(getattr(arrays, f.name) for f in fields(arrays))

    @classmethod
    def of(cls, model: CompiledModel) -> RowKernel:
        """Lay out `model`'s linear terms, trees and calibration for the kernel."""
        empty_i, empty_f = np.empty(0, np.int64), np.empty(0, np.float64)
        lin = model.linear
        t = lin.terms if lin is not None else None
        trees = model.trees
        cal = model.calibrator
        if trees is not None:
            recode = trees._category_tables() if trees.category_maps else np.full((0, 257), np.nan)
            tree_args = dict(
                order=_ints(trees.column_order), n_cat=len(trees.category_maps), recode=_floats(recode),
                roots=_ints(trees.roots), feature=_ints(trees.feature), threshold=_floats(trees.threshold),
                missing_left=np.ascontiguousarray(trees.missing_left, dtype=np.bool_),
                is_leaf=np.ascontiguousarray(trees.is_leaf, dtype=np.bool_), left=_ints(trees.left_nav),
                right=_ints(trees.right_nav), value=_floats(trees.value), cat_row=_ints(trees.cat_row),
                cat_table=np.ascontiguousarray(trees.cat_table, dtype=np.bool_), baseline=float(trees.baseline))
        else:
            tree_args = dict(order=empty_i, n_cat=0, recode=np.full((0, 257), np.nan), roots=empty_i,
                             feature=empty_i, threshold=empty_f, missing_left=np.empty(0, np.bool_),
                             is_leaf=np.empty(0, np.bool_), left=empty_i, right=empty_i, value=empty_f,
                             cat_row=empty_i, cat_table=np.zeros((1, 257), np.bool_), baseline=0.0)
        return cls(_Arrays(
            use_linear=lin is not None, c0=float(lin.c0) if lin is not None else 0.0,
            num_cols=_ints(t.num_cols) if t else empty_i, wz=_floats(t.wz) if t else empty_f,
            medians=_floats(t.medians) if t else empty_f, knot_pos=_ints(t.knot_pos) if t else empty_i,
            knot_val=_floats(t.knot_val) if t else empty_f, knot_w=_floats(t.knot_w) if t else empty_f,
            miss_cols=_ints(t.miss_cols) if t else empty_i, miss_w=_floats(t.miss_w) if t else empty_f,
            cat_cols=_ints(t.cat_cols) if t else empty_i, cat_codes=_floats(t.cat_codes) if t else empty_f,
            cat_w=_floats(t.cat_w) if t else empty_f, use_trees=trees is not None, weight=float(model.weight),
            isotonic=cal.method == "isotonic", a=float(cal.a), b=float(cal.b), iso_x=_floats(cal.x),
            iso_y=_floats(cal.y), **tree_args))  # type: ignore[arg-type]

    def proba(self, X: np.ndarray) -> np.ndarray:
        """Return calibrated probabilities of (blanked) model-matrix rows; needs `available()`."""
        kernel = _compiled()
        assert kernel is not None
        out = np.empty(X.shape[0])
        kernel(np.ascontiguousarray(X, dtype=np.float64), out, *self.args)
        return out

    @staticmethod
    def available() -> bool:
        """Return whether numba is installed (the kernel can be compiled)."""
        return _compiled() is not None


def checked_kernel(model: CompiledModel, probe: np.ndarray, expected: np.ndarray) -> RowKernel | None:
    """Return the kernel of `model` when it reproduces `expected`, the numpy path's probabilities of the probe
    rows, else None.

    The first call compiles (or loads the cached machine code); any failure, or a probability further than
    KERNEL_TOLERANCE from numpy's, is logged and leaves the numpy path serving.
    """
    if not RowKernel.available():
        log.info("numba is not installed: one lead is scored with numpy (slower, the same scores)")
        return None
    try:
        kernel = RowKernel.of(model)
        got = kernel.proba(model.model._blank(probe))
    except Exception as exc:  # a numba that cannot compile here: numpy serves, with the same scores
        log.warning("the compiled row kernel could not be built (%s: %s); scoring with numpy instead",
                    type(exc).__name__, exc)
        return None
    worst = float(np.max(np.abs(got - expected), initial=0.0))
    if not np.isfinite(worst) or worst > KERNEL_TOLERANCE:
        log.warning("the compiled row kernel differs from numpy by up to %.3g on the probe rows; scoring with "
                    "numpy instead", worst)
        return None
    return kernel
