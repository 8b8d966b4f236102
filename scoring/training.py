"""Train a lead scoring model: check the data, evaluate candidates on held-out leads, select, refit."""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline

from crmdata.errors import LeadcastError
from scoring.artifacts import TrainedModel, hash_ids
from scoring.compiled import CompiledModel
from scoring.evaluation import best_f1_threshold, evaluate, leakage_warnings, single_field_auc
from scoring.features import LeadFeatures, describe_columns, feature_layout
from scoring.memory import release_freed_memory
from scoring.model import CANDIDATES, LeadScoringModel
from scoring.monitoring import reference_profile
from scoring.rules import DEFAULT_RULES
from scoring.scorer import kept_categories
from scoring.spec import ModelSpec, Prepared, prepare, resolve_grades

MIN_PER_CLASS = 40
HOLDOUT_SHARE = 0.2
CV_FOLDS = 5
SHIFT_Z = 3.0  # |z| of the base-rate difference, older vs newest leads, reported as a shift
RECENCY_RATIO = 2.0  # in the final calibration the newest lead weighs this many times the oldest
IMPORTANCE_ROWS = 20_000  # held-out leads the permutation importance is measured on, at most
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


def fingerprint_frame(frame: pd.DataFrame, *, chunk_rows: int = 100_000) -> str:
    """Return a SHA-256 of a frame's values and column names."""
    digest = hashlib.sha256("|".join(map(str, frame.columns)).encode())
    # Row hashes are per row, so chunks give the same digest; the whole table as text was a transient copy
    # several times the table's size.
    for start in range(0, len(frame), chunk_rows):
        chunk = frame.iloc[start:start + chunk_rows].astype(str)
        digest.update(pd.util.hash_pandas_object(chunk, index=False).to_numpy().tobytes())
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


def time_order(prepared: Prepared, spec: ModelSpec) -> tuple[np.ndarray, str] | None:
    """Return each lead's position in time (larger is newer) and what it comes from, when the spec gives one.

    The creation time when the spec names one and at least half the leads have it; else the spec's
    `order_column`; else the row order when the spec says `rows_in_time_order = true`.
    """
    created = prepared.created_at
    if created is not None and created.notna().sum() >= 0.5 * len(created):
        days = created.to_numpy(dtype="datetime64[ns]").astype(np.int64).astype(np.float64)
        days[created.isna().to_numpy(bool)] = -np.inf
        return days, f"creation time ({spec.created_at_column})"
    if prepared.order is not None:
        return np.where(np.isnan(prepared.order), -np.inf, prepared.order), f"order column ({spec.order_column})"
    if spec.rows_in_time_order:
        return np.arange(len(prepared.features), dtype=np.float64), "row order (rows_in_time_order = true)"
    return None


def newest_holdout(order: np.ndarray, y: np.ndarray, *, share: float = HOLDOUT_SHARE) -> np.ndarray | None:
    """Return the mask of the newest `share` of leads, or None when either side has too few outcomes."""
    positions = np.argsort(order, kind="stable")
    n_hold = int(np.ceil(share * len(y)))
    holdout = np.zeros(len(y), dtype=bool)
    holdout[positions[-n_hold:]] = True
    if y[holdout].sum() < 10 or (1 - y[holdout]).sum() < 10 or y[~holdout].sum() < 20:
        return None
    return holdout


