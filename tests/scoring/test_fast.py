from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from scoring.compiled import SMALL_BATCH, CompiledModel, PipelineModel, compile_pipeline
from scoring.compiled.model import probe_rows
from scoring.training import TrainingResult


@pytest.fixture(scope="module")
def compiled(trained: TrainingResult) -> CompiledModel:
    return CompiledModel(trained.trained.pipeline)


def test_compiled_matches_pipeline_on_small_and_large_batches(
    compiled: CompiledModel, trained: TrainingResult, leads: pd.DataFrame
) -> None:
    from scoring.spec import prepare

    features = prepare(leads, spec=trained.trained.spec).features
    features["industry"] = features["industry"].astype(object)  # plain text works as well as a Categorical
    features.loc[:9, "industry"] = "a brand-new industry"
    features.loc[10:19, "web_visits"] = np.nan
    expected = trained.trained.pipeline.predict_proba(features)[:, 1]
    base = compiled.features.encode(features)
    assert np.max(np.abs(compiled.proba(base) - expected)) < 1e-9
    small = compiled.features.encode(features.iloc[:40])
    assert np.max(np.abs(compiled.proba(small) - expected[:40])) < 1e-9
    if compiled.trees is not None:
        X = compiled.features.derive(small)
        assert np.max(np.abs(compiled.trees.raw(X) - compiled.model.trees_.decision_function(X))) < 1e-9


def test_contributions_are_honest_on_many_leads(compiled: CompiledModel, trained: TrainingResult,
                                                leads: pd.DataFrame) -> None:
    from scoring.spec import prepare

    features = prepare(leads, spec=trained.trained.spec).features
    base = compiled.features.encode(features)
    p = compiled.proba(base)
    contrib = compiled.contributions(base, p)
    checked = 0
    for j, name in enumerate(compiled.fields):
        rows = np.flatnonzero(np.rint(contrib[:, j] * 100) >= 1)  # listed as a positive reason (>= +1 point)
        if not rows.size:
            continue
        neutral = {k: v[rows].copy() for k, v in base.items()}
        neutral[name][:] = compiled.neutral[name]
        # A field listed as positive: moving it to its neutral value lowers the probability, by that much.
        p_neutral = compiled.proba(neutral)
        assert np.all(p_neutral < p[rows])
        assert np.allclose(p[rows] - p_neutral, contrib[rows, j], atol=1e-9)
        checked += rows.size
    assert checked > 500


def test_batched_and_one_at_a_time_contributions_agree(compiled: CompiledModel, trained: TrainingResult,
                                                       leads: pd.DataFrame) -> None:
    from scoring.spec import prepare

    features = prepare(leads, spec=trained.trained.spec).features.iloc[:300]
    base = compiled.features.encode(features)
    together = compiled.contributions(base)
    assert sum((together[:, j] != 0).sum() for j in range(together.shape[1])) > SMALL_BATCH
    for i in (0, 7, 299):
        one = compiled.contributions({k: v[i:i + 1] for k, v in base.items()})
        assert np.allclose(one[0], together[i], atol=1e-12)


def test_one_pass_probability_and_contributions(compiled: CompiledModel, trained: TrainingResult,
                                                leads: pd.DataFrame) -> None:
    from scoring.spec import prepare

    base = compiled.features.encode(prepare(leads.head(3), spec=trained.trained.spec).features)
    p, contrib = compiled.proba_and_contributions(base)
    assert np.allclose(p, compiled.proba(base), atol=1e-12)
    assert np.allclose(contrib, compiled.contributions(base, p), atol=1e-12)
    if compiled.linear is not None:
        X = compiled.features.derive(base)
        lin = compiled.model.linear_.decision_function(X)
        assert np.max(np.abs(compiled.linear.raw(X) - lin)) < 1e-9


