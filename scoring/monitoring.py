"""Model health: a reference profile saved with every model, and how the leads scored since compare with it.

Drift is measured with the population stability index over the reference's bins (quantile bins of a number,
the shares of the commonest categories of a text field, deciles of the held-out scores):
PSI = sum_b (live_b - ref_b) * ln(live_b / ref_b), shares floored at 1e-4; from 0.1 a warning, from 0.25 an
alert. Calibration on matured outcomes is the expected calibration error (10 equal-width bins).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from scoring.evaluation import calibration_table, expected_calibration_error, groups
from scoring.scorer import unseen_mask
from scoring.spec import Grades, ModelSpec

PSI_WARNING = 0.1
PSI_ALERT = 0.25
ECE_ALERT = 0.05
MISSING_SHIFT = 0.1  # a change in a field's missing rate worth a warning, in share of leads
UNSEEN_WARNING = 0.05  # share of leads with an unseen category (scorer.kept_categories): a warning from here
UNSEEN_ALERT = 0.20  # and an alert from here: one lead in five scored on a value the model has no weight for
BINS = 10
TOP_CATEGORIES = 50
KNOWN_CATEGORIES = 1_000  # a profile without the model's kept categories (before 0.x) lists at most this many
SHARE_FLOOR = 1e-4
BOOTSTRAP_ROWS = 10_000
BASE_RATE_SHIFT = 1.5  # realised conversion this many times the training rate (or 1/x of it) is worth a warning
OTHER = "(other)"


def _numbers(values: pd.Series) -> np.ndarray:
    return np.asarray(pd.to_numeric(values, errors="coerce"), dtype=np.float64)


def _bin_shares(numbers: np.ndarray, edges: Sequence[float]) -> list[float]:
    present = numbers[~np.isnan(numbers)]
    counts = np.bincount(np.searchsorted(np.asarray(edges), present, side="right"), minlength=len(edges) + 1)
    return (counts / max(len(present), 1)).tolist()


def _category_shares(text: pd.Series, categories: Sequence[str]) -> list[float]:
    present = text.dropna()
    counts = present.value_counts()
    shares = [float(counts.get(c, 0)) / max(len(present), 1) for c in categories]
    return [*shares, max(0.0, 1.0 - sum(shares))]


def profile_feature(values: pd.Series, *, column: str, kind: str,
                    kept: Sequence[str] | None = None) -> dict[str, Any]:
    """Return one field's training distribution: missing rate, and quantile-bin or category shares (with the
    categories the model keeps, `kept`, against which model health counts unseen values)."""
    out: dict[str, Any] = {"column": column, "kind": kind, "missing_rate": float(values.isna().mean())}
    if kind == "categorical":
        text = values.astype("string")
        counts = text.dropna().value_counts()
        top = [str(c) for c in counts.index[:TOP_CATEGORIES]]
        out["categories"] = top
        out["shares"] = _category_shares(text, top)
        out["known"] = sorted(map(str, counts.index)) if len(counts) <= KNOWN_CATEGORIES else None
        if kept is not None:
            out["kept"] = [str(c) for c in kept]
        out["top"] = top[0] if top else None
    elif kind in ("numeric", "boolean"):
        numbers = _numbers(values)
        present = numbers[~np.isnan(numbers)]
        edges = np.unique(np.quantile(present, np.linspace(0, 1, BINS + 1)[1:-1])).tolist() if len(present) else []
        out["edges"] = edges
        out["shares"] = _bin_shares(numbers, edges)
        out["mean"] = float(present.mean()) if len(present) else None
    return out  # timestamps: the missing rate only, since every date drifts as time passes


def reference_profile(*, features: pd.DataFrame, probability: np.ndarray, y: np.ndarray, spec: ModelSpec,
                      kept: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """Return the profile saved with a model: each feature's distribution, the score deciles, the base rate,
    and per categorical field the categories the model keeps (`kept`, from `scorer.kept_categories`).

    Built on the held-out leads, so the score distribution is the one new leads will get, not the fitted one.
    """
    kept = kept or {}
    p = np.asarray(probability, dtype=np.float64)
    edges = np.unique(np.quantile(p, np.linspace(0, 1, BINS + 1)[1:-1])).tolist()
    return {"rows": len(p), "base_rate": float(np.mean(y)), "mean_probability": float(p.mean()),
            "score": {"edges": edges, "shares": _bin_shares(p, edges)},
            "features": [profile_feature(features[f.column], column=f.column, kind=f.kind, kept=kept.get(f.column))
                         for f in spec.features]}


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Return the population stability index sum (a - e) ln(a / e) of two share vectors (floored at 1e-4)."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), SHARE_FLOOR)
    a = np.maximum(np.asarray(actual, dtype=np.float64), SHARE_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def _level(value: float) -> str:
    return "alert" if value >= PSI_ALERT else "warning" if value >= PSI_WARNING else "ok"


def unseen_level(share: float | None) -> str:
    """Return "alert", "warning" or "ok" for a share of leads with an unseen category."""
    if share is None:
        return "ok"
    return "alert" if share >= UNSEEN_ALERT else "warning" if share >= UNSEEN_WARNING else "ok"


def _feature_health(ref: Mapping[str, Any], values: pd.Series,
                    label: str) -> tuple[dict[str, Any], list[str], list[str]]:
    """Return a field's health entry, its alert sentences and its warning sentences."""
    missing_now = float(values.isna().mean())
    entry: dict[str, Any] = {"column": ref["column"], "kind": ref["kind"], "missing_rate_training": ref["missing_rate"],
                             "missing_rate_now": missing_now, "psi": None, "level": "ok", "unseen_share": None,
                             "unseen_level": "ok"}
    sentences = []
    if "shares" in ref:
        if ref["kind"] == "categorical":
            text = values.astype("string")
            shares = _category_shares(text, ref["categories"])
            # The model's kept categories: what scoring warns about too. A profile saved before they were in it
            # has only the held-out leads' values ("known"): then only values never seen there are counted.
            kept = ref.get("kept", ref.get("known"))
            if kept is not None and text.notna().any():
                entry["unseen_share"] = float(unseen_mask(text.dropna(), kept).mean())
        else:
            numbers = _numbers(values)
            shares = _bin_shares(numbers, ref["edges"])
            present = numbers[~np.isnan(numbers)]
            entry["mean_now"] = float(present.mean()) if len(present) else None
        value = psi(ref["shares"], shares)
        entry["psi"], entry["level"] = value, _level(value)
        if entry["level"] != "ok":
            sentences.append(f"{label} has shifted (PSI {value:.2f}): {_how(ref, entry, shares)}")
    if abs(missing_now - ref["missing_rate"]) >= MISSING_SHIFT:
        sentences.append(f"{label} is missing for {missing_now:.0%} of leads, {ref['missing_rate']:.0%} in training")
    shifted = (sentences, []) if entry["level"] == "alert" else ([], sentences)
    entry["unseen_level"] = unseen_level(entry["unseen_share"])
    if entry["unseen_level"] != "ok":
        # its own level: a field can keep its category shares (low PSI) while new values pour into "other"
        (shifted[0] if entry["unseen_level"] == "alert" else shifted[1]).append(
            f"{entry['unseen_share']:.0%} of leads have a {label} value training never saw or saw too rarely; the "
            "model scores them as 'other' and their reasons on it say little: map the new values to known ones "
            "or retrain")
    return entry, shifted[0], shifted[1]


