"""The compiled scorer's faster paths (leaf tables, reasons from split codes) against the plain ones."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pandas as pd
import pytest

import scoring.compiled.contributions as contributions
import scoring.compiled.trees as trees
from scoring.compiled import SMALL_BATCH, CompiledModel
from scoring.features import Base
from scoring.training import TrainingResult


@pytest.fixture(scope="module")
def compiled(trained: TrainingResult) -> CompiledModel:
    model = CompiledModel(trained.trained.pipeline)
    if model.trees is not None:
        model.trees.leaf_tables()  # built now, before any test changes the limits
    return model


@pytest.fixture(scope="module")
def base(trained: TrainingResult, leads: pd.DataFrame) -> Base:
    from scoring.spec import prepare

    features = prepare(leads, spec=trained.trained.spec).features.iloc[:700].copy()
    features["industry"] = features["industry"].astype(object)
    features.loc[:9, "industry"] = "a brand-new industry"
    features.loc[10:19, "web_visits"] = np.nan
    features.loc[20:29, "last_activity_at"] = pd.NaT
    return CompiledModel(trained.trained.pipeline).features.encode(features)


def rows(base: Base, selection: slice | np.ndarray) -> Base:
    return {name: values[selection] for name, values in base.items()}


def variant(trained: TrainingResult, *, weight: float | None = None) -> CompiledModel:
    """A compiled copy of the pipeline, with the blend weight set (0: trees only, 1: linear only)."""
    pipeline = copy.deepcopy(trained.trained.pipeline)
    if weight is not None:
        pipeline.named_steps["model"].weight_ = weight
    return CompiledModel(pipeline)


def test_leaf_tables_give_the_trees_own_outputs(compiled: CompiledModel, base: Base) -> None:
    if compiled.trees is None:
        pytest.skip("the chosen model has no trees")
    assert compiled.trees.leaf_tables() is not None  # the default trees are small enough
    assert compiled.model.trees_ is not None
    X = compiled.features.derive(base)
    expected = compiled.model.trees_.decision_function(X)
    assert np.max(np.abs(compiled.trees.raw(X) - expected)) < 1e-12
    assert np.max(np.abs(compiled.trees.raw(X[:1]) - expected[:1])) < 1e-12


def test_without_leaf_tables_the_walk_and_per_field_paths_give_the_same(
        trained: TrainingResult, compiled: CompiledModel, base: Base, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trees, "LUT_BITS", 0)  # no tree is small enough: the pre-table code paths
    plain = variant(trained)
    if plain.trees is None:
        pytest.skip("the chosen model has no trees")
    assert plain.trees.leaf_tables() is None
    X = plain.features.derive(base)
    assert np.max(np.abs(plain.trees.raw(X[:50]) - compiled.trees.raw(X[:50]))) < 1e-12  # type: ignore[union-attr]
    p = compiled.proba(base)
    assert np.max(np.abs(plain.contributions(base, p) - compiled.contributions(base, p))) < 1e-12
    p_plain, c_plain = plain.proba_and_contributions(base)
    p_fast, c_fast = compiled.proba_and_contributions(base)
    assert np.max(np.abs(p_plain - p_fast)) < 1e-12
    assert np.max(np.abs(c_plain - c_fast)) < 1e-12


def test_one_pass_matches_separate_probabilities_and_contributions(compiled: CompiledModel, base: Base) -> None:
    p, contrib = compiled.proba_and_contributions(base)
    assert sum(int((contrib[:, j] != 0).sum()) for j in range(contrib.shape[1])) > SMALL_BATCH
    assert np.max(np.abs(p - compiled.proba(base))) < 1e-12
    assert np.max(np.abs(contrib - compiled.contributions(base, p))) < 1e-12
    for i in (0, 15, 25, 699):  # one at a time takes the stacked single pass
        p_one, c_one = compiled.proba_and_contributions(rows(base, slice(i, i + 1)))
        assert abs(p_one[0] - p[i]) < 1e-12
        assert np.max(np.abs(c_one[0] - contrib[i])) < 1e-12


def test_blocks_do_not_change_reasons(compiled: CompiledModel, base: Base, monkeypatch: pytest.MonkeyPatch) -> None:
    p, contrib = compiled.proba_and_contributions(base)
    monkeypatch.setattr(contributions, "SPLIT_BLOCK", 64)
    monkeypatch.setattr(trees, "BIN_BLOCK", 7)  # leaf codes from column bins, 7 rows at a time
    p_small, contrib_small = compiled.proba_and_contributions(base)
    assert np.max(np.abs(p_small - p)) < 1e-12
    assert np.max(np.abs(contrib_small - contrib)) < 1e-12
    assert np.max(np.abs(compiled.contributions(base, p) - contrib)) < 1e-12
    monkeypatch.setattr(trees, "BIN_ROWS", 10**9)  # every leaf code split by split
    p_split, contrib_split = compiled.proba_and_contributions(base)
    assert np.max(np.abs(p_split - p)) < 1e-12
    assert np.max(np.abs(contrib_split - contrib)) < 1e-12


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_trees_only_and_linear_only_models_give_honest_reasons(trained: TrainingResult, base: Base,
                                                               weight: float) -> None:
    model = variant(trained, weight=weight)
    X = model.features.derive(base)
    assert np.max(np.abs(model.proba(base) - model.pipeline.named_steps["model"].predict_proba(X)[:, 1])) < 1e-9
    p, contrib = model.proba_and_contributions(base)
    for j, name in enumerate(model.fields):
        changed = np.flatnonzero(contrib[:, j] != 0)
        if not changed.size:
            continue
        neutral = rows(base, changed)
        neutral[name] = np.full(changed.size, model.neutral[name])
        assert np.allclose(p[changed] - model.proba(neutral), contrib[changed, j], atol=1e-12)


def test_fields_read_alone_are_worked_out_once(compiled: CompiledModel) -> None:
    parts = dict(zip(compiled.fields, compiled._field_parts(), strict=True))
    assert parts["industry"].fixed and parts["age"].fixed  # one column each, from the field alone
    assert not parts["web_visits"].fixed  # also in the behavioural index and a ratio, with other fields
    assert not parts["last_activity_at"].fixed


def test_substitutions_list_the_leads_off_their_neutral_value(trained: TrainingResult, base: Base) -> None:
    model = variant(trained)
    model.neutral["age"] = float("nan")  # a field empty in fit: every known value differs from it
    expected = []
    for j, name in enumerate(model.fields):
        neutral, values = model.neutral[name], base[name]
        differs = ~np.isnan(values) if np.isnan(neutral) else np.isnan(values) | (values != neutral)
        if differs.any():
            expected.append((j, np.flatnonzero(differs)))
    got = model._substitutions(base)
    assert [j for j, _ in got] == [j for j, _ in expected]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, expected, strict=True))


def test_compiled_trees_from_an_older_pickle_rebuild_their_tables(compiled: CompiledModel, base: Base) -> None:
    if compiled.trees is None:
        pytest.skip("the chosen model has no trees")
    X = compiled.features.derive(base)
    expected = compiled.trees.raw(X)
    old = copy.copy(compiled.trees)
    for cached in ("_leaf_table_cache", "_category_table_cache"):
        old.__dict__.pop(cached, None)  # as saved before these caches existed
    restored = pickle.loads(pickle.dumps(old))
    assert "_leaf_table_cache" not in restored.__dict__
    assert np.array_equal(restored.raw(X), expected)
    assert np.array_equal(restored.prepare(X), compiled.trees.prepare(X), equal_nan=True)
    assert np.array_equal(restored.prepare_t(X), compiled.trees.prepare(X).T, equal_nan=True)


def test_one_lead_lists_the_same_substitutions_as_a_batch(trained: TrainingResult, base: Base) -> None:
    model = variant(trained)
    model.neutral["age"] = float("nan")  # NaN neutral: a known age differs, a missing one does not
    batch = model._substitutions(base)
    for i in (0, 12, 25, 699):  # a new industry, missing web_visits, a missing last activity, a plain lead
        expected = [j for j, rows in batch if i in rows]
        got = model._substitutions(rows(base, slice(i, i + 1)))
        assert [j for j, _ in got] == expected
        assert all(r.tolist() == [0] for _, r in got)


@pytest.mark.parametrize("with_kernel", [False, True], ids=["numpy", "kernel"])
def test_one_lead_scores_as_the_stacked_pass_does_bit_for_bit(trained: TrainingResult, base: Base,
                                                            with_kernel: bool) -> None:
    from scoring.compiled.kernel import RowKernel

    model = variant(trained)
    if with_kernel:
        if not RowKernel.available():
            pytest.skip("numba is not installed")
        model.kernel = RowKernel.of(model)
    for i in (0, 12, 25, 699, *range(100, 140)):  # a new industry, missing web_visits, no last activity, plain
        lead = rows(base, slice(i, i + 1))
        p, contrib = model.proba_and_contributions(lead)  # one lead: `_one_lead`
        subs = model._substitutions(lead)
        p_all = model.proba(model._stack(lead, subs, include_base=True))
        expected = np.zeros((1, len(model.fields)))
        for k, (j, _) in enumerate(subs):
            expected[0, j] = p_all[0] - p_all[1 + k]
        assert np.array_equal(p, p_all[:1])
        assert np.array_equal(contrib, expected)
        assert np.count_nonzero(contrib) <= len(subs)