def test_a_loaded_model_is_checked_on_its_probe_rows(trained: TrainingResult, caplog: pytest.LogCaptureFixture
                                                     ) -> None:
    model = trained.trained.pipeline.named_steps["model"]
    # 256 training rows (the fixture has 3000 leads) and one all-missing row, scored at fit.
    assert model.probe_X_.shape == (257, len(trained.trained.pipeline.named_steps["features"].layout_))
    assert np.isnan(model.probe_X_[-1]).all()
    assert np.allclose(model.probe_p_, model.predict_proba(model.probe_X_)[:, 1], rtol=0, atol=1e-15)
    with caplog.at_level("WARNING", logger="leadcast.scoring"):
        checked = compile_pipeline(trained.trained.pipeline)
    assert type(checked) is CompiledModel
    assert not caplog.records


def test_a_corrupt_compiled_table_falls_back_to_the_pipeline(trained: TrainingResult, leads: pd.DataFrame,
                                                             caplog: pytest.LogCaptureFixture,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from scoring.compiled.trees import CompiledTrees, LeafTables
    from scoring.spec import prepare

    pipeline = trained.trained.pipeline
    if pipeline.named_steps["model"].trees_ is None:
        pytest.skip("the chosen model has no trees")
    build = CompiledTrees._build_leaf_tables

    def corrupt(self: CompiledTrees) -> LeafTables | None:
        tables = build(self)
        assert tables is not None
        table = tables.table.copy()
        table[tables.offset[0]:tables.offset[0] + 2] += 0.5  # the first tree's first two leaf codes are wrong
        return LeafTables(tables.splits, table, tables.offset)

    monkeypatch.setattr(CompiledTrees, "_build_leaf_tables", corrupt)
    with caplog.at_level("WARNING", logger="leadcast.scoring"):
        checked = compile_pipeline(pipeline)
    assert isinstance(checked, PipelineModel)
    assert "differs from pipeline.predict_proba" in caplog.text
    # The fallback scores exactly as the pipeline does, and gives the same (honest) reasons.
    features = prepare(leads.head(200), spec=trained.trained.spec).features
    base = checked.features.encode(features)
    p, contrib = checked.proba_and_contributions(base)
    assert np.max(np.abs(p - pipeline.predict_proba(features)[:, 1])) < 1e-12
    monkeypatch.setattr(CompiledTrees, "_build_leaf_tables", build)
    reference = CompiledModel(pipeline).proba_and_contributions(base)[1]
    assert np.max(np.abs(contrib - reference)) < 1e-9


def test_a_compiler_that_cannot_read_the_trees_falls_back(trained: TrainingResult, caplog: pytest.LogCaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from scoring.compiled.trees import CompiledTrees

    if trained.trained.pipeline.named_steps["model"].trees_ is None:
        pytest.skip("the chosen model has no trees")

    def renamed(hgb: object) -> CompiledTrees:
        raise AttributeError("'HistGradientBoostingClassifier' object has no attribute '_predictors'")

    monkeypatch.setattr(CompiledTrees, "from_estimator", staticmethod(renamed))
    with caplog.at_level("WARNING", logger="leadcast.scoring"):
        checked = compile_pipeline(trained.trained.pipeline)
    assert isinstance(checked, PipelineModel)
    assert "could not be built (AttributeError" in caplog.text


def test_a_probe_scored_differently_than_at_training_is_reported(trained: TrainingResult,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    pipeline = copy.deepcopy(trained.trained.pipeline)
    model = pipeline.named_steps["model"]
    model.probe_p_ = model.probe_p_.copy()
    model.probe_p_[3] += 1e-6  # as if another scikit-learn had scored it at training
    with caplog.at_level("WARNING", logger="leadcast.scoring"):
        checked = compile_pipeline(pipeline)
    # The compiled path still agrees with today's pipeline, so it serves; the drift is reported.
    assert type(checked) is CompiledModel
    assert "differently than at training (up to 1e-06" in caplog.text


def test_a_model_saved_without_probe_rows_is_checked_on_neutral_rows(trained: TrainingResult) -> None:
    pipeline = copy.deepcopy(trained.trained.pipeline)
    del pipeline.named_steps["model"].probe_X_
    rows = probe_rows(pipeline.named_steps["features"])
    assert rows.shape[0] == len(pipeline.named_steps["features"].spec.features) + 1
    assert type(compile_pipeline(pipeline)) is CompiledModel
