"""The scoring estimator: a logistic model, a gradient-boosted model and their blend, calibrated together."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import scipy.linalg
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted, validate_data

from scoring.features import BasisBlocks, LinearBasis
from scoring.memory import release_freed_memory

CANDIDATES = ("linear", "trees", "blend")
BLEND_WEIGHTS = np.round(np.arange(0.1, 0.95, 0.1), 2)
BOOTSTRAP_RESAMPLES = 200
PROBE_ROWS = 256  # training rows kept with the model to check a compiled scorer against predict_proba at load


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


@contextmanager
def rows_first(X: np.ndarray, rows: np.ndarray) -> Iterator[np.ndarray]:
    """Yield the values of `X[rows]` as a view of X's first rows: reorder X in place, then restore it.

    `rows` must be distinct. A column is moved at a time, so the reordering holds one column's copy, not a
    second matrix; X's other rows follow in their order, and X is put back as it was on leaving.
    """
    rest = np.setdiff1d(np.arange(X.shape[0]), rows, assume_unique=True)
    order = np.concatenate([rows, rest])
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    for j in range(X.shape[1]):
        X[:, j] = X[order, j]
    try:
        yield X[:rows.size]
    finally:
        for j in range(X.shape[1]):
            X[:, j] = X[inverse, j]


class BlockNewtonLogistic(ClassifierMixin, BaseEstimator):
    """L2-penalised logistic regression by Newton's method over row blocks, for a wide float32 basis.

    The objective is scikit-learn's: sum_i log(1 + exp(-s_i f_i)) + ||coef||^2 / (2 C), the intercept not
    penalised. scikit-learn's `newton-cholesky` solver holds a weighted copy of the whole matrix (and `lbfgs`
    a float64 copy of a float32 one); here each pass converts one block of `block_rows` rows to float64, so
    training holds the float32 basis and a few blocks. Stops when the largest gradient entry, per row, is at
    most `tol`, or after `max_iter` steps.
    """

    def __init__(self, C: float = 1.0, tol: float = 1e-8, max_iter: int = 100, block_rows: int = 8_192) -> None:
        self.C = C
        self.tol = tol
        self.max_iter = max_iter
        self.block_rows = block_rows

    def _blocks(self, X: np.ndarray | BasisBlocks) -> Any:
        for start in range(0, X.shape[0], self.block_rows):
            # The same float64 block whether X is the basis or builds it when read (`BasisBlocks`).
            rows = X.block(start, start + self.block_rows) if isinstance(X, BasisBlocks) else \
                X[start:start + self.block_rows]
            yield start, np.asarray(rows, dtype=np.float64)

    def _margins(self, X: np.ndarray | BasisBlocks, w: np.ndarray) -> np.ndarray:
        out = np.empty(X.shape[0])
        for start, block in self._blocks(X):
            out[start:start + block.shape[0]] = block @ w[:-1] + w[-1]
        return out

    def _objective(self, z: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + w[:-1] @ w[:-1] / (2 * self.C))

    def fit(self, X: Any, y: Any) -> BlockNewtonLogistic:
        """Fit coef_ and intercept_ (classes 0 and 1)."""
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32), order="C")
        return self._fit(X, y)

    def fit_blocks(self, X: BasisBlocks, y: Any) -> BlockNewtonLogistic:
        """Fit as `fit` does on a basis read a block at a time: the same passes over the same blocks."""
        y = np.asarray(y)
        if y.shape != (X.shape[0],):
            raise ValueError(f"y has shape {y.shape}, the basis {X.shape[0]} rows")
        self.n_features_in_ = X.shape[1]
        return self._fit(X, y)

    def _fit(self, X: np.ndarray | BasisBlocks, y: np.ndarray) -> BlockNewtonLogistic:
        self.classes_, y = np.unique(y, return_inverse=True)
        if self.classes_.size != 2:
            raise ValueError(f"BlockNewtonLogistic needs two classes, got {self.classes_.size}")
        y = y.astype(np.float64)
        n, d = X.shape
        w = np.zeros(d + 1)  # coefficients, then the intercept
        penalty = np.r_[np.full(d, 1.0 / self.C), 0.0]
        z = self._margins(X, w)
        loss = self._objective(z, y, w)
        self.n_iter_ = np.array([0])
        for step in range(1, self.max_iter + 1):
            p = _sigmoid(z)
            r, h = p - y, p * (1 - p)
            grad = penalty * w
            grad[-1] += r.sum()
            hess = np.zeros((d + 1, d + 1))
            hess[-1, -1] = h.sum()
            for start, block in self._blocks(X):
                hb = h[start:start + block.shape[0]]
                grad[:-1] += block.T @ r[start:start + block.shape[0]]
                hess[:-1, :-1] += block.T @ (block * hb[:, None])
                hess[:-1, -1] += block.T @ hb
            self.n_iter_ = np.array([step - 1])
            if np.max(np.abs(grad)) <= self.tol * n:
                break
            hess[-1, :-1] = hess[:-1, -1]
            hess[np.diag_indices(d + 1)] += penalty + 1e-12
            try:
                direction = scipy.linalg.solve(hess, grad, assume_a="pos")
            except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
                direction = np.linalg.lstsq(hess, grad, rcond=None)[0]
            # Backtracking (Armijo): a full Newton step almost always, halved while the objective does not fall.
            t, slope = 1.0, float(grad @ direction)
            for _ in range(30):
                trial = w - t * direction
                z_trial = self._margins(X, trial)
                loss_trial = self._objective(z_trial, y, trial)
                if loss_trial <= loss - 1e-4 * t * slope:
                    break
                t /= 2
            else:
                break  # no decrease left at float precision: w is the optimum
            w, z, loss = trial, z_trial, loss_trial
            self.n_iter_ = np.array([step])
        self.coef_ = w[None, :-1]
        self.intercept_ = w[-1:].copy()
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """Return the log-odds of the second class."""
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        return np.asarray(np.asarray(X, dtype=np.float64) @ self.coef_[0] + self.intercept_[0])

    def predict_proba(self, X: Any) -> np.ndarray:
        """Return probabilities, columns in `classes_` order."""
        p = _sigmoid(self.decision_function(X))
        return np.column_stack([1 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        """Return the more probable class."""
        return np.asarray(self.classes_[(self.decision_function(X) > 0).astype(np.int64)])


class Calibrator:
    """Map a model's log-odds to a probability that means what it says (Platt sigmoid or isotonic)."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.a = 1.0
        self.b = 0.0
        self.x: np.ndarray = np.empty(0)
        self.y: np.ndarray = np.empty(0)

    def fit(self, logit: np.ndarray, y: np.ndarray, sample_weight: Any = None) -> Calibrator:
        """Fit on out-of-fold log-odds: p = 1 / (1 + exp(-(a * logit + b))), or a monotone step map."""
        if self.method == "isotonic":
            iso = IsotonicRegression(out_of_bounds="clip", y_min=1e-6, y_max=1 - 1e-6).fit(
                logit, y, sample_weight=sample_weight)
            self.x, self.y = np.asarray(iso.X_thresholds_, float), np.asarray(iso.y_thresholds_, float)
        else:
            lr = LogisticRegression(C=1e6, max_iter=1000).fit(logit[:, None], y, sample_weight=sample_weight)
            self.a, self.b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
        return self

    def __call__(self, logit: np.ndarray) -> np.ndarray:
        """Return calibrated probabilities."""
        if self.method == "isotonic":
            return np.asarray(np.interp(logit, self.x, self.y))
        return _sigmoid(self.a * logit + self.b)


