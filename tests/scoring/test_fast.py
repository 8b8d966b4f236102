from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scoring.fast import SMALL_BATCH, CompiledModel
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
