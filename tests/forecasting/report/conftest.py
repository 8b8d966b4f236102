"""A small synthetic pipeline and one report built from it, shared by the report tests."""

from __future__ import annotations

import numpy as np
import pytest

from crmdata.loaders import Pipeline
from crmdata.synthetic import generate_opportunities
from forecasting.report import Report, build_report

SEED = 11
SIMS = 2_000
TARGET = 600_000.0
OPTIONS = {"as_of": "2026-07-01", "horizon": "1Q", "target": TARGET, "n_sims": SIMS, "backtest_months": 3,
           "backtest_sims": 200}


@pytest.fixture(scope="session")
def small_pipeline() -> Pipeline:
    """1,500 synthetic deals over two years before 2026-07-01, with their stage history."""
    data = generate_opportunities(n=1500, seed=3)
    return Pipeline(opportunities=data.opportunities, stages=data.stages, history=data.history)


@pytest.fixture(scope="session")
def small_report(small_pipeline: Pipeline) -> Report:
    """The report of the small pipeline, 1Q as of 2026-07-01 against a $600k target, seed 11."""
    return build_report(small_pipeline, rng=np.random.default_rng(SEED), **OPTIONS)  # type: ignore[arg-type]
