"""Small hand-made pipelines for the forecasting tests."""

from __future__ import annotations

import pandas as pd
import pytest

from crmdata.contracts import OPPORTUNITY, STAGE_HISTORY
from crmdata.loaders import frame_from_records
from crmdata.stages import DEFAULT_STAGES, StageConfig

MAVEN_STAGES = StageConfig(open=("Prospecting", "Engaging"), won=("Won",), lost=("Lost",), lead_stages=("Prospecting",))


def make_deals(records: list[dict[str, object]], stages: StageConfig = MAVEN_STAGES) -> pd.DataFrame:
    """Return contract-typed opportunities from records (owner and product default to A and P)."""
    rows = [{"owner": "A", "product": "P", **r} for r in records]
    return frame_from_records(rows, contract=OPPORTUNITY, stages=stages)


def make_history(records: list[tuple[str, str, str]], stages: StageConfig = DEFAULT_STAGES) -> pd.DataFrame:
    """Return a stage history from (opportunity_id, stage, entered_at) tuples."""
    rows = [{"opportunity_id": i, "stage": s, "entered_at": t} for i, s, t in records]
    return frame_from_records(rows, contract=STAGE_HISTORY, stages=stages)


@pytest.fixture
def six_deals() -> pd.DataFrame:
    """Four closed and two open deals (cycle days: 10, 20, 30 lost, 30)."""
    return make_deals([
        {"opportunity_id": "d1", "owner": "A", "product_category": "X", "amount": 100, "created_at": "2024-01-01",
         "stage": "Won", "closed_at": "2024-01-11", "won_amount": 120},
        {"opportunity_id": "d2", "owner": "A", "product_category": "X", "amount": 200, "created_at": "2024-01-05",
         "stage": "Won", "closed_at": "2024-01-25", "won_amount": 180},
        {"opportunity_id": "d3", "owner": "B", "product_category": "Y", "amount": 300, "created_at": "2024-01-10",
         "stage": "Lost", "closed_at": "2024-02-09", "won_amount": 0},
        {"opportunity_id": "d4", "owner": "B", "product_category": "Y", "amount": 400, "created_at": "2024-02-01",
         "stage": "Won", "closed_at": "2024-03-02", "won_amount": 400},
        {"opportunity_id": "d5", "owner": "A", "product_category": "Y", "amount": 500, "created_at": "2024-02-15",
         "stage": "Engaging"},
        {"opportunity_id": "d6", "owner": "B", "product_category": "X", "amount": 600, "created_at": "2024-03-01",
         "stage": "Engaging"},
    ])
