"""The retrain loop's pieces: the period of --every, the gate's split and paired bootstrap, and the must-show drift:
monitor raises the PSI and calibration alerts, and recalibration brings the next period's ECE under 0.03."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from crmdata.errors import LeadcastError
from scoring.artifacts import TrainedModel
from scoring.evaluation import expected_calibration_error
from scoring.monitoring import health
from scoring.retraining import (
    Gate,
    choose_mode,
    gate_decision,
    is_due,
    newest_share,
    paired_gate,
    parse_every,
    recalibrate,
)
from scoring.scorer import ModelScorer
from scoring.spec import prepare
from scoring.training import TrainingResult
from tests.drift import period


def test_every_and_due() -> None:
    assert parse_every("15d") == timedelta(days=15)
    assert parse_every(" 12h ") == timedelta(hours=12)
    assert parse_every("2w") == timedelta(days=14)
    for bad in ("15", "d", "-1d", "0d", "15 days"):
        with pytest.raises(LeadcastError, match="--every"):
            parse_every(bad)
    now = datetime(2026, 12, 2, tzinfo=UTC)
    assert is_due(last_run=None, every=timedelta(days=15), now=now)
    # 14 days 23 hours after the last run: not due; exactly 15 days: due
    assert not is_due(last_run="2026-11-17T01:00:00+00:00", every=timedelta(days=15), now=now)
    assert is_due(last_run="2026-11-17T00:00:00+00:00", every=timedelta(days=15), now=now)


def test_newest_share_takes_the_newest_fifth_in_time_order() -> None:
    created = pd.Series(pd.to_datetime(["2026-01-05", "2026-01-01", None, "2026-01-04", "2026-01-02",
                                        "2026-01-03", "2026-01-09", "2026-01-08", "2026-01-07", "2026-01-06"]))
    # 20% of 10 leads = 2: the two newest, 9 and 8 January (positions 6 and 7); a missing time counts as oldest
    assert np.flatnonzero(newest_share(created)).tolist() == [6, 7]


def test_paired_gate_by_hand() -> None:
    y = np.array([1, 0, 1, 0])
    champion = np.full(4, 0.5)
    better = np.array([0.8, 0.2, 0.8, 0.2])
    gate = paired_gate(y=y, challenger=better, champion=champion, rng=np.random.default_rng(0), resamples=200)
    # every lead: -ln 0.8 - (-ln 0.5) = ln(0.5 / 0.8) = -0.4700, so every resample's mean difference is -0.4700
    assert gate.difference == pytest.approx(math.log(0.5 / 0.8))
    assert gate.interval == pytest.approx((math.log(0.5 / 0.8),) * 2)
    assert gate.challenger_log_loss == pytest.approx(-math.log(0.8))
    assert not gate.worse_beyond_noise
    decision = gate_decision(gate, champion_version="1", what="retrained model")
    assert decision.promoted and decision.reason.startswith("promoted: the retrained model is better than")
    worse = paired_gate(y=y, challenger=champion, champion=better, rng=np.random.default_rng(0), resamples=200)
    assert worse.worse_beyond_noise
    assert not gate_decision(worse, champion_version="1", what="retrained model").promoted
    # a difference whose interval straddles 0 is noise: promoted as not worse
    noisy = Gate(leads=4, challenger_log_loss=0.5, champion_log_loss=0.49, difference=0.01, interval=(-0.02, 0.04))
    assert gate_decision(noisy, champion_version="1", what="x").reason.startswith(
        "promoted: the x is not worse beyond noise than champion v1")


def test_choose_mode() -> None:
    drifted = {"features": [{"column": "web_visits", "level": "alert"}], "score_psi": 0.3}
    assert choose_mode(drifted)[0] == "retrain"
    assert choose_mode({"features": [{"column": "age", "level": "warning"}], "score_psi": 0.05})[0] == "recalibrate"


def _scored(trained: TrainedModel, leads: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    prepared = prepare(leads, spec=trained.spec, with_target=True)
    assert prepared.target is not None
    p = ModelScorer(trained).score_frame(prepared.features, prepared.ids, reasons=False)["probability"].to_numpy()
    return prepared.features, prepared.target, p


@pytest.mark.slow
def test_drift_raises_the_alerts_and_recalibration_brings_the_next_ece_under_003(trained: TrainingResult) -> None:
    champion = trained.trained
    champion.version = "1"
    base = float(trained.trained.card["profile"]["base_rate"])
    second = period(2, n=16_000, base_rate=base)
    third = period(3, n=40_000, base_rate=base)
    assert second["converted"].astype(bool).mean() == pytest.approx(2 * base, abs=0.02)
    features, y, p = _scored(champion, second)
    report = health(profile=champion.card["profile"], features=features, probability=p, spec=champion.spec,
                    outcomes=(y, p), rng=np.random.default_rng(0), n_boot=50)
    alerts = " | ".join(report["alerts"])
    assert "Website visits has shifted (PSI" in alerts
    assert "calibration: these leads converted at" in alerts
    assert [f["column"] for f in report["features"] if f["level"] == "alert"] == ["web_visits"]
    candidate = recalibrate(second, champion=champion, rng=np.random.default_rng(0))
    assert candidate.decision.promoted, candidate.decision.reason
    assert candidate.gate is not None and candidate.gate.interval[1] < 0  # better, not merely within noise
    _, y3, p3_before = _scored(champion, third)
    _, _, p3_after = _scored(candidate.result.trained, third)
    assert expected_calibration_error(y3, p3_before) > 0.05
    assert expected_calibration_error(y3, p3_after) < 0.03
