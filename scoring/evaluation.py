"""Held-out evaluation of scores: discrimination, calibration, lift, thresholds, importance and fairness."""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from scoring.spec import Grades

EPS = 1e-12


def groups(codes: np.ndarray, count: int) -> tuple[np.ndarray, list[slice]]:
    """Return the stable order of `codes` (small integers 0..count-1) and each code's slice of it.

    values[order][slices[k]] holds values[codes == k] in their original order, so a mean over it is the same to
    the bit, for one sort (a radix sort of uint8 codes) where a mask per group read every value again.
    """
    order = np.argsort(codes.astype(np.uint8), kind="stable")
    ends = np.cumsum(np.bincount(codes, minlength=count))
    return order, [slice(int(end - n), int(end)) for end, n in zip(ends, np.diff(ends, prepend=0), strict=True)]


def _bins(y: np.ndarray, p: np.ndarray, bins: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Return (bin, outcomes, probabilities) of each non-empty equal-width probability bin, in bin order."""
    order, slices = groups(np.minimum((p * bins).astype(int), bins - 1), bins)
    ys, ps = y[order], p[order]
    return [(b, ys[part], ps[part]) for b, part in enumerate(slices) if part.stop > part.start]


def expected_calibration_error(y: np.ndarray, p: np.ndarray, *, bins: int = 10) -> float:
    """Return ECE = sum_b (n_b / n) |mean(y_b) - mean(p_b)| over `bins` equal-width probability bins."""
    total = 0.0
    for _, y_b, p_b in _bins(y, p, bins):
        total += len(p_b) / len(p) * abs(float(y_b.mean()) - float(p_b.mean()))
    return total


def calibration_table(y: np.ndarray, p: np.ndarray, *, bins: int = 10) -> list[dict[str, float]]:
    """Return, per equal-width probability bin, the leads, mean predicted and observed conversion rate."""
    return [{"bin_low": b / bins, "bin_high": (b + 1) / bins, "leads": len(p_b), "mean_predicted": float(p_b.mean()),
             "observed_rate": float(y_b.mean())} for b, y_b, p_b in _bins(y, p, bins)]


def lift_table(y: np.ndarray, p: np.ndarray) -> list[dict[str, float]]:
    """Return lift and cumulative gains by score decile (decile 1 = the 10% highest scores).

    lift_d = conversion rate in decile d / overall rate; gains_d = share of all conversions in deciles 1..d.
    """
    order = np.argsort(-p, kind="stable")
    deciles = np.array_split(order, 10)
    base = float(y.mean())
    total = max(float(y.sum()), EPS)
    rows, cum = [], 0.0
    for d, idx in enumerate(deciles, start=1):
        conv = float(y[idx].sum())
        cum += conv
        rate = conv / max(len(idx), 1)
        rows.append({"decile": d, "leads": len(idx), "min_probability": float(p[idx].min()) if len(idx) else 0.0,
                     "conversion_rate": rate, "lift": rate / base if base > 0 else 0.0,
                     "cumulative_gain": cum / total})
    return rows


def best_f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """Return the probability threshold that maximises F1 = 2 TP / (2 TP + FP + FN)."""
    order = np.argsort(-p, kind="stable")
    ys, ps = y[order], p[order]
    tp = np.cumsum(ys)
    fp = np.cumsum(1 - ys)
    fn = ys.sum() - tp
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, EPS)
    # Only cut where the score changes, so ties stay on the same side.
    valid = np.r_[ps[1:] < ps[:-1], True]
    best = int(np.argmax(np.where(valid, f1, -1)))
    return float(ps[best])


def confusion(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """Return the confusion matrix, precision, recall and F1 when p >= threshold predicts conversion."""
    pred = p >= threshold
    tp = int((pred & (y == 1)).sum())
    fp = int((pred & (y == 0)).sum())
    fn = int((~pred & (y == 1)).sum())
    tn = int((~pred & (y == 0)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return {"threshold": threshold, "tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": precision,
            "recall": recall, "f1": f1}


def core_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Return ROC AUC, PR AUC, Brier score, log loss and expected calibration error."""
    pc = np.clip(p, EPS, 1 - EPS)
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, pc, labels=[0, 1])),
        "ece": expected_calibration_error(y, p),
        "base_rate": float(y.mean()),
        "rows": len(y),
    }


FAIRNESS_BANDS = 5  # a numeric protected field with more distinct values than MAX_FAIRNESS_GROUPS is banded
MAX_FAIRNESS_GROUPS = 10


