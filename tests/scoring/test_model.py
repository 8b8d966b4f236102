from __future__ import annotations

import numpy as np
import pytest

from scoring.model import Calibrator, LeadScoringModel


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
