"""Benchmarks for lead scoring: training on 100,000 leads, batch scoring of 1,000,000, one lead at a time.

Targets (issue 3): training with evaluation on 100k synthetic leads < 120 s; batch scoring of 1M leads at
>= 200,000 leads/s without reasons and >= 20,000 leads/s with reasons, with flat memory; one lead with
reasons well under 1 ms. Issue 16: with reasons >= 80,000 leads/s and one lead with reasons within 2x of
without. Each figure is printed beside its peers measured in the same run (`pipeline.predict_proba`, the
MLflow pyfunc of the same pipeline, treelite where installed) as ratios. Printed, never asserted: run with
`make bench`.
Issue 16 item 5: peak memory of training at 100k / 200k / 400k / 1M leads (target under 2 GB at 1M), also per
lead above the imported libraries.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.benchmarks.conftest import PYTHON, record_ratio, run_measured

TRAIN = """
import json, resource, sys, time
from tests.benchmarks.conftest import peak_rss_mib
from pathlib import Path
from crmdata.loaders import read_raw
from scoring.spec import load_spec
from scoring.training import train
from scoring.artifacts import save_trained
from sklearn.metrics import roc_auc_score
import pandas as pd
src, models = Path(sys.argv[1]), Path(sys.argv[2])
spec = load_spec()
imported = peak_rss_mib()
raw = read_raw(src)
start, cpu = time.perf_counter(), time.process_time()
result = train(raw, spec=spec)
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
result.trained.version = "1"
save_trained(result.trained, models_dir=models, name="bench", aliases=["champion"])
truth = pd.read_parquet(sys.argv[3]).set_index("lead_id")["true_probability"]
best = roc_auc_score(result.holdout_y, truth.loc[result.holdout_ids.to_numpy()].to_numpy())
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "selected": result.trained.card["selected"],
                  "peak_mib": peak_rss_mib(), "imported_mib": imported,
                  "metrics": result.trained.card["metrics"]["selected"], "best_auc": best}))
"""

SCORE = """
import json, resource, sys, time
from tests.benchmarks.conftest import peak_rss_mib
from pathlib import Path
from scoring.batch import score_file
from scoring.scorer import load_scorer
src, out, models, reasons = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] == "1"
scorer = load_scorer(models_dir=models)
start, cpu = time.perf_counter(), time.process_time()
summary = score_file(src, out, scorer=scorer, reasons=reasons)
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
peak = peak_rss_mib()
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "rows": summary.rows, "peak_mib": peak}))
"""

COMPUTE = """
import json, sys, time
from pathlib import Path
import pandas as pd
from scoring.scorer import load_scorer
from scoring.spec import prepare
scorer = load_scorer(models_dir=Path(sys.argv[2]))
raw = pd.read_parquet(sys.argv[1]).head(200_000)
prepared = prepare(raw, spec=scorer.spec)
out = {}
for reasons in (False, True):
    start = time.perf_counter()
    scorer.score_frame(prepared.features, prepared.ids, reasons=reasons)
    out[str(reasons)] = len(raw) / (time.perf_counter() - start)
records = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in raw.head(200).to_dict("records")]
for r in records:
    r["as_of"] = "2026-07-01T00:00:00"
for reasons in (False, True):
    times = []
    for i in range(1000):
        start = time.perf_counter()
        scorer.score_records([records[i % 200]], reasons=reasons)
        times.append(time.perf_counter() - start)
    times.sort()
    out[f"one_{reasons}"] = {"p50_ms": times[500] * 1e3, "p99_ms": times[990] * 1e3}
print(json.dumps(out))
"""

PEERS = """
import json, sys, tempfile, time
from pathlib import Path
import pandas as pd
import pyarrow.parquet as pq
from scoring.scorer import load_scorer
from scoring.spec import prepare
src, models = Path(sys.argv[1]), Path(sys.argv[2])
scorer = load_scorer(models_dir=models)
pipeline = scorer.trained.pipeline
out = {}
import mlflow.pyfunc, mlflow.sklearn
folder = Path(tempfile.mkdtemp()) / "pyfunc"
mlflow.sklearn.save_model(pipeline, str(folder), serialization_format="cloudpickle",
                          pyfunc_predict_fn="predict_proba", pip_requirements=["scikit-learn"])
pyfunc = mlflow.pyfunc.load_model(str(folder))
# The same work as `score_file` without reasons: read chunks of 100k, type them, score (nothing written).
for name, predict in (("pipeline", lambda f: pipeline.predict_proba(f)[:, 1]), ("pyfunc", pyfunc.predict)):
    start, rows = time.perf_counter(), 0
    for batch in pq.ParquetFile(src).iter_batches(batch_size=100_000):
        features = prepare(batch.to_pandas(), spec=scorer.spec).features
        predict(features)
        rows += len(features)
    out[f"{name}_batch"] = rows / (time.perf_counter() - start)
