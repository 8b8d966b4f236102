"""A compiled scorer: the fitted pipeline turned into numpy arrays, for one lead in well under a millisecond.

`CompiledModel.from_pipeline` reads the fitted featuriser, the spline-logistic coefficients, the gradient
boosting trees (`_predictors` node arrays and category bitsets) and the calibration map; `logit` and
`proba` then reproduce `pipeline.predict_proba` to 1e-9 without scikit-learn's per-call checks.
Reasons compare each field with its neutral value: contribution_j = p(x) - p(x with field j neutral).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

from scoring.features import Base, LeadFeatures, LinearBasis
from scoring.model import Calibrator, LeadScoringModel

SMALL_BATCH = 512
CODE_LIMIT = 256
REASON_BLOCK = 16_384


@dataclass(frozen=True)
class CompiledTrees:
    """All trees of a HistGradientBoostingClassifier packed in flat arrays (node ids are global)."""

    roots: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    missing_left: np.ndarray
    left: np.ndarray
    right: np.ndarray
    is_leaf: np.ndarray
    is_categorical: np.ndarray
    bitset_row: np.ndarray
    left_bitsets: np.ndarray
    known_bitsets: np.ndarray
    value: np.ndarray
    depth: int
    baseline: float
    column_order: np.ndarray
    category_maps: tuple[np.ndarray, ...]
    n_categorical: int
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
            left=nodes["left"].astype(np.int64), right=nodes["right"].astype(np.int64),
            is_leaf=nodes["is_leaf"] == 1, is_categorical=nodes["is_categorical"] == 1,
            bitset_row=nodes["bitset_idx"].astype(np.int64), left_bitsets=left_bitsets.astype(np.uint32),
            known_bitsets=known_rows.astype(np.uint32), value=nodes["value"].astype(np.float64),
            depth=int(nodes["depth"].max()) + 1, baseline=float(hgb._baseline_prediction.ravel()[0]),
            column_order=np.concatenate([cat_cols, num_cols]).astype(np.int64), category_maps=maps,
            n_categorical=len(cat_cols), tree_columns=tree_columns, left_nav=left_nav, right_nav=right_nav,
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

    def _prepare(self, X: np.ndarray) -> np.ndarray:
        Xp = X[:, self.column_order]
        for k, cats in enumerate(self.category_maps):
            # Category code -> the ordinal scikit-learn's encoder gave it (NaN if unseen), by table look-up.
            finite = cats[~np.isnan(cats)]
            table = np.full(CODE_LIMIT + 1, np.nan)
            whole = finite[(finite >= 0) & (finite < CODE_LIMIT) & (finite == np.floor(finite))]
            table[whole.astype(np.int64)] = np.searchsorted(finite, whole).astype(np.float64)
            col = Xp[:, k]
            odd = np.isnan(col) | (col < 0) | (col >= CODE_LIMIT) | (col != np.floor(col))
            Xp[:, k] = table[np.where(odd, CODE_LIMIT, col).astype(np.int64)]
        return Xp

    def raw(self, X: np.ndarray) -> np.ndarray:
        """Return the summed tree outputs plus baseline (the model's log-odds) for each row.

        All rows walk all trees at once, one level per step: a categorical node looks its decision up in
        `cat_table`, a numeric one compares with its threshold; missing values follow `missing_left`.
        """
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
        self.num_cols, self.wz, self.medians = as_int(num_cols), as_float(wz), basis.medians_[num_cols]
        self.knot_pos, self.knot_val, self.knot_w = as_int(knot_pos), as_float(knot_val), as_float(knot_w)
        self.miss_cols, self.miss_w = as_int(miss_cols), as_float(miss_w)
        self.cat_cols, self.cat_codes, self.cat_w = as_int(cat_cols), as_float(cat_codes), as_float(cat_w)

    def raw(self, X: np.ndarray) -> np.ndarray:
        """Return the logistic model's log-odds for each row."""
        X = np.asarray(X, dtype=np.float64)
        if X.shape[0] > SMALL_BATCH:
            out = np.full(X.shape[0], self.c0)
            for k, sl in enumerate(self.basis.column_slices()):
                out += self.basis.expand_column(k, X[:, k]) @ self.w[sl]
            return out
        Xn = X[:, self.num_cols]
        Z = np.where(np.isnan(Xn), self.medians, np.sign(Xn) * np.log1p(np.abs(Xn)))
        out = self.c0 + Z @ self.wz
        if self.knot_pos.size:
            out += np.maximum(Z[:, self.knot_pos] - self.knot_val, 0.0) @ self.knot_w
        if self.miss_cols.size:
            out += np.isnan(X[:, self.miss_cols]) @ self.miss_w
        if self.cat_cols.size:
            out += (X[:, self.cat_cols] == self.cat_codes) @ self.cat_w
        return np.asarray(out)

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
        """Return probabilities and contributions of a few leads with a single pass through the model."""
        n = len(next(iter(base.values())))
        subs = self._substitutions(base)
        total = n + sum(rows.size for _, rows in subs)
        if total > SMALL_BATCH:
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
        subs: list[tuple[int, np.ndarray]] = []
        for j, name in enumerate(self.fields):
            neutral = self.neutral[name]
            values = base[name]
            differs = ~np.isnan(values) if np.isnan(neutral) else np.isnan(values) | (values != neutral)
            rows = np.flatnonzero(differs)
            if rows.size:
                subs.append((j, rows))
        return subs

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
        if n > REASON_BLOCK:
            for start in range(0, n, REASON_BLOCK):
                block = slice(start, start + REASON_BLOCK)
                out[block] = self.contributions({k: v[block] for k, v in base.items()}, p[block])
            return out
        if sum(rows.size for _, rows in subs) > SMALL_BATCH:
            return self._contributions_by_field(base, p, subs, out)
        all_rows = np.concatenate([rows for _, rows in subs])
        stacked = {name: values[all_rows] for name, values in base.items()}
        start = 0
        for j, rows in subs:
            stacked[self.fields[j]][start:start + rows.size] = self.neutral[self.fields[j]]
            start += rows.size
        p_sub = self.proba(stacked)
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
