"""Shared fixtures: small synthetic lead tables, fast model parameters, a fitted model."""

from __future__ import annotations

import pandas as pd
import pytest

from crmdata.synthetic import SyntheticLeads, generate_leads
from scoring.spec import ModelSpec, load_spec
from scoring.training import TrainingResult, train

# Few folds and trees keep every test fast; the defaults are exercised by the slow and real-data tests.
FAST = {"cv": 3, "max_iter": 30}


@pytest.fixture(scope="session")
def spec() -> ModelSpec:
    return load_spec()


@pytest.fixture(scope="session")
def synthetic() -> SyntheticLeads:
    return generate_leads(n=3000, seed=11)


@pytest.fixture(scope="session")
def leads(synthetic: SyntheticLeads) -> pd.DataFrame:
    return synthetic.leads


@pytest.fixture(scope="session")
def trained(leads: pd.DataFrame, spec: ModelSpec) -> TrainingResult:
    return train(leads, spec=spec, params=FAST)
