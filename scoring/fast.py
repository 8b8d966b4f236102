"""A compiled scorer: the fitted pipeline turned into numpy arrays, for one lead in well under a millisecond.

`CompiledModel.from_pipeline` reads the fitted featuriser, the spline-logistic coefficients, the gradient
boosting trees (`_predictors` node arrays and category bitsets) and the calibration map; `logit` and
`proba` then reproduce `pipeline.predict_proba` to 1e-9 without scikit-learn's per-call checks.
Reasons compare each field with its neutral value: contribution_j = p(x) - p(x with field j neutral).

Small trees (the default: at most LUT_BITS splits each) are also kept as leaf tables: a row's decisions
at a tree's splits, as bits, index the leaf it reaches. A few rows are scored through them in a handful
of numpy calls; for reasons, a field's neutral value only changes the bits of the splits reading that
field's columns, so only those are recomputed (`_contributions_by_split`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

from scoring.features import Base, LeadFeatures, LinearBasis
from scoring.model import Calibrator, LeadScoringModel

SMALL_BATCH = 512
CODE_LIMIT = 256
REASON_BLOCK = 16_384
SPLIT_BLOCK = 2_048  # leads per pass when computing reasons from leaf codes (keeps temporaries in cache)
LUT_BITS = 12  # a tree with at most this many splits is read from a leaf table of 2**splits entries
LUT_LIMIT = 1 << 21  # entries of all leaf tables together (16 MB); a larger forest is walked node by node
STACK_ROWS = 4_096  # substituted leads derived per pass when computing reasons
CODE_CELLS = 1 << 17  # split x row decisions per pass when computing leaf codes: keeps temporaries in cache


class Splits:
    """Split nodes of the trees, one entry each, in tree order: what each reads and where a row goes.

    A row's code for a tree is the sum of `weight` (2**k for the tree's k-th split) over the splits at
    which the row would go left; the tree's leaf table maps the code to the value of the leaf it reaches.
    Codes are additive over splits, so changing a few inputs only needs the splits that read them.
    """

    def __init__(self, column: np.ndarray, threshold: np.ndarray, missing_left: np.ndarray,
                 cat_row: np.ndarray, weight: np.ndarray, tree: np.ndarray) -> None:
        self.column = column
        self.threshold = threshold
        self.missing_left = missing_left
        self.cat_row = cat_row  # row of the split in `CompiledTrees.cat_table`; 0 for a numeric split
        self.weight = weight
        self.tree = tree
        self.cat = np.flatnonzero(cat_row > 0)
        self.cat_rows = cat_row[self.cat]
        first = np.ones(tree.size, dtype=bool)
        first[1:] = tree[1:] != tree[:-1]
        self.starts = np.flatnonzero(first)
        self.trees = tree[self.starts]
        self.any_missing_left = bool(missing_left.any())

    def subset(self, keep: np.ndarray) -> Splits:
        """Return the splits selected by a boolean mask (still in tree order)."""
        return Splits(self.column[keep], self.threshold[keep], self.missing_left[keep], self.cat_row[keep],
                      self.weight[keep], self.tree[keep])

    def codes(self, XT: np.ndarray, cat_table: np.ndarray) -> np.ndarray:
        """Return (len(trees), rows): per tree, the summed weights of its splits that send the row left.

        `XT` is prepared rows transposed (one row per prepared column). The same decisions as
        scikit-learn's predictor: a missing value follows `missing_left`; a numeric value goes left when
        <= threshold; a category looks its side up in `cat_table` (negative, unknown or missing categories
        go the missing way).
        """
        values = XT[self.column]
        threshold = self.threshold[:, None]
        left = values <= threshold
        nan = np.isnan(values)
        if self.any_missing_left:
            left |= nan & self.missing_left[:, None]
        if self.cat.size:
            vc = values[self.cat]
            bad = nan[self.cat] | (vc < 0) | (vc > 255)
            code = np.where(bad, 256.0, vc).astype(np.int64)
            left[self.cat] = cat_table.ravel()[code + (self.cat_rows * cat_table.shape[1])[:, None]]
        return np.asarray(np.add.reduceat(left * self.weight[:, None], self.starts, axis=0))


@dataclass
class FieldPart:
    """What one field's neutral value can change: its linear terms, the splits that read its columns and,
    per tree of those splits, the mask of the code bits they do not set. A field whose columns depend on
    it alone is `fixed`: its new linear share and split decisions are the same for every lead."""

    linear: LinearTerms | None
    splits: Splits | None
    keep: np.ndarray
    fixed: bool = False
    fixed_linear: float = 0.0
    fixed_bits: np.ndarray | None = None


@dataclass(frozen=True)
class LeafTables:
    """All splits, and per tree a table from code to leaf value: tree t's leaf is `table[offset[t] + code]`.

    Offsets are multiples of 2**(most splits in a tree), so an offset never shares a bit with a code.
    """

    splits: Splits
    table: np.ndarray
    offset: np.ndarray


@dataclass(frozen=True)
class CompiledTrees:
    """All trees of a HistGradientBoostingClassifier packed in flat arrays (node ids are global)."""

    roots: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    missing_left: np.ndarray
    is_leaf: np.ndarray
    value: np.ndarray
    depth: int
    baseline: float
    column_order: np.ndarray
    category_maps: tuple[np.ndarray, ...]
    tree_columns: tuple[frozenset[int], ...]
    left_nav: np.ndarray
    right_nav: np.ndarray
    cat_row: np.ndarray
    cat_table: np.ndarray
    predictors: tuple[Any, ...]
    known_cat_bitsets: np.ndarray
    f_idx_map: np.ndarray

    @classmethod
    def from_estimator(cls, hgb: Any) -> CompiledTrees:
        """Pack the fitted trees of `hgb` (binary classification)."""
        nodes_list, left_sets, roots = [], [], []
        offset, bitset_offset = 0, 0
        for (predictor,) in hgb._predictors:
            nodes = predictor.nodes
            roots.append(offset)
            shifted = nodes.copy()
            shifted["left"] = nodes["left"] + offset
            shifted["right"] = nodes["right"] + offset
            shifted["bitset_idx"] = nodes["bitset_idx"] + bitset_offset
            nodes_list.append(shifted)
            left_sets.append(predictor.raw_left_cat_bitsets)
            offset += len(nodes)
            bitset_offset += len(predictor.raw_left_cat_bitsets)
        nodes = np.concatenate(nodes_list)
        left_bitsets = np.concatenate(left_sets) if bitset_offset else np.zeros((1, 8), np.uint32)
        is_cat = hgb.is_categorical_
        known, f_idx_map = hgb._bin_mapper.make_known_categories_bitsets()
        if is_cat is not None and is_cat.any():
            encoder = hgb._preprocessor.named_transformers_["encoder"]
            cat_cols = np.flatnonzero(is_cat)
            num_cols = np.flatnonzero(~is_cat)
            maps = tuple(np.asarray(c, dtype=np.float64) for c in encoder.categories_)
            known_rows = known[f_idx_map[nodes["feature_idx"]]]
        else:
            cat_cols, num_cols = np.empty(0, np.int64), np.arange(hgb.n_features_in_)
            maps = ()
            known_rows = np.zeros((len(nodes), 8), np.uint32)
        order = np.concatenate([cat_cols, num_cols]).astype(np.int64)
        ids = np.arange(len(nodes))
        leaf = nodes["is_leaf"] == 1
        # Leaves point to themselves, so every row can take the same number of steps.
        left_nav = np.where(leaf, ids, nodes["left"]).astype(np.int64)
        right_nav = np.where(leaf, ids, nodes["right"]).astype(np.int64)
        # Per categorical node, go-left for each code 0..255 and, in column 256, for missing or unknown.
        cat_nodes = np.flatnonzero((nodes["is_categorical"] == 1) & ~leaf)
        cat_row = np.zeros(len(nodes), dtype=np.int64)
        cat_row[cat_nodes] = np.arange(1, len(cat_nodes) + 1)
        cat_table = np.zeros((len(cat_nodes) + 1, 257), dtype=bool)
        codes = np.arange(256)
        for r, node_id in enumerate(cat_nodes, start=1):
            missing_left = bool(nodes["missing_go_to_left"][node_id])
            in_left = (left_bitsets[nodes["bitset_idx"][node_id], codes >> 5] >> (codes & 31)) & 1
            in_known = (known_rows[node_id, codes >> 5] >> (codes & 31)) & 1
            cat_table[r, :256] = np.where(in_left == 1, True, np.where(in_known == 1, False, missing_left))
            cat_table[r, 256] = missing_left
        tree_columns = tuple(
            frozenset(order[p.nodes["feature_idx"][p.nodes["is_leaf"] == 0]].tolist()) for (p,) in hgb._predictors
        )
        return cls(
            roots=np.asarray(roots, dtype=np.int64), feature=nodes["feature_idx"].astype(np.int64),
            threshold=nodes["num_threshold"].astype(np.float64), missing_left=nodes["missing_go_to_left"] == 1,
            is_leaf=nodes["is_leaf"] == 1, value=nodes["value"].astype(np.float64),
            depth=int(nodes["depth"].max()) + 1, baseline=float(hgb._baseline_prediction.ravel()[0]),
            column_order=np.concatenate([cat_cols, num_cols]).astype(np.int64), category_maps=maps,
            tree_columns=tree_columns, left_nav=left_nav, right_nav=right_nav,
            cat_row=cat_row, cat_table=cat_table,
            predictors=tuple(p for (p,) in hgb._predictors), known_cat_bitsets=known, f_idx_map=f_idx_map,
        )

    def prepare(self, X: np.ndarray) -> np.ndarray:
        """Reorder and recode a model matrix the way the gradient-boosting model reads it."""
        return self._prepare(np.asarray(X, dtype=np.float64))

    def tree_values(self, Xp: np.ndarray, trees: np.ndarray) -> np.ndarray:
        """Return the summed outputs of the given trees (compiled predictors) on prepared rows."""
        out = np.zeros(Xp.shape[0])
        # Column-major: each tree reads a few features for every row, so columns should be contiguous.
        Xc = np.asfortranarray(Xp)
        threads = _openmp_effective_n_threads()
        for t in trees:
            out += self.predictors[t].predict(Xc, self.known_cat_bitsets, self.f_idx_map, threads)
        return out

    def each_tree(self, Xp: np.ndarray) -> np.ndarray:
        """Return every tree's output on prepared rows, (n, trees)."""
        Xc = np.asfortranarray(Xp)
        threads = _openmp_effective_n_threads()
        out = np.empty((Xp.shape[0], len(self.predictors)))
        for t, predictor in enumerate(self.predictors):
            out[:, t] = predictor.predict(Xc, self.known_cat_bitsets, self.f_idx_map, threads)
        return out

    def _category_tables(self) -> np.ndarray:
        """Per categorical column, category code -> the ordinal scikit-learn's encoder gave it (NaN if unseen).

        Built at first use and kept beside the fields (a compiled model from an older pickle has none yet).
        """
        cache = self.__dict__
        if "_category_table_cache" not in cache:
            tables = np.full((len(self.category_maps), CODE_LIMIT + 1), np.nan)
            for k, cats in enumerate(self.category_maps):
                finite = cats[~np.isnan(cats)]
                whole = finite[(finite >= 0) & (finite < CODE_LIMIT) & (finite == np.floor(finite))]
                tables[k, whole.astype(np.int64)] = np.searchsorted(finite, whole).astype(np.float64)
            cache["_category_table_cache"] = tables
        return cast(np.ndarray, cache["_category_table_cache"])

    def _prepare(self, X: np.ndarray) -> np.ndarray:
        Xp = X[:, self.column_order]
        k = len(self.category_maps)
        if k:
            Xp[:, :k] = self._recode(Xp[:, :k], np.arange(k)[None, :])
        return Xp

    def prepare_t(self, X: np.ndarray) -> np.ndarray:
        """Return `prepare(X)` transposed: one contiguous row per prepared column."""
        XT = np.asarray(X, dtype=np.float64).T[self.column_order]
        k = len(self.category_maps)
        if k:
            XT[:k] = self._recode(XT[:k], np.arange(k)[:, None])
        return XT

    def _recode(self, codes: np.ndarray, which: np.ndarray) -> np.ndarray:
        """Look category codes up in their column's table (`which`: the column of each, broadcast).

        Odd codes (NaN, negative, fractional, too large) read the table's last entry, which is NaN.
        """
        odd = np.isnan(codes) | (codes < 0) | (codes >= CODE_LIMIT) | (codes != np.floor(codes))
        index = np.where(odd, CODE_LIMIT, codes).astype(np.int64) + which * (CODE_LIMIT + 1)
        return np.asarray(self._category_tables().ravel()[index])

    def leaf_tables(self) -> LeafTables | None:
        """Return the splits and leaf tables (built at first use), or None if some tree has too many splits."""
        cache = self.__dict__
        if "_leaf_table_cache" not in cache:
            cache["_leaf_table_cache"] = self._build_leaf_tables()
        return cast(LeafTables | None, cache["_leaf_table_cache"])

    def _build_leaf_tables(self) -> LeafTables | None:
        n_trees = len(self.roots)
        sizes = np.diff(np.append(self.roots, len(self.feature)))
        tree_of = np.repeat(np.arange(n_trees), sizes)
        split_nodes = np.flatnonzero(~self.is_leaf)  # node ids are global and in tree order
        tree = tree_of[split_nodes]
        counts = np.bincount(tree, minlength=n_trees)
        if n_trees == 0 or counts.max() > LUT_BITS:
            return None
        bit = np.arange(split_nodes.size) - (np.cumsum(counts) - counts)[tree]
        bit_of = np.zeros(len(self.feature), dtype=np.int64)
        bit_of[split_nodes] = bit
        stride = 1 << int(counts.max())
        if n_trees * stride > LUT_LIMIT:
            return None
        # Walk every possible code down each tree at once: bit k of the code says "go left at split k".
        code = np.arange(stride)
        node = np.repeat(self.roots, stride)
        code = np.tile(code, n_trees)
        for _ in range(self.depth):
            node = np.where((code >> bit_of[node]) & 1 == 1, self.left_nav[node], self.right_nav[node])
        splits = Splits(self.feature[split_nodes], self.threshold[split_nodes], self.missing_left[split_nodes],
                        self.cat_row[split_nodes], (1 << bit).astype(np.int64), tree)
        return LeafTables(splits, self.value[node], np.arange(n_trees, dtype=np.int64) * stride)

    def leaf_codes(self, XT: np.ndarray) -> np.ndarray:
        """Return every tree's leaf code of prepared rows given transposed (`prepare_t`), (trees, n).

        Needs `leaf_tables()`. Rows are taken a few hundred at a time: (splits x rows) temporaries that
        fit in the CPU cache make this several times faster than one pass over many rows.
        """
        tables = self.leaf_tables()
        assert tables is not None
        splits = tables.splits
        n = XT.shape[1]
        chunk = max(64, CODE_CELLS // max(1, splits.column.size))
        if splits.trees.size == len(self.roots) and n <= chunk:
            return splits.codes(XT, self.cat_table)
        codes = np.zeros((len(self.roots), n), dtype=np.int64)
        if splits.trees.size:
            for start in range(0, n, chunk):
                block = slice(start, start + chunk)
                codes[splits.trees, block] = splits.codes(XT[:, block], self.cat_table)
        return codes

    def raw(self, X: np.ndarray) -> np.ndarray:
        """Return the summed tree outputs plus baseline (the model's log-odds) for each row.

        Trees with few splits read their leaf from `leaf_tables()`; otherwise all rows walk all trees at
        once, one level per step: a categorical node looks its decision up in `cat_table`, a numeric one
        compares with its threshold; missing values follow `missing_left`.
        """
        tables = self.leaf_tables()
        if tables is not None:
            # Small trees: each tree's leaf is read from its table by the row's split decisions.
            leaves = tables.table[self.leaf_codes(self.prepare_t(X)) + tables.offset[:, None]]
            return np.asarray(leaves.sum(axis=0) + self.baseline)
        Xp = self._prepare(np.asarray(X, dtype=np.float64))
        n = Xp.shape[0]
        node = np.broadcast_to(self.roots, (n, len(self.roots))).copy()
        rows = np.arange(n)[:, None]
        has_cat = self.cat_table.shape[0] > 1
        for _ in range(self.depth):
            val = Xp[rows, self.feature[node]]
            nan = np.isnan(val)
            go_left = np.where(nan, self.missing_left[node], val <= self.threshold[node])
            if has_cat:
                crow = self.cat_row[node]
                if crow.any():
                    bad = nan | (val < 0) | (val > 255)
                    code = np.where(bad, 256, np.where(bad, 0, val).astype(np.int64))
                    go_left = np.where(crow > 0, self.cat_table[crow, code], go_left)
            nxt = np.where(go_left, self.left_nav[node], self.right_nav[node])
            if np.array_equal(nxt, node):
                break
            node = nxt
        return np.asarray(self.value[node].sum(axis=1) + self.baseline)


class LinearTerms:
    """Basis terms of some model-matrix columns as index arrays: their share of the log-odds in a few calls.

    Numeric column: w_z z + sum_k w_k max(z - knot_k, 0) (+ w_m if missing), z = sign(x) log1p(|x|) or the
    median if missing; categorical column: the weight of its code (+ w_m if missing).
    """

    def __init__(self, num_cols: np.ndarray, wz: np.ndarray, medians: np.ndarray, knot_pos: np.ndarray,
                 knot_val: np.ndarray, knot_w: np.ndarray, miss_cols: np.ndarray, miss_w: np.ndarray,
                 cat_cols: np.ndarray, cat_codes: np.ndarray, cat_w: np.ndarray) -> None:
        self.num_cols, self.wz, self.medians = num_cols, wz, medians
        self.knot_pos, self.knot_val, self.knot_w = knot_pos, knot_val, knot_w
        self.miss_cols, self.miss_w = miss_cols, miss_w
        self.cat_cols, self.cat_codes, self.cat_w = cat_cols, cat_codes, cat_w

    def total(self, X: np.ndarray, start: float = 0.0) -> np.ndarray:
        """Return start + the summed terms, per row of the model matrix X."""
        Xn = X[:, self.num_cols]
        Z = np.where(np.isnan(Xn), self.medians, np.sign(Xn) * np.log1p(np.abs(Xn)))
        out = start + Z @ self.wz
        if self.knot_pos.size:
            out += np.maximum(Z[:, self.knot_pos] - self.knot_val, 0.0) @ self.knot_w
        if self.miss_cols.size:
            out += np.isnan(X[:, self.miss_cols]) @ self.miss_w
        if self.cat_cols.size:
            out += (X[:, self.cat_cols] == self.cat_codes) @ self.cat_w
        return np.asarray(out)


class CompiledLinear:
    """The spline-logistic part: basis expansion, standardisation and coefficients, folded together.

    logit = c0 + sum_b w_b basis_b with w = coef / scale and c0 = intercept - mean . w; for small batches
    every basis column is computed at once from index arrays (a handful of numpy calls in all).
    """

    def __init__(self, basis: LinearBasis, coef: np.ndarray, intercept: float) -> None:
        self.basis = basis
        self.coef = coef
        self.intercept = intercept
        self.w = coef / basis.scale_
        self.c0 = float(intercept - basis.mean_ @ self.w)
        cats = set(basis.categorical)
        num_cols: list[int] = []
        knot_pos: list[int] = []
        miss_cols: list[int] = []
        cat_cols: list[int] = []
        wz: list[float] = []
        knot_val: list[float] = []
        knot_w: list[float] = []
        miss_w: list[float] = []
        cat_codes: list[float] = []
        cat_w: list[float] = []
        for j, sl in enumerate(basis.column_slices()):
            weights = self.w[sl]
            if j in cats:
                for m, code in enumerate(basis.codes_[j]):
                    cat_cols.append(j)
                    cat_codes.append(code)
                    cat_w.append(weights[m])
            else:
                pos = len(num_cols)
                num_cols.append(j)
                wz.append(weights[0])
                for i, knot in enumerate(basis.knots_[j]):
                    knot_pos.append(pos)
                    knot_val.append(knot)
                    knot_w.append(weights[1 + i])
            if basis.has_missing_[j]:
                miss_cols.append(j)
                miss_w.append(weights[-1])
        as_int = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731
        as_float = lambda v: np.asarray(v, dtype=np.float64)  # noqa: E731
        self.terms = LinearTerms(as_int(num_cols), as_float(wz), basis.medians_[num_cols], as_int(knot_pos),
                                 as_float(knot_val), as_float(knot_w), as_int(miss_cols), as_float(miss_w),
                                 as_int(cat_cols), as_float(cat_codes), as_float(cat_w))

    def raw(self, X: np.ndarray) -> np.ndarray:
        """Return the logistic model's log-odds for each row."""
        X = np.asarray(X, dtype=np.float64)
        if X.shape[0] > SMALL_BATCH:
            out = np.full(X.shape[0], self.c0)
            for k, sl in enumerate(self.basis.column_slices()):
                out += self.basis.expand_column(k, X[:, k]) @ self.w[sl]
            return out
        return self.terms.total(X, self.c0)

    def part(self, columns: list[int]) -> LinearTerms:
        """Return the terms of the listed model-matrix columns only (their share of the log-odds, less c0)."""
        t = self.terms
        num = np.isin(t.num_cols, columns)
        knots = num[t.knot_pos]
        miss = np.isin(t.miss_cols, columns)
        cat = np.isin(t.cat_cols, columns)
        return LinearTerms(t.num_cols[num], t.wz[num], t.medians[num], (np.cumsum(num) - 1)[t.knot_pos[knots]],
                           t.knot_val[knots], t.knot_w[knots], t.miss_cols[miss], t.miss_w[miss], t.cat_cols[cat],
                           t.cat_codes[cat], t.cat_w[cat])

    def column_terms(self, X: np.ndarray, columns: list[int]) -> np.ndarray:
        """Return each listed model-matrix column's additive share of the log-odds, (n, len(columns))."""
        slices = self.basis.column_slices()
        out = np.empty((X.shape[0], len(columns)))
        for i, k in enumerate(columns):
            sl = slices[k]
            z = (self.basis.expand_column(k, X[:, k]) - self.basis.mean_[sl]) / self.basis.scale_[sl]
            out[:, i] = z @ self.coef[sl]
        return out


class CompiledModel:
    """Score encoded leads with plain numpy: features -> log-odds of each part -> blend -> calibration."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.features: LeadFeatures = pipeline.named_steps["features"]
        model: LeadScoringModel = pipeline.named_steps["model"]
        self.model = model
        self.weight = float(model.weight_)
        self.calibrator: Calibrator = model.calibrator_
        self.linear = None
        if model.linear_ is not None and self.weight > 0:
            lr = model.linear_.named_steps["logistic"]
            self.linear = CompiledLinear(model.linear_.named_steps["basis"], lr.coef_.ravel().astype(np.float64),
                                         float(lr.intercept_[0]))
        self.trees = CompiledTrees.from_estimator(model.trees_) if (
            model.trees_ is not None and self.weight < 1) else None
        self.all_trees = np.arange(len(self.trees.predictors)) if self.trees is not None else np.empty(0, np.int64)
        self.fields = [f.column for f in self.features.spec.features]
        self.neutral = dict(self.features.neutral_)

    def logit(self, X: np.ndarray) -> np.ndarray:
        """Return the blended, uncalibrated log-odds of model-matrix rows."""
        X = self.model._blank(X)
        out = np.zeros(X.shape[0])
        if self.linear is not None:
            out += self.weight * self.linear.raw(X)
        if self.trees is not None:
            # Large batches: scikit-learn's compiled per-tree predictors, without its input checks.
            tree = (self.trees.raw(X) if X.shape[0] <= SMALL_BATCH
                    else self.trees.tree_values(self.trees.prepare(X), self.all_trees) + self.trees.baseline)
            out += (1 - self.weight) * tree
        return out

    def proba_matrix(self, X: np.ndarray) -> np.ndarray:
        """Return calibrated probabilities of model-matrix rows."""
        return self.calibrator(self.logit(X))

    def proba(self, base: Base) -> np.ndarray:
        """Return calibrated probabilities of encoded leads."""
        return self.proba_matrix(self.features.derive(base))

    def proba_and_contributions(self, base: Base) -> tuple[np.ndarray, np.ndarray]:
        """Return probabilities and contributions: a few leads in a single pass through the model (each
        lead and its substitutions stacked), more from leaf codes (see `_contributions_by_split`)."""
        n = len(next(iter(base.values())))
        subs = self._substitutions(base)
        total = n + sum(rows.size for _, rows in subs)
        if total > SMALL_BATCH:
            if self._by_split():
                return self._split_blocks(base, None, subs)
            p = self.proba(base)
            return p, self.contributions(base, p)
        stacked = self._stack(base, subs, include_base=True)
        p_all = self.proba(stacked)
        p = p_all[:n]
        out = np.zeros((n, len(self.fields)))
        start = n
        for j, rows in subs:
            out[rows, j] = p[rows] - p_all[start:start + rows.size]
            start += rows.size
        return p, out

    def _substitutions(self, base: Base) -> list[tuple[int, np.ndarray]]:
        """Return, per field, the leads whose value differs from the field's neutral value (if any)."""
        neutral = getattr(self, "_neutral_vector", None)
        if neutral is None:
            neutral = np.asarray([self.neutral[name] for name in self.fields], dtype=np.float64)
            self._neutral_vector = neutral
        if not self.fields:
            return []
        # One row per field, so that nonzero lists the leads field by field, in order.
        values = np.stack([np.asarray(base[name], dtype=np.float64) for name in self.fields])
        typical = neutral[:, None]
        differs = (values != typical) & ~(np.isnan(values) & np.isnan(typical))
        field, rows = np.nonzero(differs)
        if not field.size:
            return []
        starts = np.flatnonzero(np.diff(field, prepend=-1))
        bounds = [*starts.tolist(), rows.size]
        return [(j, rows[a:b]) for j, a, b in zip(field[starts].tolist(), bounds[:-1], bounds[1:], strict=True)]

    def _stack(self, base: Base, subs: list[tuple[int, np.ndarray]], *, include_base: bool) -> Base:
        parts = ([np.arange(len(next(iter(base.values()))))] if include_base else []) + [r for _, r in subs]
        all_rows = np.concatenate(parts)
        stacked = {name: values[all_rows] for name, values in base.items()}
        start = len(parts[0]) if include_base else 0
        for j, rows in subs:
            stacked[self.fields[j]][start:start + rows.size] = self.neutral[self.fields[j]]
            start += rows.size
        return stacked

    def contributions(self, base: Base, p: np.ndarray | None = None) -> np.ndarray:
        """Return (n, fields) signed contributions: p(lead) - p(lead with that field at its neutral value).

        A field already at its neutral value contributes 0; so a positive contribution means that moving
        the field to the typical value would lower the probability, by exactly that amount.
        """
        n = len(next(iter(base.values())))
        if p is None:
            p = self.proba(base)
        out = np.zeros((n, len(self.fields)))
        subs = self._substitutions(base)
        if not subs:
            return out
        if self._by_split() and (n > SPLIT_BLOCK or sum(rows.size for _, rows in subs) > SMALL_BATCH):
            return self._split_blocks(base, p, subs)[1]
        if n > REASON_BLOCK:
            for start in range(0, n, REASON_BLOCK):
                block = slice(start, start + REASON_BLOCK)
                out[block] = self.contributions({k: v[block] for k, v in base.items()}, p[block])
            return out
        if sum(rows.size for _, rows in subs) > SMALL_BATCH:
            return self._contributions_by_field(base, p, subs, out)
        p_sub = self.proba(self._stack(base, subs, include_base=False))
        start = 0
        for j, rows in subs:
            out[rows, j] = p[rows] - p_sub[start:start + rows.size]
            start += rows.size
        return out

    def _affected(self) -> list[tuple[list[int], np.ndarray]]:
        cached = getattr(self, "_affected_cache", None)
        if cached is not None:
            return list(cached)
        column_fields = self.features.column_fields()
        affected = []
        for name in self.fields:
            cols = [k for k, fields in enumerate(column_fields) if name in fields]
            trees = (np.asarray([t for t, used in enumerate(self.trees.tree_columns) if used & set(cols)],
                                dtype=np.int64) if self.trees is not None else np.empty(0, np.int64))
            affected.append((cols, trees))
        self._affected_cache = affected
        return affected

    def _contributions_by_field(self, base: Base, p: np.ndarray, subs: list[tuple[int, np.ndarray]],
                                out: np.ndarray) -> np.ndarray:
        """Recompute, per field, only the model-matrix columns, linear terms and trees that field touches.

        The log-odds are additive over linear column terms and over trees, so
        logit(x with field j neutral) = logit(x) - sum over touched terms and trees of (old - new): exact.
        """
        X = self.model._blank(self.features.derive(base))
        logit = self.logit(X)
        Xp = self.trees.prepare(X) if self.trees is not None else None
        per_tree = self.trees.each_tree(Xp) if self.trees is not None and Xp is not None else None
        affected = self._affected()
        for j, rows in subs:
            cols, trees = affected[j]
            sub = {name: values[rows] for name, values in base.items()}
            sub[self.fields[j]] = np.full(rows.size, self.neutral[self.fields[j]])
            Xs = self.model._blank(self.features.derive(sub))
            delta = np.zeros(rows.size)
            if self.linear is not None and cols:
                old = self.linear.column_terms(X[rows], cols).sum(axis=1)
                new = self.linear.column_terms(Xs, cols).sum(axis=1)
                delta += self.weight * (old - new)
            if self.trees is not None and per_tree is not None and trees.size:
                old_t = per_tree[np.ix_(rows, trees)].sum(axis=1)
                new_t = self.trees.tree_values(self.trees.prepare(Xs), trees)
                delta += (1 - self.weight) * (old_t - new_t)
            out[rows, j] = p[rows] - self.calibrator(logit[rows] - delta)
        return out

    def _field_parts(self) -> list[FieldPart]:
        """Per field, what its neutral value can change (see `FieldPart`). Built at first use."""
        cached = getattr(self, "_field_part_cache", None)
        if cached is not None:
            return list(cached)
        column_fields = self.features.column_fields()
        trees = self.trees
        tables = trees.leaf_tables() if trees is not None else None
        position = np.argsort(trees.column_order) if trees is not None else np.empty(0, np.int64)
        parts = []
        for name in self.fields:
            cols = [k for k, fields in enumerate(column_fields) if name in fields]
            linear = self.linear.part(cols) if self.linear is not None and cols else None
            splits, keep = None, np.empty(0, np.int64)
            if tables is not None and cols:
                reads = np.isin(tables.splits.column, position[cols])
                if reads.any():
                    splits = tables.splits.subset(reads)
                    keep = ~np.add.reduceat(splits.weight, splits.starts)
            part = FieldPart(linear, splits, keep)
            if all(column_fields[k] == {name} for k in cols):
                # Its columns are computed from this field alone: with the field neutral they are the same
                # for every lead, so their linear terms and split decisions are worked out once, here.
                one = {other: np.full(1, np.nan) for other in self.fields}
                one[name] = np.full(1, self.neutral[name])
                X = self.model._blank(self.features.derive(one))
                part.fixed = True
                part.fixed_linear = float(linear.total(X)[0]) if linear is not None else 0.0
                if splits is not None and trees is not None:
                    part.fixed_bits = splits.codes(trees.prepare_t(X), trees.cat_table)
            parts.append(part)
        self._field_part_cache = parts
        return parts

    def _by_split(self) -> bool:
        return self.trees is None or self.trees.leaf_tables() is not None

    def _split_blocks(self, base: Base, p: np.ndarray | None, subs: list[tuple[int, np.ndarray]],
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Run `_contributions_by_split` on SPLIT_BLOCK leads at a time; return probabilities, contributions."""
        n = len(next(iter(base.values())))
        if n <= SPLIT_BLOCK:
            return self._contributions_by_split(base, p, subs, np.zeros((n, len(self.fields))))
        probabilities, out = np.empty(n), np.empty((n, len(self.fields)))
        for start in range(0, n, SPLIT_BLOCK):
            block = slice(start, start + SPLIT_BLOCK)
            part = {name: values[block] for name, values in base.items()}
            probabilities[block], out[block] = self._contributions_by_split(
                part, None if p is None else p[block], self._substitutions(part),
                np.zeros((min(n - start, SPLIT_BLOCK), len(self.fields))))
        return probabilities, out

    def _contributions_by_split(self, base: Base, p: np.ndarray | None, subs: list[tuple[int, np.ndarray]],
                                out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per field, recompute only its linear terms and the tree splits that read its columns.

        Every lead's leaf code of every tree is computed once; with field j neutral, a tree's code keeps
        the bits of the splits that do not read field j and takes new bits from those that do, so
        logit(x with field j neutral) = logit(x) - w (linear terms old - new) - (1 - w) (leaves old - new):
        exact. Substituted leads are derived in stacked passes of up to STACK_ROWS leads (fields whose
        columns depend on themselves alone need none) and all are calibrated at once. Without `p`, the
        probabilities are computed here too (from the same leaf codes) and returned with `out`.
        """
        X = self.model._blank(self.features.derive(base))
        logit = np.zeros(X.shape[0])
        if self.linear is not None:
            logit += self.weight * self.linear.raw(X)
        trees = self.trees
        tables = trees.leaf_tables() if trees is not None else None
        coded = np.empty((0, 0), dtype=np.int64)
        if trees is not None and tables is not None:
            # Codes with each tree's table offset added: (trees, n), a code's bits never touch the offset.
            coded = trees.leaf_codes(trees.prepare_t(X)) + tables.offset[:, None]
            logit += (1 - self.weight) * (tables.table[coded].sum(axis=0) + trees.baseline)
        if p is None:
            p = self.calibrator(logit)
        if not subs:
            return p, out
        parts = self._field_parts()
        ends = np.cumsum([rows.size for _, rows in subs])
        rows_all = np.concatenate([rows for _, rows in subs])
        new_logit = logit[rows_all]
        groups: list[list[int]] = []
        size = 0
        for k, (j, rows) in enumerate(subs):
            if parts[j].fixed:
                new_logit[ends[k] - rows.size:ends[k]] -= self._field_delta(parts[j], X, rows, coded)
            elif groups and size + rows.size <= STACK_ROWS:
                groups[-1].append(k)
                size += rows.size
            else:
                groups.append([k])
                size = rows.size
        for group in groups:
            Xs = self.model._blank(self.features.derive(self._stack(base, [subs[k] for k in group],
                                                                     include_base=False)))
            XsT = trees.prepare_t(Xs) if trees is not None else None
            start = 0
            for k in group:
                j, rows = subs[k]
                block = slice(start, start + rows.size)
                start += rows.size
                new_logit[ends[k] - rows.size:ends[k]] -= self._field_delta(
                    parts[j], X, rows, coded, Xs[block], None if XsT is None else XsT[:, block])
        field = np.repeat([j for j, _ in subs], [rows.size for _, rows in subs])
        out[rows_all, field] = p[rows_all] - self.calibrator(new_logit)
        return p, out

    def _field_delta(self, part: FieldPart, X: np.ndarray, rows: np.ndarray, coded: np.ndarray,
                     Xs: np.ndarray | None = None, XsT: np.ndarray | None = None) -> np.ndarray:
        """Return logit(x) - logit(x with the field neutral) of the given leads (substituted rows: Xs)."""
        delta = np.zeros(rows.size)
        if part.linear is not None:
            if part.fixed:
                new: float | np.ndarray = part.fixed_linear
            else:
                assert Xs is not None
                new = part.linear.total(Xs)
            delta += self.weight * (part.linear.total(X[rows]) - new)
        splits = part.splits
        if splits is not None and self.trees is not None:
            tables = self.trees.leaf_tables()
            assert tables is not None
            old = np.take(coded[splits.trees], rows, axis=1)
            if part.fixed:
                bits = part.fixed_bits
            else:
                assert XsT is not None
                bits = splits.codes(XsT, self.trees.cat_table)
            new_codes = (old & part.keep[:, None]) | bits
            delta += (1 - self.weight) * (tables.table[old] - tables.table[new_codes]).sum(axis=0)
        return delta