def base_rate_shift(y: np.ndarray, holdout: np.ndarray, *, z_limit: float = SHIFT_Z) -> dict[str, Any]:
    """Compare the conversion rate of the older leads with the newest ones (two-proportion z test).

    z = (p_new - p_old) / sqrt(p (1 - p) (1/n_old + 1/n_new)), p the pooled rate; shifted when |z| >= z_limit.
    """
    old, new = y[~holdout], y[holdout]
    p_old, p_new = float(old.mean()), float(new.mean())
    pooled = float(y.mean())
    se = np.sqrt(pooled * (1 - pooled) * (1 / len(old) + 1 / len(new)))
    z = float((p_new - p_old) / se) if se > 0 else 0.0
    return {"older": p_old, "newest": p_new, "z": z, "shifted": bool(abs(z) >= z_limit)}


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

    When the spec orders leads in time (`created_at_column`, `order_column` or `rows_in_time_order`), the
    newest 20% are held out: candidates are fitted on the older leads, compared, blended and calibrated on
    the newest, and a base-rate shift between the two is reported. Otherwise 5-fold stratified out-of-fold
    predictions (shuffled, seed 0) are used. The simplest candidate that is not beaten by more than its
    bootstrap noise is kept and its components refit on every lead: the model is fitted once. Model settings
    come from the spec's `[model]` table, overridden by `params`; `seed` drives the bootstrap and importance.
    """
    step = progress or (lambda _msg: None)
    params = {**spec.model, **(params or {})}
    prepared: Prepared = prepare(raw, spec=spec, table=table, with_target=True)
    assert prepared.target is not None
    y = prepared.target
    check_outcomes(y, spec=spec)
    kept = prepared.kept
    assert kept is not None
    features = prepared.features
    messages = list(prepared.notes)
    for note in messages:
        step(note)
    step("checking each field alone for leaks")
    field_auc = single_field_auc(features, y, seed=seed)
    warnings = leakage_warnings(field_auc, labels={f.column: f.label for f in spec.features})
    rng = np.random.default_rng(seed)
    candidates = tuple(params.pop("candidates", CANDIDATES))
    ordered = time_order(prepared, spec)
    holdout = newest_holdout(ordered[0], y) if ordered is not None else None
    shift: dict[str, Any] | None = None
    if holdout is not None and ordered is not None:
        protocol: dict[str, Any] = {"kind": "time split", "holdout_share": HOLDOUT_SHARE, "order": ordered[1]}
        if prepared.created_at is not None and ordered[1].startswith("creation"):
            protocol["holdout_from"] = str(prepared.created_at[holdout].min())
        shift = base_rate_shift(y, holdout)
        protocol["base_rate_shift"] = shift
        step(f"fitting candidates on the older {int((~holdout).sum()):,} leads, comparing them on the newest "
             f"{int(holdout.sum()):,} ({ordered[1]})")
        if shift["shifted"]:
            warnings.append(
                f"base-rate shift: {shift['older']:.1%} of the older leads converted and {shift['newest']:.1%} of "
                f"the newest (z = {shift['z']:+.1f}); the calibration weighs the newest leads {RECENCY_RATIO:g}x the "
                "oldest, so check how the next leads convert (`leadcast monitor`) and retrain if the shift holds")
    else:
        protocol = {"kind": "stratified cross-validation", "folds": CV_FOLDS, "shuffle": True, "random_state": 0}
        if ordered is not None:
            protocol["note"] = f"too few outcomes among the newest leads for a time split ({ordered[1]})"
        step(f"fitting candidates on {CV_FOLDS} folds of {len(y):,} leads (the spec gives no time order)")
    fit_params = {**params}
    fit_params.setdefault("cv", CV_FOLDS)
    final = build_pipeline(spec, candidates=candidates, **fit_params)
    weight = None
    if holdout is not None and ordered is not None:
        # Recency weights for the calibration: from 1/RECENCY_RATIO for the oldest lead to 1 for the newest.
        rank = np.argsort(np.argsort(ordered[0], kind="stable"), kind="stable") / max(len(y) - 1, 1)
        weight = 1 / RECENCY_RATIO + (1 - 1 / RECENCY_RATIO) * rank
    # The steps of `final.fit`, one at a time, so the typed frame can go before the model is fitted: only the
    # rows evaluated afterwards (the newest leads, or every lead under cross-validation) are kept.
    matrix = final.named_steps["features"].fit_transform(features, y)
    evaluated = np.flatnonzero(holdout) if holdout is not None else np.arange(len(y))
    input_example = features.head(5).copy()  # copies: a slice's columns could be views of the whole frame
    features = features.iloc[evaluated] if holdout is not None else features
    prepared = replace(prepared, features=features.head(0).copy())
    release_freed_memory()  # the typing's and the encoding's temporaries, before the model's matrices
    model: LeadScoringModel = final.named_steps["model"]
    model.fit(matrix, y, holdout=holdout, rng=rng, calibration_weight=weight)
    del matrix
    held = model.pop_held_out()
    assert np.array_equal(held["rows"], evaluated)
    per_candidate: dict[str, np.ndarray] = held["probability"]
    selected = model.kind_
    y_eval = y[evaluated]
    protected = prepared.protected.iloc[evaluated].reset_index(drop=True)
    step(f"selection: {model.selection_['reason']}")
    step(f"refit the {selected} model on all {len(y):,} leads")
    p_eval = per_candidate[selected]
    grades, grade_warnings = resolve_grades(spec.grades, p_eval, base_rate=float(y_eval.mean()))
    warnings += grade_warnings
    spec = replace(spec, grades=grades)
    final.named_steps["features"].spec = spec
    step("measuring each candidate on the held-out leads")
    reports: dict[str, dict[str, Any]] = {}
    for name in candidates:
        reports[name] = evaluate(y_eval, per_candidate[name], grades=spec.grades, protected=protected)
    threshold = best_f1_threshold(y_eval, p_eval)
    step("measuring field importance")
    sample = evaluated if len(evaluated) <= IMPORTANCE_ROWS else np.sort(
        rng.choice(evaluated, size=IMPORTANCE_ROWS, replace=False))
    # `features` holds the evaluated rows only, in order: `sample` (positions among all leads) is found there.
    reports[selected]["importance"] = field_importance(
        CompiledModel(final), features.iloc[np.searchsorted(evaluated, sample)], y[sample], rng=rng)
    step("writing the model card")
    eval_ids = prepared.ids.iloc[evaluated].reset_index(drop=True)
    eval_digest = hashlib.sha256(np.sort(hash_ids(eval_ids)).tobytes())
    eval_digest.update(b"time" if holdout is not None else f"cv{CV_FOLDS}".encode())
    eval_digest.update(y_eval.tobytes())
    selection = {"reason": model.selection_["reason"], "log_loss": model.selection_["log_loss"],
                 "comparisons": model.selection_["comparisons"],
                 "calibrated_on": (f"out-of-fold predictions of every lead, the newest weighing {RECENCY_RATIO:g}x "
                                   "the oldest" if holdout is not None else "out-of-fold predictions")}
    card: dict[str, Any] = {
        "spec_name": spec.name,
        "spec": _spec_dict(spec),
        "columns": describe_columns(spec),  # the model matrix, as the derived-feature declarations build it
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "data_fingerprint": data_fingerprint or fingerprint_frame(raw),
        "evaluation_fingerprint": eval_digest.hexdigest(),
        "evaluation": protocol,
        "rows": {"total": len(raw), "trained": len(y), "undecided": prepared.rows_undecided,
                 "converted": int(y.sum()), "evaluated": len(evaluated)},
        "selected": selected,
        "selection": selection,
        "blend_weight_linear": float(model.weight_),
        "calibration": model.calibration,
        "threshold": threshold,
        "grades": {"method": grades.method, "A": grades.a, "B": grades.b, "C": grades.c},
        "params": {k: v for k, v in model.get_params().items() if k != "categorical"},
        "metrics": {"selected": _headline(reports[selected]), **{c: _headline(r) for c, r in reports.items()}},
        "libraries": library_versions(),
        "field_auc": field_auc,
        "notes": messages,
        "warnings": warnings,
        "profile": reference_profile(features=features, probability=p_eval, y=y_eval, spec=spec,
                                     kept=kept_categories(final.named_steps["features"])),
    }
    trained = TrainedModel(pipeline=final, spec=spec, card=card, train_ids=np.sort(hash_ids(prepared.ids)))
    return TrainingResult(
        trained=trained,
        report={"selected": selected, "threshold": threshold, "candidates": reports, "evaluation": protocol,
                "selection": selection, "warnings": warnings},
        # Only the evaluated rows of the raw table: a copy of every decided row was a second raw table in memory.
        holdout_raw=raw.iloc[kept[evaluated]].reset_index(drop=True),
        holdout_ids=eval_ids,
        holdout_y=y_eval,
        holdout_p=p_eval,
        input_example=input_example,
    )


def _headline(report: Mapping[str, Any]) -> dict[str, float]:
    keys = ("roc_auc", "pr_auc", "brier", "log_loss", "ece", "base_rate")
    out = {k: float(report[k]) for k in keys}
    out["f1"] = float(report["confusion"]["f1"])
    return out
