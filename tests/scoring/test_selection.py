"""Issue 14 item 1: out-of-time evaluation, selection by bootstrap noise, base-rate shift, recency calibration."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from scoring.model import select_candidate
from scoring.spec import ModelSpec
from scoring.training import base_rate_shift, newest_holdout, train
from tests.scoring.conftest import FAST


def test_a_candidate_better_on_every_lead_replaces_the_simpler_one() -> None:
    y = np.array([1, 0, 1, 0])
    linear = np.full(4, 0.5)
    trees = np.array([0.9, 0.1, 0.9, 0.1])
    choice = select_candidate(y, {"linear": linear, "trees": trees, "blend": trees.copy()},
                              rng=np.random.default_rng(0))
    # per lead: ln 2 - (-ln 0.9) = 0.693147 - 0.105361 = 0.587787 better, the same on every lead: no noise
    first, second = choice["comparisons"]
    assert first["gain"] == pytest.approx(math.log(2) + math.log(0.9)) and first["noise"] == pytest.approx(0.0)
    # the blend equals the trees: no gain, so the simpler trees are kept
    assert second["gain"] == pytest.approx(0.0) and not second["won"]
    assert choice["selected"] == "trees"
    assert choice["reason"].startswith("trees chosen: trees beats linear")


def test_a_win_within_the_bootstrap_noise_keeps_the_simpler_candidate() -> None:
    n = 100
    y = np.tile([1, 0], n // 2)
    linear = np.full(n, 0.5)
    trees = linear.copy()
    trees[0] = 0.9  # y = 1: loss 0.105361, better than ln 2 by d = 0.587787
    trees[1] = 1 - math.exp(-(math.log(2) + 0.587787 / 2))  # y = 0: loss ln 2 + d / 2, worse by d / 2
    choice = select_candidate(y, {"linear": linear, "trees": trees}, rng=np.random.default_rng(0))
    [step] = choice["comparisons"]
    # mean gain (d - d / 2) / 100 = 0.0029389; the bootstrap sd of the mean is about sqrt(1.25) d / 100 = 0.0066
    assert step["gain"] == pytest.approx(0.587787 / 2 / n, rel=1e-5)
    assert 0.004 < step["noise"] < 0.009
    assert choice["selected"] == "linear"


def test_base_rate_shift_is_a_two_proportion_z_test() -> None:
    holdout = np.r_[np.zeros(100, bool), np.ones(100, bool)]
    y = np.r_[np.ones(30), np.zeros(70), np.ones(50), np.zeros(50)].astype(int)
    # pooled 0.4, se = sqrt(0.4 x 0.6 x (1/100 + 1/100)) = 0.069282, z = (0.5 - 0.3) / se = 2.887 < 3
    small = base_rate_shift(y, holdout)
    assert (small["older"], small["newest"]) == (0.3, 0.5)
    assert small["z"] == pytest.approx(2.8868, abs=1e-4) and not small["shifted"]
    y = np.r_[np.ones(30), np.zeros(70), np.ones(60), np.zeros(40)].astype(int)
    # pooled 0.45, se = sqrt(0.45 x 0.55 x 0.02) = 0.070356, z = 0.3 / se = 4.264
    assert base_rate_shift(y, holdout)["z"] == pytest.approx(4.2640, abs=1e-4)
    assert base_rate_shift(y, holdout)["shifted"]


def test_the_holdout_is_the_newest_fifth_by_the_order_given() -> None:
    order = np.arange(100, dtype=float)[::-1]  # the first row is the newest
    y = np.tile([1, 0], 50)
    holdout = newest_holdout(order, y)
    assert holdout is not None and np.flatnonzero(holdout).tolist() == list(range(20))
    assert newest_holdout(order, np.r_[np.ones(5), np.zeros(95)].astype(int)) is None  # too few outcomes


def test_an_order_column_gives_a_time_split_and_says_why(leads: pd.DataFrame, spec: ModelSpec) -> None:
    ordered = leads.sort_values("created_at", kind="stable").reset_index(drop=True)
    numbered = ordered.drop(columns=["created_at"]).assign(seq=np.arange(len(ordered)) * 7)
    result = train(numbered, spec=replace(spec, created_at_column=None, order_column="seq"), params=FAST)
    card = result.trained.card
    assert card["evaluation"]["kind"] == "time split" and card["evaluation"]["order"] == "order column (seq)"
    # ceil(0.2 x 3000) = 600 leads with the largest seq
    assert set(result.holdout_ids) == set(numbered["lead_id"].tail(600))
    assert card["selection"]["reason"].startswith(f"{card['selected']} chosen:")
    assert "newest weighing 2x the oldest" in card["selection"]["calibrated_on"]
    assert set(card["evaluation"]["base_rate_shift"]) == {"older", "newest", "z", "shifted"}


def test_rows_in_time_order_hold_out_the_last_rows(leads: pd.DataFrame, spec: ModelSpec) -> None:
    ordered = leads.sort_values("created_at", kind="stable").reset_index(drop=True).drop(columns=["created_at"])
    result = train(ordered, spec=replace(spec, created_at_column=None, rows_in_time_order=True), params=FAST)
    assert result.trained.card["evaluation"]["order"] == "row order (rows_in_time_order = true)"
    assert set(result.holdout_ids) == set(ordered["lead_id"].tail(600))


def test_a_base_rate_shift_is_warned(leads: pd.DataFrame, spec: ModelSpec) -> None:
    ordered = leads.sort_values("created_at", kind="stable").reset_index(drop=True)
    shifted = ordered.copy()
    newest = np.arange(len(shifted)) >= 2400
    shifted.loc[newest & (np.arange(len(shifted)) % 2 == 0), "converted"] = True  # half the newest convert anyway
    result = train(shifted, spec=spec, params=FAST)
    shift = result.trained.card["evaluation"]["base_rate_shift"]
    assert shift["shifted"] and shift["newest"] > shift["older"] + 0.2
    assert any(w.startswith("base-rate shift:") for w in result.report["warnings"])
