"""Reasons' contributions: p(lead) - p(lead with one field at its neutral value), exact and cheap.

The log-odds are additive over the linear model's column terms and over trees, so substituting a field only
recomputes the terms and tree splits that read its columns. A few leads are scored with their substitutions
stacked in one pass; more from leaf codes: a field's neutral value only changes the bits of the splits reading
that field's columns, so only those are recomputed (`_contributions_by_split`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scoring.compiled.linear import SMALL_BATCH, CompiledLinear, LinearTerms
from scoring.compiled.trees import ColumnBins, CompiledTrees, LeafTables, Splits
from scoring.features import Base, LeadFeatures
from scoring.model import Calibrator, LeadScoringModel

REASON_BLOCK = 16_384
SPLIT_BLOCK = 2_048  # leads per pass when computing reasons from leaf codes (keeps temporaries in cache)


@dataclass
class FieldPart:
    """What one field's neutral value can change: its linear terms, the splits that read its columns and,
    per tree of those splits, the mask of the code bits they do not set. A field whose columns depend on
    it alone is `fixed`: its new linear share and split decisions are the same for every lead, so per tree
    a table from a lead's code to its leaf's change (`delta_table`, read at `code + delta_shift`) holds the
    field's whole tree effect. Otherwise only its own columns (`columns`, from the fields in `reads`) are
    derived again per lead, with `local_linear` and `local_bins` reading that small matrix."""

    linear: LinearTerms | None
    splits: Splits | None
    keep: np.ndarray
    fixed: bool = False
    fixed_linear: float = 0.0
    fixed_bits: np.ndarray | None = None
    delta_table: np.ndarray | None = None
    delta_shift: np.ndarray | None = None
    columns: list[int] = field(default_factory=list)
    reads: tuple[str, ...] = ()
    blank: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    local_linear: LinearTerms | None = None
    local_bins: ColumnBins | None = None
    local_cats: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # (row, trees' category column)


class Contributions:
    """The contribution half of `CompiledModel`: what it needs of the model, and the strategies."""

    features: LeadFeatures
    model: LeadScoringModel
    weight: float
    calibrator: Calibrator
    linear: CompiledLinear | None
    trees: CompiledTrees | None
    fields: list[str]
    neutral: dict[str, float]

    def logit(self, X: np.ndarray) -> np.ndarray:
        """Return the blended, uncalibrated log-odds of model-matrix rows."""
        raise NotImplementedError

    def proba(self, base: Base) -> np.ndarray:
        """Return calibrated probabilities of encoded leads."""
        raise NotImplementedError

    def proba_and_contributions(self, base: Base) -> tuple[np.ndarray, np.ndarray]:
        """Return probabilities and contributions: a few leads in a single pass through the model (each
        lead and its substitutions stacked), more from leaf codes (see `_contributions_by_split`)."""
        n = len(next(iter(base.values())))
        if n == 1 and self.fields:
            return self._one_lead(base)
        # Past SMALL_BATCH leads the substitutions are listed block by block, where they are used: listing
        # them for a whole chunk first held (fields, leads) temporaries that were then thrown away.
        subs = self._substitutions(base) if n <= SMALL_BATCH else []
        if n > SMALL_BATCH or n + sum(rows.size for _, rows in subs) > SMALL_BATCH:
            if self._by_split():
                return self._split_blocks(base, None)
            p = self.proba(base)
            return p, self.contributions(base, p)
        p_all = self.proba(self._stack(base, subs, include_base=True))
        p = p_all[:n]
        out = np.zeros((n, len(self.fields)))
        if subs:  # the substituted rows follow the leads, field by field: one scatter for them all
            rows_all, which = _sub_index(subs)
            out[rows_all, which] = p[rows_all] - p_all[n:]
        return p, out

    def _substitutions(self, base: Base) -> list[tuple[int, np.ndarray]]:
        """Return, per field, the leads whose value differs from the field's neutral value (if any)."""
        neutral = self._neutral_values()[0]
        if not self.fields:
            return []
        if len(next(iter(base.values()))) == 1:
            only = np.zeros(1, dtype=np.int64)
            return [(j, only) for j in self._differing(base)]
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

    def _neutral_values(self) -> tuple[np.ndarray, list[float]]:
        """Return each field's neutral value as an array and as Python floats (built at first use)."""
        cached: tuple[np.ndarray, list[float]] | None = getattr(self, "_neutral_cache", None)
        if cached is None:
            vector = np.asarray([self.neutral[name] for name in self.fields], dtype=np.float64)
            cached = self._neutral_cache = (vector, vector.tolist())
        return cached

    def _differing(self, base: Base) -> list[int]:
        """Return the fields of one lead whose value is not the field's neutral value, in field order."""
        # One lead (an API request): comparing 28 Python floats beats stacking them into an array.
        typical_values = self._neutral_values()[1]
        out = []
        for j, name in enumerate(self.fields):
            value, typical = float(base[name][0]), typical_values[j]
            if value != typical and not (value != value and typical != typical):
                out.append(j)
        return out

    def _one_lead(self, base: Base) -> tuple[np.ndarray, np.ndarray]:
        """Return `proba_and_contributions` of one lead: it and its substitutions as rows of one array.

        The same rows as `_stack` lists (the lead, then one per differing field with that field neutral),
        built with one copy and one scatter instead of a gather and a write per field.
        """
        differing = self._differing(base)
        names = list(base)
        where = getattr(self, "_base_columns", None)  # (the base's names, each field's column among them)
        if where is None or where[0] != names:
            where = self._base_columns = (names, np.asarray([names.index(f) for f in self.fields], np.int64))
        rows = np.empty((len(differing) + 1, len(names)), order="F")  # a column per field, each contiguous
        rows[:] = [float(base[name][0]) for name in names]
        which = np.asarray(differing, dtype=np.int64)
        rows[np.arange(1, which.size + 1), where[1][which]] = self._neutral_values()[0][which]
        p_all = self.proba({name: rows[:, c] for c, name in enumerate(names)})
        out = np.zeros((1, len(self.fields)))
        out[0, which] = p_all[0] - p_all[1:]
        return p_all[:1], out

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
        if self._by_split() and n > SPLIT_BLOCK:
            return self._split_blocks(base, p)[1]
        subs = self._substitutions(base)
        if not subs:
            return out
        if self._by_split() and sum(rows.size for _, rows in subs) > SMALL_BATCH:
            return self._split_blocks(base, p)[1]
        if n > REASON_BLOCK:
            for start in range(0, n, REASON_BLOCK):
                block = slice(start, start + REASON_BLOCK)
                out[block] = self.contributions({k: v[block] for k, v in base.items()}, p[block])
            return out
        if sum(rows.size for _, rows in subs) > SMALL_BATCH:
            return self._contributions_by_field(base, p, subs, out)
        rows_all, which = _sub_index(subs)
        out[rows_all, which] = p[rows_all] - self.proba(self._stack(base, subs, include_base=False))
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
                    keep = ~np.add.reduceat(splits.weight, splits.starts).astype(splits.weight.dtype)
            part = FieldPart(linear, splits, keep, columns=cols)
            if all(column_fields[k] == {name} for k in cols):
                # Its columns are computed from this field alone: with the field neutral they are the same
                # for every lead, so their linear terms and split decisions are worked out once, here.
                one = {other: np.full(1, np.nan) for other in self.fields}
                one[name] = np.full(1, self.neutral[name])
                X = self.model._blank(self.features.derive(one))
                part.fixed = True
                part.fixed_linear = float(linear.total(X)[0]) if linear is not None else 0.0
                if splits is not None and trees is not None and tables is not None:
                    part.fixed_bits = splits.codes(trees.prepare_t(X), trees.cat_table)
                    part.delta_table, part.delta_shift = _delta_tables(tables, splits, keep, part.fixed_bits)
            else:
                self._localise(part, column_fields, position)
            parts.append(part)
        self._field_part_cache = parts
        return parts

    def _localise(self, part: FieldPart, column_fields: list[frozenset[str]], position: np.ndarray) -> None:
        """Make `part` read a matrix of its own columns only, its splits as `ColumnBins`."""
        cols = part.columns
        part.reads = tuple(sorted(set().union(*(column_fields[k] for k in cols))))
        empty = set(np.asarray(getattr(self.model, "empty_columns_", ()), dtype=np.int64).tolist())
        part.blank = np.asarray([i for i, k in enumerate(cols) if k in empty], dtype=np.int64)
        if self.linear is not None:
            part.local_linear = self.linear.local_part(cols)
        if part.splits is not None and self.trees is not None:
            # A split's column is a position in the trees' order (categorical columns first); here it is the
            # row of the field's own matrix, whose categorical rows are recoded as the trees read them.
            where = {k: i for i, k in enumerate(cols)}
            model_column = self.trees.column_order[part.splits.column]
            s = part.splits
            local = Splits(np.asarray([where[int(c)] for c in model_column], dtype=np.int64),
                           s.threshold, s.missing_left, s.cat_row, s.weight, s.tree)
            at = position[cols]
            categorical = at < len(self.trees.category_maps)
            part.local_cats = np.column_stack([np.flatnonzero(categorical), at[categorical]]).astype(np.int64)
            part.local_bins = ColumnBins(local, len(cols), categorical, self.trees.cat_table)

    def _groups(self) -> np.ndarray:
        """Return the (model-matrix columns, fields) 0/1 matrix of which field each column reads."""
        cached = getattr(self, "_group_cache", None)
        if cached is None:
            column_fields = self.features.column_fields()
            cached = np.asarray([[name in fields for name in self.fields] for fields in column_fields],
                                dtype=np.float64).reshape(len(column_fields), len(self.fields))
            self._group_cache = cached
        return cached

    def _tree_groups(self, parts: list[FieldPart]) -> np.ndarray:
        """Return the (trees, fields) 0/1 matrix of the trees holding a split that reads each field's columns."""
        cached = getattr(self, "_tree_group_cache", None)
        if cached is None:
            assert self.trees is not None
            cached = np.zeros((len(self.trees.roots), len(self.fields)))
            for j, part in enumerate(parts):
                if part.splits is not None:
                    cached[part.splits.trees, j] = 1.0
            self._tree_group_cache = cached
        return cached

    def _by_split(self) -> bool:
        return self.trees is None or self.trees.leaf_tables() is not None

    def _split_blocks(self, base: Base, p: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Run `_contributions_by_split` on SPLIT_BLOCK leads at a time; return probabilities, contributions."""
        n = len(next(iter(base.values())))
        if n <= SPLIT_BLOCK:
            return self._contributions_by_split(base, p, self._substitutions(base), np.zeros((n, len(self.fields))))
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
        exact. A field read alone costs a table lookup per tree it reaches; another has only its own columns
        derived again for the leads off its neutral value; all are calibrated at once. Without `p`, the
        probabilities are computed here too (from the same leaf codes) and returned with `out`.
        """
        X = self.model._blank(self.features.derive(base))
        logit = np.zeros(X.shape[0])
        if self.linear is not None:
            logit += self.weight * self.linear.raw(X)
        trees = self.trees
        tables = trees.leaf_tables() if trees is not None else None
        coded = np.empty((0, 0), dtype=np.int64)
        leaves = np.empty((0, X.shape[0]))
        if trees is not None and tables is not None:
            # Codes with each tree's table offset added: (trees, n), a code's bits never touch the offset.
            coded = trees.leaf_codes(trees.prepare_t(X)) + tables.offset[:, None]
            leaves = tables.table[coded]
            logit += (1 - self.weight) * (leaves.sum(axis=0) + trees.baseline)
        if p is None:
            p = self.calibrator(logit)
        if not subs:
            return p, out
        parts = self._field_parts()
        ends = np.cumsum([rows.size for _, rows in subs])
        rows_all, which = _sub_index(subs)
        new_logit = logit[rows_all]
        # Every field's linear share of every lead at once (one product per kind of term), for the old side.
        shares = self.linear.group_shares(X, self._groups()) if self.linear is not None else None
        coded_t = np.ascontiguousarray(coded.T)
        # And every field's old leaves: per lead, the summed leaves of the trees each field's splits are in.
        old_leaves = leaves.T @ self._tree_groups(parts) if leaves.size else None
        for k, (j, rows) in enumerate(subs):
            at = slice(ends[k] - rows.size, ends[k])
            if parts[j].fixed:
                new_logit[at] -= self._fixed_delta(parts[j], shares, j, rows, coded)
            else:
                new_logit[at] -= self._local_delta(parts[j], base, shares, old_leaves, j, rows, coded_t)
        out[rows_all, which] = p[rows_all] - self.calibrator(new_logit)
        return p, out

    def _fixed_delta(self, part: FieldPart, shares: np.ndarray | None, j: int, rows: np.ndarray,
                     coded: np.ndarray) -> np.ndarray:
        """Return logit(x) - logit(x with field j neutral) for a `fixed` field: a lookup per tree it reaches."""
        delta = np.zeros(rows.size)
        if part.linear is not None and shares is not None:
            delta += self.weight * (shares[rows, j] - part.fixed_linear)
        if part.delta_table is not None and part.splits is not None and part.delta_shift is not None:
            # Two one-axis takes (rows first only if some lead is at the neutral value): much faster than a
            # broadcast (trees, rows) fancy index.
            picked = coded[part.splits.trees]
            at = (picked if rows.size == picked.shape[1] else picked[:, rows]) + part.delta_shift[:, None]
            delta += (1 - self.weight) * part.delta_table[at].sum(axis=0)
        return delta

    def _local_delta(self, part: FieldPart, base: Base, shares: np.ndarray | None, old_leaves: np.ndarray | None,
                     j: int, rows: np.ndarray, coded_t: np.ndarray) -> np.ndarray:
        """Return logit(x) - logit(x with field j neutral) for a `local` field: only its columns derived again."""
        every = rows.size == len(base[self.fields[j]])
        sub = {name: base[name] if every else base[name][rows] for name in part.reads}
        sub[self.fields[j]] = np.full(rows.size, self.neutral[self.fields[j]])
        XT = self.features.derive_columns(sub, part.columns)
        if part.blank.size:
            XT[part.blank] = 0.0
        delta = np.zeros(rows.size)
        if part.local_linear is not None and shares is not None:
            delta += self.weight * (shares[rows, j] - part.local_linear.total(XT.T))
        bins = part.local_bins
        if bins is not None and part.splits is not None and self.trees is not None and old_leaves is not None:
            tables = self.trees.leaf_tables()
            assert tables is not None
            if part.local_cats.size:
                XT = XT.copy()
                XT[part.local_cats[:, 0]] = self.trees._recode(XT[part.local_cats[:, 0]], part.local_cats[:, 1:])
            old = (coded_t if rows.size == coded_t.shape[0] else coded_t[rows])[:, bins.trees]
            new_codes = (old & part.keep) | bins.bits(XT)
            delta += (1 - self.weight) * (old_leaves[rows, j] - tables.table[new_codes].sum(axis=1))
        return delta


def _sub_index(subs: list[tuple[int, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Return the lead and the field of each substituted row, in the order `_stack` lists them."""
    return (np.concatenate([rows for _, rows in subs]),
            np.repeat([j for j, _ in subs], [rows.size for _, rows in subs]))


def _delta_tables(tables: LeafTables, splits: Splits, keep: np.ndarray, bits: np.ndarray,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per tree of a fixed field's splits, code -> leaf(code) - leaf(code with the field's bits set to `bits`).

    Returns the tables end to end and, per tree, the shift from a lead's offset code (as `coded` holds it)
    to its entry: tree i of the splits reads `table[code - offset[t] + i * stride]`.
    """
    stride = tables.table.size // tables.offset.size
    code = np.arange(stride, dtype=tables.offset.dtype)
    offsets = tables.offset[splits.trees]
    new = (code[None, :] & keep[:, None]) | bits.reshape(-1, 1)
    table = tables.table[offsets[:, None] + code[None, :]] - tables.table[offsets[:, None] + new]
    # In the codes' own type: tree i's entries end before the forest's own table does, so nothing overflows.
    shift = np.arange(splits.trees.size, dtype=offsets.dtype) * stride - offsets
    return table.ravel(), shift
