from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from click.testing import CliRunner

from api.cli import cli
from scoring.spec import load_spec
from store import Store
from store.schema import predictions
from tests.api.servers import free_port


def test_score_log_records_every_batch_score_as_the_api_does(tmp_path: Path, trained_dir: Path,
                                                             sample_leads: pd.DataFrame, database_url: str) -> None:
    shutil.copytree(trained_dir, tmp_path / "models")
    data = tmp_path / "leads.csv"
    part = sample_leads.head(5).copy()
    part["favourite_colour"] = "teal"  # an unknown field: never logged
    part.to_csv(data, index=False)
    out = tmp_path / "scores.csv"
    env = {"LEADCAST_HOME": str(tmp_path), "LEADCAST_DATABASE_URL": database_url}
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"], env=env).exit_code == 0
    result = runner.invoke(cli, ["score", "--data", str(data), "--out", str(out), "--log", "--chunk-rows", "2",
                                 "--as-of", "2026-11-30"], env=env)
    assert result.exit_code == 0, result.output
    assert "logged 5 scores in the prediction log" in result.output
    scored = pd.read_csv(out, dtype={"lead_id": str})
    with Store(database_url) as store, store.begin() as conn:
        rows = conn.execute(sa.select(predictions).order_by(predictions.c.id)).all()
    # 5 leads in chunks of 2, 2 and 1: every one logged once, in file order, with the file's scores
    assert [r.lead_id for r in rows] == scored["lead_id"].tolist() == part["lead_id"].astype(str).tolist()
    assert [r.probability for r in rows] == scored["probability"].tolist()
    assert [(r.score, r.grade) for r in rows] == list(zip(scored["score"], scored["grade"], strict=True))
    assert {(r.model_name, r.model_version, r.model_kind) for r in rows} == {("leadcast-lead-scoring", "1",
                                                                             "trained")}
    spec = load_spec()
    for r in rows:
        assert set(r.features) <= set(spec.feature_columns) and r.features
        assert "gender" not in r.features and "favourite_colour" not in r.features and "converted" not in r.features
        assert r.as_of is not None
    first = part.iloc[0]
    assert rows[0].features["source"] == first["source"]  # the export's value as written
    texts = [f"{x['text']}: {int(x['contribution']):+d}" for x in rows[0].reasons]
    shown = "; ".join(t for t in (scored["reasons_positive"].iloc[0], scored["reasons_negative"].iloc[0])
                      if isinstance(t, str))
    assert "; ".join(texts) == shown


def test_score_log_fails_at_once_when_the_database_is_down(tmp_path: Path, trained_dir: Path,
                                                           sample_leads: pd.DataFrame) -> None:
    shutil.copytree(trained_dir, tmp_path / "models")
    data = tmp_path / "leads.csv"
    sample_leads.head(3).to_csv(data, index=False)
    url = f"postgresql+psycopg://leadcast:s3cret@127.0.0.1:{free_port()}/leadcast"
    result = CliRunner().invoke(cli, ["score", "--data", str(data), "--out", str(tmp_path / "s.csv"), "--log"],
                                env={"LEADCAST_HOME": str(tmp_path), "LEADCAST_DATABASE_URL": url})
    assert result.exit_code == 2 and "is unavailable" in result.output and "s3cret" not in result.output
    assert not (tmp_path / "s.csv").exists()
