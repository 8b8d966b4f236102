"""The retrain loop: a challenger (retrained, or the champion recalibrated) earns promotion on the newest leads.

The gate: matured leads in time order, the newest 20% held back. A retrained challenger is fitted on the older
80% only, so both models meet the gate leads unseen (a champion trained on some of them has the advantage,
which only makes the gate stricter). Per gate lead, d_i = challenger log loss - champion log loss; the
challenger is promoted unless it is worse beyond its paired-bootstrap noise, i.e. unless the 5th percentile of
the bootstrap mean of d is above 0. The reason, with the numbers, is recorded either way.

A recalibration keeps the champion's fitted components and refits only its calibration map on the older 80%
of recent matured leads: the cheap update when the base rate moved but the inputs did not.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss

from crmdata.errors import LeadcastError
from scoring.artifacts import TrainedModel, hash_ids
from scoring.compiled import CompiledModel
from scoring.evaluation import best_f1_threshold, evaluate
from scoring.model import Calibrator, LeadScoringModel
from scoring.monitoring import reference_profile
from scoring.scorer import kept_categories
from scoring.spec import ModelSpec, prepare
from scoring.tracking import Decision
from scoring.training import TrainingResult, check_outcomes, train

GATE_SHARE = 0.2
GATE_RESAMPLES = 1000
MIN_GATE_PER_CLASS = 10
Mode = Literal["retrain", "recalibrate"]
_EVERY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([hdw])\s*$")


class GateError(LeadcastError):
    """Raised when the matured leads cannot make a fair gate (too few, or one class only)."""


@dataclass(frozen=True)
class Gate:
    """The paired comparison on the gate leads: mean log losses, their difference and its bootstrap interval."""

    leads: int
    challenger_log_loss: float
    champion_log_loss: float
    difference: float
    interval: tuple[float, float]
    champion_saw: int = 0

    @property
    def worse_beyond_noise(self) -> bool:
        """Return whether even the low end of the difference's 90% interval says the challenger is worse."""
        return self.interval[0] > 0

    def as_dict(self) -> dict[str, Any]:
        """Return the numbers for a model card."""
        return {"leads": self.leads, "challenger_log_loss": self.challenger_log_loss,
                "champion_log_loss": self.champion_log_loss, "difference": self.difference,
                "interval": list(self.interval), "champion_trained_on": self.champion_saw}


def parse_every(text: str) -> timedelta:
    """Return the period of `--every` text such as 15d, 12h or 2w."""
    found = _EVERY.match(text)
    if found is None:
        raise LeadcastError(f"--every must be a number and a unit h, d or w (15d, 12h, 2w), not {text!r}")
    amount, unit = float(found.group(1)), found.group(2)
    period = {"h": timedelta(hours=amount), "d": timedelta(days=amount), "w": timedelta(weeks=amount)}[unit]
    if period <= timedelta(0):
        raise LeadcastError(f"--every must be longer than zero, not {text!r}")
    return period


def is_due(*, last_run: str | None, every: timedelta, now: datetime) -> bool:
    """Return whether a loop last run at `last_run` (ISO time, None for never) is due again at `now`."""
    if last_run is None:
        return True
    last = datetime.fromisoformat(last_run)
    last = last if last.tzinfo else last.replace(tzinfo=UTC)
    return now - last >= every


def newest_share(created: pd.Series, *, share: float = GATE_SHARE) -> np.ndarray:
    """Return a mask of the newest `share` of rows by `created` (ties and missing times count as oldest)."""
    times = pd.to_datetime(created, errors="coerce")
    days = times.to_numpy(dtype="datetime64[ns]").astype(np.int64).astype(np.float64)
    days[times.isna().to_numpy(bool)] = -np.inf
    order = np.argsort(days, kind="stable")
    mask = np.zeros(len(days), dtype=bool)
    mask[order[len(days) - int(np.ceil(share * len(days))):]] = True
    return mask