features = prepare(pd.read_parquet(src).head(200_000), spec=scorer.spec).features
start = time.perf_counter()
pipeline.predict_proba(features)
out["pipeline_compute"] = len(features) / (time.perf_counter() - start)
times = []
for i in range(200):
    one = features.iloc[[i]]
    start = time.perf_counter()
    pipeline.predict_proba(one)
    times.append(time.perf_counter() - start)
out["pipeline_one_ms"] = sorted(times)[100] * 1e3
try:
    import treelite  # noqa: F401
    out["treelite"] = "installed"
except ImportError:
    out["treelite"] = None
print(json.dumps(out))
"""

MAKE = """
import sys
from pathlib import Path
from crmdata.loaders import write_table
from crmdata.synthetic import generate_leads
n, out = int(sys.argv[1]), Path(sys.argv[2])
data = generate_leads(n=n, seed=2026)
write_table(data.leads, out)
write_table(data.truth, out.with_name(out.stem + "-truth.parquet"))
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-scoring")


@pytest.mark.bench
def test_bench_train_100k(folder: Path) -> None:
    data = folder / "train.parquet"
    run_measured([PYTHON, "-c", MAKE, "100000", str(data)])
    seconds, _, output = run_measured([PYTHON, "-c", TRAIN, str(data), str(folder / "models"),
                                          str(folder / "train-truth.parquet")])
    result = json.loads(output.strip().splitlines()[-1])
    m = result["metrics"]
    print(f"\ntrain + evaluate 100,000 synthetic leads: {result['seconds']:.1f} s (target < 120 s; process "
          f"{seconds:.1f} s, peak RSS {result['peak_mib']:,.0f} MiB); selected {result['selected']}: "
          f"AUC {m['roc_auc']:.4f} "
          f"(best possible {result['best_auc']:.4f}), Brier {m['brier']:.4f}, ECE {m['ece']:.4f}")


@pytest.mark.bench
@pytest.mark.parametrize("leads", [100_000, 200_000, 400_000, 1_000_000])
def test_bench_train_peak_memory(folder: Path, leads: int) -> None:
    # Each size in its own process: its peak RSS is the training's alone (the data is made in another).
    data = folder / f"train-{leads}.parquet"
    run_measured([PYTHON, "-c", MAKE, str(leads), str(data)])
    _, _, output = run_measured([PYTHON, "-c", TRAIN, str(data), str(folder / f"models-{leads}"),
                                 str(folder / f"train-{leads}-truth.parquet")])
    result = json.loads(output.strip().splitlines()[-1])
    m = result["metrics"]
    load = os.getloadavg()
    # The peak per lead above the interpreter and libraries as imported. Not a straight line to a million: at
    # 100k it is about 3.0 KB a lead, at 1M about 1.9 KB (fixed costs beyond the imports, such as gradient
    # boosting's binning sample of at most 200,000 rows), so a small run overstates the 1M peak by half.
    per_lead = (result["peak_mib"] - result["imported_mib"]) / leads
    print(f"\ntrain {leads:,} synthetic leads: peak RSS {result['peak_mib']:,.0f} MiB "
          f"({result['peak_mib'] * 1024 / leads:.2f} KiB per lead; {per_lead * 2**20:,.0f} bytes per lead above "
          f"the {result['imported_mib']:,.0f} MiB imported; target < 2 GB = 1,907 MiB at 1,000,000), "
          f"{result['seconds']:.1f} s wall, {result['cpu_seconds']:.1f} s CPU, load {load[0]:.2f}; selected "
          f"{result['selected']}: AUC {m['roc_auc']:.4f} (best possible {result['best_auc']:.4f}), "
          f"Brier {m['brier']:.4f}")
    record_ratio(what=f"train {leads:,} leads, peak RSS", value=result["peak_mib"], peer="the 2 GB budget",
                 peer_value=2e9 / 2**20, unit="MiB", higher_is_better=False, target=">= 1x at 1M")