class LeadScoringModel(ClassifierMixin, BaseEstimator):
    """Fit a regularised spline-logistic model and a histogram gradient-boosting model, blend, calibrate.

    Held-out log-odds choose the candidate (`linear`, `trees` or their blend logit = w * linear + (1 - w) *
    trees, w on a 0.1 grid fitted on the held-out rows): out-of-fold log-odds from `cv` stratified folds, or,
    given `holdout` (the newest rows, in time order), the log-odds of components fitted on the older rows.
    The simplest candidate (linear, then trees, then blend) is kept unless a more complex one lowers the
    held-out log loss by more than one bootstrap standard deviation of the paired difference. The calibrator
    is fitted on out-of-fold log-odds of every row (recency-weighted with a holdout); the chosen components
    are then refit on all rows.
    """

    def __init__(
        self,
        categorical: tuple[int, ...] = (),
        candidates: tuple[str, ...] = CANDIDATES,
        calibration: str = "sigmoid",
        cv: int = 5,
        C: float = 0.3,
        n_knots: int = 4,
        learning_rate: float = 0.15,
        max_iter: int = 60,
        max_leaf_nodes: int = 10,
        min_samples_leaf: int = 40,
        l2_regularization: float = 1.0,
        random_state: int = 0,
    ) -> None:
        self.categorical = categorical
        self.candidates = candidates
        self.calibration = calibration
        self.cv = cv
        self.C = C
        self.n_knots = n_knots
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.random_state = random_state

    def _linear(self) -> Pipeline:
        return Pipeline([
            # A float32 basis and a block-wise Newton solver: training's widest matrix at 4 bytes a cell and
            # no copy of it (a million leads fit in 2 GB); scoring still expands in float64.
            ("basis", LinearBasis(categorical=tuple(self.categorical), n_knots=self.n_knots, fit_dtype="float32")),
            ("logistic", BlockNewtonLogistic(C=self.C)),
        ])

    def _trees(self, n_features: int) -> HistGradientBoostingClassifier:
        mask = np.zeros(n_features, dtype=bool)
        mask[list(self.categorical)] = True
        return HistGradientBoostingClassifier(
            learning_rate=self.learning_rate, max_iter=self.max_iter, max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf, l2_regularization=self.l2_regularization,
            categorical_features=mask if mask.any() else None, early_stopping=False,
            random_state=self.random_state,
        )

    def _uses(self) -> tuple[bool, bool]:
        cands = set(self.candidates)
        unknown = cands - set(CANDIDATES)
        if unknown or not cands:
            raise ValueError(f"candidates must be among {CANDIDATES}, got {self.candidates}")
        return bool(cands & {"linear", "blend"}), bool(cands & {"trees", "blend"})

    def fit(self, X: Any, y: Any, holdout: Any = None, rng: np.random.Generator | None = None,
            calibration_weight: Any = None) -> LeadScoringModel:
        """Choose the candidate on held-out log loss, calibrate it, refit its components on all rows.

        `holdout`: a boolean mask of the rows to hold out (the newest ones); without it, `cv` folds. With it,
        the final calibration is refitted on every row's out-of-fold log-odds, each row weighted by
        `calibration_weight` (recency). `rng` draws the bootstrap resamples (default: seeded by `random_state`).
        A float64 X is reordered in place while each fold's trees are fitted, and restored before fit returns.
        """
        X = validate_data(self, X, reset=True, ensure_all_finite="allow-nan", dtype=np.float64)
        y = np.asarray(y).astype(np.int64)
        self.classes_ = np.array([0, 1])
        # A column never filled in (an optional field absent from the export) carries no information, and
        # gradient boosting cannot bin it: it is held at 0 in fit and in prediction alike.
        self.empty_columns_ = np.flatnonzero(np.isnan(X).all(axis=0)) if len(X) else np.empty(0, np.int64)
        X = self._blank(X)
        use_linear, use_trees = self._uses()
        lin, tree, rows = self._held_out_logits(X, y, holdout, use_linear, use_trees)
        y_held = y[rows]
        options: dict[str, list[float]] = {"linear": [1.0], "trees": [0.0], "blend": list(BLEND_WEIGHTS)}
        self.oof_log_loss_: dict[str, float] = {}
        self.weights_: dict[str, float] = {}
        self.calibrators_: dict[str, Calibrator] = {}
        held_p: dict[str, np.ndarray] = {}
        for name in self.candidates:
            best: tuple[float, float, Calibrator, np.ndarray] | None = None
            for w in options[name]:
                logit = w * lin + (1 - w) * tree
                cal = Calibrator(self.calibration).fit(logit, y_held)
                p = np.clip(cal(logit), 1e-12, 1 - 1e-12)
                loss = float(log_loss(y_held, p, labels=[0, 1]))
                if best is None or loss < best[0] - 1e-12:
                    best = (loss, w, cal, p)
            assert best is not None
            self.oof_log_loss_[name], self.weights_[name], self.calibrators_[name], held_p[name] = best
        self.selection_ = select_candidate(y_held, held_p, rng=rng if rng is not None else
                                           np.random.default_rng(self.random_state))
        self.kind_ = str(self.selection_["selected"])
        self.weight_ = self.weights_[self.kind_]
        self.calibrator_ = self.calibrators_[self.kind_]
        # The held-out predictions are for the caller's evaluation; `pop_held_out` takes them off the model.
        self.held_out_ = {"rows": rows, "probability": held_p}
        need_linear = self.weight_ > 0
        need_trees = self.weight_ < 1
        if holdout is not None:
            # The newest slice alone is too few leads and too one season to calibrate on (a November holdout
            # makes December look like November): calibrate on every lead's out-of-fold log-odds, weighting
            # recent leads more (`calibration_weight`, e.g. the newest twice the oldest).
            lin_all, tree_all, _ = self._held_out_logits(X, y, None, need_linear, need_trees)
            logit = self.weight_ * lin_all + (1 - self.weight_) * tree_all
            self.calibrator_ = Calibrator(self.calibration).fit(logit, y, sample_weight=calibration_weight)
            self.calibrators_[self.kind_] = self.calibrator_
            del lin_all, tree_all, logit
        release_freed_memory()  # the folds' temporaries, before the widest matrices: the final fits'
        self.linear_ = self._fit_linear_in_blocks(X, y) if need_linear else None
        self.trees_ = self._trees(X.shape[1]).fit(X, y) if need_trees else None
        self._keep_probe(X)
        return self

    def _fit_linear_in_blocks(self, X: np.ndarray, y: np.ndarray) -> Pipeline:
        """Return `self._linear().fit(X, y)`, its basis read a block of rows at a time, never held whole."""
        linear = self._linear()
        basis, logistic = linear.named_steps["basis"], linear.named_steps["logistic"]
        if not isinstance(logistic, BlockNewtonLogistic):
            return linear.fit(X, y)  # another solver (a subclass's) reads a whole matrix
        logistic.fit_blocks(basis.fit_blocks(X), y)
        return linear

    def _held_out_logits(self, X: np.ndarray, y: np.ndarray, holdout: Any, use_linear: bool, use_trees: bool,
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return the linear and tree log-odds of held-out rows, and those rows' positions."""
        if holdout is not None:
            mask = np.asarray(holdout, dtype=bool)
            if mask.shape != y.shape or not mask.any() or mask.all():
                raise ValueError("holdout must be a boolean mask over the rows with some rows on each side")
            train, test = np.flatnonzero(~mask), np.flatnonzero(mask)
            splits = [(train, test)]
            rows = test
        else:
            splits = list(StratifiedKFold(n_splits=self.cv, shuffle=True, random_state=self.random_state)
                          .split(X, y))
            rows = np.arange(len(y))
        lin = np.zeros(len(y))
        tree = np.zeros(len(y))
        for train, test in splits:
            if use_linear:
                # What `clone(self._linear()).fit(X[train], y[train])` fits, without the copy of X[train].
                linear = clone(self._linear())
                basis, logistic = linear.named_steps["basis"], linear.named_steps["logistic"]
                logistic.fit(basis.fit_transform_rows(X, train), y[train])
                lin[test] = logistic.decision_function(basis.transform(X[test]))
            if use_trees:
                # Fitted on a view of the training rows, in their order (the same fit, bit for bit): `X[train]`
                # was a copy of most of X held beside the copies gradient boosting makes of its input.
                with rows_first(X, train) as X_train:
                    trees = self._trees(X.shape[1]).fit(X_train, y[train])
                tree[test] = trees.decision_function(X[test])
        return lin[rows], tree[rows], rows

    def pop_held_out(self) -> dict[str, Any]:
        """Return the held-out rows and each candidate's calibrated probabilities there, and drop them."""
        out: dict[str, Any] = self.__dict__.pop("held_out_")
        return out

    def _keep_probe(self, X: np.ndarray) -> None:
        """Keep a few training rows (and one all-missing row) with their probabilities, for checks at load."""
        rng = np.random.default_rng(self.random_state)
        rows = np.sort(rng.choice(len(X), size=min(PROBE_ROWS, len(X)), replace=False))
        self.probe_X_ = np.vstack([X[rows], np.full((1, X.shape[1]), np.nan)])
        self.probe_p_ = self.predict_proba(self.probe_X_)[:, 1]

    def _blank(self, X: np.ndarray) -> np.ndarray:
        """Return X with the columns that were empty in fit set to 0."""
        if not self.empty_columns_.size:
            return X
        X = np.array(X, dtype=np.float64)
        X[:, self.empty_columns_] = 0.0
        return X

    def component_logits(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Return the linear and tree log-odds (zeros for a component not fitted)."""
        check_is_fitted(self, "kind_")
        X = self._blank(validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=np.float64))
        lin = self.linear_.decision_function(X) if self.linear_ is not None else np.zeros(len(X))
        tree = self.trees_.decision_function(X) if self.trees_ is not None else np.zeros(len(X))
        return np.asarray(lin, dtype=np.float64), np.asarray(tree, dtype=np.float64)

    def decision_function(self, X: Any) -> np.ndarray:
        """Return the chosen candidate's uncalibrated log-odds."""
        lin, tree = self.component_logits(X)
        return np.asarray(self.weight_ * lin + (1 - self.weight_) * tree)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Return calibrated probabilities, columns (not converted, converted)."""
        p = self.calibrator_(self.decision_function(X))
        return np.column_stack([1 - p, p])

    def predict_candidates(self, X: Any) -> dict[str, np.ndarray]:
        """Return the calibrated probability of each candidate whose components were refit (the chosen one's)."""
        lin, tree = self.component_logits(X)
        fitted = {"linear": self.linear_ is not None, "trees": self.trees_ is not None}
        return {name: self.calibrators_[name](self.weights_[name] * lin + (1 - self.weights_[name]) * tree)
                for name in self.candidates
                if (self.weights_[name] == 0 or fitted["linear"]) and (self.weights_[name] == 1 or fitted["trees"])}

    def predict(self, X: Any) -> np.ndarray:
        """Return 1 where the probability of converting is at least 0.5."""
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


def select_candidate(y: np.ndarray, probability: Mapping[str, np.ndarray], *, rng: np.random.Generator,
                     resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, Any]:
    """Keep the simplest candidate unless a more complex one wins by more than its bootstrap noise.

    Candidates are taken in order of complexity (linear, trees, blend); a candidate replaces the one kept
    when its held-out log loss is lower by more than one standard deviation of the paired difference over
    `resamples` bootstrap resamples of the held-out rows. Returns the choice, each loss and the words why.
    """
    names = [c for c in CANDIDATES if c in probability]
    losses = {c: -(y * np.log(probability[c]) + (1 - y) * np.log(1 - probability[c])) for c in names}
    mean = {c: float(losses[c].mean()) for c in names}
    # The same resamples for every comparison, drawn a few at a time (a million leads: 8 MB per resample).
    seeds = rng.integers(0, 2**63 - 1, size=resamples)
    kept = names[0]
    steps: list[dict[str, Any]] = []
    for challenger in names[1:]:
        diff = losses[kept] - losses[challenger]  # > 0: the challenger is better on that lead
        noise = float(np.std([diff[np.random.default_rng(int(seed)).integers(0, len(y), len(y))].mean()
                              for seed in seeds]))
        gain = float(diff.mean())
        won = gain > noise
        steps.append({"kept": kept, "challenger": challenger, "gain": gain, "noise": noise, "won": won})
        if won:
            kept = challenger
    why = "; ".join(
        f"{s['challenger']} {'beats' if s['won'] else 'does not beat'} {s['kept']} by more than its noise "
        f"(log loss {s['gain']:+.4f} better, bootstrap noise {s['noise']:.4f})" for s in steps)
    reason = f"{kept} chosen: " + (why or "the only candidate")
    return {"selected": kept, "log_loss": mean, "comparisons": steps, "reason": reason}
