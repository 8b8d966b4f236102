"""Benchmark: Monte Carlo over 50,000 open deals x 10,000 simulations x 12 monthly periods.

Target: under 10 s and 2 GB peak. The per-deal odds are real ones: a 12-month plan on the synthetic CRM, its open
deals resampled to 50,000. Each mode runs in a child process so its peak memory is its own. Run with
`make bench`, or directly: `python -m tests.benchmarks.bench_forecasting`.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pytest

from tests.benchmarks.conftest import PYTHON, peak_rss_mib, run_measured

DEALS = 50_000
SIMS = 10_000


def _inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray], float]:
    from crmdata.synthetic import generate_opportunities
    from forecasting.forecast import plan

    data = generate_opportunities(n=20_000, seed=1)
    start = time.perf_counter()
    p = plan(data.opportunities, stages=data.stages, history=data.history, as_of=data.as_of, horizon="12M")
    plan_seconds = time.perf_counter() - start
    rows = np.random.default_rng(0).integers(0, len(p.values), DEALS)
    return p.values[rows], p.probs[rows], p.new_counts, list(p.new_amounts), plan_seconds


def measure(mode: str) -> dict[str, object]:
    """Run one simulation mode in this process and return its figures."""
    from forecasting.montecarlo import simulate

    values, probs, new_counts, new_amounts, plan_seconds = _inputs()
    start = time.perf_counter()
    sim = simulate(values=values, probs=probs, new_counts=new_counts, new_amounts=new_amounts, n_sims=SIMS,
                   rng=np.random.default_rng(42), dispersion=0.15,
                   min_exact=DEALS if mode == "exact" else 20_000)
    seconds = time.perf_counter() - start
    total = sim.revenue.sum(axis=1)
    return {
        "mode": mode, "seconds": seconds, "plan_seconds": plan_seconds, "exact_deals": sim.exact_deals,
        "normal_deals": sim.normal_deals, "max_skew": sim.normal_max_skew,
        "peak_mib": peak_rss_mib(),
        "total_q": np.percentile(total, [10, 50, 90]).tolist(),
        "month1_q": np.percentile(sim.revenue[:, 0], [10, 50, 90]).tolist(),
        "mean": float(total.mean()), "expected": float(values @ probs.sum(axis=1)),
    }


@pytest.mark.bench
def test_bench_monte_carlo() -> None:
    results = {}
    for mode in ("default", "exact"):
        _, _, out = run_measured([PYTHON, "-m", "tests.benchmarks.bench_forecasting", mode])
        results[mode] = json.loads(out.strip().splitlines()[-1])
    print(f"\nMonte Carlo, {DEALS:,} open deals x {SIMS:,} simulations x 12 months "
          f"(12-month plan on 20,000 synthetic deals: {results['default']['plan_seconds']:.1f} s):")
    for mode, r in results.items():
        print(f"  {mode:<6} {r['seconds']:6.2f} s (target < 10 s, {r['seconds'] / 10:.2f} of budget), peak RSS "
              f"{r['peak_mib']:,.0f} MiB (target < 2,048 MiB), {r['exact_deals']:,} deals drawn one by one, "
              f"{r['normal_deals']:,} as a normal sum (skew {r['max_skew']:.3f})")
    h, e = results["default"], results["exact"]
    for name in ("total_q", "month1_q"):
        diff = [abs(a / b - 1) * 100 for a, b in zip(h[name], e[name], strict=True)]
        print(f"  {name}: default vs exact P10/P50/P90 differ by {diff[0]:.2f}% / {diff[1]:.2f}% / {diff[2]:.2f}%")
    print(f"  mean {h['mean']:,.0f} (default) vs {e['mean']:,.0f} (exact); open-deal expectation "
          f"{h['expected']:,.0f} plus new deals")


def measure_plan() -> dict[str, object]:
    """Fit the stage model and build a 12-month plan on 200,000 synthetic deals (with stage history)."""
    from crmdata.synthetic import generate_opportunities
    from forecasting.forecast import plan

    data = generate_opportunities(n=200_000, seed=1)
    start = time.perf_counter()
    p = plan(data.opportunities, stages=data.stages, history=data.history, as_of=data.as_of, horizon="12M")
    return {"seconds": time.perf_counter() - start, "open_deals": len(p.values),
            "peak_mib": peak_rss_mib()}


@pytest.mark.bench
def test_bench_plan_at_scale() -> None:
    _, _, out = run_measured([PYTHON, "-m", "tests.benchmarks.bench_forecasting", "plan"])
    r = json.loads(out.strip().splitlines()[-1])
    print(f"\nplan (stage model + 12-month odds), 200,000 synthetic deals with history, {r['open_deals']:,} open: "
          f"{r['seconds']:.1f} s, peak RSS {r['peak_mib']:,.0f} MiB (generation included)")


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "default"
    print(json.dumps(measure_plan() if which == "plan" else measure(which)))
