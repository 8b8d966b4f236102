from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline

from scoring.features import LinearBasis
from scoring.model import BlockNewtonLogistic, Calibrator, LeadScoringModel, rows_first


def data(n: int = 1200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.normal(size=n), rng.integers(0, 4, n).astype(float), rng.normal(size=n)])
    X[rng.random(n) < 0.1, 2] = np.nan
    logit = 1.5 * X[:, 0] - 0.8 * (X[:, 1] == 2) + 0.5 * np.nan_to_num(X[:, 2])
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y


def test_sigmoid_calibrator_recovers_a_known_map() -> None:
    rng = np.random.default_rng(1)
    logit = rng.normal(0, 2, 20_000)
    # true probability is sigmoid(0.5 * logit - 1): the fitted map must find a ~ 0.5 and b ~ -1
    y = (rng.random(logit.size) < 1 / (1 + np.exp(-(0.5 * logit - 1)))).astype(int)
    cal = Calibrator("sigmoid").fit(logit, y)
    assert cal.a == pytest.approx(0.5, abs=0.05) and cal.b == pytest.approx(-1.0, abs=0.06)
    iso = Calibrator("isotonic").fit(logit, y)
    assert np.all(np.diff(iso(np.linspace(-5, 5, 50))) >= 0)


def test_model_selects_by_out_of_fold_log_loss_and_blends() -> None:
    X, y = data()
    model = LeadScoringModel(categorical=(1,), cv=3, max_iter=30).fit(X, y)
    assert model.kind_ == min(model.oof_log_loss_, key=model.oof_log_loss_.__getitem__)
    assert set(model.oof_log_loss_) == {"linear", "trees", "blend"}
    proba = model.predict_proba(X)
    assert proba.shape == (len(y), 2) and np.allclose(proba.sum(axis=1), 1.0)
    candidates = model.predict_candidates(X)
    assert np.allclose(candidates[model.kind_], proba[:, 1])
    # The data is linear in its features, so the linear part carries weight in whatever is chosen.
    assert model.weight_ > 0


def test_single_candidate_fits_only_what_it_needs() -> None:
    X, y = data(400)
    model = LeadScoringModel(categorical=(1,), candidates=("linear",), cv=3).fit(X, y)
    assert model.kind_ == "linear" and model.trees_ is None and model.weight_ == 1.0
    with pytest.raises(ValueError, match="candidates must be among"):
        LeadScoringModel(candidates=("forest",)).fit(X, y)


def test_block_newton_fits_the_intercept_only_model_by_hand() -> None:
    # One all-zero column: its coefficient stays 0 and the intercept is the log-odds of the base rate,
    # 3 of 4 converted -> log(3 / 1) = 1.0986.
    X = np.zeros((4, 1), dtype=np.float32)
    fitted = BlockNewtonLogistic(C=0.3, block_rows=3).fit(X, np.array([1, 1, 1, 0]))
    assert fitted.coef_[0, 0] == 0.0
    assert fitted.intercept_[0] == pytest.approx(np.log(3.0), abs=1e-9)
    assert fitted.predict_proba(X)[0, 1] == pytest.approx(0.75, abs=1e-9)


def test_block_newton_matches_scikit_learns_optimum() -> None:
    # The same objective (sum of log losses + ||coef||^2 / (2 C)), so the same optimum, here on a float32
    # copy read in blocks of 100 rows.
    rng = np.random.default_rng(3)
    X = rng.normal(size=(3000, 6))
    X[:, 4] = (X[:, 4] > 0.5).astype(float)
    y = (rng.random(3000) < 1 / (1 + np.exp(-(X @ np.array([1.0, -0.5, 0.25, 0.0, 0.8, 0.0]) - 0.7)))).astype(int)
    theirs = LogisticRegression(C=0.3, solver="newton-cholesky", tol=1e-10, max_iter=200).fit(X, y)
    mine = BlockNewtonLogistic(C=0.3, block_rows=100).fit(X.astype(np.float32), y)
    assert np.abs(mine.coef_ - theirs.coef_).max() < 1e-5
    assert abs(mine.intercept_[0] - theirs.intercept_[0]) < 1e-5


class _Float64Model(LeadScoringModel):
    """The linear part as it was before the float32 basis: float64 basis, scikit-learn's newton-cholesky."""

    def _linear(self) -> Pipeline:
        return Pipeline([("basis", LinearBasis(categorical=tuple(self.categorical), n_knots=self.n_knots)),
                         ("logistic", LogisticRegression(C=self.C, solver="newton-cholesky", max_iter=200))])


def test_float32_training_keeps_the_held_out_auc() -> None:
    # A fixed synthetic set: the held-out AUC of the float32 / block-Newton fit is within 0.002 of the
    # float64 / scikit-learn fit, and its probabilities within 1e-3.
    X, y = data(6000, seed=5)
    train, test = np.arange(4500), np.arange(4500, 6000)
    now = LeadScoringModel(categorical=(1,), candidates=("linear",), cv=3).fit(X[train], y[train])
    before = _Float64Model(categorical=(1,), candidates=("linear",), cv=3).fit(X[train], y[train])
    p_now, p_before = now.predict_proba(X[test])[:, 1], before.predict_proba(X[test])[:, 1]
    assert abs(roc_auc_score(y[test], p_now) - roc_auc_score(y[test], p_before)) < 0.002
    assert np.abs(p_now - p_before).max() < 1e-3


