"""The compiled row kernel against the numpy path it replaces, and the fallback when it cannot serve."""

from __future__ import annotations

import copy
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

import scoring.compiled.kernel as kernel_module
from scoring.compiled import CompiledModel
from scoring.compiled.kernel import KERNEL_TOLERANCE, RowKernel, checked_kernel
from scoring.compiled.model import compile_pipeline
from scoring.scorer import ModelScorer
from scoring.spec import prepare
from scoring.training import TrainingResult

pytestmark = pytest.mark.skipif(not RowKernel.available(), reason="numba is not installed")


def odd_matrix(model: CompiledModel, leads: pd.DataFrame) -> np.ndarray:
    """Model-matrix rows of real leads, then rows with the values each branch of the kernel must handle."""
    features = prepare(leads.head(300), spec=model.features.spec).features
    X = model.features.derive(model.features.encode(features))
    layout = model.features.layout_
    cat = next(k for k, (_, categorical) in enumerate(layout) if categorical)
    num = next(k for k, (_, categorical) in enumerate(layout) if not categorical)
    odd = np.repeat(X[:1], 12, axis=0)
    odd[0, cat] = 2.5  # a fractional category code: read as unknown
    odd[1, cat] = -1.0
    odd[2, cat] = 300.0  # beyond any code
    odd[3, cat] = np.nan
    odd[4, num] = -3.0
    odd[5, num] = 1e308
    odd[6, num] = -0.0
    # No infinity: every way in refuses one and a ratio's overflow is kept at the largest float (with an inf,
    # numpy's own matrix products answer NaN or inf depending on the batch size).
    odd[7, num] = np.finfo(np.float64).max
    odd[8, num] = -np.finfo(np.float64).max
    odd[9, :] = np.nan  # nothing known
    odd[10, :] = 0.0
    odd[11, :] = 1e-300
    return np.vstack([X, odd])


def same(got: np.ndarray, expected: np.ndarray) -> float:
    """Return the largest difference, after checking both are NaN at the same rows."""
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    finite = ~np.isnan(expected)
    return float(np.max(np.abs(got[finite] - expected[finite]), initial=0.0))


@pytest.mark.parametrize("weight", [None, 0.0, 1.0, 0.25], ids=["as fitted", "trees only", "linear only", "0.25"])
def test_the_kernel_gives_the_numpy_probabilities(trained: TrainingResult, leads: pd.DataFrame,
                                                  weight: float | None) -> None:
    pipeline = copy.deepcopy(trained.trained.pipeline)
    model_step = pipeline.named_steps["model"]
    if weight is not None:
        if (weight < 1 and model_step.trees_ is None) or (weight > 0 and model_step.linear_ is None):
            pytest.skip("the chosen model lacks that component")
        model_step.weight_ = weight
    model = CompiledModel(pipeline)
    X = model.model._blank(odd_matrix(model, leads))
    with np.errstate(over="ignore"):  # the largest floats push a linear-only log-odds past exp's range
        expected = model.calibrator(model.logit(X))
    kernel = RowKernel.of(model)
    assert same(kernel.proba(X), expected) <= KERNEL_TOLERANCE
    for n in (1, 24):  # the request path's sizes: one lead, one lead and its substitutions
        assert same(kernel.proba(X[:n]), expected[:n]) <= KERNEL_TOLERANCE
    assert kernel.proba(X[:0]).shape == (0,)


def test_the_kernel_calibrates_with_an_isotonic_map(trained: TrainingResult, leads: pd.DataFrame) -> None:
    pipeline = copy.deepcopy(trained.trained.pipeline)
    calibrator = pipeline.named_steps["model"].calibrator_
    calibrator.method = "isotonic"
    calibrator.x, calibrator.y = np.array([-2.0, 0.0, 1.5]), np.array([0.05, 0.4, 0.9])
    model = CompiledModel(pipeline)
    X = model.model._blank(odd_matrix(model, leads))
    got = RowKernel.of(model).proba(X)
    logit = model.logit(X)
    assert same(got, model.calibrator(logit)) <= KERNEL_TOLERANCE
    # By hand, the map through (-2, 0.05), (0, 0.4), (1.5, 0.9): 0.05 + 0.175 (L + 2) on [-2, 0], 0.4 + L / 3
    # on [0, 1.5] (a rise of 0.5 over 1.5), and the end values beyond.
    hand = np.where(logit < -2, 0.05, np.where(logit <= 0, 0.05 + 0.175 * (logit + 2),
                                               np.where(logit <= 1.5, 0.4 + logit / 3, 0.9)))
    assert same(got, hand) <= 1e-12


def test_a_loaded_model_scores_with_the_kernel_as_numpy_does(trained: TrainingResult, leads: pd.DataFrame) -> None:
    scorer = ModelScorer(trained.trained)
    assert scorer.compiled.kernel is not None
    records = leads.head(3).astype(object).where(leads.head(3).notna(), None).to_dict("records")
    with_kernel = [scorer.score_records([r]) for r in records]
    scorer.compiled.kernel = None
    plain = [scorer.score_records([r]) for r in records]
    for (a,), (b,) in zip(with_kernel, plain, strict=True):
        assert abs(a.probability - b.probability) <= KERNEL_TOLERANCE
        assert [(r.feature, r.contribution) for r in a.reasons or ()] == [
            (r.feature, r.contribution) for r in b.reasons or ()]


def test_without_numba_the_numpy_path_serves(trained: TrainingResult, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    kernel_module._compiled.cache_clear()
    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` now raises ImportError
    try:
        with caplog.at_level("INFO", logger="leadcast.scoring"):
            model = compile_pipeline(trained.trained.pipeline)
        assert type(model) is CompiledModel
        assert model.kernel is None
        assert "numba is not installed" in caplog.text
    finally:
        monkeypatch.undo()
        kernel_module._compiled.cache_clear()
    assert RowKernel.available()


def test_a_kernel_that_disagrees_with_numpy_is_not_used(trained: TrainingResult, monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    model = CompiledModel(trained.trained.pipeline)
    if model.linear is None:
        pytest.skip("the chosen model has no linear part")
    of = RowKernel.of

    def shifted(cls: type[RowKernel], compiled: CompiledModel) -> RowKernel:
        good = of(compiled)
        return RowKernel(replace(good.arrays, c0=good.arrays.c0 + 1e-6))  # a log-odds 1e-6 too high

    monkeypatch.setattr(RowKernel, "of", classmethod(shifted))
    probe = trained.trained.pipeline.named_steps["model"].probe_X_
    with caplog.at_level("WARNING", logger="leadcast.scoring"):
        assert checked_kernel(model, probe, model.proba_matrix(probe)) is None  # numpy's: no kernel set yet
    assert "row kernel differs from numpy" in caplog.text
