from __future__ import annotations

import pytest

from crmdata.stages import DEFAULT_STAGES, StageConfig


def test_default_stages_follow_the_brief() -> None:
    assert DEFAULT_STAGES.open == ("lead_generation", "qualification", "contact", "proposal", "closing")
    assert DEFAULT_STAGES.outcome("retention") == "won"
    assert DEFAULT_STAGES.outcome("lost") == "lost"
    assert DEFAULT_STAGES.outcome("proposal") == "open"
    # proposal is the 4th open stage (index 3); won stages sort after all 5 open ones.
    assert DEFAULT_STAGES.order("proposal") == 3
    assert DEFAULT_STAGES.order("won") == 5


def test_stages_from_mapping_takes_custom_names() -> None:
    config = StageConfig.from_mapping({"open": ["Prospecting", "Engaging"], "won": ["Won"], "lost": ["Lost"]})
    assert config.all == ("Prospecting", "Engaging", "Won", "Lost")
    assert config.lead_stages == ("Prospecting",)
    with pytest.raises(KeyError):
        config.outcome("proposal")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"open": ["a", "b"], "won": ["a"], "lost": ["c"]}, "more than once: a"),
        ({"open": ["a"], "won": [], "lost": ["c"]}, "at least one open, one won and one lost"),
        ({"open": ["a"], "won": ["b"], "lost": ["c"], "closed": ["d"]},
         "stages.closed: unknown key; known: lead_stages, lost, open, won"),
        ({"open": "a", "won": ["b"], "lost": ["c"]}, "stages.open: must be a valid list"),
    ],
)
def test_bad_stage_configs_are_refused(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StageConfig.from_mapping(data)


def test_docs_list_every_contract_column(repo_root) -> None:  # type: ignore[no-untyped-def]
    from crmdata.contracts import CONTRACTS

    text = (repo_root / "docs" / "data.md").read_text()
    missing = [f"{c.name}.{col.name}" for c in CONTRACTS.values() for col in c.columns
               if f"| `{col.name}` | {col.kind} | {col.group} |" not in text]
    assert missing == []
