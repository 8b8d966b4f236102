"""The Monte Carlo draws what the probabilities say, reproducibly, and its shortcut matches exact draws."""

from __future__ import annotations

import numpy as np
import pytest

from forecasting.montecarlo import simulate

NONE = np.zeros((0, 2))


def _sim(values: list[float], probs: list[list[float]], *, seed: int = 0, n_sims: int = 20_000,
         **kwargs: object) -> np.ndarray:
    return simulate(values=np.array(values), probs=np.array(probs), new_counts=np.zeros(len(probs[0])),
                    new_amounts=np.zeros(0), n_sims=n_sims, rng=np.random.default_rng(seed), **kwargs).revenue  # type: ignore[arg-type]


def test_a_sure_deal_books_its_value_in_its_period() -> None:
    revenue = _sim([100.0, 50.0], [[1.0, 0.0], [0.0, 0.0]], n_sims=500)
    assert np.all(revenue[:, 0] == 100.0) and np.all(revenue[:, 1] == 0.0)


def test_two_coin_flip_deals() -> None:
    # Deals of $100 and $300, each won in period 1 with probability 1/2: totals 0, 100, 300, 400, 1/4 each.
    revenue = _sim([100.0, 300.0], [[0.5, 0.0], [0.5, 0.0]])[:, 0]
    for total in (0.0, 100.0, 300.0, 400.0):
        assert np.mean(revenue == total) == pytest.approx(0.25, abs=0.015)
    assert revenue.mean() == pytest.approx(200.0, rel=0.02)  # 0.5 x 100 + 0.5 x 300


def test_a_deal_wins_in_at_most_one_period() -> None:
    revenue = _sim([10.0], [[0.3, 0.5]])
    assert set(np.unique(revenue.sum(axis=1))) <= {0.0, 10.0}
    assert np.mean(revenue[:, 0] > 0) == pytest.approx(0.3, abs=0.015)
    assert np.mean(revenue[:, 1] > 0) == pytest.approx(0.5, abs=0.015)


def test_same_seed_same_numbers() -> None:
    a = _sim([5.0, 7.0], [[0.2, 0.3], [0.6, 0.1]], seed=3, dispersion=0.1)
    b = _sim([5.0, 7.0], [[0.2, 0.3], [0.6, 0.1]], seed=3, dispersion=0.1)
    assert np.array_equal(a, b)


def test_new_deals_are_compound_poisson() -> None:
    # Poisson(2) wins of $10: mean 2 x 10 = 20, variance 2 x 10^2 = 200.
    sim = simulate(values=np.zeros(0), probs=NONE[:, :1], new_counts=np.array([2.0]), new_amounts=np.array([10.0]),
                   n_sims=50_000, rng=np.random.default_rng(1))
    assert sim.revenue.mean() == pytest.approx(20.0, rel=0.02)
    assert sim.revenue.var() == pytest.approx(200.0, rel=0.04)


def test_the_dispersion_shock_keeps_the_mean() -> None:
    plain = _sim([100.0] * 50, [[0.5, 0.0]] * 50, seed=2)
    shocked = _sim([100.0] * 50, [[0.5, 0.0]] * 50, seed=2, dispersion=0.3)
    assert shocked[:, 0].mean() == pytest.approx(plain[:, 0].mean(), rel=0.02)  # both near 50 x 50 = 2,500
    assert shocked[:, 0].std() > 1.5 * plain[:, 0].std()


def test_normal_shortcut_matches_exact_draws() -> None:
    rng = np.random.default_rng(5)
    n = 6000
    values = np.round(np.exp(rng.normal(8, 0.9, n)), -1)
    raw = rng.dirichlet(np.ones(4), size=n)[:, :3] * rng.uniform(0.2, 1.0, n)[:, None]
    kwargs = {"values": values, "probs": raw, "new_counts": np.zeros(3), "new_amounts": np.zeros(0),
              "n_sims": 20_000}
    exact = simulate(**kwargs, rng=np.random.default_rng(7), min_exact=n)  # type: ignore[arg-type]
    hybrid = simulate(**kwargs, rng=np.random.default_rng(8), min_exact=500)  # type: ignore[arg-type]
    assert exact.normal_deals == 0 and hybrid.normal_deals > 0
    for k in range(3):
        q_exact = np.percentile(exact.revenue[:, k], [10, 50, 90])
        q_hybrid = np.percentile(hybrid.revenue[:, k], [10, 50, 90])
        np.testing.assert_allclose(q_hybrid, q_exact, rtol=0.005)
