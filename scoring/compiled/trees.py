"""Gradient-boosting trees compiled to numpy: node arrays, category decision tables and leaf tables.

`CompiledTrees.from_estimator` reads a fitted HistGradientBoostingClassifier's private state
(`_predictors` node arrays and category bitsets, `_bin_mapper`, `_preprocessor`, `_baseline_prediction`):
scikit-learn is pinned to the tested minor versions in pyproject.toml, and a loaded model is checked against
`pipeline.predict_proba` on its probe rows (`scoring.compiled.model.compile_pipeline`).

Small trees (the default: at most LUT_BITS splits each) are also kept as leaf tables: a row's decisions
at a tree's splits, as bits, index the leaf it reaches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

CODE_LIMIT = 256
LUT_BITS = 12  # a tree with at most this many splits is read from a leaf table of 2**splits entries
LUT_LIMIT = 1 << 21  # entries of all leaf tables together (16 MB); a larger forest is walked node by node
BIN_ROWS = 256  # from this many rows on, leaf codes are read from column bins (see `CompiledTrees.leaf_codes`)
BIN_BLOCK = 2_048  # rows per pass of the column bins: their (rows, trees) temporaries stay in the CPU cache


def code_dtype(entries: int) -> type[np.signedinteger[Any]]:
    """Return the narrowest signed integer holding every offset code of leaf tables with `entries` in all.

    Codes are gathered, masked and combined per lead and tree when reasons are computed: int16 moves a
    quarter of int64's bytes (LUT_LIMIT keeps any forest within int32).
    """
    return np.int16 if entries <= np.iinfo(np.int16).max else np.int32


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


class ColumnBins:
    """The splits reading a few columns as lookup tables: a value's bin picks its code bits in every tree.

    For a numeric column with sorted split thresholds u, a value's bin is the number of thresholds below
    it (a split at u_k sends it left exactly when bin <= k), and missing values have a bin of their own
    (`missing_left`). A categorical column's bin is its code, 256 for missing, negative or unknown ones, as
    in `Splits.codes`. `tables[c][bin, i]` is the sum of the weights of column c's splits in tree `trees[i]`
    that send the value left, so a row's code bits in all those trees are one row gather per column.
    """

    def __init__(self, splits: Splits, n_columns: int, categorical: np.ndarray, cat_table: np.ndarray) -> None:
        self.trees = splits.trees
        self.dtype = splits.weight.dtype
        tree_index = np.searchsorted(self.trees, splits.tree)
        self.columns: list[tuple[int, np.ndarray | None, np.ndarray]] = []
        for c in range(n_columns):
            on = np.flatnonzero(splits.column == c)
            if not on.size:
                continue
            thresholds: np.ndarray | None = None
            if categorical[c]:
                left = cat_table[splits.cat_row[on]]  # (splits, 257): go-left per code, 256 = missing or unknown
            else:
                thresholds = np.unique(splits.threshold[on])
                rank = np.searchsorted(thresholds, splits.threshold[on])
                left = np.column_stack([np.arange(thresholds.size + 1)[None, :] <= rank[:, None],
                                        splits.missing_left[on]])
            table = np.zeros((left.shape[1], self.trees.size), dtype=splits.weight.dtype)
            for k, s in enumerate(on.tolist()):
                table[:, tree_index[s]] += left[k] * splits.weight[s]
            self.columns.append((c, thresholds, table))

    def bits(self, XT: np.ndarray) -> np.ndarray:
        """Return (rows, trees): each row's code bits from these splits, for rows given transposed (`XT[c]`)."""
        out = np.zeros((XT.shape[1], self.trees.size), dtype=self.dtype)
        for c, thresholds, table in self.columns:
            values = XT[c]
            nan = np.isnan(values)
            if thresholds is None:
                bad = nan | (values < 0) | (values > 255)
                at = np.where(bad, 256.0, values).astype(np.int64)
            else:
                at = np.searchsorted(thresholds, values)
                at[nan] = thresholds.size + 1
            out += table[at]
        return out


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
        dtype = code_dtype(n_trees * stride)
        splits = Splits(self.feature[split_nodes], self.threshold[split_nodes], self.missing_left[split_nodes],
                        self.cat_row[split_nodes], (1 << bit).astype(dtype), tree)
        return LeafTables(splits, self.value[node], np.arange(n_trees, dtype=dtype) * stride)

    def column_bins(self) -> ColumnBins:
        """Return all splits as `ColumnBins` over the prepared columns (built at first use; needs leaf tables)."""
        cache = self.__dict__
        if "_column_bin_cache" not in cache:
            tables = self.leaf_tables()
            assert tables is not None
            n_columns = len(self.column_order)
            cache["_column_bin_cache"] = ColumnBins(tables.splits, n_columns,
                                                    np.arange(n_columns) < len(self.category_maps), self.cat_table)
        return cast(ColumnBins, cache["_column_bin_cache"])

    def leaf_codes(self, XT: np.ndarray) -> np.ndarray:
        """Return every tree's leaf code of prepared rows given transposed (`prepare_t`), (trees, n).

        Needs `leaf_tables()`. Up to BIN_ROWS rows are coded split by split (a few numpy calls in all); more
        from `column_bins()`, BIN_BLOCK rows at a time: a search and a row gather per column instead of a
        comparison per split (about 1.8x faster), the same codes (tested).
        """
        tables = self.leaf_tables()
        assert tables is not None
        splits = tables.splits
        n = XT.shape[1]
        if splits.trees.size == len(self.roots) and n < BIN_ROWS:
            return splits.codes(XT, self.cat_table)
        codes = np.zeros((len(self.roots), n), dtype=splits.weight.dtype)
        if not splits.trees.size:
            return codes
        if n < BIN_ROWS:
            codes[splits.trees] = splits.codes(XT, self.cat_table)
            return codes
        bins = self.column_bins()
        every = bins.trees.size == len(self.roots)
        for start in range(0, n, BIN_BLOCK):
            block = slice(start, start + BIN_BLOCK)
            bits = bins.bits(XT[:, block]).T
            if every:
                codes[:, block] = bits
            else:
                codes[bins.trees, block] = bits
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