def test_a_basis_fitted_on_rows_of_a_matrix_is_the_one_fitted_on_their_copy() -> None:
    # The cross-validation folds fit the basis on X's train rows without copying them: same knots, codes,
    # scaling and float32 basis, bit for bit, as fitting on X[rows].
    rng = np.random.default_rng(5)
    X = np.column_stack([rng.integers(0, 4, 400).astype(float), rng.exponential(3.0, 400), rng.normal(size=400)])
    X[rng.random(400) < 0.1, 1] = np.nan
    rows = np.sort(rng.choice(400, size=300, replace=False))
    copied = LinearBasis(categorical=(0,), n_knots=3, fit_dtype="float32")
    expected = copied.fit_transform(X[rows])
    taken = LinearBasis(categorical=(0,), n_knots=3, fit_dtype="float32")
    got = taken.fit_transform_rows(X, rows)
    assert got.dtype == np.float32 and got.tobytes() == expected.tobytes()
    assert taken.n_features_in_ == 3
    assert np.array_equal(taken.mean_, copied.mean_) and np.array_equal(taken.scale_, copied.scale_)
    assert all(np.array_equal(a, b) for a, b in zip(taken.knots_, copied.knots_, strict=True))
    assert np.array_equal(taken.transform(X), copied.transform(X))


def test_rows_first_yields_the_rows_in_order_and_restores_x() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 4))
    before = X.copy()
    rows = np.sort(rng.choice(50, size=31, replace=False))
    with rows_first(X, rows) as view:
        assert np.shares_memory(view, X) and view.tobytes() == before[rows].tobytes()
    assert X.tobytes() == before.tobytes()
    with pytest.raises(RuntimeError), rows_first(X, rows):
        raise RuntimeError("a failed fit")
    assert X.tobytes() == before.tobytes()


def test_tree_fits_see_each_folds_rows_and_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    # Counted by hand, with a holdout and a blend: trees fitted on the older rows (1), on each of `cv` folds
    # of every row for the calibration (3), then on every row (1). Each fit sees exactly X[train], in order.
    X, y = data(600, seed=4)
    before = X.copy()
    holdout = np.zeros(len(y), dtype=bool)
    holdout[-150:] = True
    seen: list[bytes] = []
    fit = HistGradientBoostingClassifier.fit

    def recording_fit(self: HistGradientBoostingClassifier, X: np.ndarray, y: np.ndarray,
                      **kw: object) -> HistGradientBoostingClassifier:
        seen.append(np.asarray(X).tobytes())
        return fit(self, X, y, **kw)

    monkeypatch.setattr(HistGradientBoostingClassifier, "fit", recording_fit)
    model = LeadScoringModel(categorical=(1,), candidates=("trees",), cv=3, max_iter=10)
    model.fit(X, y, holdout=holdout, calibration_weight=np.ones(len(y)))
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=0).split(X, y)
    expected = [before[~holdout], *(before[train] for train, _ in folds), before]
    assert len(seen) == 1 + 3 + 1
    assert seen == [e.tobytes() for e in expected]
    assert X.tobytes() == before.tobytes()


def test_the_final_linear_fit_reads_its_basis_in_blocks_and_fits_the_same_model(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # 20,000 rows: the basis is read in 3 blocks of at most 8,192 rows (8,192 + 8,192 + 3,616), never whole,
    # and the fit is the one of the whole float32 basis bit for bit: scaling, coefficients, log-odds.
    rng = np.random.default_rng(1)
    n = 20_000
    X = np.column_stack([rng.integers(0, 5, n).astype(float), rng.exponential(3.0, n), rng.normal(size=n)])
    X[rng.random(n) < 0.1, 1] = np.nan
    X[rng.random(n) < 0.05, 0] = np.nan
    y = (rng.random(n) < 1 / (1 + np.exp(-(X[:, 2] + np.nan_to_num(X[:, 1]) / 3 - 1)))).astype(np.int64)
    model = LeadScoringModel(categorical=(0,))
    whole = model._linear().fit(X, y)
    widest: list[int] = []
    expand_block = LinearBasis._expand_block

    def recording(self: LinearBasis, X: np.ndarray, start: int, stop: int, dtype: object) -> np.ndarray:
        out = expand_block(self, X, start, stop, dtype)
        widest.append(out.shape[0])
        return out

    monkeypatch.setattr(LinearBasis, "_expand_block", recording)
    monkeypatch.setattr(LinearBasis, "_expand", lambda *a, **k: pytest.fail("the whole basis was expanded"))
    blocked = model._fit_linear_in_blocks(X, y)
    assert max(widest) == 8_192 and sorted(set(widest)) == [3_616, 8_192]
    for name in ("mean_", "scale_"):
        assert getattr(blocked["basis"], name).tobytes() == getattr(whole["basis"], name).tobytes()
    assert blocked["logistic"].coef_.tobytes() == whole["logistic"].coef_.tobytes()
    assert blocked["logistic"].intercept_.tobytes() == whole["logistic"].intercept_.tobytes()
    monkeypatch.undo()
    assert blocked.decision_function(X).tobytes() == whole.decision_function(X).tobytes()
    assert blocked["logistic"].n_features_in_ == whole["logistic"].n_features_in_ == blocked["basis"].slices_[-1].stop