def _fairness_groups(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Return each lead's group label and the labels in display order.

    Text fields are grouped by value. A numeric field (age, say) with more than MAX_FAIRNESS_GROUPS values is
    banded at its quintiles, [lo, hi) with the last band closed, because one group per distinct age gives
    groups of a few leads and a meaningless four-fifths ratio.
    """
    text = values.astype("string")
    numbers = pd.to_numeric(text, errors="coerce")
    given = text.notna().to_numpy(bool)
    finite = numbers.to_numpy(np.float64, na_value=np.nan)[given]
    if not given.any() or np.isnan(finite).any() or len(np.unique(finite)) <= MAX_FAIRNESS_GROUPS:
        labels = text.fillna("(missing)").to_numpy(dtype=object)
        return labels, sorted(set(labels.tolist()))
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, FAIRNESS_BANDS + 1), method="higher"))
    names = [f"[{lo:g}, {hi:g})" for lo, hi in pairwise(edges[:-1])]
    names.append(f"[{edges[-2]:g}, {edges[-1]:g}]")
    band = np.clip(np.searchsorted(edges, finite, side="right") - 1, 0, len(names) - 1)
    labels = np.full(len(text), "(missing)", dtype=object)
    labels[given] = np.asarray(names, dtype=object)[band]
    return labels, [*names, *(["(missing)"] if not given.all() else [])]


def fairness(y: np.ndarray, p: np.ndarray, groups: pd.DataFrame, *, grades: Grades) -> dict[str, Any]:
    """Return per protected column and group: leads, mean score, observed rate, A-grade rate, ECE.

    Numeric columns with many values are grouped in quintile bands. The four-fifths ratio is
    min(A-grade rate) / max(A-grade rate) over groups with at least 20 leads; below 0.8 the column is flagged.
    """
    out: dict[str, Any] = {}
    grade_a = grades.grade(p) == "A"
    for column in groups.columns:
        values, order = _fairness_groups(groups[column])
        rows: list[dict[str, Any]] = []
        for g in order:
            mask = values == g
            rows.append({"group": g, "leads": int(mask.sum()), "mean_probability": float(p[mask].mean()),
                         "observed_rate": float(y[mask].mean()), "a_grade_rate": float(grade_a[mask].mean()),
                         "ece": expected_calibration_error(y[mask], p[mask]),
                         "p10": float(np.quantile(p[mask], 0.1)), "p50": float(np.quantile(p[mask], 0.5)),
                         "p90": float(np.quantile(p[mask], 0.9))})
        rates = [r["a_grade_rate"] for r in rows if r["leads"] >= 20]
        ratio = min(rates) / max(rates) if rates and max(rates) > 0 else 1.0
        out[column] = {"groups": rows, "four_fifths_ratio": ratio, "flagged": ratio < 0.8}
    return out


LEAKAGE_AUC = 0.9


def _field_codes(values: pd.Series, *, bins: int) -> np.ndarray:
    """Return a small integer code per lead: the category, or the quantile bin of a number or time; missing
    values get a code of their own."""
    if pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_datetime64_any_dtype(values.dtype):
        if pd.api.types.is_datetime64_any_dtype(values.dtype):
            numbers = values.to_numpy(dtype="datetime64[ns]").astype(np.int64).astype(np.float64)
            numbers[values.isna().to_numpy(bool)] = np.nan
        else:
            numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
        finite = numbers[~np.isnan(numbers)]
        if finite.size == 0:
            return np.zeros(len(values), dtype=np.int64)
        edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]))
        codes = np.searchsorted(edges, numbers, side="right")
        return np.where(np.isnan(numbers), len(edges) + 1, codes).astype(np.int64)
    codes, _ = pd.factorize(values, use_na_sentinel=True)
    return np.where(codes < 0, codes.max(initial=-1) + 1, codes).astype(np.int64)


def single_field_auc(features: pd.DataFrame, y: np.ndarray, *, folds: int = 5, bins: int = 20,
                     seed: int = 0) -> dict[str, float]:
    """Return, per field, the ROC AUC of that field alone, measured out of fold.

    Each lead is scored by the conversion rate of its category (or quantile bin of its number or time; missing
    is a category) among the other folds' leads, smoothed towards their base rate by one lead:
    (converted + rate) / (leads + 1). Out of fold, an id-like field scores about 0.5, not 1.
    """
    y = np.asarray(y, dtype=np.float64)
    fold = np.random.default_rng(seed).permutation(len(y)) % folds
    out: dict[str, float] = {}
    for column in features.columns:
        codes = _field_codes(features[column], bins=bins)
        size = int(codes.max(initial=0)) + 1
        score = np.empty(len(y))
        for k in range(folds):
            test = fold == k
            prior = float(y[~test].mean())
            converted = np.bincount(codes[~test], weights=y[~test], minlength=size)
            leads = np.bincount(codes[~test], minlength=size)
            score[test] = ((converted + prior) / (leads + 1.0))[codes[test]]
        out[str(column)] = float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else 0.5
    return out


def leakage_warnings(auc: Mapping[str, float], *, labels: Mapping[str, str],
                     threshold: float = LEAKAGE_AUC) -> list[str]:
    """Return a sentence for each field that alone reaches `threshold` AUC: it may leak the outcome."""
    return [f"possible leak: '{labels.get(c, c)}' ({c}) alone ranks converted above unconverted leads with "
            f"AUC {a:.3f} (out of fold); check that it is known before the outcome, and add it to the spec's "
            "`exclude` if it is recorded after contact"
            for c, a in sorted(auc.items(), key=lambda kv: -kv[1]) if a >= threshold]


def evaluate(
    y: np.ndarray,
    p: np.ndarray,
    *,
    grades: Grades,
    threshold: float | None = None,
    protected: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Return the full held-out report of one model's probabilities `p` for outcomes `y` (0/1)."""
    y = np.asarray(y).astype(np.int64)
    p = np.asarray(p, dtype=np.float64)
    chosen = best_f1_threshold(y, p) if threshold is None else threshold
    hist, edges = np.histogram(p, bins=20, range=(0.0, 1.0))
    grade = grades.grade(p)
    report: dict[str, Any] = {
        **core_metrics(y, p),
        "calibration": calibration_table(y, p),
        "lift": lift_table(y, p),
        "confusion": confusion(y, p, chosen),
        "score_histogram": {"edges": edges.tolist(), "converted": np.histogram(p[y == 1], bins=edges)[0].tolist(),
                            "not_converted": np.histogram(p[y == 0], bins=edges)[0].tolist(),
                            "all": hist.tolist()},
        "grades": {g: {"leads": int((grade == g).sum()),
                       "observed_rate": float(y[grade == g].mean()) if (grade == g).any() else 0.0}
                   for g in "ABCD"},
    }
    if protected is not None and len(protected.columns):
        report["fairness"] = fairness(y, p, protected, grades=grades)
    return report


def save_plots(report: dict[str, Any], out_dir: Path, *, title: str) -> list[Path]:
    """Draw calibration, gains, score distribution and importance charts as PNG files; return their paths.

    Figures are built with matplotlib's object API (Figure + its own Agg canvas): pyplot is never imported and
    the caller's backend (a notebook's inline one) is left as it was.
    """
    from matplotlib.figure import Figure

    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []

    def save(fig: Figure, name: str) -> None:
        paths.append(out_dir / name)
        fig.savefig(paths[-1], dpi=80, bbox_inches="tight")

    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    cal = report["calibration"]
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    ax.plot([r["mean_predicted"] for r in cal], [r["observed_rate"] for r in cal], "o-", label="model")
    ax.set(xlabel="predicted probability", ylabel="observed conversion rate",
           title=f"{title}: calibration (ECE {report['ece']:.3f})")
    ax.legend()
    save(fig, "calibration.png")

    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    lift = report["lift"]
    ax.plot([0, *[r["decile"] * 10 for r in lift]], [0, *[r["cumulative_gain"] * 100 for r in lift]], "o-",
            label="model")
    ax.plot([0, 100], [0, 100], "--", color="grey", label="random")
    ax.set(xlabel="% of leads contacted (highest scores first)", ylabel="% of conversions found",
           title=f"{title}: cumulative gains (AUC {report['roc_auc']:.3f})")
    ax.legend()
    save(fig, "gains.png")

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    hist = report["score_histogram"]
    centers = (np.asarray(hist["edges"][:-1]) + np.asarray(hist["edges"][1:])) / 2 * 100
    ax.bar(centers, hist["not_converted"], width=4.5, alpha=0.6, label="not converted")
    ax.bar(centers, hist["converted"], width=4.5, alpha=0.6, label="converted")
    ax.set(xlabel="score (0-100)", ylabel="leads", title=f"{title}: score distribution")
    ax.legend()
    save(fig, "scores.png")

    if report.get("importance"):
        items = sorted(report["importance"].items(), key=lambda kv: kv[1])[-15:]
        fig = Figure(figsize=(6, 0.3 * len(items) + 1))
        ax = fig.subplots()
        ax.barh([k for k, _ in items], [v for _, v in items])
        ax.set(xlabel="drop in ROC AUC when the field is shuffled", title=f"{title}: field importance")
        save(fig, "importance.png")
    return paths