def _how(ref: Mapping[str, Any], entry: Mapping[str, Any], shares: Sequence[float]) -> str:
    if ref["kind"] == "categorical":
        names = [*ref["categories"], OTHER]
        top = int(np.argmax(shares))
        was = ref["shares"][top]
        return f"the commonest value is now '{names[top]}' ({shares[top]:.0%} of leads; {was:.0%} in training)"
    before, now = ref.get("mean"), entry.get("mean_now")
    if before and now is not None:
        return f"its mean is now {now / before:.1f}x the training mean ({now:.3g} against {before:.3g})"
    return "its distribution is not the one the model was trained on"


def _fast_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Return ROC AUC as the Mann-Whitney count: the share of (converted, not converted) pairs the scores order
    right, ties at half. Both counts are whole numbers (exact in float64), so this is the rank-sum formula's value
    to the last bit, without ranking every lead: the not-converted scores sorted once, the converted looked up."""
    positive = y == 1
    negatives = np.sort(p[~positive])
    scores = np.sort(p[positive])  # sorted look-ups walk the negatives once: 4x faster on a million, same sums
    below = int(np.searchsorted(negatives, scores, side="left").sum())
    not_above = int(np.searchsorted(negatives, scores, side="right").sum())
    return (below + not_above) / 2 / (len(scores) * len(negatives))


def _fast_log_loss(y: np.ndarray, p: np.ndarray) -> float:
    q = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


# The same metrics as scikit-learn's, in plain numpy: the bootstrap calls them hundreds of times, and
# scikit-learn's input checks cost more than the sums on 10,000 leads.
FAST_METRICS: dict[str, Any] = {"roc_auc": _fast_auc, "brier": lambda y, p: float(np.mean((p - y) ** 2)),
                                "log_loss": _fast_log_loss}


def _intervals(y: np.ndarray, p: np.ndarray, points: Mapping[str, float | None], rng: np.random.Generator,
               n_boot: int, max_rows: int = BOOTSTRAP_ROWS) -> dict[str, list[float] | None]:
    """Return the 90% bootstrap interval of each of FAST_METRICS, all from the same `n_boot` resamples; beyond
    `max_rows` leads, resamples of `max_rows` leads whose spread around the full-sample value (`points`) is scaled
    by sqrt(max_rows / n) (these metrics' errors shrink as 1/sqrt(n)), so a million matured leads cost what
    10,000 do. A resample of one class only is left out, for every metric alike."""
    n = len(y)
    m = min(n, max_rows)
    values: dict[str, list[float]] = {name: [] for name in FAST_METRICS}
    for _ in range(n_boot):
        idx = rng.integers(0, n, m)  # one draw for all three: the gathers from a million leads cost the most
        y_b, p_b = y[idx], p[idx]
        if 0 < y_b.sum() < m:
            for name, metric in FAST_METRICS.items():
                values[name].append(float(metric(y_b, p_b)))
    out: dict[str, list[float] | None] = {}
    for name, drawn in values.items():
        point = points[name]
        if not drawn:
            out[name] = None
            continue
        low, high = float(np.quantile(drawn, 0.05)), float(np.quantile(drawn, 0.95))
        if m < n and point is not None:
            scale = math.sqrt(m / n)
            low, high = point + scale * (low - point), point + scale * (high - point)
        out[name] = [low, high]
    return out


def by_decile(y: np.ndarray, p: np.ndarray) -> list[dict[str, float]]:
    """Return, per decile of predicted probability (1 = highest), leads, mean prediction and realised rate."""
    order = np.argsort(-p, kind="stable")
    rows = []
    for k, part in enumerate(np.array_split(order, 10), start=1):
        if len(part):
            rows.append({"decile": k, "leads": len(part), "mean_probability": float(p[part].mean()),
                         "realised_rate": float(y[part].mean())})
    return rows


def outcome_health(*, y: np.ndarray, probability: np.ndarray, grades: Grades, base_rate_training: float,
                   rng: np.random.Generator, n_boot: int = 200) -> dict[str, Any]:
    """Return how scored leads with known outcomes turned out: rates by grade and by probability bin against the mean
    prediction, ECE, and ROC AUC, Brier and log loss with 90% bootstrap intervals (`n_boot` resamples)."""
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(probability, dtype=np.float64)
    letters = "ABCD"
    # Grade letters as 0-3 (their code points less A's): one grouping where a mask per letter read 1M strings 3x.
    order, slices = groups(grades.grade(p).view(np.uint32) - ord(letters[0]), len(letters))
    y_g, p_g = y[order], p[order]
    both = 0 < y.sum() < len(y)
    out: dict[str, Any] = {
        "leads": len(y), "base_rate": float(y.mean()), "base_rate_training": base_rate_training,
        "mean_probability": float(p.mean()), "ece": expected_calibration_error(y, p),
        "by_grade": [{"grade": g, "leads": part.stop - part.start,
                      "mean_probability": float(p_g[part].mean()) if part.stop > part.start else None,
                      "realised_rate": float(y_g[part].mean()) if part.stop > part.start else None}
                     for g, part in zip(letters, slices, strict=True)],
        "by_probability_bin": calibration_table(y, p),
        "by_decile": by_decile(y, p),
    }
    # The point values by the same numpy formulas as the bootstrap: scikit-learn's input checks on a million
    # leads cost more than the sums (test_the_bootstrap_metrics_equal_scikit_learns checks they agree).
    points = {name: float(metric(y, p)) if both or name != "roc_auc" else None
              for name, metric in FAST_METRICS.items()}
    for name, interval in _intervals(y, p, points, rng, n_boot).items():
        out[name], out[f"{name}_interval"] = points[name], interval
    return out


def health(*, profile: Mapping[str, Any], features: pd.DataFrame, probability: np.ndarray, spec: ModelSpec,
           outcomes: tuple[np.ndarray, np.ndarray] | None = None, rng: np.random.Generator,
           n_boot: int = 200, matured: dict[str, Any] | None = None) -> dict[str, Any]:
    """Compare scored leads with a model's reference profile; return per-feature drift, score drift, outcome
    health (when `outcomes` = (y, probability) of the leads whose outcome is known; `matured`, that health
    computed already by `outcome_health`) and the alerts in words."""
    labels = {f.column: f.label for f in spec.features}
    entries: list[dict[str, Any]] = []
    alerts: list[str] = []
    warnings: list[str] = []
    for ref in profile["features"]:
        if ref["column"] not in features.columns:
            continue
        entry, alerting, warning = _feature_health(ref, features[ref["column"]],
                                                   labels.get(ref["column"], ref["column"]))
        entries.append(entry)
        alerts.extend(alerting)
        warnings.extend(warning)
    p = np.asarray(probability, dtype=np.float64)
    score_psi = psi(profile["score"]["shares"], _bin_shares(p, profile["score"]["edges"]))
    if _level(score_psi) != "ok":
        (alerts if _level(score_psi) == "alert" else warnings).append(
            f"the scores have shifted (PSI {score_psi:.2f}): the mean probability is now {p.mean():.1%}, "
            f"{profile['mean_probability']:.1%} on the held-out leads at training")
    result: dict[str, Any] = {"leads": len(p), "mean_probability": float(p.mean()), "score_psi": score_psi,
                              "features": sorted(entries, key=lambda e: -(e["psi"] or 0.0)), "outcomes": None,
                              "unseen_categories": {e["column"]: e["unseen_share"] for e in entries
                                                    if e["unseen_share"] is not None}}
    if matured is None and outcomes is not None and len(outcomes[0]):
        y, p_out = outcomes
        matured = outcome_health(y=y, probability=p_out, grades=spec.grades, base_rate_training=profile["base_rate"],
                                 rng=rng, n_boot=n_boot)
    if matured is not None:
        result["outcomes"] = matured
        if matured["ece"] >= ECE_ALERT:
            alerts.append(f"calibration: these leads converted at {matured['base_rate']:.1%} where the model "
                          f"predicted {matured['mean_probability']:.1%} on average (ECE {matured['ece']:.3f}); "
                          "recalibrate on recent outcomes or retrain")
        ratio = matured["base_rate"] / profile["base_rate"] if profile["base_rate"] else math.inf
        matured["base_rate_ratio"] = ratio
        if ratio >= BASE_RATE_SHIFT or ratio <= 1 / BASE_RATE_SHIFT:
            warnings.append(f"the base rate has moved: {matured['base_rate']:.1%} of matured leads converted, "
                            f"{profile['base_rate']:.1%} in training ({ratio:.1f}x)")
    result["alerts"], result["warnings"] = alerts, warnings
    return result


def live_health(*, profile: Mapping[str, Any], spec: ModelSpec, features: pd.DataFrame | Callable[[], pd.DataFrame],
                probability: np.ndarray, converted: np.ndarray, rng: np.random.Generator, n_boot: int = 200,
                rows_logged: int | None = None) -> dict[str, Any]:
    """Return the health of a model on the leads it scored: `probability` holds each lead's logged score,
    `converted` its outcome (1, 0, NaN while not matured); `features` the logged values of a sample of them, or
    what returns them once the outcome figures are done (a sample still being read meanwhile)."""
    p = np.asarray(probability, dtype=np.float64)
    y = np.asarray(converted, dtype=np.float64)
    matured = ~np.isnan(y)
    outcomes = outcome_health(y=y[matured].astype(np.int64), probability=p[matured], grades=spec.grades,
                              base_rate_training=profile["base_rate"], rng=rng, n_boot=n_boot) \
        if matured.any() else None
    sample = features() if callable(features) else features
    report = health(profile=profile, features=sample, probability=p, spec=spec, rng=rng, n_boot=n_boot,
                    matured=outcomes)
    report["leads_scored"] = len(p)
    report["rows_logged"] = len(p) if rows_logged is None else rows_logged
    report["leads_matured"] = int(matured.sum())
    report["leads_converted"] = int(np.nansum(y))
    report["features_sampled"] = len(sample)
    report["base_rate_training"] = profile["base_rate"]
    return report