def _losses(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    return np.asarray(-(y * np.log(q) + (1 - y) * np.log(1 - q)))


def paired_gate(*, y: np.ndarray, challenger: np.ndarray, champion: np.ndarray, rng: np.random.Generator,
                resamples: int = GATE_RESAMPLES, champion_saw: int = 0) -> Gate:
    """Compare two models' per-lead log losses on the same leads with a paired bootstrap of their mean difference."""
    y = np.asarray(y, dtype=np.float64)
    d = _losses(y, challenger) - _losses(y, champion)
    # the mean over a resample is a weighted mean: multinomial counts / n, drawn in one matrix product
    counts = rng.multinomial(len(d), np.full(len(d), 1 / len(d)), size=resamples)
    means = counts @ d / len(d)
    return Gate(leads=len(d), challenger_log_loss=float(_losses(y, challenger).mean()),
                champion_log_loss=float(_losses(y, champion).mean()), difference=float(d.mean()),
                interval=(float(np.quantile(means, 0.05)), float(np.quantile(means, 0.95))),
                champion_saw=champion_saw)


def gate_decision(gate: Gate | None, *, champion_version: str | None, what: str) -> Decision:
    """Return the promotion decision of a gate (None: there is no champion to beat)."""
    if gate is None:
        return Decision(True, f"no champion yet: the {what} becomes champion")
    low, high = gate.interval
    numbers = (f"log loss {gate.challenger_log_loss:.4f} vs {gate.champion_log_loss:.4f} on the newest "
               f"{gate.leads:,} matured leads; difference {gate.difference:+.4f}, 90% paired-bootstrap interval "
               f"[{low:+.4f}, {high:+.4f}]")
    if gate.champion_saw:
        numbers += f"; the champion was trained on {gate.champion_saw:,} of them"
    challenger = {"log_loss": gate.challenger_log_loss}
    champ = {"log_loss": gate.champion_log_loss}
    if gate.worse_beyond_noise:
        return Decision(False, f"stays challenger: the {what} is worse than champion v{champion_version} beyond "
                               f"its bootstrap noise ({numbers})", challenger=challenger, champion=champ,
                        champion_version=champion_version)
    verdict = "better than" if high < 0 else "not worse beyond noise than"
    return Decision(True, f"promoted: the {what} is {verdict} champion v{champion_version} ({numbers})",
                    challenger=challenger, champion=champ, champion_version=champion_version)


def _proba(trained: TrainedModel, raw: pd.DataFrame) -> np.ndarray:
    prepared = prepare(raw, spec=trained.spec, table="gate leads")
    compiled = CompiledModel(trained.pipeline)
    return np.asarray(compiled.proba(compiled.features.encode(prepared.features)))


def _split(raw: pd.DataFrame, *, spec: ModelSpec,
           time_column: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, str]:
    """Return the older leads, the gate leads (the newest 20% in time order), the gate's outcomes and the time of
    its oldest lead; the times are the spec's created-at column, else `time_column` of `raw`."""
    prepared = prepare(raw, spec=spec, table="matured leads", with_target=True)
    assert prepared.target is not None and prepared.kept is not None
    decided = raw.reset_index(drop=True).iloc[prepared.kept].reset_index(drop=True)
    created = prepared.created_at
    if created is None and time_column is not None and time_column in decided.columns:
        created = pd.Series(pd.to_datetime(decided[time_column], errors="coerce"))
    if created is None:
        named = (f"the data has no '{spec.created_at_column}' column" if spec.created_at_column else
                 "the spec names no created_at_column (the store's logged leads have times: retrain from it)")
        raise GateError(f"the gate needs lead times: {named}")
    newest = newest_share(created)
    y_gate = prepared.target[newest]
    if y_gate.sum() < MIN_GATE_PER_CLASS or (1 - y_gate).sum() < MIN_GATE_PER_CLASS:
        raise GateError(f"the newest {newest.sum():,} matured leads hold {int(y_gate.sum())} conversions and "
                        f"{int((1 - y_gate).sum())} non-conversions: the gate needs at least {MIN_GATE_PER_CLASS} "
                        "of each; wait for more outcomes to mature")
    gate_from = str(pd.Series(created)[newest].min())
    return decided[~newest].reset_index(drop=True), decided[newest].reset_index(drop=True), y_gate, gate_from


@dataclass
class Candidate:
    """A challenger ready for `scoring.tracking.track`, with the gate's decision and numbers."""

    result: TrainingResult
    decision: Decision
    gate: Gate | None
    mode: Mode


def _gate(candidate: TrainedModel, champion: TrainedModel | None, gate_raw: pd.DataFrame, y_gate: np.ndarray, *,
          rng: np.random.Generator, what: str) -> tuple[Decision, Gate | None]:
    if champion is None:
        return gate_decision(None, champion_version=None, what=what), None
    id_column = champion.spec.id_column
    saw = int(champion.seen(gate_raw[id_column]).sum()) if id_column in gate_raw.columns else 0
    gate = paired_gate(y=y_gate, challenger=_proba(candidate, gate_raw), champion=_proba(champion, gate_raw),
                       rng=rng, champion_saw=saw)
    return gate_decision(gate, champion_version=champion.version, what=what), gate


def retrain(raw: pd.DataFrame, *, spec: ModelSpec, champion: TrainedModel | None, rng: np.random.Generator,
            params: Mapping[str, Any] | None = None, data_fingerprint: str | None = None,
            table: str = "matured leads", time_column: str | None = None) -> Candidate:
    """Train a challenger on the older 80% of matured leads and gate it against the champion on the newest 20%
    (in the order of the spec's created-at column, else of `time_column`: the store's first-score times)."""
    older, gate_raw, y_gate, gate_from = _split(raw, spec=spec, time_column=time_column)
    result = train(older, spec=spec, params=params, data_fingerprint=data_fingerprint, table=table)
    decision, gate = _gate(result.trained, champion, gate_raw, y_gate, rng=rng, what="retrained model")
    result.trained.card["gate"] = {"mode": "retrain", **(gate.as_dict() if gate else {}),
                                   "gate_from": gate_from}
    return Candidate(result=result, decision=decision, gate=gate, mode="retrain")


def choose_calibrator(logit: np.ndarray, y: np.ndarray, *, folds: int = 3) -> tuple[Calibrator, dict[str, float]]:
    """Return the calibration map (sigmoid or isotonic) with the lower `folds`-fold log loss, refitted on all rows.

    A shift of the base rate is not always a shift of the intercept (a campaign that brings converters of every
    kind bends the curve), and a two-parameter sigmoid cannot follow a bent one: isotonic can, given the leads.
    """
    from sklearn.model_selection import StratifiedKFold

    losses: dict[str, float] = {}
    for method in ("sigmoid", "isotonic"):
        fold_loss = []
        for train_idx, test_idx in StratifiedKFold(folds, shuffle=True, random_state=0).split(logit, y):
            cal = Calibrator(method).fit(logit[train_idx], y[train_idx])
            q = np.clip(cal(logit[test_idx]), 1e-12, 1 - 1e-12)
            fold_loss.append(float(log_loss(y[test_idx], q, labels=[0, 1])) * len(test_idx))
        losses[method] = sum(fold_loss) / len(y)
    best = min(losses, key=lambda m: (losses[m], m != "sigmoid"))
    return Calibrator(best).fit(logit, y), losses


def recalibrate(raw: pd.DataFrame, *, champion: TrainedModel, rng: np.random.Generator,
                time_column: str | None = None) -> Candidate:
    """Refit the champion's calibration map on the older 80% of recent matured leads; gate it on the newest 20%.

    `raw` should hold the recent leads only (since the base rate moved): the map is fitted to all of them. The
    time order is the spec's created-at column, else `time_column` (the store's first-score times).
    """
    spec = champion.spec
    older, gate_raw, y_gate, gate_from = _split(raw, spec=spec, time_column=time_column)
    prepared = prepare(older, spec=spec, table="recent matured leads", with_target=True)
    assert prepared.target is not None
    y = prepared.target
    check_outcomes(y, spec=spec, minimum=MIN_GATE_PER_CLASS)
    pipeline = copy.deepcopy(champion.pipeline)
    model: LeadScoringModel = pipeline.named_steps["model"]
    X = pipeline.named_steps["features"].transform(prepared.features)
    logit = np.asarray(model.decision_function(X))
    calibrator, fold_losses = choose_calibrator(logit, y)
    model.calibrator_ = calibrator
    model.calibrators_[model.kind_] = calibrator
    # the probe rows check a compiled scorer against predict_proba at load: their probabilities moved too
    model.probe_p_ = model.predict_proba(model.probe_X_)[:, 1]
    p_fit = calibrator(np.asarray(logit))
    card = copy.deepcopy(champion.card)
    for stale in ("version", "mlflow_run_id", "promotion", "promoted", "gate"):
        card.pop(stale, None)
    card["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    card["recalibrated_from"] = champion.version
    card["calibration"] = calibrator.method
    card["recalibration"] = {"leads": len(y), "converted": int(y.sum()), "method": calibrator.method,
                             "cv_log_loss": fold_losses}
    trained = TrainedModel(pipeline=pipeline, spec=spec, card=card,
                           train_ids=np.unique(np.concatenate([champion.train_ids, hash_ids(prepared.ids)])))
    decision, gate = _gate(trained, champion, gate_raw, y_gate, rng=rng, what="recalibrated champion")
    gate_prepared = prepare(gate_raw, spec=spec, table="gate leads")
    p_gate = _proba(trained, gate_raw)
    report_one = evaluate(y_gate, p_gate, grades=spec.grades, protected=None)
    protocol = {"kind": "recalibration gate", "holdout_share": GATE_SHARE,
                "holdout_from": gate_from}
    card["evaluation"] = protocol
    card["threshold"] = best_f1_threshold(y_gate, p_gate)
    headline = {k: float(report_one[k]) for k in ("roc_auc", "pr_auc", "brier", "log_loss", "ece", "base_rate")}
    headline["f1"] = float(report_one["confusion"]["f1"])
    card["metrics"] = {"selected": headline, card["selected"]: headline}
    card["profile"] = reference_profile(features=gate_prepared.features, probability=p_gate, y=y_gate, spec=spec,
                                        kept=kept_categories(pipeline.named_steps["features"]))
    card["gate"] = {"mode": "recalibrate", **(gate.as_dict() if gate else {}), "gate_from": protocol["holdout_from"],
                    "fit_log_loss": float(log_loss(y, np.clip(p_fit, 1e-12, 1 - 1e-12), labels=[0, 1]))}
    result = TrainingResult(
        trained=trained,
        report={"selected": card["selected"], "threshold": card["threshold"], "candidates": {card["selected"]:
                report_one}, "evaluation": protocol, "warnings": []},
        holdout_raw=gate_raw, holdout_ids=gate_prepared.ids, holdout_y=y_gate, holdout_p=p_gate,
        input_example=prepared.features.head(5),
    )
    return Candidate(result=result, decision=decision, gate=gate, mode="recalibrate")


def choose_mode(health_report: Mapping[str, Any]) -> tuple[Mode, str]:
    """Return the cheaper update that answers a health report: recalibrate when only the base rate moved."""
    drifted = [f["column"] for f in health_report.get("features", []) if f.get("level") == "alert"]
    if health_report.get("score_psi", 0.0) >= 0.25 and not drifted:
        drifted.append("the score")
    if drifted:
        return "retrain", f"inputs have shifted ({', '.join(drifted)}): retraining"
    return "recalibrate", "no input has shifted beyond the alert level: recalibrating the champion"
