"""Train a lead scoring model: check the data, evaluate candidates on held-out leads, select, refit."""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline

from crmdata.errors import LeadcastError
from scoring.artifacts import TrainedModel, hash_ids
from scoring.compiled import CompiledModel
from scoring.evaluation import best_f1_threshold, evaluate, leakage_warnings, single_field_auc
from scoring.features import LeadFeatures, feature_layout
from scoring.model import CANDIDATES, LeadScoringModel
from scoring.monitoring import reference_profile
from scoring.rules import DEFAULT_RULES
from scoring.spec import ModelSpec, Prepared, prepare

MIN_PER_CLASS = 40
HOLDOUT_SHARE = 0.2
CV_FOLDS = 5
Progress = Callable[[str], None]


class NotEnoughOutcomesError(LeadcastError):
    """Raised when the data has too few converted or unconverted leads to train and evaluate a model."""


@dataclass
class TrainingResult:
    """A trained model with its held-out evaluation, ready to be tracked and considered for promotion."""

    trained: TrainedModel
    report: dict[str, Any]
    holdout_raw: pd.DataFrame
    holdout_ids: pd.Series
    holdout_y: np.ndarray
    holdout_p: np.ndarray
    input_example: pd.DataFrame


def build_pipeline(spec: ModelSpec, **params: Any) -> Pipeline:
    """Return the unfitted pipeline for a spec: LeadFeatures then LeadScoringModel."""
    categorical = tuple(i for i, (_, is_cat) in enumerate(feature_layout(spec)) if is_cat)
    return Pipeline([("features", LeadFeatures(spec)),
                     ("model", LeadScoringModel(categorical=categorical, **params))])


