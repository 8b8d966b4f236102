"""Building a report, or a model's evaluation plots, leaves the caller's matplotlib alone: its backend stays the
one it chose (a notebook's inline backend) and pyplot, with its global figure manager, is never imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# A fresh interpreter: other tests may have imported pyplot or chosen a backend already.
SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path

    import matplotlib
    import numpy as np

    matplotlib.use("svg")  # what the caller chose; Agg is what the libraries used to force

    from crmdata.loaders import Pipeline
    from crmdata.synthetic import generate_opportunities
    from forecasting.report import build_report
    from scoring.evaluation import evaluate, save_plots
    from scoring.spec import Grades

    data = generate_opportunities(n=600, seed=3)
    pipeline = Pipeline(opportunities=data.opportunities, stages=data.stages, history=data.history)
    report = build_report(pipeline, as_of="2026-07-01", horizon="1Q", rng=np.random.default_rng(0), n_sims=200,
                          backtest_months=1, backtest_sims=100)
    assert report.html.count("<svg") >= 5
    rng = np.random.default_rng(0)
    p = rng.uniform(size=200)
    scored = evaluate((rng.uniform(size=200) < p).astype(int), p, grades=Grades())
    paths = save_plots(scored, Path(sys.argv[1]), title="t")
    assert all(path.read_bytes().startswith(b"\\x89PNG") for path in paths)
    print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
""")


@pytest.mark.slow
def test_report_and_plots_keep_the_callers_backend(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parents[3])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["svg", "False"]