@pytest.mark.bench
def test_bench_batch_score_1m(folder: Path) -> None:
    if not (folder / "models" / "registry.json").exists():
        pytest.skip("needs the model trained by test_bench_train_100k")
    data = folder / "score.parquet"
    run_measured([PYTHON, "-c", MAKE, "1000000", str(data)])
    # Memory is flat when scoring 10x more leads costs no more memory: compare with the 100k file.
    _, _, output = run_measured([PYTHON, "-c", SCORE, str(folder / "train.parquet"), str(folder / "small.parquet"),
                                 str(folder / "models"), "1"])
    small = json.loads(output.strip().splitlines()[-1])
    print(f"\nbatch score 100,000 leads with reasons: peak RSS {small['peak_mib']:,.0f} MiB (for comparison)")
    _, _, output = run_measured([PYTHON, "-c", PEERS, str(data), str(folder / "models")])
    peers = json.loads(output.strip().splitlines()[-1])
    print(f"\npeers, same run: pipeline.predict_proba in chunks of 100k (read + type + predict, no write) "
          f"{peers['pipeline_batch']:,.0f} leads/s, MLflow pyfunc {peers['pyfunc_batch']:,.0f} leads/s; "
          f"treelite {'installed but not compiled here' if peers['treelite'] else 'not installed'}")
    rates = {}
    for reasons, target in (("0", 200_000), ("1", 80_000)):
        out = folder / f"scores-{reasons}.parquet"
        seconds, _, output = run_measured([PYTHON, "-c", SCORE, str(data), str(out), str(folder / "models"),
                                              reasons])
        result = json.loads(output.strip().splitlines()[-1])
        rate = result["rows"] / result["seconds"]
        print(f"\nbatch score 1,000,000 leads (parquet in and out, chunks of 100k), reasons={reasons == '1'}: "
              f"{result['seconds']:.1f} s = {rate:,.0f} leads/s (target >= {target:,}); CPU "
              f"{result['cpu_seconds']:.1f} s ({result['cpu_seconds'] / result['rows'] * 1e6:.1f} us a lead), load "
              f"{os.getloadavg()[0]:.2f}; process {seconds:.1f} s, "
              f"peak RSS of the scoring process {result['peak_mib']:,.0f} MiB; "
              f"{rate / peers['pipeline_batch']:.2f}x pipeline.predict_proba, {rate / peers['pyfunc_batch']:.2f}x "
              f"MLflow pyfunc (which give no reasons)")
        rates[reasons] = rate
        label = "with" if reasons == "1" else "without"
        record_ratio(what=f"batch 1M {label} reasons, Parquet in and out", value=rate,
                     peer="pipeline.predict_proba in chunks (no write)", peer_value=peers["pipeline_batch"],
                     unit="leads/s", higher_is_better=True, target=f">= {target:,} leads/s")
        record_ratio(what=f"batch 1M {label} reasons, Parquet in and out", value=rate,
                     peer="MLflow pyfunc in chunks (no write)", peer_value=peers["pyfunc_batch"], unit="leads/s",
                     higher_is_better=True)
    print(f"reasons cost: with / without = {rates['1'] / rates['0']:.2f}x the rate")
    _, _, output = run_measured([PYTHON, "-c", COMPUTE, str(data), str(folder / "models")])
    result = json.loads(output.strip().splitlines()[-1])
    print(f"scoring compute only (200k leads, already typed): {result['False']:,.0f} leads/s without reasons "
          f"({result['False'] / peers['pipeline_compute']:.2f}x pipeline.predict_proba's "
          f"{peers['pipeline_compute']:,.0f}), {result['True']:,.0f} with reasons")
    for reasons in (False, True):
        one = result[f"one_{reasons}"]
        print(f"one lead through score_records (JSON record in), reasons={reasons}: p50 {one['p50_ms']:.2f} ms, "
              f"p99 {one['p99_ms']:.2f} ms; pipeline.predict_proba on a typed one-row frame "
              f"{peers['pipeline_one_ms']:.2f} ms = {peers['pipeline_one_ms'] / one['p50_ms']:.1f}x slower")
    ratio = result["one_True"]["p50_ms"] / result["one_False"]["p50_ms"]
    print(f"one lead with reasons / without: {ratio:.2f}x (target <= 2x)")
    record_ratio(what="batch 1M without reasons, end to end", value=rates["0"],
                 peer="scoring compute alone (typed, in memory)", peer_value=result["False"], unit="leads/s",
                 higher_is_better=True, target="as fast as the compute (1x)")
    record_ratio(what="scoring compute, 200k typed leads", value=result["False"], peer="pipeline.predict_proba",
                 peer_value=peers["pipeline_compute"], unit="leads/s", higher_is_better=True)
    for reasons in (False, True):
        record_ratio(what=f"one JSON lead in process, reasons={reasons}, p50", value=result[f"one_{reasons}"]["p50_ms"],
                     peer="pipeline.predict_proba, typed one-row frame", peer_value=peers["pipeline_one_ms"],
                     unit="ms", higher_is_better=False)
    record_ratio(what="one lead with reasons, p50", value=result["one_True"]["p50_ms"],
                 peer="the same lead without reasons", peer_value=result["one_False"]["p50_ms"], unit="ms",
                 higher_is_better=False, target=">= 0.5x (within 2x)")
