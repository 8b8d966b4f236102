"""A compiled scorer: the fitted pipeline turned into numpy arrays, for one lead in well under a millisecond.

`CompiledModel(pipeline)` reads the fitted featuriser, the spline-logistic coefficients (`linear`), the gradient
boosting trees (`trees`) and the calibration map; `logit` and `proba` then reproduce `pipeline.predict_proba`
to 1e-9 without scikit-learn's per-call checks. Reasons compare each field with its neutral value
(`contributions`).
"""

from __future__ import annotations

import logging

import numpy as np
import sklearn
from sklearn.pipeline import Pipeline

from scoring.compiled.contributions import REASON_BLOCK, Contributions, _sub_index
from scoring.compiled.kernel import RowKernel, checked_kernel
from scoring.compiled.linear import SMALL_BATCH, CompiledLinear
from scoring.compiled.trees import CompiledTrees
from scoring.features import Base, LeadFeatures
from scoring.model import Calibrator, LeadScoringModel

PROBE_TOLERANCE = 1e-9  # the compiled path reproduces predict_proba to this (tested)
log = logging.getLogger("leadcast.scoring")


class CompiledModel(Contributions):
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
        self.kernel: RowKernel | None = None  # set by compile_pipeline once checked against this numpy path

    def logit(self, X: np.ndarray) -> np.ndarray:
        """Return the blended, uncalibrated log-odds of model-matrix rows."""
        X = self.model._blank(X)
        out = np.zeros(X.shape[0])
        if self.linear is not None:
            out += self.weight * self.linear.raw(X)
        if self.trees is not None:
            # Leaf tables when the trees are small (faster than scikit-learn's predictors at every batch
            # size: 0.30 vs 0.42 s per 100k leads); else large batches go through scikit-learn's compiled
            # per-tree predictors, without its input checks.
            tree = (self.trees.raw(X) if X.shape[0] <= SMALL_BATCH or self.trees.leaf_tables() is not None
                    else self.trees.tree_values(self.trees.prepare(X), self.all_trees) + self.trees.baseline)
            out += (1 - self.weight) * tree
        return out

    def proba_matrix(self, X: np.ndarray) -> np.ndarray:
        """Return calibrated probabilities of model-matrix rows (in one compiled call when numba is there)."""
        if self.kernel is not None:
            return self.kernel.proba(self.model._blank(X))
        return self.calibrator(self.logit(X))

    def proba(self, base: Base) -> np.ndarray:
        """Return calibrated probabilities of encoded leads."""
        return self.proba_matrix(self.features.derive(base))


class PipelineModel(CompiledModel):
    """The fallback when the compiled path cannot be trusted: every log-odds from the pipeline's own model.

    The same interface and the same contributions (by substitution, in blocks), at the pipeline's speed.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.features = pipeline.named_steps["features"]
        self.model = pipeline.named_steps["model"]
        self.weight = float(self.model.weight_)
        self.calibrator = self.model.calibrator_
        self.linear = None
        self.trees = None
        self.all_trees = np.empty(0, np.int64)
        self.fields = [f.column for f in self.features.spec.features]
        self.neutral = dict(self.features.neutral_)
        self.kernel = None

    def logit(self, X: np.ndarray) -> np.ndarray:
        """Return the pipeline model's log-odds of model-matrix rows."""
        return np.asarray(self.model.decision_function(X), dtype=np.float64)

    def proba_and_contributions(self, base: Base) -> tuple[np.ndarray, np.ndarray]:
        """Return probabilities and contributions, each substitution scored by the pipeline model."""
        p = self.proba(base)
        return p, self.contributions(base, p)

    def contributions(self, base: Base, p: np.ndarray | None = None) -> np.ndarray:
        """Return (n, fields) contributions: p(lead) - p(lead with that field at its neutral value)."""
        n = len(next(iter(base.values())))
        if p is None:
            p = self.proba(base)
        out = np.zeros((n, len(self.fields)))
        for start in range(0, n, REASON_BLOCK):
            part = {name: values[start:start + REASON_BLOCK] for name, values in base.items()}
            subs = self._substitutions(part)
            if not subs:
                continue
            rows_all, which = _sub_index(subs)
            out[start + rows_all, which] = p[start + rows_all] - self.proba(self._stack(part, subs, include_base=False))
        return out


def probe_rows(features: LeadFeatures) -> np.ndarray:
    """Return model-matrix rows built from neutral values: one lead of neutral values, then one per field
    with that field missing (a check for a model saved without probe rows)."""
    fields = [f.column for f in features.spec.features]
    base = {name: np.full(len(fields) + 1, features.neutral_[name]) for name in fields}
    for k, name in enumerate(fields, start=1):
        base[name][k] = np.nan
    return features.derive(base)


def compile_pipeline(pipeline: Pipeline) -> CompiledModel:
    """Return the compiled model, checked against `pipeline.predict_proba` on the model's probe rows.

    The probe rows (`LeadScoringModel.probe_X_`, kept at fit; neutral-value rows for an older model) are
    scored both ways; if the compiled path cannot be built or differs by more than PROBE_TOLERANCE on any
    row (a scikit-learn whose private tree state means something else), a warning is logged and the
    pipeline's own model serves instead (`PipelineModel`).
    """
    model: LeadScoringModel = pipeline.named_steps["model"]
    probe = getattr(model, "probe_X_", None)
    stored = getattr(model, "probe_p_", None) if probe is not None else None
    if probe is None:
        probe = probe_rows(pipeline.named_steps["features"])
    try:
        compiled = CompiledModel(pipeline)
        got = compiled.proba_matrix(np.asarray(probe, dtype=np.float64))
    except Exception as exc:  # any failure to compile: do not trust the compiled path
        log.warning("the compiled scorer could not be built (%s: %s); scoring with the scikit-learn pipeline "
                    "instead (slower, same scores)", type(exc).__name__, exc)
        return PipelineModel(pipeline)
    expected = model.predict_proba(probe)[:, 1]
    worst = float(np.max(np.abs(got - expected), initial=0.0))
    if not np.isfinite(worst) or worst > PROBE_TOLERANCE:
        log.warning("the compiled scorer differs from pipeline.predict_proba by up to %.3g on the model's %d "
                    "probe rows (scikit-learn %s); scoring with the scikit-learn pipeline instead (slower, same "
                    "scores)", worst, len(probe), sklearn.__version__)
        return PipelineModel(pipeline)
    if stored is not None and not np.allclose(stored, expected, rtol=0.0, atol=PROBE_TOLERANCE):
        log.warning("pipeline.predict_proba scores the model's probe rows differently than at training (up to "
                    "%.3g, scikit-learn %s now): check the versions the model card lists",
                    float(np.max(np.abs(stored - expected))), sklearn.__version__)
    compiled.kernel = checked_kernel(compiled, np.asarray(probe, dtype=np.float64), got)  # numpy's, from above
    return compiled