def fingerprint_file(path: Path) -> str:
    """Return the SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint_frame(frame: pd.DataFrame) -> str:
    """Return a SHA-256 of a frame's values and column names."""
    digest = hashlib.sha256("|".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame.astype(str), index=False).to_numpy().tobytes())
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Return the versions of the libraries a model depends on."""
    import joblib
    import mlflow
    import sklearn

    return {"python": platform.python_version(), "scikit-learn": sklearn.__version__, "pandas": pd.__version__,
            "numpy": np.__version__, "mlflow": mlflow.__version__, "joblib": joblib.__version__}


def check_outcomes(y: np.ndarray, *, spec: ModelSpec, minimum: int = MIN_PER_CLASS) -> None:
    """Refuse to train when there are fewer than `minimum` converted or unconverted leads."""
    positives, negatives = int(y.sum()), int(len(y) - y.sum())
    if positives >= minimum and negatives >= minimum:
        return
    short = []
    if positives < minimum:
        short.append(f"{minimum - positives} more converted leads (have {positives})")
    if negatives < minimum:
        short.append(f"{minimum - negatives} more unconverted leads (have {negatives})")
    raise NotEnoughOutcomesError(
        f"not enough outcomes to train and evaluate a model on '{spec.target.column}': need at least {minimum} "
        f"converted and {minimum} unconverted leads; missing {' and '.join(short)}. Until then "
        f"`leadcast score` uses the cold-start points model ({DEFAULT_RULES.relative_to(DEFAULT_RULES.parents[2])}"
        f" or your own rules file)."
    )


def _time_split(created: pd.Series | None, y: np.ndarray) -> np.ndarray | None:
    if created is None or created.notna().sum() < 0.5 * len(created):
        return None
    days = created.to_numpy(dtype="datetime64[ns]").astype(np.int64).astype(np.float64)
    days[created.isna().to_numpy(bool)] = -np.inf
    order = np.argsort(days, kind="stable")
    n_hold = int(np.ceil(HOLDOUT_SHARE * len(y)))
    holdout = np.zeros(len(y), dtype=bool)
    holdout[order[-n_hold:]] = True
    if y[holdout].sum() < 10 or (1 - y[holdout]).sum() < 10 or y[~holdout].sum() < 20:
        return None
    return holdout


def field_importance(compiled: CompiledModel, features: pd.DataFrame, y: np.ndarray, *,
                     rng: np.random.Generator, repeats: int = 2) -> dict[str, float]:
    """Return, per input field, the mean drop in ROC AUC when that field is shuffled across leads."""
    base = compiled.features.encode(features)
    reference = float(roc_auc_score(y, compiled.proba(base)))
    out: dict[str, float] = {}
    for f in compiled.features.spec.features:
        drops = []
        for _ in range(repeats):
            shuffled = dict(base)
            shuffled[f.column] = base[f.column][rng.permutation(len(y))]
            drops.append(reference - float(roc_auc_score(y, compiled.proba(shuffled))))
        out[f.label] = float(np.mean(drops))
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _spec_dict(spec: ModelSpec) -> dict[str, Any]:
    return asdict(spec)


def train(
    raw: pd.DataFrame,
    *,
    spec: ModelSpec,
    data_fingerprint: str | None = None,
    params: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    table: str = "training data",
    seed: int = 0,
) -> TrainingResult:
    """Train and evaluate a model on a raw lead table (one row per lead, outcome in the spec's target).

    Evaluation is on leads the model did not see: the newest 20% by creation time when the spec names a
    created-at column present in the data, else 5-fold stratified cross-validation (shuffled, seed 0).
    Candidates (spline-logistic, gradient boosting, blend) are compared by held-out log loss; the best
    is refit on every lead. Model settings come from the spec's `[model]` table, overridden by `params`.
    """
    step = progress or (lambda _msg: None)
    params = {**spec.model, **(params or {})}
    prepared: Prepared = prepare(raw, spec=spec, table=table, with_target=True)
    assert prepared.target is not None
    y = prepared.target
    check_outcomes(y, spec=spec)
    assert prepared.kept is not None
    decided = raw.reset_index(drop=True).iloc[prepared.kept].reset_index(drop=True)
    features = prepared.features
    field_auc = single_field_auc(features, y, seed=seed)
    warnings = leakage_warnings(field_auc, labels={f.column: f.label for f in spec.features})
    rng = np.random.default_rng(seed)
    candidates = tuple(params.pop("candidates", CANDIDATES))
    step("evaluating candidates on held-out leads")
    holdout = _time_split(prepared.created_at, y)
    per_candidate: dict[str, np.ndarray] = {c: np.full(len(y), np.nan) for c in candidates}
    importance_runs: list[dict[str, float]] = []
    if holdout is not None:
        protocol = {"kind": "time split", "holdout_share": HOLDOUT_SHARE,
                    "holdout_from": str(prepared.created_at[holdout].min()) if prepared.created_at is not None
                    else None}
        splits = [(np.flatnonzero(~holdout), np.flatnonzero(holdout))]
    else:
        protocol = {"kind": "stratified cross-validation", "folds": CV_FOLDS, "shuffle": True, "random_state": 0}
        splits = list(StratifiedKFold(CV_FOLDS, shuffle=True, random_state=0).split(features, y))
    for train_idx, test_idx in splits:
        pipe = build_pipeline(spec, candidates=candidates, **params)
        pipe.fit(features.iloc[train_idx], y[train_idx])
        X_test = pipe.named_steps["features"].transform(features.iloc[test_idx])
        for name, p in pipe.named_steps["model"].predict_candidates(X_test).items():
            per_candidate[name][test_idx] = p
        importance_runs.append(field_importance(CompiledModel(pipe), features.iloc[test_idx], y[test_idx],
                                                rng=rng))
    evaluated = np.flatnonzero(~np.isnan(per_candidate[candidates[0]]))
    y_eval = y[evaluated]
    protected = prepared.protected.iloc[evaluated].reset_index(drop=True)
    step("measuring each candidate")
    reports: dict[str, dict[str, Any]] = {}
    for name in candidates:
        reports[name] = evaluate(y_eval, per_candidate[name][evaluated], grades=spec.grades, protected=protected)
    selected = min(candidates, key=lambda c: (reports[c]["log_loss"], CANDIDATES.index(c)))
    p_eval = per_candidate[selected][evaluated]
    threshold = best_f1_threshold(y_eval, p_eval)
    importance = {k: float(np.mean([run[k] for run in importance_runs])) for k in importance_runs[0]}
    reports[selected]["importance"] = dict(sorted(importance.items(), key=lambda kv: -kv[1]))
    step(f"refitting the {selected} model on all {len(y)} leads")
    final = build_pipeline(spec, candidates=(selected,), **params).fit(features, y)
    step("writing the model card")
    eval_ids = prepared.ids.iloc[evaluated].reset_index(drop=True)
    folds = np.zeros(len(y), dtype=np.int64)
    for k, (_, test_idx) in enumerate(splits):
        folds[test_idx] = k
    eval_digest = hashlib.sha256(np.sort(hash_ids(eval_ids)).tobytes())
    eval_digest.update(folds[evaluated].tobytes() if holdout is None else b"time")
    eval_digest.update(y_eval.tobytes())
    model: LeadScoringModel = final.named_steps["model"]
    card: dict[str, Any] = {
        "spec_name": spec.name,
        "spec": _spec_dict(spec),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "data_fingerprint": data_fingerprint or fingerprint_frame(raw),
        "evaluation_fingerprint": eval_digest.hexdigest(),
        "evaluation": protocol,
        "rows": {"total": len(raw), "trained": len(y), "undecided": prepared.rows_undecided,
                 "converted": int(y.sum()), "evaluated": len(evaluated)},
        "selected": selected,
        "blend_weight_linear": float(model.weight_),
        "calibration": model.calibration,
        "threshold": threshold,
        "params": {k: v for k, v in model.get_params().items() if k != "categorical"},
        "metrics": {"selected": _headline(reports[selected]), **{c: _headline(r) for c, r in reports.items()}},
        "libraries": library_versions(),
        "field_auc": field_auc,
        "warnings": warnings,
        "profile": reference_profile(features=features.iloc[evaluated], probability=p_eval, y=y_eval, spec=spec),
    }
    trained = TrainedModel(pipeline=final, spec=spec, card=card, train_ids=np.sort(hash_ids(prepared.ids)))
    return TrainingResult(
        trained=trained,
        report={"selected": selected, "threshold": threshold, "candidates": reports, "evaluation": protocol,
                "warnings": warnings},
        holdout_raw=decided.iloc[evaluated].reset_index(drop=True),
        holdout_ids=eval_ids,
        holdout_y=y_eval,
        holdout_p=p_eval,
        input_example=features.head(5),
    )


def _headline(report: Mapping[str, Any]) -> dict[str, float]:
    keys = ("roc_auc", "pr_auc", "brier", "log_loss", "ece", "base_rate")
    out = {k: float(report[k]) for k in keys}
    out["f1"] = float(report["confusion"]["f1"])
    return out
